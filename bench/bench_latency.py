"""Inference latency of a student at batch 1 and 32: PyTorch eager, TorchScript (traced) and
ONNX Runtime, measured side by side in one run (backends alternate within each round).

    python bench/bench_latency.py --model student_s            # random weights: same speed
    python bench/bench_latency.py --checkpoint runs/s/best.pt
    POINTKD_NATIVE_OPS=1 python bench/bench_latency.py ...      # eager with the C++ kernels

Old/new ratios of the eager path at batch 1 and 32 are measured side by side by
`bench_speed.py --ref` (its infer_b1 / infer columns); this script compares backends.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name  # bench/machine.py (script dir on sys.path)

from pointkd.checkpoint import load_model, save_checkpoint
from pointkd.export import export_onnx
from pointkd.models import count_parameters, create_model


def timed(fn, x, iters: int) -> float:
    """Median seconds per call after two warm-up calls."""
    fn(x)
    fn(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="student_s")
    ap.add_argument("--checkpoint")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="bench/results/latency.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load_start = round(os.getloadavg()[0], 2)
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.checkpoint
        if ckpt is None:
            ckpt = f"{tmp}/m.pt"
            torch.manual_seed(0)
            m = create_model(args.model, 40).eval()
            save_checkpoint({"model": args.model, "model_kwargs": {}, "num_classes": 40,
                             "class_names": [str(i) for i in range(40)],
                             "num_points": args.num_points, "state_dict": m.state_dict()}, ckpt)
        model, meta = load_model(ckpt, "cpu")
        export_onnx(ckpt, f"{tmp}/m.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        session = ort.InferenceSession(f"{tmp}/m.onnx", opts, providers=["CPUExecutionProvider"])
        example = torch.rand(2, args.num_points, 3) * 2 - 1
        with torch.inference_mode():
            traced = torch.jit.freeze(torch.jit.trace(model, example, check_trace=False))

        def eager(x):
            with torch.inference_mode():
                return model(x)

        def script(x):
            with torch.inference_mode():
                return traced(x)

        def onnx(x):
            return session.run(None, {"points": x.numpy()})

        backends = {"pytorch_eager": eager, "torchscript": script, "onnxruntime": onnx}
        results: dict[str, dict[int, list[float]]] = {b: {1: [], 32: []} for b in backends}
        for _ in range(args.rounds):
            for batch in (1, 32):
                x = torch.rand(batch, args.num_points, 3) * 2 - 1
                for name, fn in backends.items():
                    results[name][batch].append(timed(fn, x, args.iters))
    table = {name: {f"batch{b}": {"ms_per_cloud": 1000 * statistics.median(v) / b,
                                  "clouds_per_s": b / statistics.median(v)}
                    for b, v in per.items()} for name, per in results.items()}
    out = {"model": meta["model"], "params": count_parameters(model),
           "num_points": args.num_points,
           "machine": {"cpu": cpu_name(), "threads": args.threads,
                       "loadavg_1min_at_start": load_start,
                       "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
                       "native_ops": os.environ.get("POINTKD_NATIVE_OPS") == "1",
                       "python": platform.python_version(), "torch": torch.__version__,
                       "onnxruntime": ort.__version__},
           "latency": table, "command": "python " + " ".join(sys.argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    for name, per in table.items():
        print(f"{name:14s} " + "  ".join(f"b={b[5:]}: {v['ms_per_cloud']:.2f} ms/cloud "
                                         f"({v['clouds_per_s']:.0f}/s)" for b, v in per.items()))


if __name__ == "__main__":
    np.random.seed(0)
    main()
