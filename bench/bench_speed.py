"""Train and inference throughput of every registered model at 1,024 points.

For each model: samples/s of a training step (batch 16: forward, backward, AdamW step) and of
inference (batch 32, eval mode, `torch.inference_mode`), after a warm-up, with as many timed
iterations as fit in a per-model time budget (at least one). For models that sample/group
points, the share of forward time spent in the ops of `pointkd.models.ops` (FPS, kNN, ball
query, gathers) is measured with its zero-cost-when-off timer.

Inputs are real ModelNet40 test shapes when ../shared/data/modelnet40_1024 exists (neighbour
counts depend on the point distribution), else points on a noisy unit sphere.

    python bench/bench_speed.py                      # all models → bench/results/speed.json
    python bench/bench_speed.py --models dgcnn pointnet2_ssg --budget 20
    python bench/bench_speed.py --ref ../wt-ref/src --models student_s --threads 1
        # side by side against another source tree → bench/results/speed_vs_ref.json

With `--ref`, each model is timed by both source trees in turn (separate processes, the
order alternating every round, same inputs, same threads): train step at the train batch,
inference at batch 1 and at the inference batch. Ratios are old time / new time per round,
reported as medians; both processes also write the model's logits for the same weights and
input (eval mode, and train mode for one step's gradients), compared as max |difference|.

Results for models not re-run are kept from the existing JSON, so families can be measured
separately. Timings need a quiet machine: each model records the 1-minute load average, and
on a shared CPU `OMP_WAIT_POLICY=PASSIVE` stops two-thread runs losing ~20× to OpenMP threads
spinning while the other process holds the core.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from machine import native_ops_used  # bench/machine.py (script dir on sys.path)

from pointkd.models import count_parameters, create_model, list_models, ops

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("POINTKD_MODELNET", REPO.parent / "shared/data/modelnet40_1024"))

# Public implementations on a 2-core CPU (issue text): samples/s (train b16, inference b32).
REFERENCE = {
    "pointnet_tnet": {"name": "PointNet", "train": 9.2, "infer": 29.0},
    "pointnet2_ssg": {"name": "PointNet++ SSG", "train": 1.8, "infer": 6.5},
    "dgcnn": {"name": "DGCNN", "train": 0.76, "infer": 1.9},
    "pointmlp_elite": {"name": "PointMLP-elite", "train": 2.6, "infer": 5.6},
    "pointmlp": {"name": "PointMLP", "train": 0.31, "infer": 1.3},
}
NOTES = {
    "pointnet_tnet": "public PointNet implementations include both T-Nets",
    "pointnet": "no T-Nets; compare with the 'pointnet_tnet' row for the public PointNet",
}


def machine_info() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or cpu
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(), "usable_cores": affinity,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "python": platform.python_version(), "platform": platform.platform(),
        # on a shared CPU, spinning OpenMP threads of competing processes cost up to 20×:
        # record the policy (OMP_WAIT_POLICY=PASSIVE avoids it) and the load at the start
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
        "loadavg_1min_at_start": round(os.getloadavg()[0], 2),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def keep_freed_memory() -> bool:
    """glibc: serve big blocks from the heap and never trim it, so tensors freed by one step are
    reused by the next instead of being unmapped and page-faulted in again (large tensors are
    mmap-ed by default). A process-wide allocator setting, off by default; returns success.
    The same as `pointkd.cpu.keep_freed_memory`, kept here so that side-by-side workers can
    apply it in source trees that predate that module."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_trim_threshold, m_mmap_max = -1, -4
        return bool(libc.mallopt(m_mmap_max, 0)) and bool(libc.mallopt(m_trim_threshold, 2**30))
    except (OSError, AttributeError):
        return False


def load_points(n: int, points: int) -> tuple[torch.Tensor, str]:
    path = DATA / "test.h5"
    if path.is_file() and points == 1024:
        import h5py

        with h5py.File(path, "r") as f:
            return torch.from_numpy(f["data"][:n]).float(), f"ModelNet40 test[:{n}]"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, points, 3, generator=g)
    x = x / x.norm(dim=-1, keepdim=True) + 0.02 * torch.randn(n, points, 3, generator=g)
    return x, "synthetic noisy unit sphere"


