"""Record size per encoding, and recording throughput against the teacher's forward-only
throughput at the same batch size, measured side by side in one run (alternating rounds).

    python bench/bench_records.py --teacher runs/teacher_pointnet/best.pt \
        --data ../shared/data/modelnet40_1024
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from pointkd.checkpoint import load_model
from pointkd.data import load_split
from pointkd.records import read_manifest, record, row_dtype
from pointkd.records.recorder import CLOUD_BYTES


def sizes(num_classes: int) -> dict[str, int]:
    out = {enc: row_dtype(num_classes, enc).itemsize for enc in ("fp32", "fp16", "int8")}
    for k in (5, 10):
        out[f"top{k}"] = row_dtype(num_classes, "int8", topk=k).itemsize
    return out


def forward_only(model, points: torch.Tensor, batch_size: int) -> float:
    """Rows/s of the bare teacher forward on in-memory clouds (no augmentation, no I/O)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(points), batch_size):
            model(points[i : i + batch_size])
    return len(points) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="bench/results/records.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, meta = load_model(args.teacher, "cpu")
    ds = load_split(args.data, "train", num_points=meta.get("num_points"))
    points = torch.from_numpy(ds.points)
    fwd, rec = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            fwd.append(forward_only(model, points, args.batch_size))
            out = Path(tmp) / f"r{r}"
            record(teachers=[args.teacher], data=args.data, out=str(out), k=1, seed=r,
                   logits="int8", topk=0, combine="mean", batch_size=args.batch_size,
                   device="cpu", resume=False, overwrite=False, augment_config=None,
                   progress=False)
            rec.append(len(ds) / read_manifest(out)["record_seconds_last_session"])
            print(f"round {r + 1}: forward-only {fwd[-1]:.0f} rows/s, "
                  f"recording {rec[-1]:.0f} rows/s", flush=True)
    bytes_per_row = sizes(ds.num_classes)
    result = {
        "machine": {"cpu": _cpu_name(), "threads": args.threads,
                    "python": platform.python_version(), "torch": torch.__version__},
        "teacher": meta["model"], "data": ds.name, "rows_per_round": len(ds),
        "batch_size": args.batch_size,
        "bytes_per_row": bytes_per_row, "cloud_bytes": CLOUD_BYTES,
        "compression_vs_cloud": {k: CLOUD_BYTES / v for k, v in bytes_per_row.items()},
        "forward_rows_per_s": fwd, "record_rows_per_s": rec,
        "record_over_forward": statistics.median(rec) / statistics.median(fwd),
        "command": "python " + " ".join(sys.argv),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("bytes_per_row", "record_over_forward")}))


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
