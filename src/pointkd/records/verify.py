"""`pointkd records verify` and `pointkd records info`."""

from __future__ import annotations

from pathlib import Path

from pointkd.records.format import CLOUD_BYTES
from pointkd.records.manifest import read_manifest


def teacher_label(t: dict) -> str:
    """How `info` names a manifest teacher entry (entries without `kind` are pointkd's)."""
    kind = t.get("kind", "pointkd")
    if kind == "module":
        return f"{t['entry']} (module, weights {t['file']}, sha256 {t['sha256'][:12]}…)"
    if kind == "onnx":
        return f"{t['file']} (onnx, sha256 {t['sha256'][:12]}…)"
    return f"{t['model']} ({t['file']}, sha256 {t['sha256'][:12]}…)"


def info(root: str) -> str:
    """A human-readable summary of a record set (complete or still being recorded)."""
    m = read_manifest(root)
    root_path, per_row, total = Path(root), m["bytes_per_row"], m["total_rows"]
    size, written = 0, 0
    for s in m["shards"]:
        for name in (s["file"], s["file"] + ".partial"):
            if (root_path / name).is_file():
                size += (root_path / name).stat().st_size
                written += min((root_path / name).stat().st_size // per_row, s["rows"])
    lg, d = m["logits"], m["data"]
    encoding = f"top-{lg['topk']} (fp16 values + tail log-sum-exp)" if lg["topk"] else \
        lg["encoding"]
    if len(m["teachers"]) > 1:
        encoding += f", {len(m['teachers'])} teachers: " + (
            "each stored" if lg["combine"] == "each" else "mean stored")
    if lg.get("votes"):
        low, high = lg["vote_scale"]
        encoding += (f", each teacher voted: mean over the replayed cloud and {lg['votes']} "
                     f"views scaled by U({low}, {high}) per axis")
    status = "complete" if m["complete"] else f"INCOMPLETE: {written} of {total} rows written " \
        "(continue with `pointkd record ... --resume`)"
    spec = ", ".join(f"{k}={v}" for k, v in m["augment"].items())
    lines = [
        f"record set {root} ({status})",
        f"  rows        {total:,} = K {m['k']} x {d['num_shapes']:,} shapes (seed {m['seed']})",
        f"  data        {d['name']}: {d['num_classes']} classes, {d['num_points']} points, "
        f"{d['fingerprint'][:19]}…",
        *(["  labels      withheld: students get the KD terms only on these rows"]
          if d.get("labels", True) is False else []),
        f"  row         {per_row} B per augmented sample vs {CLOUD_BYTES:,} B for a stored "
        f"1,024-point float32 cloud ({CLOUD_BYTES / per_row:.0f}x smaller)",
        f"  size        {size / 1e6:.2f} MB in {len(m['shards'])} shard(s)",
        f"  logits      {encoding}",
    ]
    lines += [f"  teacher     {teacher_label(t)}" for t in m["teachers"]]
    lines.append(f"  augment     {spec}")
    return "\n".join(lines)