def _repeat(fn, budget: float, max_iters: int) -> list[float]:
    """Run fn once to warm up, then time it until budget seconds or max_iters (≥ 1 run)."""
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while not times or (time.perf_counter() - start < budget and len(times) < max_iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def bench_model(name: str, x_train, y_train, x_infer, budget: float, max_iters: int) -> dict:
    torch.manual_seed(0)
    model = create_model(name, 40)
    result: dict = {"params": count_parameters(model)}

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    fwd: list[tuple[float, float]] = []

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        with ops.op_timing() as op_t:
            t = time.perf_counter()
            logits = model(x_train)
            fwd.append((time.perf_counter() - t, sum(op_t.values())))
        F.cross_entropy(logits, y_train).backward()
        opt.step()

    times = _repeat(train_step, budget / 2, max_iters)
    fwd = fwd[1:]  # drop the warm-up
    result["train_samples_per_s"] = len(x_train) / (sum(times) / len(times))
    result["train_iters"] = len(times)
    train_fwd = sum(f for f, _ in fwd)
    result["train_forward_share_of_step"] = train_fwd / sum(times)
    result["grouping_fraction_train_forward"] = sum(o for _, o in fwd) / train_fwd

    model.eval()
    op_runs: list[dict[str, float]] = []

    def infer() -> None:
        with torch.inference_mode(), ops.op_timing() as op_t:
            model(x_infer)
        op_runs.append(dict(op_t))

    times = _repeat(infer, budget / 2, max_iters)
    op_seconds: dict[str, float] = {}
    for run in op_runs[1:]:  # drop the warm-up
        for k, v in run.items():
            op_seconds[k] = op_seconds.get(k, 0.0) + v
    total = sum(times)
    result["infer_samples_per_s"] = len(x_infer) / (total / len(times))
    result["infer_iters"] = len(times)
    result["grouping_fraction_infer"] = sum(op_seconds.values()) / total
    result["op_share_infer"] = {k: v / total for k, v in sorted(op_seconds.items())}
    ref = REFERENCE.get(name)
    if ref:
        result["reference"] = ref
        result["ratio_train"] = result["train_samples_per_s"] / ref["train"]
        result["ratio_infer"] = result["infer_samples_per_s"] / ref["infer"]
    if name in NOTES:
        result["note"] = NOTES[name]
    return result


def _seconds(fn, iters: int) -> tuple[float, float]:
    """Median wall and median CPU seconds of fn over iters calls, after one warm-up call."""
    fn()
    wall, cpu = [], []
    for _ in range(iters):
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def worker(name: str, x_train, y_train, x_infer, iters: int, out: Path) -> None:
    """One side of a side-by-side round: times and outputs of `name` in this source tree."""
    torch.manual_seed(0)
    model = create_model(name, 40)
    # the same weights in both trees: a checksum of the state dict proves it
    checksum = sum(float(v.double().sum()) for v in model.state_dict().values())
    model.eval()
    with torch.inference_mode():
        eval_logits = model(x_infer)
    model.train()
    torch.manual_seed(1)
    F.cross_entropy(model(x_train), y_train).backward()
    grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step() -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x_train), y_train).backward()
        opt.step()

    result = {"checksum": checksum, "train": _seconds(train_step, iters)}
    model.eval()
    for key, x in (("infer_b1", x_infer[:1]), ("infer", x_infer)):
        def infer(x=x) -> None:
            with torch.inference_mode():
                model(x)
        result[key] = _seconds(infer, iters)
    torch.save({"eval_logits": eval_logits, "grads": grads, **result}, out)


