"""What a cheaper anchor sampler costs a student exported to ONNX (`pointkd export --sampler`):
test OA of the export with each sampler against the model as trained, and top-1 agreement, on
the whole test split. Latency of the same exports: `bench_latency.py --onnx-samplers`.

    python bench/export_samplers.py --checkpoint zoo/student_l_modelnet40_cpu.pt \\
        --data ../shared/data/modelnet40_1024 --json bench/results/export_samplers.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.data import load_split
from pointkd.stages.export import EXPORT_SAMPLERS, export_onnx


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default="bench/results/export_samplers.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    count = len(load_split(args.data, "test"))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for sampler in EXPORT_SAMPLERS:
            t0 = time.perf_counter()
            report = export_onnx(args.checkpoint, f"{tmp}/{sampler}.onnx", sampler=sampler,
                                 check_data=args.data, check_count=count)
            rows[sampler] = {"parity": report["parity"], "bytes": report["bytes"],
                             **report.get("sampler", {}), "seconds": time.perf_counter() - t0}
            print(sampler, json.dumps(rows[sampler]), flush=True)
    out = {"checkpoint": args.checkpoint, "test_shapes": count, "samplers": rows,
           "machine": {"cpu": cpu_name(), "threads": args.threads},
           "command": "python " + " ".join(sys.argv)}
    Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
