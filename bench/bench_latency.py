"""Inference latency of a student at batch 1 and 32: PyTorch eager, TorchScript (traced) and
ONNX Runtime, measured side by side in one run (backends alternate within each round).

Each backend runs in its own worker process: in one process, ONNX Runtime's worker threads
and the other backends' caches slowed eager PyTorch at batch 1 by ~40% (measured: 2.29 vs
1.64 ms, 1 thread). The OpenMP wait policy (`OMP_WAIT_POLICY`, inherited by the workers) is
recorded: with PASSIVE, idle threads sleep and each parallel op pays to wake them.

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
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name, native_ops_used  # bench/machine.py (script dir on sys.path)

from pointkd.checkpoint import load_model, save_checkpoint
from pointkd.models import count_parameters, create_model
from pointkd.stages.export import export_onnx

BACKENDS = ("pytorch_eager", "torchscript", "onnxruntime")


def timed(fn, x, iters: int) -> float:
    """Median seconds per call after five warm-up calls."""
    for _ in range(5):
        fn(x)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def env_prefix() -> str:
    """The environment settings the result depends on, as a command prefix."""
    return "".join(f"{k}={os.environ[k]} " for k in ("POINTKD_NATIVE_OPS", "OMP_WAIT_POLICY")
                   if k in os.environ)


def worker(args: argparse.Namespace) -> None:
    """One backend in this process: seconds per call at batch 1 and 32, as JSON on stdout."""
    torch.set_num_threads(args.threads)
    if args.worker.startswith("onnxruntime"):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = args.threads
        session = ort.InferenceSession(args.onnx, opts, providers=["CPUExecutionProvider"])

        def fn(x):
            return session.run(None, {"points": x.numpy()})
    else:
        model, _ = load_model(args.checkpoint, "cpu")
        if args.worker == "torchscript":
            with torch.inference_mode():
                model = torch.jit.freeze(torch.jit.trace(
                    model, torch.rand(2, args.num_points, 3) * 2 - 1, check_trace=False))

        def fn(x):
            with torch.inference_mode():
                return model(x)
    g = torch.Generator().manual_seed(0)
    out = {}
    for batch in (1, 32):
        x = torch.rand(batch, args.num_points, 3, generator=g) * 2 - 1
        out[batch] = timed(fn, x, args.iters)
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="student_s")
    ap.add_argument("--checkpoint")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="bench/results/latency.json")
    ap.add_argument("--onnx-samplers", nargs="*", default=[], metavar="SAMPLER",
                    help="students: also time ONNX exports with these anchor samplers "
                    "(`pointkd export --sampler`), as backends onnxruntime_<sampler>")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
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
        onnx = {"onnxruntime": f"{tmp}/m.onnx"}
        export_onnx(ckpt, onnx["onnxruntime"])
        for sampler in args.onnx_samplers:
            onnx[f"onnxruntime_{sampler}"] = f"{tmp}/m_{sampler}.onnx"
            export_onnx(ckpt, onnx[f"onnxruntime_{sampler}"], sampler=sampler)
        backends = [*BACKENDS, *(f"onnxruntime_{s}" for s in args.onnx_samplers)]
        results: dict[str, dict[int, list[float]]] = {b: {1: [], 32: []} for b in backends}
        for _ in range(args.rounds):
            for name in backends:
                cmd = [sys.executable, __file__, "--worker", name, "--checkpoint", ckpt,
                       "--onnx", onnx.get(name, ""), "--threads", str(args.threads),
                       "--iters", str(args.iters), "--num-points", str(args.num_points)]
                done = subprocess.run(cmd, check=True, capture_output=True, text=True)
                for batch, secs in json.loads(done.stdout.splitlines()[-1]).items():
                    results[name][int(batch)].append(secs)
    table = {name: {f"batch{b}": {"ms_per_cloud": 1000 * statistics.median(v) / b,
                                  "clouds_per_s": b / statistics.median(v)}
                    for b, v in per.items()} for name, per in results.items()}
    out = {"model": meta["model"], "params": count_parameters(model),
           "num_points": args.num_points,
           "machine": {"cpu": cpu_name(), "threads": args.threads,
                       "loadavg_1min_at_start": load_start,
                       "loadavg_1min_at_end": round(os.getloadavg()[0], 2),
                       "native_ops": native_ops_used(),
                       # PASSIVE: idle OpenMP threads sleep, and waking them costs each
                       # parallel op tens of µs, which shows at batch 1
                       "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
                       "python": platform.python_version(), "torch": torch.__version__,
                       "onnxruntime": ort.__version__},
           "latency": table, "command": env_prefix() + "python " + " ".join(sys.argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    for name, per in table.items():
        print(f"{name:14s} " + "  ".join(f"b={b[5:]}: {v['ms_per_cloud']:.2f} ms/cloud "
                                         f"({v['clouds_per_s']:.0f}/s)" for b, v in per.items()))


if __name__ == "__main__":
    np.random.seed(0)
    main()
