"""`pointkd record`, `records verify`, `records info`.

Recording runs the teacher(s) once over K augmented copies of every training shape and
writes one row per copy. Everything random derives from (run seed, sample, k), the stored
fp16 parameters are exactly the ones applied, and batches lie on a fixed grid: so a run
killed at any moment and resumed gives a byte-identical shard.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from pointkd import __version__, augment
from pointkd.checkpoint import file_sha256, load_model, resolve_device
from pointkd.errors import RecordError
from pointkd.records.store import (
    FORMAT_VERSION,
    MANIFEST,
    PROGRESS,
    ShardWriter,
    encode_logits,
    open_records,
    read_manifest,
    row_dtype,
    write_json_atomic,
)

CLOUD_BYTES = 1024 * 3 * 4  # a stored 1,024-point float32 cloud


def _spec_from(config: str | None) -> augment.AugmentSpec:
    if not config:
        return augment.AugmentSpec()
    from pointkd.config import load_config

    return augment.AugmentSpec.from_config(load_config(config).augment)


def _prepare_out(out: Path, plan: dict, resume: bool, overwrite: bool) -> None:
    """Never silently overwrite; resume only the very same recording."""
    busy = out.exists() and any(out.iterdir())
    if resume:
        if not (out / PROGRESS).is_file():
            if (out / MANIFEST).is_file():
                raise RecordError(f"{out}: recording is already complete")
            raise RecordError(f"{out}: nothing to resume (no {PROGRESS})")
        old = read_json(out / PROGRESS)
        changed = sorted(k for k in plan if old.get(k) != plan[k])
        if changed:
            raise RecordError(f"{out}: --resume with different settings ({', '.join(changed)})")
        return
    if busy and not overwrite:
        raise RecordError(f"{out} is not empty (use --resume to continue or --overwrite)")
    if busy:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / PROGRESS, plan)


def read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        raise RecordError(f"{path}: unreadable") from None


def record(teachers: list[str], data: str, out: str, k: int = 10, seed: int = 0,
           logits: str = "int8", topk: int = 0, combine: str = "mean", batch_size: int = 64,
           device: str = "auto", resume: bool = False, overwrite: bool = False,
           augment_config: str | None = None, progress: bool = True) -> Path:
    from pointkd.data import load_split

    if k < 1 or batch_size < 1:
        raise RecordError("--k and --batch-size must be >= 1")
    dev = resolve_device(device)
    models, metas = zip(*(load_model(t, dev) for t in teachers), strict=True)
    ds = load_split(data, "train", num_points=metas[0].get("num_points"))
    for path, meta in zip(teachers, metas, strict=True):
        if meta["num_classes"] != ds.num_classes:
            raise RecordError(f"teacher {path} has {meta['num_classes']} classes, "
                              f"data {ds.num_classes}")
        names = meta.get("class_names")
        if names and list(names) != ds.class_names:
            raise RecordError(f"teacher {path} was trained on other class names than {data}")
    if topk and not 0 < topk < ds.num_classes:
        raise RecordError(f"--topk must be between 1 and {ds.num_classes - 1}")
    stored = len(teachers) if combine == "each" else 1
    dtype = row_dtype(ds.num_classes, logits, topk, stored)
    spec = _spec_from(augment_config)
    n, total = len(ds), len(ds) * k
    plan = {
        "format": "pointkd-records", "format_version": FORMAT_VERSION,
        "data": {"name": ds.name, "path": str(data), "fingerprint": ds.fingerprint(),
                 "num_shapes": n, "num_classes": ds.num_classes, "class_names": ds.class_names,
                 "num_points": int(ds.points.shape[1])},
        "teachers": [{"file": Path(t).name, "model": m["model"],
                      "model_kwargs": m.get("model_kwargs", {}), "sha256": file_sha256(t),
                      "num_classes": m["num_classes"]} for t, m in zip(teachers, metas,
                                                                      strict=True)],
        "augment": spec.to_dict(), "k": k, "seed": seed, "batch_size": batch_size,
        "logits": {"encoding": logits if not topk else "topk", "topk": topk,
                   "combine": combine, "stored_teachers": stored},
        "row_dtype": [list(map(str, f)) for f in dtype.descr], "bytes_per_row": dtype.itemsize,
        "total_rows": total,
    }
    out_dir = Path(out)
    _prepare_out(out_dir, plan, resume, overwrite)
    writer = ShardWriter(out_dir / "shard-00000.bin", dtype, batch_size, resume)
    points = torch.from_numpy(ds.points)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=writer.done, unit="row", desc="record",
                   dynamic_ncols=True)
    t0 = time.perf_counter()
    delay = float(os.environ.get("POINTKD_RECORD_DELAY", 0))  # testing aid: slow each batch
    with torch.inference_mode():
        for start in range(writer.done, total, batch_size):
            rows_id = torch.arange(start, min(start + batch_size, total))
            samples, ks = rows_id % n, rows_id // n
            params, seeds = augment.keyed_params(augment.row_keys(seed, samples, ks), spec)
            params16 = params.half()  # stored precision = applied precision
            x = augment.apply(points[samples].to(dev), params16.float().to(dev), seeds.to(dev),
                              spec)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                z = torch.stack([m(x).float() for m in models], dim=1).cpu().numpy()
            if combine != "each":
                z = z.mean(axis=1, keepdims=True)
            rows = np.zeros(len(rows_id), dtype)
            rows["params"] = params16.numpy()
            rows["seed"] = seeds.numpy().view(np.uint64)
            encode_logits(rows, z, logits, topk)
            writer.write(rows)
            if delay:
                time.sleep(delay)
            if bar is not None:
                bar.update(len(rows_id))
    if bar is not None:
        bar.close()
    writer.finalize()
    shard = {"file": writer.path.name, "row_start": 0, "rows": total,
             "sha256": file_sha256(writer.path)}
    manifest = {**plan, "pointkd_version": __version__, "complete": True, "shards": [shard],
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "record_seconds_last_session": time.perf_counter() - t0}
    write_json_atomic(out_dir / MANIFEST, manifest)
    (out_dir / PROGRESS).unlink()
    return out_dir


def verify(root: str, data: str | None = None, teachers: list[str] | None = None,
           config: str | None = None) -> str:
    """Re-check everything the manifest promises; the first problem is a RecordError."""
    rs = open_records(root)  # manifest, completeness, shard presence and sizes
    m = rs.manifest
    expected = m["k"] * m["data"]["num_shapes"]
    ranges = sorted((s["row_start"], s["rows"]) for s in m["shards"])
    cursor = 0
    for start, rows in ranges:
        if start != cursor:
            raise RecordError(f"{root}: shard row ranges overlap or leave a gap at row {cursor}")
        cursor += rows
    if cursor != expected or m["total_rows"] != expected:
        raise RecordError(f"{root}: {cursor} rows in shards, manifest total "
                          f"{m['total_rows']}, expected k x shapes = {expected}")
    for s in m["shards"]:
        if file_sha256(Path(root) / s["file"]) != s["sha256"]:
            raise RecordError(f"{root}: checksum mismatch in {s['file']} (corrupted)")
    if data is not None:
        from pointkd.data import load_split

        ds = load_split(data, "train", num_points=m["data"]["num_points"])
        open_records(root, data=ds)
    for t in teachers or []:
        if file_sha256(t) not in {x["sha256"] for x in m["teachers"]}:
            raise RecordError(f"{root}: records were not made with teacher {t} (sha256 differs)")
    if config is not None and _spec_from(config).to_dict() != rs.spec.to_dict():
        raise RecordError(f"{root}: records were made with another augmentation spec than "
                          f"{config}")
    return (f"OK: {root}: {len(rs)} rows ({m['k']} x {m['data']['num_shapes']} shapes), "
            f"{len(m['shards'])} shard(s), checksums match"
            + (", dataset matches" if data else "") + (", teacher matches" if teachers else ""))


def info(root: str) -> str:
    m = read_manifest(root)
    per_row = m["bytes_per_row"]
    size = sum((Path(root) / s["file"]).stat().st_size for s in m.get("shards", [])
               if (Path(root) / s["file"]).is_file())
    lg = m["logits"]
    enc = lg["encoding"] + (f" (top-{lg['topk']})" if lg["topk"] else "")
    spec = ", ".join(f"{k}={v}" for k, v in m["augment"].items())
    lines = [
        f"record set {root} ({'complete' if m.get('complete') else 'INCOMPLETE'})",
        f"  rows        {m['total_rows']} = K {m['k']} x {m['data']['num_shapes']} shapes",
        f"  data        {m['data']['name']} ({m['data']['num_classes']} classes, "
        f"{m['data']['num_points']} points, {m['data']['fingerprint'][:23]}…)",
        f"  bytes/row   {per_row} B per augmented sample (a stored 1,024-point float32 cloud: "
        f"{CLOUD_BYTES} B, {CLOUD_BYTES / per_row:.0f}x more)",
        f"  total size  {size / 1e6:.2f} MB in {len(m.get('shards', []))} shard(s)",
        f"  logits      {enc}, teachers combined: {lg['combine']}",
    ]
    for t in m["teachers"]:
        lines.append(f"  teacher     {t['model']} ({t['file']}, sha256 {t['sha256'][:12]}…)")
    lines.append(f"  augment     {spec}")
    lines.append(f"  seed        {m['seed']}")
    return "\n".join(lines)
