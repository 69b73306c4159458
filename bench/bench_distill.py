"""Step time and peak memory of plain, offline-KD and online-KD training, side by side.

Each mode runs the real training loop (`pointkd.training.loop.fit`, without the final test) in
its own child process, so peak RSS is per mode; modes are interleaved (A B C A B C ...) over
`--repeats` rounds so that machine noise hits them alike. Step time is the median over rounds
of the training epoch's seconds per step (validation excluded).

    python bench/bench_distill.py --data ../shared/data/modelnet40_1024 \
        --teacher runs/teacher/best.pt --records runs/records --student student_s

Repeat --teacher for an ensemble (online KD runs them all on every batch; --teacher-votes N
adds N rescaled views each, as `record --votes N` did for the records).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from machine import cpu_name  # bench/machine.py (script dir on sys.path)

MODES = ("plain", "offline", "online")


def worker(args: argparse.Namespace) -> None:
    """Child process: run `--steps` training steps in one mode, print JSON."""
    from pointkd.config.run import load_config
    from pointkd.stages import train
    from pointkd.training.loop import fit

    overrides = [f"data.path={args.data}", f"data.num_points={args.num_points}",
                 f"model.name={args.student}", "train.epochs=1",
                 f"train.max_steps_per_epoch={args.steps}", f"train.batch_size={args.batch_size}",
                 "train.progress=false", "train.device=cpu", f"out={args.out}",
                 "data.val_fraction=0.1", f"train.threads={args.threads}"]
    if args.worker == "offline":
        overrides += [f"distill.records={args.records}", f"distill.beta={args.beta}",
                      "distill.nwsd_warmup_epochs=0"]
    elif args.worker == "online":
        first, *extra = args.teacher
        overrides += ["distill.online=true", f"distill.teacher={first}",
                      f"distill.extra_teachers={json.dumps(extra)}",
                      f"distill.teacher_votes={args.teacher_votes}"]
    cfg = load_config(None, overrides)
    train.check(cfg)
    fit(cfg, overwrite=True)  # the loop alone: only the training epoch is timed
    history = json.loads((Path(args.out) / "metrics.json").read_text())
    seconds = history[-1]["epoch_seconds"]
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"mode": args.worker, "step_seconds": seconds / args.steps,
                      "peak_rss_mb": peak_kb / 1024}))


def child_args(args: argparse.Namespace) -> list[str]:
    """The options a worker gets: every setting of this run, lists as repeated options."""
    out: list[str] = []
    for k, v in vars(args).items():
        if k not in ("worker", "out", "json", "repeats"):
            for item in v if isinstance(v, list) else [v]:
                out += [f"--{k.replace('_', '-')}", str(item)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--teacher", action="append", required=True,
                    help="teacher checkpoint for online KD; repeat for an ensemble")
    ap.add_argument("--teacher-votes", type=int, default=0)
    ap.add_argument("--records", required=True)
    ap.add_argument("--student", default="student_s")
    ap.add_argument("--num-points", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--beta", type=float, default=-0.1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default="bench/results/distill_efficiency.json")
    ap.add_argument("--worker", choices=MODES, help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)

    runs: dict[str, list[dict]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for mode in MODES:
                cmd = [sys.executable, __file__, "--worker", mode, "--out", f"{tmp}/{mode}",
                       *child_args(args)]
                line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
                runs[mode].append(json.loads(line.strip().splitlines()[-1]))
                print(f"round {r + 1} {mode}: {runs[mode][-1]}", flush=True)
    step = {m: statistics.median(x["step_seconds"] for x in runs[m]) for m in MODES}
    rss = {m: statistics.median(x["peak_rss_mb"] for x in runs[m]) for m in MODES}
    result = {
        "machine": {"cpu": cpu_name(), "threads": args.threads,
                    "python": platform.python_version()},
        "setup": {k: v for k, v in vars(args).items() if k not in ("worker", "out", "json")},
        "step_seconds": step, "peak_rss_mb": rss, "runs": runs,
        "ratios": {"offline_over_plain_step": step["offline"] / step["plain"],
                   "online_over_offline_step": step["online"] / step["offline"],
                   "offline_over_plain_rss": rss["offline"] / rss["plain"],
                   "online_over_plain_rss": rss["online"] / rss["plain"]},
        "command": "python " + " ".join(sys.argv),
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(json.dumps(result["ratios"], indent=1))


if __name__ == "__main__":
    main()