def _commit(tree: Path) -> str | None:
    """The git commit of a source tree (`-dirty` with uncommitted changes), if it is one."""
    try:
        out = subprocess.run(["git", "-C", str(tree), "describe", "--always", "--dirty"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip() or None


def side_by_side(args, names: list[str]) -> dict:
    """Alternating rounds of `worker` in the reference tree and in this one."""
    trees = {"ref": str(Path(args.ref).resolve()), "new": str(REPO / "src")}
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # recorded by machine_info
    env = dict(os.environ)
    report: dict = {"machine": machine_info(), "trees": trees, "models": {},
                    "commits": {side: _commit(Path(tree)) for side, tree in trees.items()}}
    for name in names:
        runs: dict[str, list[dict]] = {"ref": [], "new": []}
        load = [round(os.getloadavg()[0], 2)]
        with tempfile.TemporaryDirectory() as tmp:
            for r in range(args.rounds):
                for side in (("ref", "new") if r % 2 == 0 else ("new", "ref")):
                    out = Path(tmp) / f"{side}{r}.pt"
                    cmd = [sys.executable, __file__, "--worker", name, "--worker-out", str(out),
                           "--iters", str(args.iters), "--train-batch", str(args.train_batch),
                           "--infer-batch", str(args.infer_batch), "--points", str(args.points)]
                    if args.threads:
                        cmd += ["--threads", str(args.threads)]
                    if args.keep_freed_memory or (side == "new" and args.keep_freed_memory_new):
                        cmd += ["--keep-freed-memory"]
                    subprocess.run(cmd, env={**env, "PYTHONPATH": trees[side]}, check=True)
                    runs[side].append(torch.load(out))
                load.append(round(os.getloadavg()[0], 2))
        ref, new = runs["ref"][0], runs["new"][0]
        entry: dict = {
            "same_weights": ref["checksum"] == new["checksum"],
            "max_abs_diff_eval_logits": float(
                (ref["eval_logits"] - new["eval_logits"]).abs().max()),
            "max_abs_diff_grads": float((ref["grads"] - new["grads"]).abs().max()),
            "max_abs_grad": float(ref["grads"].abs().max()),
            "loadavg_1min_per_round": load,
            "command": "python " + " ".join(sys.argv),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
        for key in ("train", "infer_b1", "infer"):
            for i, clock in enumerate(("wall", "cpu")):
                per_round = [a[key][i] / b[key][i] for a, b in zip(runs["ref"], runs["new"],
                                                                   strict=True)]
                entry[f"{key}_speedup_{clock}"] = statistics.median(per_round)
                entry[f"{key}_speedup_{clock}_rounds"] = [round(v, 3) for v in per_round]
            for side in ("ref", "new"):
                entry[f"{key}_seconds_{side}"] = statistics.median(x[key][0] for x in runs[side])
        report["models"][name] = entry
        print(f"{name:16s} train ×{entry['train_speedup_wall']:.2f} (cpu ×"
              f"{entry['train_speedup_cpu']:.2f})  infer b1 ×{entry['infer_b1_speedup_wall']:.2f}"
              f"  infer b{args.infer_batch} ×{entry['infer_speedup_wall']:.2f}  "
              f"max|Δlogits| {entry['max_abs_diff_eval_logits']:.1e}", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="*", help="default: every registered model")
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--infer-batch", type=int, default=32)
    p.add_argument("--budget", type=float, default=30.0, help="seconds per model (approx.)")
    p.add_argument("--max-iters", type=int, default=10)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="glibc mallopt: reuse freed heap memory (see keep_freed_memory)")
    p.add_argument("--keep-freed-memory-new", action="store_true",
                   help="--ref: the allocator setting in the new tree's worker only (as "
                   "`pointkd.cpu.keep_freed_memory` in the new code's training path)")
    p.add_argument("--out", type=Path, help="default: bench/results/speed.json, or "
                   "speed_vs_ref.json with --ref")
    p.add_argument("--ref", help="source tree (…/src) of the code to compare with, side by side")
    p.add_argument("--rounds", type=int, default=4, help="--ref: alternating rounds")
    p.add_argument("--iters", type=int, default=5, help="--ref: timed calls per round")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    malloc = "default"
    if args.keep_freed_memory:
        malloc = "keep freed (mallopt)" if keep_freed_memory() else "default (mallopt failed)"

    known = list_models()
    names = args.models or known
    unknown = sorted(set(names) - set(known))
    if unknown:
        print(f"unknown models: {', '.join(unknown)} (known: {', '.join(known)})", file=sys.stderr)
        return 2
    x, source = load_points(max(args.train_batch, args.infer_batch), args.points)
    x_train, x_infer = x[: args.train_batch].contiguous(), x[: args.infer_batch].contiguous()
    y_train = torch.arange(args.train_batch) % 40
    if args.worker:
        worker(args.worker, x_train, y_train, x_infer, args.iters, args.worker_out)
        return 0
    if args.ref:
        report = side_by_side(args, names)
        report["config"] = {"points": args.points, "train_batch": args.train_batch,
                            "infer_batch": args.infer_batch, "optimizer": "AdamW",
                            "input": source, "rounds": args.rounds, "iters": args.iters,
                            "threads": torch.get_num_threads(),
                            # pointkd.models.kernels (new tree only)
                            "native_ops": native_ops_used(),
                            "malloc": ("keep freed (mallopt), both trees"
                                       if args.keep_freed_memory else
                                       "keep freed (mallopt), new tree only"
                                       if args.keep_freed_memory_new else "default")}
        report["command"] = "python " + " ".join(sys.argv)
        out = args.out or REPO / "bench/results/speed_vs_ref.json"
        previous = json.loads(out.read_text()) if out.is_file() else {}
        for name, entry in previous.get("models", {}).items():  # keep models not re-run
            report["models"].setdefault(name, entry)
        out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        return 0
    args.out = args.out or REPO / "bench/results/speed.json"

    report = {"models": {}}
    if args.out.is_file():
        report = json.loads(args.out.read_text())
    report.update(
        machine=machine_info(),
        config={
            "points": args.points, "train_batch": args.train_batch,
            "infer_batch": args.infer_batch, "optimizer": "AdamW", "input": source,
            "budget_s_per_model": args.budget, "max_iters": args.max_iters, "malloc": malloc,
        },
        reference=REFERENCE,
        command="python " + " ".join(sys.argv),
    )
    for name in names:
        t = time.perf_counter()
        load_before = os.getloadavg()[0]
        try:
            r = bench_model(name, x_train, y_train, x_infer, args.budget, args.max_iters)
        except Exception as exc:  # one broken model must not lose the others' results
            report["models"][name] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{name:16s} FAILED: {exc}", file=sys.stderr, flush=True)
            continue
        r["bench_seconds"] = time.perf_counter() - t
        # other processes on the machine skew timings: keep the 1-minute load as evidence
        r["loadavg_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        report["models"][name] = r
        ratio = (f"  ×{r['ratio_train']:.1f} / ×{r['ratio_infer']:.1f} vs public"
                 if "reference" in r else "")
        print(f"{name:16s} train {r['train_samples_per_s']:7.2f}/s  "
              f"infer {r['infer_samples_per_s']:7.2f}/s  "
              f"grouping {100 * r['grouping_fraction_infer']:4.1f}%{ratio}", flush=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
