"""`pointkd demo`: the whole pipeline on the built-in synthetic dataset, in a few minutes.

teacher -> record K augmented copies -> three students from the same seed and budget:
no KD, offline KD, offline KD + NWSD -> a comparison table and plots in the run directory.
Every stage is the same function the CLI calls; nothing here is demo-only logic.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pointkd import rundir
from pointkd.config import load_config
from pointkd.data import describe, load_split, save_preview
from pointkd.engine import run_training
from pointkd.records import info, record

DEMO_CONFIG = "configs/synthetic_demo.yaml"

# (label, mode, overrides); mode decides whether records are used
STUDENT_RUNS = [
    ("no KD", "plain", ["distill.alpha=0.0", "distill.beta=0.0"]),
    ("offline KD", "offline", ["distill.beta=0.0"]),
    ("offline KD + NWSD", "offline", []),
]


def run_demo(out: str | Path = "runs/demo", quick: bool = False,
             config: str | Path = DEMO_CONFIG) -> list[dict]:
    out = rundir.check_output_path(out)  # never ., /, home, a file; its runs are locked
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    base = ["train.progress=false"] + (["train.epochs=2", "train.max_steps_per_epoch=3"]
                                       if quick else [])
    cfg = load_config(config, base)
    data = cfg.data.path

    print("== 1/4 data: built-in synthetic dataset")
    print(describe(data, num_points=cfg.data.num_points))
    save_preview(load_split(data, "train", num_points=cfg.data.num_points), out / "samples.png")

    teacher_name = "student_m"
    print(f"\n== 2/4 teacher: {teacher_name}")
    t0 = time.perf_counter()
    teacher = run_training(load_config(config, base + [
        f"out={out / 'teacher'}", f"model.name={teacher_name}", "train.progress=true"]),
        overwrite=True)
    teacher["seconds"] = time.perf_counter() - t0

    print("\n== 3/4 record: teacher logits for K augmented copies of every training shape")
    t0 = time.perf_counter()
    records_dir = out / "records"
    record(teachers=[str(out / "teacher" / "best.pt")], data=data, out=str(records_dir),
           k=4 if quick else 10, seed=0, logits="int8", topk=0, combine="mean",
           batch_size=64, device=cfg.train.device, resume=False, overwrite=True,
           augment_config=str(config), progress=False)
    record_seconds = time.perf_counter() - t0
    print(info(records_dir))

    print("\n== 4/4 students (same model, seed and budget)")
    rows = [{"run": f"teacher ({teacher_name})", **teacher}]
    for label, mode, overrides in STUDENT_RUNS:
        run_out = out / label.replace(" ", "_").replace("+", "and").lower()
        extra = [f"out={run_out}", f"model.name={cfg.model.name}"] + overrides
        if mode == "offline":
            extra.append(f"distill.records={records_dir}")
        t0 = time.perf_counter()
        result = run_training(load_config(config, base + extra), overwrite=True)
        result["seconds"] = time.perf_counter() - t0
        rows.append({"run": label, **result})
        print(f"  {label:20s} test OA {100 * result['test_oa']:.2f}%")

    table = format_table(rows, record_seconds)
    total = time.perf_counter() - t_all
    print("\n" + table)
    print(f"\ntotal {total:.0f}s; outputs in {out}/")
    (out / "summary.md").write_text(table + "\n")
    summary = {"command": "pointkd demo" + (" --quick" if quick else ""),
               "machine": _machine(), "commit": _commit(), "total_seconds": total,
               "record_seconds": record_seconds,
               "rows": [{k: v for k, v in r.items() if k != "test_per_class"} for r in rows]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_summary(rows, out / "summary.png")
    return rows


def _commit() -> str:
    import subprocess

    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def format_table(rows: list[dict], record_seconds: float) -> str:
    lines = ["| run | test OA | test mAcc | params | train time |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['run']} | {100 * r['test_oa']:.2f}% | {100 * r['test_macc']:.2f}% "
                     f"| {r['params'] / 1e6:.3f}M | {r['seconds']:.0f}s |")
    lines.append(f"\nrecording the teacher once took {record_seconds:.1f}s")
    return "\n".join(lines)


def plot_summary(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["run"] for r in rows]
    ax.bar(names, [100 * r["test_oa"] for r in rows], color=["#777"] + ["#4a7"] * (len(rows) - 1))
    low = min(100 * r["test_oa"] for r in rows)
    ax.set_ylim(max(0, low - 10), 100)
    ax.set_ylabel("test OA (%)")
    ax.set_title("pointkd demo (synthetic data)")
    plt.setp(ax.get_xticklabels(), rotation=15, ha="right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
