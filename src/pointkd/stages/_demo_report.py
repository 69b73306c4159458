"""What `pointkd demo` reports, apart from running it (`pointkd.stages.demo`): the table of
means with every seed's paired difference to no KD, the verdict, summary.png, the measured
ModelNet40 protocol read from the committed results, and where a run happened (commit,
machine). Nothing here trains or prints."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
from pathlib import Path

# the measured ModelNet40 protocol (BENCHMARKS.md, "ModelNet40 students from the strong
# teacher"): one results JSON per run, `<mode>-s<seed>.json`, beside the repository's zoo/
MEASURED_RESULTS = Path("bench/results/students_strong")
MEASURED_MODES = {"no KD": "plain", "offline KD + NWSD": "nwsd-0.3"}
TEACHER_MARGIN = 3.0  # points: a teacher less far above the no-KD student has little to pass on


# --- the synthetic demo -----------------------------------------------------------------------

def setting_line(data: str, pool: dict | None) -> str:
    """The demo's setting in one sentence, from the preset."""
    from pointkd.data.synthetic import parse_options

    labelled = parse_options(data)["train_per_class"]
    line = f"   setting: the students have labels for {labelled} training shapes per class"
    if pool:
        unlabelled = parse_options(pool["data"])["train_per_class"]
        line += (f"; the teacher's records also cover {unlabelled} unlabelled shapes per class "
                 "(another draw; the students never see their labels)")
    return line


def records_summary(root: Path) -> dict:
    """A record set's rows, K, bytes and recording time, from its manifest."""
    from pointkd.records import read_manifest

    m = read_manifest(root)
    return {"rows": m["total_rows"], "k": m["k"], "bytes_per_row": m["bytes_per_row"],
            "bytes": sum((Path(root) / s["file"]).stat().st_size for s in m["shards"]),
            "seconds": m["recording"]["seconds"]}


def count_test_shapes(data: str) -> int:
    """The number of test shapes of a synthetic dataset spec."""
    from pointkd.data import synthetic, synthetic_v1
    from pointkd.data.synthetic import parse_options

    opts = parse_options(data)
    classes = synthetic_v1.CLASSES if opts["version"] == 1 else synthetic.CLASSES
    return opts["test_per_class"] * len(classes)


def summarize(runs: list[dict], labels: list[str]) -> list[dict]:
    """One row per mode: per-seed test OA, mean, sample std, and the per-seed paired
    difference to the first mode (no KD) in points."""
    by = {label: {r["seed"]: r for r in runs if r["run"] == label} for label in labels}
    ref = by[labels[0]]
    rows = []
    for label in labels:
        seeds = sorted(by[label])
        oa = [by[label][s]["test_oa"] for s in seeds]
        row = {"run": label, "model": by[label][seeds[0]]["model"], "seeds": seeds,
               "test_oa": oa, "mean": statistics.fmean(oa),
               "std": statistics.stdev(oa) if len(oa) > 1 else 0.0,
               "params": by[label][seeds[0]]["params"],
               "seconds": statistics.fmean(by[label][s]["seconds"] for s in seeds)}
        if label != labels[0]:
            row["paired_diff"] = [100 * (by[label][s]["test_oa"] - ref[s]["test_oa"])
                                  for s in seeds if s in ref]
        rows.append(row)
    return rows


def verdict(summary: dict) -> list[str]:
    """Plain sentences: is the teacher clearly stronger, did each KD mode beat no KD on every
    seed? Said as measured, whichever way it went."""
    teacher, base, *kd = summary["rows"]
    gap = 100 * (teacher["mean"] - base["mean"])
    lines = [f"teacher vs no-KD student: {gap:+.2f} points"
             + ("" if gap >= TEACHER_MARGIN else " — the teacher is NOT clearly stronger here, "
                "so KD has little to pass on")]
    for row in kd:
        d = row["paired_diff"]
        mean = statistics.fmean(d)
        per_seed = f"per seed {', '.join(f'{x:+.2f}' for x in d)}"
        if all(x > 0 for x in d):
            outcome = "better on every seed"
        elif mean > 0:
            outcome = "NOT better on every seed: the gain did not hold"
        else:
            outcome = "no gain: KD did NOT beat no KD in this run"
        lines.append(f"{row['run']} vs no KD: {mean:+.2f} points on average, {per_seed} — "
                     f"{outcome}")
    if kd and not any(all(x > 0 for x in row["paired_diff"]) for row in kd):
        lines.append("So this run does NOT show a distillation gain on this budget; "
                     "BENCHMARKS.md has the measured ModelNet40 results.")
    return lines


