"""ModelNet40 student protocol (issue #6): plain / offline KD / KD + NWSD (β sweep) / K ablation
/ record-encoding ablation, over seeds, as a resumable queue of `pointkd` runs.

Each run is a real CLI command (`pointkd train` or `pointkd distill`) in its own process with
one torch thread; `--workers` runs go side by side. A finished run's results.json is copied,
with its command, machine and wall time, to `bench/results/students/<run>.json`; the queue
skips those, resumes runs that have a last.pt, and can be stopped and restarted at any time.

Example (the committed results):
  python bench/bench_students.py --records runs/mn40/rec_pointnet_k10 \
      --modes plain kd nwsd-0.1 nwsd-0.3 --seeds 0 1 2 --workers 2
Modes: plain | online | kd | nwsd-<|β|>, then optional options -k<N> (distill.use_k=N) and
-t<τ> (distill.tau), e.g. `kd-t1`, `nwsd-0.3-t2`, `kd-k3`. `online` is classic online KD from
--teacher (teacher in memory, β = 0). Any offline mode may end in @<tag> to distill from the
record set --extra-records tag=DIR instead (other logits encodings, another teacher). Runs
whose record set is still being written wait for its manifest to be complete. --set KEY=VALUE
overrides go to every run (e.g. distill.tau=1 for a whole protocol).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name

REPO = Path(__file__).resolve().parents[1]


def records_of(mode: str, args: argparse.Namespace) -> str | None:
    """The record set a mode distills from (None for plain training)."""
    if kind(mode) in ("plain", "online"):
        return None
    _, tag = split_mode(mode)
    return dict(t.split("=", 1) for t in args.extra_records)[tag] if tag else args.records


def kind(mode: str) -> str:
    """'nwsd-0.3-t1@ens3' -> 'nwsd'."""
    return mode.partition("@")[0].split("-")[0]


def split_mode(mode: str) -> tuple[str, str]:
    """'nwsd-0.3@ens3' -> ('nwsd-0.3', 'ens3'); a mode without '@' uses --records."""
    base, _, tag = mode.partition("@")
    return base, tag


def records_ready(mode: str, args: argparse.Namespace) -> bool:
    """Whether a mode's record set is complete (a recording may still be writing it)."""
    records = records_of(mode, args)
    if records is None:
        return True
    manifest = Path(records) / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("complete", False)


def mode_overrides(base: str) -> list[str]:
    """`nwsd-0.3-k3-t1` -> distill overrides: β = -0.3, use_k = 3, τ = 1."""
    kind, *opts = base.split("-")
    if kind == "nwsd" and opts:
        beta = -float(opts.pop(0))
        extra = [f"distill.beta={beta}"]
    elif kind in ("kd", "online"):
        extra = ["distill.beta=0"]
    else:
        raise SystemExit(f"unknown mode {base}")
    for opt in opts:
        if opt.startswith("k") and opt[1:].isdigit():
            extra.append(f"distill.use_k={int(opt[1:])}")
        elif opt.startswith("t"):
            extra.append(f"distill.tau={float(opt[1:])}")
        else:
            raise SystemExit(f"unknown option -{opt} in mode {base}")
    return extra


def command(mode: str, seed: int, args: argparse.Namespace, out: Path) -> list[str]:
    """The pointkd command line of one run (without --resume/--overwrite)."""
    common = ["--config", args.config, "--data", args.data, "--out", str(out),
              "--seed", str(seed), "--epochs", str(args.epochs), "train.threads=1",
              "train.progress=false", f"model.name={args.student}", *args.set]
    if kind(mode) == "plain":
        return ["train", *common]
    base, _ = split_mode(mode)
    extra = mode_overrides(base)
    if kind(mode) == "nwsd":
        extra.append(f"distill.nwsd_warmup_epochs={args.nwsd_warmup}")
    if kind(mode) == "online":
        teachers = [a for t in args.teacher for a in ("--teacher", t)]  # several: an ensemble
        return ["distill", "--online", *teachers, *common, *extra]
    return ["distill", "--records", str(records_of(mode, args)), *common, *extra]


def run_one(mode: str, seed: int, args: argparse.Namespace) -> subprocess.Popen | None:
    name = f"{mode}-s{seed}"
    if (Path(args.results) / f"{name}.json").is_file():
        return None
    out = Path(args.runs) / name
    if (out / "results.json").is_file():
        collect(mode, seed, args, out, 0.0)
        return None
    cmd = command(mode, seed, args, out)
    resume = (out / "last.pt").is_file()
    if out.exists() and not resume:
        shutil.rmtree(out)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE",
           "PYTHONPATH": str(REPO / "src")}
    out.parent.mkdir(parents=True, exist_ok=True)
    log = open(Path(args.runs) / f"{name}.log", "a")
    print(f"start {name}{' (resume)' if resume else ''}: pointkd {' '.join(cmd)}", flush=True)
    proc = subprocess.Popen([sys.executable, "-m", "pointkd", *cmd,
                             *(["--resume"] if resume else [])], env=env, cwd=REPO,
                            stdout=log, stderr=subprocess.STDOUT)
    proc.meta = (mode, seed, out, time.perf_counter())  # type: ignore[attr-defined]
    return proc


