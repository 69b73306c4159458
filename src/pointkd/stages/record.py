"""The `record` stage: run the teachers once over K augmented copies of every training shape
and store, per row, the augmentation (parameters + point seed) and the teachers' logits.

`run(RecordConfig)` loads the teachers (`pointkd.teachers`), the data, plans the shards,
runs the teachers batch by batch (`teachers.inference.logits_over_rows`) and hands each batch
of rows to `records.ShardWriter`; the manifest makes the set verifiable and resumable.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointkd import augment, distributed, rundir
from pointkd._version import __version__
from pointkd.config.stages import RecordConfig
from pointkd.device import resolve_device
from pointkd.errors import RecordError
from pointkd.progress import Progress
from pointkd.records.format import FORMAT, FORMAT_VERSION, dtype_descr, encode_logits, row_dtype
from pointkd.records.manifest import (
    MANIFEST,
    changed_settings,
    read_manifest,
    shard_name,
    write_json_atomic,
)
from pointkd.records.writer import ShardWriter, plan_shards, remove_sums
from pointkd.safe_io import file_sha256
from pointkd.teachers.inference import deterministic, fit_to_data, logits_over_rows
from pointkd.teachers.load import load_teachers


@dataclass(frozen=True)
class RecordResult:
    """A finished record set: where it is and what it holds."""

    root: Path
    total_rows: int
    k: int
    num_shapes: int
    bytes_per_row: int
    bytes: int  # all shards
    seconds: float  # the recording loop of the last session
    already_complete: bool  # a --resume of a finished set: nothing was done

    def text(self) -> str:
        """`recorded 98,430 rows (K 10 x 9,843 shapes), 64 bytes/row, 6.30 MB in 366.0 s
        -> DIR`"""
        took = " (already complete)" if self.already_complete else f" in {self.seconds:.1f} s"
        return (f"recorded {self.total_rows:,} rows (K {self.k} x {self.num_shapes:,} shapes), "
                f"{self.bytes_per_row} bytes/row, {self.bytes / 1e6:.2f} MB{took} -> "
                f"{self.root}")

    @classmethod
    def of(cls, root: Path, already_complete: bool = False) -> RecordResult:
        m = read_manifest(root)
        return cls(Path(root), m["total_rows"], m["k"], m["data"]["num_shapes"],
                   m["bytes_per_row"], sum((Path(root) / s["file"]).stat().st_size
                                           for s in m["shards"]),
                   m.get("recording", {}).get("seconds", 0.0), already_complete)


@rundir.releases_locks
def run(cfg: RecordConfig) -> RecordResult | None:
    """Record as `cfg` says; the finished set (None in the non-zero ranks of torchrun)."""
    dist_root = _record(cfg)
    return RecordResult.of(*dist_root) if dist_root is not None else None


def _record(cfg: RecordConfig) -> tuple[Path, bool] | None:
    """Record K augmented copies of every shape of `cfg.data`'s train split; returns the
    record directory. See docs/records.md for the format. Teachers: pointkd checkpoints, ONNX
    files or `module:factory` entry points with `weights` (see `pointkd.teacher`); they run
    in `pointkd.teacher_inference`, this function stores what they say."""
    from pointkd.data import load_split

    cfg.check()
    dist = distributed.init(cfg.device)
    dev = dist.device(resolve_device(cfg.device))
    models = load_teachers(cfg.teachers, dev, cfg.weights, cfg.class_names,
                           cfg.teacher_normalization)
    ds = load_split(cfg.data, "train", num_points=models[0].num_points)
    if not ds.labelled:  # a pool without labels or classes: the teachers' classes name it
        ds.class_names = _teachers_classes(models, cfg.data)
    fit_to_data(models, ds, cfg.data, models[0].num_points, error=RecordError)
    cfg.augment.check_points(ds.points.shape[1])
    manifest, dtype = _new_manifest(cfg, ds, models, dist.world)
    root = Path(cfg.out)
    previous = dist.on_main(_prepare_out, root, manifest, cfg.resume, cfg.overwrite,
                            (*cfg.teachers, cfg.data))
    if previous is not None and previous["complete"]:
        return (root, True) if dist.main else None  # a finished recording: nothing to do
    if previous is not None:
        manifest["created"] = previous["created"]
    if dist.main:
        write_json_atomic(root / MANIFEST, manifest)
    dist.barrier()

    mine = next((s for s in manifest["shards"] if s["file"] == shard_name(dist.rank)), None)
    t0, first = time.perf_counter(), 0
    if mine is not None:  # a tiny set may leave the last ranks without rows
        lo, n = mine["row_start"], mine["rows"]
        writer = ShardWriter(root / mine["file"], dtype, n, cfg.batch_size, cfg.resume)
        first = writer.done
        # a live bar on a terminal, a plain line per tenth of the rows in a log
        bar = Progress(n, "record" if not dist.active else f"record (rank 0 of {dist.world})",
                       unit="row", initial=writer.done, enabled=cfg.progress and dist.main)
        points = torch.from_numpy(ds.points).to(dev)  # the whole split: ~120 MB (ModelNet40)
        todo = range(lo + writer.done, lo + n)  # whole batches of the grid are in place
        with torch.inference_mode(), deterministic(dev):
            for batch in logits_over_rows(models, points, cfg.augment, cfg.seed, todo,
                                          cfg.batch_size, cfg.combine, dev, cfg.votes):
                rows = np.zeros(len(batch.seeds), dtype)
                rows["params"] = batch.params16.numpy()
                rows["seed"] = batch.seeds.numpy().view(np.uint64)
                if batch.mix_shapes is not None:
                    rows["mix_shape"] = batch.mix_shapes.numpy()
                    rows["mix_lam"] = batch.mix_lams.numpy()
                encode_logits(rows, batch.logits, manifest["logits"]["encoding"], cfg.topk)
                writer.write(rows)
                bar.update(len(rows))
        bar.close()
        writer.finalize()
    written = dist.sum([n - first if mine is not None else 0])[0]
    dist.barrier()  # every shard is final
    if dist.main:
        for shard in manifest["shards"]:
            shard["sha256"] = file_sha256(root / shard["file"])
        manifest.update(complete=True, completed=_now(), recording={
            "device": str(dev), "processes": dist.world, "rows": int(written),
            "seconds": round(time.perf_counter() - t0, 3)})  # the last session's loop
        write_json_atomic(root / MANIFEST, manifest)
        remove_sums(root, manifest["shards"])
    dist.barrier()
    return (root, False) if dist.main else None


def _new_manifest(cfg: RecordConfig, ds, models: list, world: int) -> tuple[dict, np.dtype]:
    """The manifest of a recording not yet begun (`complete: false`) and its row layout."""
    encoding = "topk" if cfg.topk else cfg.logits
    stored = len(cfg.teachers) if cfg.combine == "each" else 1
    dtype = row_dtype(ds.num_classes, encoding, cfg.topk, stored,
                      mixed=cfg.augment.mix != "none")
    total = cfg.k * len(ds)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "pointkd_version": __version__,
        "created": _now(), "complete": False,
        "data": {"name": ds.name, "path": str(cfg.data), "fingerprint": ds.fingerprint(),
                 "num_shapes": len(ds), "num_classes": ds.num_classes,
                 "class_names": list(ds.class_names), "num_points": int(ds.points.shape[1]),
                 **_labels_entry(cfg.unlabelled or not ds.labelled)},
        "teachers": [t.entry for t in models],
        "augment": cfg.augment.to_dict(), "k": cfg.k, "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "logits": {"encoding": encoding, "topk": cfg.topk, "combine": cfg.combine,
                   "stored_teachers": stored, **_votes_entry(cfg.votes)},
        "row_dtype": dtype_descr(dtype), "bytes_per_row": dtype.itemsize, "total_rows": total,
        "shards": plan_shards(total, cfg.batch_size, world),
    }
    return manifest, dtype


def _teachers_classes(models: list, data: str) -> list[str]:
    """The classes of shapes without labels: the teachers', who must name them alike."""
    names = [m.class_names for m in models]
    if any(n is None for n in names):
        raise RecordError(f"{data}: shapes without labels take the teachers' classes, and a "
                          "teacher names none: pass --class-names FILE")
    if any(list(n) != list(names[0]) for n in names[1:]):
        raise RecordError(f"{data}: shapes without labels take the teachers' classes, and the "
                          "teachers name different ones")
    return list(names[0])