def format_table(summary: dict) -> str:
    """The setting, the table of modes (mean ± std, per seed, paired Δ), the record sets and
    the verdict: summary.md, and what the demo ends with."""
    n_test = summary.get("test_shapes")
    head = (f"test OA on {n_test:,} test shapes (1 point = {n_test / 100:.0f} shapes); "
            if n_test else "")
    lines = [f"{head}mean ± sample std over seeds; Δ = paired difference to no KD, per seed",
             "", "| run | model | params | seeds | test OA | per seed | Δ per seed | Δ mean |",
             "|---|---|---:|---|---:|---|---|---:|"]
    for r in summary["rows"]:
        oa = f"{100 * r['mean']:.2f}" + (f" ± {100 * r['std']:.2f}" if len(r["seeds"]) > 1
                                         else "")
        d = r.get("paired_diff")
        diffs = (", ".join(f"{x:+.2f}" for x in d), f"{statistics.fmean(d):+.2f}") if d else (
            "–", "–")
        lines.append(f"| {r['run']} | {r.get('model', summary['teacher']['model'])} | "
                     f"{r['params'] / 1e6:.3f}M | {', '.join(map(str, r['seeds']))} | {oa}% | "
                     f"{', '.join(f'{100 * x:.2f}' for x in r['test_oa'])} | {diffs[0]} | "
                     f"{diffs[1]} |")
    rec = summary["recording"]
    pool = rec.get("pool")
    pool_text = (f"; the unlabelled pool {pool['rows']:,} rows (K = {pool['k']}) = "
                 f"{pool['bytes'] / 1e3:.0f} kB in {pool['seconds']:.1f} s" if pool else "")
    lines += ["", f"records: {rec['rows']:,} rows (K = {rec['k']}) x {rec['bytes_per_row']} B = "
              f"{rec['bytes'] / 1e3:.0f} kB, recorded once in {rec['seconds']:.1f} s"
              f"{pool_text}", ""]
    if summary.get("setting"):
        lines.insert(0, summary["setting"].strip())
    lines += summary["verdict"]
    return "\n".join(lines)


def plot_summary(summary: dict, path: Path) -> None:
    """Bars = mean test OA, dots = each seed; the teacher in grey beside the students; the
    record set's size and recording time written on the plot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = summary["rows"]
    fig = Figure(figsize=(8, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = ["#888888", "#5b8def"] + ["#2ca25f"] * (len(rows) - 2)
    for i, r in enumerate(rows):
        ax.bar(i, 100 * r["mean"], color=colors[i], width=0.65)
        ax.scatter([i] * len(r["test_oa"]), [100 * x for x in r["test_oa"]], color="black",
                   s=14, zorder=3)
        label = f"{100 * r['mean']:.1f}%"
        if r.get("paired_diff"):
            label += f"\nΔ {statistics.fmean(r['paired_diff']):+.1f}"
        top = 100 * max(r["mean"], *r["test_oa"])  # above the bar and every seed's dot
        ax.text(i, top + 0.4, label, ha="center", va="bottom", fontsize=8)
    low = min(100 * x for r in rows for x in r["test_oa"])
    high = max(100 * x for r in rows for x in r["test_oa"])
    ax.set_ylim(max(0.0, low - 8), min(100.0, high + 5))
    ax.set_xticks(range(len(rows)), [f"{r['run']}\n{r['params'] / 1e6:.3f}M" for r in rows],
                  fontsize=8)
    ax.set_ylabel("test OA (%)")
    seeds = max(len(r["seeds"]) for r in rows)
    ax.set_title(f"pointkd demo: {summary.get('config', '')} — dots: each of {seeds} seeds",
                 fontsize=9)
    rec = summary.get("recording")
    if rec:
        ax.text(0.01, 0.98, f"records: {rec['rows']:,} rows x {rec['bytes_per_row']} B = "
                f"{rec['bytes'] / 1e3:.0f} kB\nrecorded once in {rec['seconds']:.1f} s",
                transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#cccccc"})
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# --- the ModelNet40 demo ----------------------------------------------------------------------

def modelnet_table(results: dict[str, dict]) -> list[str]:
    """One row per run: test OA and mAcc, params, training time."""
    lines = ["| run | test OA | test mAcc | params | train time |", "|---|---:|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(f"| {label} | {100 * r['test_oa']:.2f}% | {100 * r['test_macc']:.2f}% | "
                     f"{r['params'] / 1e6:.3f}M | {r['train_seconds_total'] / 60:.1f} min |")
    return lines


def measured_line(cfg, records: str, root: Path = MEASURED_RESULTS) -> str | None:
    """What the committed results of the measured protocol say (no KD against offline KD +
    NWSD over their seeds, paired by seed), with where the figures come from; None where they
    are not there (an installed package without the repository) or were measured with another
    model, schedule or distillation setting than `cfg`."""
    runs: dict[str, dict[int, dict]] = {}
    for label, mode in MEASURED_MODES.items():
        files = sorted(root.glob(f"{mode}-s*.json"))
        runs[label] = {r["seed"]: r for r in map(_read_json, files) if r}
        if not runs[label]:
            return None
    base, kd = runs["no KD"], runs["offline KD + NWSD"]
    same = all(r.get("model") == cfg.model.name and r.get("epochs") == cfg.train.epochs
               for by_seed in runs.values() for r in by_seed.values()) and all(
        r.get("beta") == cfg.distill.beta and r.get("tau") == cfg.distill.tau
        and Path(r.get("records") or "").name == Path(records).name for r in kd.values())
    paired = [100 * (kd[s]["test_oa"] - base[s]["test_oa"]) for s in sorted(kd) if s in base]
    if not same or not paired:
        return None

    def mean_std(by_seed: dict[int, dict]) -> str:
        oa = [100 * r["test_oa"] for r in by_seed.values()]
        return f"{statistics.fmean(oa):.2f}" + (f" ± {statistics.stdev(oa):.2f}"
                                                 if len(oa) > 1 else "")

    return (f"Measured with this protocol ({root}/, the table in BENCHMARKS.md): "
            f"{mean_std(kd)}% (offline KD + NWSD) against {mean_std(base)}% (no KD) over "
            f"{len(paired)} seeds, paired {', '.join(f'{x:+.2f}' for x in paired)}; one pair "
            "is indicative, not proof")


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


# --- where a run happened ---------------------------------------------------------------------

def commit() -> str:
    """The repository's commit (short), or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """The CPU's model name and the number of cores."""
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