def last_epoch_test(out: Path, data: str) -> dict:
    """Test OA / mAcc of the run's final-epoch weights (`last.pt`), beside those of the
    best-validation epoch: "the last epoch" is a rule fixed in advance, while validation picks
    among late epochs whose differences are within its own noise (985 shapes)."""
    last, dest = out / "last.pt", out / "eval_last"
    if not last.is_file():
        return {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-m", "pointkd", "eval", str(last), "--data", data,
                    "--threads", "1", "--no-latency", "--out", str(dest)], check=True, env=env,
                   cwd=REPO, stdout=subprocess.DEVNULL)
    view = json.loads((dest / "eval_test.json").read_text())["single_view"]
    return {"test_oa_last": view["oa"], "test_macc_last": view["macc"]}


def backfill_last(args: argparse.Namespace) -> None:
    """Adds the last-epoch test numbers to finished runs' JSON that lack them."""
    for path in sorted(Path(args.results).glob("*.json")):
        record = json.loads(path.read_text())
        out = Path(args.runs) / record["run"]
        if "test_oa_last" in record or not (out / "last.pt").is_file():
            continue
        record.update(last_epoch_test(out, args.data))
        path.write_text(json.dumps(record, indent=1))
        print(f"{record['run']}: last-epoch test OA {100 * record['test_oa_last']:.2f}%",
              flush=True)


def collect(mode: str, seed: int, args: argparse.Namespace, out: Path, wall: float) -> None:
    results = json.loads((out / "results.json").read_text())
    results.pop("test_per_class", None)
    results.update(last_epoch_test(out, args.data))
    with (out / "metrics.csv").open() as f:  # the curve shows whether the schedule was long enough
        rows = list(csv.DictReader(f))
    results["val_oa_curve"] = [round(float(r["val_oa"]), 5) for r in rows]
    seconds = [float(r["epoch_seconds"]) for r in rows]
    results["epoch_seconds_mean"] = sum(seconds) / len(seconds)
    # the median ignores epochs that also count a pause (a SIGSTOP for a timing elsewhere)
    results["epoch_seconds_median"] = statistics.median(seconds)
    cmd = "pointkd " + " ".join(command(mode, seed, args, out))
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    record = {**results, "run": f"{mode}-s{seed}", "mode": mode, "loop": results["mode"],
              "seed": seed, "command": cmd,
              "machine": f"{cpu_name()}, 1 torch thread per run, {args.workers} run(s) side "
                         "by side in this queue on 2 cores (other queues may share them)",
              "records": records_of(mode, args),
              "teacher": " + ".join(args.teacher) if kind(mode) == "online" else None}
    if wall:
        record["wall_seconds_last_session"] = wall
    (results_dir / f"{mode}-s{seed}.json").write_text(json.dumps(record, indent=1))
    print(f"done {mode}-s{seed}: test OA {100 * results['test_oa']:.2f}%", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", help="record set for the offline KD runs")
    ap.add_argument("--teacher", action="append", default=[],
                    help="teacher checkpoint for the `online` mode; repeat for an ensemble "
                         "(mean logits; --set distill.teacher_votes=N for its votes)")
    ap.add_argument("--extra-records", nargs="*", default=[], metavar="TAG=DIR")
    ap.add_argument("--data", default="../shared/data/modelnet40_1024")
    ap.add_argument("--config", default="configs/modelnet40_distill_cpu.yaml")
    ap.add_argument("--student", default="student_s")
    ap.add_argument("--modes", nargs="+", default=["plain", "kd", "nwsd-0.1", "nwsd-0.3"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--nwsd-warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--runs", default="runs/mn40/students")
    ap.add_argument("--results", default=str(REPO / "bench" / "results" / "students"),
                    help="where each finished run's JSON goes")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="config overrides for every run")
    ap.add_argument("--backfill-last", action="store_true",
                    help="only add the last-epoch test numbers to finished runs' JSON")
    args = ap.parse_args()
    if args.backfill_last:
        return backfill_last(args)
    tags = {t.split("=", 1)[0] for t in args.extra_records if "=" in t}
    for mode in args.modes:
        if mode != "plain":
            mode_overrides(split_mode(mode)[0])  # fail now on a typo, not hours later
    if any(kind(m) == "online" for m in args.modes) and not args.teacher:
        raise SystemExit("the online mode needs --teacher")
    if any(kind(m) in ("kd", "nwsd") and not split_mode(m)[1] for m in args.modes) \
            and not args.records:
        raise SystemExit("offline KD modes need --records")
    unknown = {split_mode(m)[1] for m in args.modes} - tags - {""}
    if unknown:
        raise SystemExit(f"modes name record sets not given by --extra-records: {sorted(unknown)}")
    queue = [(m, s) for s in args.seeds for m in args.modes]  # seed-major: every mode early
    running: list[subprocess.Popen] = []
    while queue or running:
        while len(running) < args.workers:
            ready = [job for job in queue if records_ready(job[0], args)]
            if not ready:  # the rest waits for record sets still being written
                break
            queue.remove(ready[0])
            proc = run_one(*ready[0], args)
            if proc is not None:
                running.append(proc)
        time.sleep(5)
        for proc in [p for p in running if p.poll() is not None]:
            running.remove(proc)
            mode, seed, out, t0 = proc.meta  # type: ignore[attr-defined]
            if proc.returncode == 0:
                collect(mode, seed, args, out, time.perf_counter() - t0)
            else:
                print(f"FAILED {mode}-s{seed} (exit {proc.returncode}); see its log", flush=True)


if __name__ == "__main__":
    main()
