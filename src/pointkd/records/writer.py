"""`pointkd record`: run the teacher(s) once over K augmented copies of every training shape.

Crash safety: rows go to `shard-00000.bin.partial` one whole batch per write; batches lie on
a fixed grid of `batch_size` rows from the shard's first row; all randomness derives from
(run seed, sample, k); the stored fp16 parameters are exactly the ones applied. So `--resume`
cuts the partial shard back to its last whole batch, recomputes identical batches, and the
result is byte-identical to an uninterrupted run.

Under torchrun each rank records one contiguous, batch-aligned range of rows into its own shard
(`shard-<rank>.bin`); rank 0 writes the manifest before any row and completes it once every
shard is final. The ranges lie on the single-process batch grid, so the shards, concatenated in
row order, are the very bytes a single process writes.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch

from pointkd import __version__, augment, distributed, rundir, safe_io
from pointkd.checkpoint import file_sha256
from pointkd.config import RecordConfig
from pointkd.device import resolve_device
from pointkd.errors import RecordError
from pointkd.progress import Progress
from pointkd.records.format import (
    FORMAT,
    FORMAT_VERSION,
    dtype_descr,
    encode_logits,
    row_dtype,
)
from pointkd.records.manifest import (
    MANIFEST,
    changed_settings,
    read_manifest,
    shard_name,
    write_json_atomic,
)
from pointkd.teacher import load_teachers
from pointkd.teacher_inference import deterministic, fit_to_data, logits_over_rows

SUMS = ".sums"  # beside `<shard>.partial`: one sha256 per batch written there
DIGEST = hashlib.sha256().digest_size


def sums_path(shard: Path) -> Path:
    """The checksum file of `shard`'s partial file."""
    return shard.with_name(shard.name + ".partial" + SUMS)


def batch_sums(data: bytes, batch_bytes: int) -> bytes:
    """The `.sums` content for whole batches `data` (the sha256 of each, concatenated)."""
    return b"".join(hashlib.sha256(data[i:i + batch_bytes]).digest()
                    for i in range(0, len(data), batch_bytes))


class ShardWriter:
    """Appends whole batches of rows to `<shard>.partial`; `finalize` fsyncs and renames it.

    After each batch its sha256 is appended to `<shard>.partial.sums` (data first, so a kill
    leaves at most a batch without its checksum, never a checksum without its batch). `done`
    is the number of rows already in place: on resume, the partial file is cut back to the
    last whole batch whose bytes still match its checksum; a batch that does not is an
    error (the file changed after pointkd wrote it), never silently built upon. Neither file
    is ever written through a link."""

    def __init__(self, path: Path, dtype: np.dtype, rows: int, batch_size: int, resume: bool):
        self.path, self.dtype, self.rows, self.batch_size = path, dtype, rows, batch_size
        self.partial = path.with_name(path.name + ".partial")
        self.sums = sums_path(path)
        self.done, self.fd, self.sums_fd = 0, None, None
        for p in (path, self.partial, self.sums):
            safe_io.refuse_link(p)  # a link, FIFO or hard link there: one-line error
        if resume and path.is_file() and path.stat().st_size == rows * dtype.itemsize:
            # killed after the rename, before the manifest: check it, nothing more to write
            self._check_final()
            self.done = rows
            return
        had_sums = self.sums.is_file()
        self.sums_fd = _open(self.sums)
        self.fd = _open(self.partial)
        if resume:
            self.done = self._verified_rows(had_sums)
        os.ftruncate(self.fd, self.done * dtype.itemsize)
        os.ftruncate(self.sums_fd, self._batches(self.done) * DIGEST)

    def _batches(self, rows: int) -> int:
        return math.ceil(rows / self.batch_size)

    def _verified_rows(self, had_sums: bool) -> int:
        """Rows at the start of the partial file whose batches match their checksums."""
        size = os.fstat(self.fd).st_size
        bpr = self.dtype.itemsize
        if not had_sums:
            if size >= min(self.batch_size, self.rows) * bpr:
                raise RecordError(f"{self.partial}: no {self.sums.name} beside it, so its rows "
                                  "cannot be checked (written by an older pointkd?); record "
                                  "again with --overwrite")
            return 0
        sums = os.pread(self.sums_fd, self._batches(self.rows) * DIGEST + 1, 0)
        if len(sums) > self._batches(self.rows) * DIGEST:
            raise RecordError(f"{self.sums}: more checksums than the shard has batches; "
                              "record again with --overwrite")
        done = 0
        for i in range(len(sums) // DIGEST):  # a torn last checksum is dropped
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.rows)
            if hi * bpr > size:
                break  # checksum written, batch cut short (a machine crash): recompute it
            data = os.pread(self.fd, (hi - lo) * bpr, lo * bpr)
            if hashlib.sha256(data).digest() != sums[i * DIGEST:(i + 1) * DIGEST]:
                raise _changed(self.partial, lo, hi)
            done = hi
        return done

    def _check_final(self) -> None:
        """A shard renamed into place before its manifest: its batches against `.sums` (a
        set from before checksums has none; its manifest's sha256 then comes from the file)."""
        if not self.sums.is_file():
            return
        sums = self.sums.read_bytes()
        bpr = self.dtype.itemsize
        with open(self.path, "rb") as f:
            for i in range(self._batches(self.rows)):
                lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.rows)
                digest = hashlib.sha256(f.read((hi - lo) * bpr)).digest()
                if digest != sums[i * DIGEST:(i + 1) * DIGEST]:
                    raise _changed(self.path, lo, hi)

    def write(self, rows: np.ndarray) -> None:
        """One whole batch of the grid (or the shard's last, shorter one), then its sum."""
        data = rows.tobytes()
        safe_io.write_all(self.fd, data, self.partial)  # a full disk: one line, resumable
        safe_io.write_all(self.sums_fd, hashlib.sha256(data).digest(), self.sums)
        self.done += len(rows)

    def finalize(self) -> None:
        if self.fd is None:
            return
        if self.done != self.rows:
            raise RecordError(f"{self.partial}: {self.done} rows written, expected {self.rows}")
        try:
            os.fsync(self.fd)
            os.fsync(self.sums_fd)  # kept until the manifest is complete: resume checks it
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise safe_io.write_error(self.path, exc) from None
        finally:
            os.close(self.fd)
            os.close(self.sums_fd)
            self.fd = self.sums_fd = None
        safe_io.fsync_dir(self.path.parent)