def _labels_entry(unlabelled: bool) -> dict:
    """`labels: false` when the students must not use the pool's labels (the rows get the
    KD terms only); absent otherwise, so labelled manifests stay as they were."""
    return {"labels": False} if unlabelled else {}


def _votes_entry(votes: int) -> dict:
    """Manifest fields of teacher voting; none without it, so unvoted manifests stay as they
    were (and a resume of a set recorded before voting existed still matches)."""
    if votes == 0:
        return {}
    return {"votes": votes, "vote_scale": list(augment.VOTE_SCALE)}


def _prepare_out(root: Path, manifest: dict, resume: bool, overwrite: bool,
                 inputs: tuple[str, ...] = ()) -> dict | None:
    """Lock the directory, then: never silently overwrite (--overwrite deletes only a record
    set's own files, see `pointkd.rundir`); resume only the very same recording. Returns the
    previous manifest when resuming one."""
    rundir.open_output(root, "records", resume=resume, overwrite=overwrite, inputs=inputs)
    if not resume or not (root / MANIFEST).is_file():
        if resume and rundir.contents(root):
            raise RecordError(f"{root}: nothing to resume here (no {MANIFEST})")
        return None
    previous = read_manifest(root)
    changed = changed_settings(previous, manifest)
    if changed:
        raise RecordError(f"{root}: --resume with other settings than the recording there "
                          f"({', '.join(changed)})")
    return previous


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