def _open(path: Path) -> int:
    """Read/write, appending; created if missing, never through a link."""
    return safe_io.open_file(path, read=True, append=True)


def _changed(path: Path, lo: int, hi: int) -> RecordError:
    return RecordError(f"{path}: rows {lo:,}-{hi - 1:,} do not match the checksums written with "
                       "them (the file changed after pointkd wrote it); nothing appended; "
                       "record again with --overwrite")


def remove_sums(root: Path, shards: list[dict]) -> None:
    """Once the manifest is complete (with every shard's sha256): the batch checksums of the
    partial files are no longer needed."""
    for shard in shards:
        sums = sums_path(root / shard["file"])
        if sums.is_file() and not sums.is_symlink():
            sums.unlink()


@rundir.releases_locks
def record(cfg: RecordConfig) -> Path:
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
    fit_to_data(models, ds, cfg.data, models[0].num_points, error=RecordError)
    cfg.augment.check_points(ds.points.shape[1])
    manifest, dtype = _new_manifest(cfg, ds, models, dist.world)
    root = Path(cfg.out)
    previous = dist.on_main(_prepare_out, root, manifest, cfg.resume, cfg.overwrite,
                            (*cfg.teachers, cfg.data))
    if previous is not None and previous["complete"]:
        return root  # --resume of a finished recording: nothing to do
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
            for params16, seeds, z in logits_over_rows(models, points, cfg.augment, cfg.seed,
                                                       todo, cfg.batch_size, cfg.combine, dev,
                                                       cfg.votes):
                rows = np.zeros(len(seeds), dtype)
                rows["params"] = params16.numpy()
                rows["seed"] = seeds.numpy().view(np.uint64)
                encode_logits(rows, z, manifest["logits"]["encoding"], cfg.topk)
                writer.write(rows)
                bar.update(len(rows))
                if _TEST_DELAY:
                    time.sleep(_TEST_DELAY)
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
    return root


def _new_manifest(cfg: RecordConfig, ds, models: list, world: int) -> tuple[dict, np.dtype]:
    """The manifest of a recording not yet begun (`complete: false`) and its row layout."""
    encoding = "topk" if cfg.topk else cfg.logits
    stored = len(cfg.teachers) if cfg.combine == "each" else 1
    dtype = row_dtype(ds.num_classes, encoding, cfg.topk, stored)
    total = cfg.k * len(ds)
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "pointkd_version": __version__,
        "created": _now(), "complete": False,
        "data": {"name": ds.name, "path": str(cfg.data), "fingerprint": ds.fingerprint(),
                 "num_shapes": len(ds), "num_classes": ds.num_classes,
                 "class_names": list(ds.class_names), "num_points": int(ds.points.shape[1]),
                 **_labels_entry(cfg.unlabelled)},
        "teachers": [t.entry for t in models],
        "augment": cfg.augment.to_dict(), "k": cfg.k, "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "logits": {"encoding": encoding, "topk": cfg.topk, "combine": cfg.combine,
                   "stored_teachers": stored, **_votes_entry(cfg.votes)},
        "row_dtype": dtype_descr(dtype), "bytes_per_row": dtype.itemsize, "total_rows": total,
        "shards": plan_shards(total, cfg.batch_size, world),
    }
    return manifest, dtype


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


def plan_shards(total: int, batch_size: int, world: int) -> list[dict]:
    """One contiguous row range per process, cut on the batch grid; empty ranges dropped."""
    batches = math.ceil(total / batch_size)
    per = math.ceil(batches / world) * batch_size
    return [{"file": shard_name(r), "row_start": r * per,
             "rows": min(total, (r + 1) * per) - r * per, "sha256": None}
            for r in range(world) if r * per < total]


# testing aid: seconds to sleep after each batch, so a test can kill a recording mid-run
_TEST_DELAY = float(os.environ.get("POINTKD_RECORD_DELAY", "0") or 0)


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
