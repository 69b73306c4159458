"""Generate BENCHMARKS.md from the committed JSON results in bench/results/.

Every table cell comes from a JSON file that the named command wrote; nothing is typed in by
hand. Sections whose JSON does not exist yet say so.

    python bench/make_benchmarks.py
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
OUT = Path(__file__).resolve().parents[1] / "BENCHMARKS.md"

# published single-view ModelNet40 figures, for context only (not measured here)
ANCHORS = [("PointNet", 89.2, 3.5, "Qi et al., CVPR 2017"),
           ("PointNet++ (SSG)", 90.7, 1.5, "Qi et al., NeurIPS 2017"),
           ("DGCNN", 92.9, 1.8, "Wang et al., TOG 2019"),
           ("PointMLP", 94.1, 13.2, "Ma et al., ICLR 2022"),
           ("PointMLP-elite", 93.6, 0.68, "Ma et al., ICLR 2022"),
           ("PointNeXt-S", 93.2, 1.4, "Qian et al., NeurIPS 2022")]


def load(name: str) -> dict | list | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def section_demo() -> list[str]:
    demo = load("demo.json")
    lines = ["## Synthetic demo (`make demo`)", ""]
    if demo is None:
        return lines + ["_not measured yet_", ""]
    wall = demo.get("make_demo_wall_seconds", demo["total_seconds"])
    n_test = demo["test_shapes"]
    lines += [f"Command: `{demo['command']}` at commit {demo['commit']} (preset "
              f"`{demo['config']}`) · machine: {demo['machine']}, {demo['load']} · total wall "
              f"time {wall:.0f} s (target ≤ 300 s on 2 cores)", "",
              f"Test OA on {n_test:,} synthetic test shapes (1 point = {n_test / 100:.0f} "
              "shapes); mean ± sample std over the seeds; Δ = paired difference to no KD, "
              "per seed, in points. The teacher is one run.", "",
              "| run | model | params | seeds | test OA | per seed | Δ per seed | Δ mean | "
              "time per run |", "|---|---|---:|---|---:|---|---|---:|---:|"]
    for r in demo["rows"]:
        d = r.get("paired_diff")
        spread = f" ± {100 * r['std']:.2f}" if len(r["seeds"]) > 1 else ""
        lines.append(
            f"| {r['run']} | {r.get('model', demo['teacher']['model'])} | "
            f"{r['params'] / 1e6:.3f}M | {', '.join(map(str, r['seeds']))} | "
            f"{100 * r['mean']:.2f}{spread}% | "
            f"{', '.join(f'{100 * x:.2f}' for x in r['test_oa'])} | "
            + (f"{', '.join(f'{x:+.2f}' for x in d)} | {sum(d) / len(d):+.2f} | " if d
               else "– | – | ") + f"{r['seconds']:.0f} s |")
    rec = demo["recording"]
    pool = rec.get("pool")
    pool_text = (f"; the unlabelled pool's {pool['rows']:,} rows (K = {pool['k']}) = "
                 f"{pool['bytes'] / 1e3:.0f} kB in {pool['seconds']:.1f} s" if pool else "")
    if demo.get("setting"):
        lines.insert(2, f"**Setting** — {demo['setting'].strip().removeprefix('setting: ')}.")
        lines.insert(3, "")
    lines += ["", f"Records: {rec['rows']:,} rows (K = {rec['k']}) × {rec['bytes_per_row']} B "
              f"= {rec['bytes'] / 1e3:.0f} kB, recorded once in {rec['seconds']:.1f} s"
              f"{pool_text}. "
              "The demo's verdict on this run, and its plot "
              "([bench/results/demo_summary.png](bench/results/demo_summary.png)):", ""]
    lines += [f"- {v}" for v in demo["verdict"]]
    for key in ("earlier_runs", "tuning"):
        if demo.get(key):
            lines += ["", demo[key]]
    return lines + [""]


def section_demo_probe() -> list[str]:
    """How the demo's distilled mode was chosen: validation OA of each candidate."""
    d = load("demo_pool_probe.json")
    if d is None:
        return []
    lines = ["### How the demo's distilled mode was chosen", "",
             f"{d['purpose'][0].upper()}{d['purpose'][1:]}. Teacher: `{d['teacher']}`; "
             "records: " + "; ".join(f"`{c}`" for c in d["records"]) + f"; validation: "
             f"`{d['validation']}` · machine: {d['machine']}.", "",
             "| candidate | val OA seed 0 | seed 1 | mean | command (S = seed) |",
             "|---|---:|---:|---:|---|"]
    for v in d["variants"].values():
        a, b = v["val_oa"]
        lines.append(f"| {v['label']} | {pct(a)} | {pct(b)} | {pct((a + b) / 2)} | "
                     f"`{v['command']}` |")
    return lines + [""]


def section_teacher() -> list[str]:
    t = load("teacher_modelnet40_cpu.json")
    lines = ["## ModelNet40 teacher trained on 2 CPU cores", ""]
    if t is None:
        return lines + ["_not finished yet_", ""]
    lines += [f"Command: `{t['command']}` · machine: {t['machine']}", "",
              "| model | params | FLOPs/cloud | epochs | train time | val OA (best) | test OA | "
              "test mAcc |", "|---|---:|---:|---:|---:|---:|---:|---:|",
              f"| {t['model']} | {t['params'] / 1e6:.3f}M | {t['flops'] / 1e9:.2f} G | "
              f"{t['epochs']} | {t['train_seconds_total'] / 60:.0f} min | {pct(t['val_oa'])} | "
              f"{pct(t.get('test_oa'))} | {pct(t.get('test_macc'))} |", "",
              "Single view, no voting; the checkpoint is selected on the validation split "
              "(10% of train, stratified); test is only reported."
              + (f" Test numbers: `{t['eval_command']}`." if t.get("eval_command") else ""), ""]
    if t.get("checkpoint"):
        lines += [f"Checkpoint: `{t['checkpoint']}` (see `zoo/README.md` for its sha256)."
                  + (f" {t['note']}" if t.get("note") else ""), ""]
    return lines


WIP_TEACHER = RESULTS.parents[1] / "zoo" / "wip" / "student_l_e150"
STRONG_TEACHER = "teacher_student_l_modelnet40_cpu.json"  # the final teacher of issue #13


def section_teacher_wip() -> list[str]:
    """The strong CPU teacher of issue #13: final (bench/results) or in progress (zoo/wip)."""
    import csv

    final = load(STRONG_TEACHER)
    path = RESULTS / "teacher_student_l_metrics.csv" if final else WIP_TEACHER / "metrics.csv"
    if not path.is_file():
        return []
    rows = list(csv.DictReader(path.open()))
    best = max(rows, key=lambda r: float(r["val_oa"]))
    if final:
        lines = ["### The strong CPU teacher (issue #13)", "",
                 f"`{final['model']}` ({final['params'] / 1e6:.3f}M params, "
                 f"{final['flops'] / 1e9:.2f} GFLOPs/cloud), `configs/modelnet40_cpu.yaml` with "
                 f"{final['epochs']} epochs (label smoothing 0.2), one thread, trained across "
                 f"{final['sessions']} sessions from a resumable checkpoint; "
                 f"{final['train_seconds_total'] / 3600:.1f} h of one core. Command: "
                 f"`{final['command']}` · machine: {final['machine']}", "",
                 "| checkpoint | best epoch (val) | val OA | test OA | test mAcc |",
                 "|---|---:|---:|---:|---:|"]
        for row in final["evaluations"]:
            lines.append(f"| {row['checkpoint']} | {final['best_epoch']} | "
                         f"{pct(final['val_oa'])} | {pct(row['test_oa'])} | "
                         f"{pct(row['test_macc'])} |")
        lines += ["", "Single view and no voting unless a row says otherwise; the checkpoint is "
                  "the best validation epoch "
                  "(985 shapes, 10% of train); test was looked at once, after training. "
                  + " ".join(f"`{row['command']}`." for row in final["evaluations"]), ""]
        if final.get("note"):
            lines += [final["note"], ""]
        lines += ["Validation curve:", ""]
    else:
        lines = ["### The strong CPU teacher, in progress (issue #13)", "",
                 f"`student_l` (0.97M params), `configs/modelnet40_cpu.yaml` with 150 epochs "
                 f"(label smoothing 0.2), one thread, resumed across sessions from `zoo/wip/` "
                 f"(its README has the command). After epoch {rows[-1]['epoch']} of 150: best "
                 f"validation OA {100 * float(best['val_oa']):.2f}% (epoch {best['epoch']}); "
                 "test not looked at until the run ends. Validation curve (985 shapes, so 1 "
                 "shape = 0.1 point):", ""]
    plot = _plot_curve(rows, RESULTS / ("teacher_student_l_curve.png" if final
                                        else "teacher_wip_curve.png"))
    if plot:
        lines += [f"![teacher validation curve](bench/results/{plot})", ""]
    lines += ["| epoch | " + " | ".join(r["epoch"] for r in rows[9::10]) + " |",
              "|---|" + "---:|" * len(rows[9::10]),
              "| val OA | " + " | ".join(f"{100 * float(r['val_oa']):.1f}" for r in rows[9::10])
              + " |", ""]
    return lines


def _plot_curve(rows: list[dict], out: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(epochs, [100 * float(r["val_oa"]) for r in rows], label="validation OA")
    ax.plot(epochs, [100 * float(r["train_acc"]) for r in rows], label="train accuracy (augmented)",
            alpha=0.6)
    ax.set_xlabel("epoch (of 150)")
    ax.set_ylabel("%")
    ax.set_ylim(80, 100)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def section_flatness() -> list[str]:
    """How flat label-smoothed teachers' softened targets are (bench/teacher_flatness.py)."""
    runs = sorted(RESULTS.glob("teacher_flatness_*.json"))
    if not runs:
        return []
    lines = ["### How flat the teachers' targets are (choosing τ)", "",
             "softmax(z/τ) on 512 training shapes (seed 0): mean top and second probability, "
             "mean entropy (uniform over 40 classes: 0.025 and 3.69 nats). Both teachers were "
             "trained with label smoothing 0.2; at the τ = 4 used so far their targets are "
             "close to uniform.", "",
             "| teacher | τ | top prob | 2nd prob | entropy (nats) |", "|---|---:|---:|---:|---:|"]
    for path in runs:
        d = json.loads(path.read_text())
        name = Path(d["teacher"]).name if "wip" not in path.name else \
            f"student_l wip (epoch {d['teacher_epoch'] + 1} of 150)"
        for row in d["per_tau"]:
            lines.append(f"| {name} | {row['tau']:g} | {row['mean_top_prob']:.3f} | "
                         f"{row['mean_second_prob']:.3f} | {row['mean_entropy_nats']:.2f} |")
    for path in runs:
        d = json.loads(path.read_text())
        lines.append(f"\n`{path.name}`: `{d['command']}` · {d['machine']}"
                     + (f" · {d['note']}" if d.get("note") else ""))
    probe = load("tau_probe_pointnet.json")
    if probe:
        lines += ["", "A first probe of τ on validation (offline KD from the zoo PointNet "
                  "records, student_s, 15 epochs, seed 0, one run each, one after the other on "
                  "the same code; the run-to-run noise floor above is ~0.6 points; the commands "
                  "ran with the preset of that time, 15 epochs: add `--epochs 15` to rerun them "
                  "now):", "",
                  "| τ | best val OA | test OA | command |", "|---:|---:|---:|---|"]
        lines += [f"| {r['tau']:g} | {pct(r['val_oa'])} | {pct(r['test_oa'])} | "
                  f"`{r['command']}` |" for r in probe["runs"]]
        lines += ["", probe["reading"]]
    return lines + [""]


def probe_runs(name: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((RESULTS / name).glob("*.json"))]


def section_records_strong() -> list[str]:
    """Issue #13: the strong teacher's committed record set, with `records info`/`verify`."""
    r = load("records_student_l_k20.json")
    info = RESULTS / "records_info_student_l_k20.txt"
    verify = RESULTS / "records_verify_student_l_k20.txt"
    if r is None or not info.is_file():
        return []
    lines = ["### The strong teacher's record set (issue #13)", "",
             f"{r['rows']:,} rows recorded once in {r['seconds'] / 60:.1f} min "
             f"({r['machine']}): `{r['command']}`. K = 20 so that a 100-epoch student, which "
             "draws one copy per shape per epoch, sees each row about 5 times. Committed in "
             "`zoo/`.", "", f"`{r['info_command']}`:", "", "```", info.read_text().rstrip(),
             "```"]
    if verify.is_file():
        lines += ["", f"`{r['verify_command']}`:", "", "```", verify.read_text().rstrip(), "```"]
    return lines + [""]


def section_probe(name: str, title: str, key: str, reading: str,
                  extra: list[dict] = ()) -> list[str]:
    """A one-seed probe of one distillation setting on validation (bench_students runs)."""
    runs = probe_runs(name)
    if not runs:
        return []
    runs += extra
    runs.sort(key=lambda r: r[key])
    lines = [f"### {title}", "", reading, "",
             f"| {key} | best val OA | test OA | best epoch | command |",
             "|---:|---:|---:|---:|---|"]
    lines += [f"| {r[key]:g} | {pct(r['val_oa'])} | {pct(r['test_oa'])} | {r['best_epoch']} | "
              f"`{r['command']}` |" for r in runs]
    ranked = sorted(runs, key=lambda r: -r["val_oa"])
    if len(ranked) > 1:
        a, b = ranked[:2]
        gap = a["val_oa"] - b["val_oa"]
        lines += ["", f"Chosen on validation: **{key} = {a[key]:g}**, {100 * gap:.2f} points "
                  f"({round(gap * 985)} of 985 shapes) above {key} = {b[key]:g}; on test the "
                  f"two rank {'the same way' if a['test_oa'] >= b['test_oa'] else 'the other way'}"
                  f" ({pct(a['test_oa'])} vs {pct(b['test_oa'])})."]
    return lines + ["", f"Machine: {runs[0]['machine']}.", ""]


def section_tau_probe_l() -> list[str]:
    return section_probe(
        "tau_probe_student_l", "τ on validation, strong teacher (issue #13)", "tau",
        "Offline KD (β = 0) into student_s, 15 epochs, seed 0, one run per τ, from a K = 4 int8 "
        "record set of the student_l teacher *in progress* (its best checkpoint after 77 of 150 "
        "epochs, 94.3% validation OA; `pointkd record --teacher best.pt --data "
        "../shared/data/modelnet40_1024 --k 4 --out rec_wip_k4 --threads 1`, 242 s, not "
        "committed), so that τ could be chosen while the teacher finished. τ is chosen on "
        "validation OA only; a gap of a few shapes is within one run's noise. The probes ran "
        "one at a time on one core beside the teacher's training, so their times are not "
        "comparable.")


def section_beta_probe_l() -> list[str]:
    taus = probe_runs("tau_probe_student_l")
    chosen = [max(taus, key=lambda r: r["val_oa"])] if taus else []
    return section_probe(
        "beta_probe_student_l", "β on validation, strong teacher (issue #13)", "beta",
        "Offline KD + NWSD into student_s at the chosen τ, 15 epochs, seed 0, NWSD warm-up 5 "
        "epochs, same record set as the τ probe; the β = 0 row is the τ probe's run. β is "
        "chosen on validation OA only.", extra=chosen)


MODE_LABELS = {"plain": "(a) no KD", "kd": "(b) offline KD",
               "online": "(d) online KD"}  # nwsd-*, kd-k*, *@tag are labelled below
# record sets other than the default (PointNet teacher, int8, K = 10), by bench_students tag
TAG_LABELS = {"fp32": "fp32 logits", "fp16": "fp16 logits", "top5": "top-5 logits",
              "ens3": "teacher: ensemble of 3 NWSD students"}
TEACHER_TAG = "ens3"  # the second teacher of the teacher-quality comparison
ENCODING_TAGS = ["fp32", "fp16", "int8", "top5"]  # int8 = the default record set ("kd")


def mode_label(mode: str) -> str:
    base, _, tag = mode.partition("@")
    if base.startswith("nwsd-"):
        label = f"(c) offline KD + NWSD, β = −{base.removeprefix('nwsd-')}"
    elif base.startswith("kd-k"):
        label = f"offline KD, K = {base.removeprefix('kd-k')} (distill.use_k)"
    else:
        label = MODE_LABELS.get(base, base)
    return f"{label}, {TAG_LABELS.get(tag, tag + ' records')}" if tag else label


def student_groups(folder: str = "students") -> dict[str, list[dict]]:
    """bench/results/<folder>/*.json grouped by mode, seeds sorted."""
    groups: dict[str, list[dict]] = {}
    for path in sorted((RESULTS / folder).glob("*.json")):
        r = json.loads(path.read_text())
        groups.setdefault(r["mode"], []).append(r)
    return {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in groups.items()}


def group_means(groups: dict[str, list[dict]]) -> dict[str, float]:
    """Mean test OA (%) of each mode over its seeds."""
    return {m: 100 * sum(r["test_oa"] for r in rs) / len(rs) for m, rs in groups.items()}


def mean_sd(v: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mu = sum(v) / len(v)
    return mu, (sum((x - mu) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0


def mean_std(values: list[float]) -> str:
    v = [100 * x for x in values]
    if len(v) == 1:
        return f"{v[0]:.2f} (1 seed)"
    return "{:.2f} ± {:.2f}".format(*mean_sd(v))


def section_students() -> list[str]:
    all_groups = student_groups()
    groups = {m: rs for m, rs in all_groups.items() if "@" not in m}
    lines = ["## ModelNet40 students on 2 CPU cores (issue #6, CPU protocol)", ""]
    if not groups:
        return lines + ["_not measured yet_", ""]
    first = next(iter(groups.values()))[0]
    lines += [f"Protocol: ../shared/data/modelnet40_1024, 1,024 points, single view, no voting; "
              f"best epoch chosen on the validation split (10% of train), test reported; mean ± "
              f"sample std over seeds. Student {first['model']} ({first['params'] / 1e6:.3f}M "
              f"params), {first['epochs']} epochs each. Machine: {first['machine']}. Queue "
              "command: `python bench/bench_students.py --records runs/mn40/rec_pointnet_k10 "
              "...` (each row's exact `pointkd` command is below the table and in its JSON). "
              "These runs used the preset as it was then, τ = 4 and 15 epochs; since issue #13 "
              "it holds the long recipe (τ = 1, β = −0.3, 100 epochs), so to rerun one of these "
              "commands now, add `distill.tau=4` (the commands give epochs and β "
              "themselves).", "",
              "| run | seeds | test OA % | test mAcc % | val OA % | train min/run |",
              "|---|---:|---:|---:|---:|---:|"]
    order = sorted(groups, key=lambda m: (mode_label(m), m))
    for mode in order:
        rs = groups[mode]
        minutes = sum(r["train_seconds_total"] for r in rs) / len(rs) / 60
        lines.append(f"| {mode_label(mode)} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{mean_std([r['test_oa'] for r in rs])} | "
                     f"{mean_std([r['test_macc'] for r in rs])} | "
                     f"{mean_std([r['val_oa'] for r in rs])} | {minutes:.0f} |")
    lines += paired_lines(groups)
    lines += goal_lines(all_groups)
    eff = load("distill_efficiency_modelnet40.json")
    if eff:
        steps = -(-int(0.9 * 9843) // eff["setup"]["batch_size"])  # training shapes / batch
        st = eff["step_seconds"]
        lines += ["", f"(d) online KD with the same teacher, time only: {st['online']:.3f} s "
                  f"per step against {st['offline']:.3f} s offline and {st['plain']:.3f} s plain "
                  f"({eff['machine']['threads']} threads, batch {eff['setup']['batch_size']}, "
                  f"from `{eff['command']}`), i.e. ≈ {steps * st['online'] / 60:.1f} vs "
                  f"{steps * st['offline'] / 60:.1f} min per {steps}-step epoch. Its accuracy "
                  "was not run: with the records replaying the same augmentations, online "
                  "KD differs from offline KD only in drawing fresh augmentations every epoch "
                  "(instead of K fixed ones per shape) and in float32 instead of int8 logits."]
    t, rec = load("teacher_modelnet40_cpu.json"), load("records_modelnet40.json")
    if t and rec:
        student = sum(r["train_seconds_total"] for rs in groups.values() for r in rs) / sum(
            len(rs) for rs in groups.values())
        total = t["train_seconds_total"] + rec["recording"]["seconds"] + student
        lines += ["", f"Whole CPU pipeline, wall time: teacher {t['train_seconds_total'] / 60:.0f}"
                  f" min + recording K = {rec['k']} ({rec['total_rows']:,} rows) "
                  f"{rec['recording']['seconds'] / 60:.1f} min + one student "
                  f"{student / 60:.0f} min (mean) = **{total / 60:.0f} min**; each further "
                  "student costs only its own training."]
    lines += ["", "Commands (seed 0, or the first seed run):", ""]
    lines += [f"- {mode_label(m)}: `{groups[m][0]['command']}`" for m in order]
    plot = plot_oa_vs_params(all_groups)
    if plot:
        lines += ["", f"![test OA vs parameters]({plot})"]
    return lines + [""]


STRONG_STUDENTS = "students_strong"  # issue #13's long protocol (bench_students --results)
STRONG_GOAL = (92.0, 1.5)  # best mean test OA (%) and its gain over no KD (points)
TEST_SHAPES, VAL_SHAPES = 2468, 985  # ModelNet40 test split; 10% of its 9,843 train shapes


WIP_STUDENTS = RESULTS.parents[1] / "zoo" / "wip" / "students"


def wip_student_lines() -> list[str]:
    """Unfinished runs of the long protocol (zoo/wip/students/<run>/metrics.csv)."""
    import csv

    rows = []
    for path in sorted(WIP_STUDENTS.glob("*/metrics.csv")):
        epochs = list(csv.DictReader(path.open()))
        if epochs:
            best = max(epochs, key=lambda r: float(r["val_oa"]))
            rows.append(f"| {path.parent.name} | {epochs[-1]['epoch']} | "
                        f"{100 * float(best['val_oa']):.2f} (epoch {best['epoch']}) |")
    if not rows:
        return []
    return ["", "In progress (resumable, `zoo/wip/README.md`); no test number is read before a "
            "run ends:", "", "| run | epochs done | best val OA so far |", "|---|---:|---:|",
            *rows]


def section_overlap() -> list[str]:
    """Teacher vs student on the test shapes: what the teacher could still teach (#13)."""
    found = sorted(RESULTS.glob("overlap_*.json"))
    if not found:
        return []
    lines = ["### What the strong teacher could still teach (issue #13)", "",
             "Per test shape: right or wrong for the teacher and for a finished student "
             "(final-epoch weights). \"Teacher only\" are the shapes KD could at best "
             "add; \"student only\" those the student gets right on its own.", "",
             "| teacher | student | teacher OA % | student OA % | both right | teacher only "
             "| student only | both wrong |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for path in found:
        d = json.loads(path.read_text())
        lines.append(f"| `{d['teacher']}` | `{d['student']}` | {100 * d['teacher_oa']:.2f} | "
                     f"{100 * d['student_oa']:.2f} | {d['both_right']} | {d['teacher_only']} "
                     f"| {d['student_only']} | {d['both_wrong']} |")
    by_mode: dict[str, list[dict]] = {}
    for path in found:  # overlap_<teacher>_<mode>-s<seed>.json
        mode = path.stem.rsplit("-s", 1)[0].split("_")[-1]
        by_mode.setdefault(mode, []).append(json.loads(path.read_text()))
    lines += ["", "Mean over seeds, per mode: " + "; ".join(
        f"{mode_label(m)}: teacher only {statistics.fmean(d['teacher_only'] for d in ds):.1f}, "
        f"student only {statistics.fmean(d['student_only'] for d in ds):.1f} "
        f"({len(ds)} run{'s' if len(ds) > 1 else ''})"
        for m, ds in sorted(by_mode.items(), key=lambda kv: mode_label(kv[0])))
        + ". Distillation moves the student towards the teacher (fewer teacher-only shapes) "
        "and gives back part of that on shapes the student alone got right."]
    lines += ["", "Commands: " + "; ".join(f"`{json.loads(p.read_text())['command']}`"
                                           for p in found) + f" · machine: "
              f"{json.loads(found[0].read_text())['machine']}.", ""]
    return lines


def section_record_votes() -> list[str]:
    """`record --votes N` against the single-view records, row for row."""
    d = load("records_quality_votes.json")
    if not d:
        return []
    lines = ["### Teacher voting at record time", "",
             "The stored targets of " + ("copy k = 0" if d["copies"] == 1 else
                                         f"copies k < {d['copies']}") + " of every training "
             "shape, against "
             f"the labels: on the {d['held_out_shapes']} shapes of the teacher's validation "
             "split (it never trained on them) and on all rows. Same seed, so the same clouds "
             "row for row; with votes each row's target is the teacher's mean over the "
             "replayed cloud and N views of it scaled per axis by U(0.8, 1.25) "
             "(docs/records.md, \"Teacher voting\").", "",
             "| records | votes | held-out acc % | held-out NLL | all rows acc % | all rows NLL "
             "| mean top prob |", "|---|---:|---:|---:|---:|---:|---:|"]
    for e in d["sets"]:
        h, a = e["held_out"], e["all"]
        lines.append(f"| `{e['records']}` | {e['votes']} | {100 * h['acc']:.2f} | "
                     f"{h['nll']:.4f} | {100 * a['acc']:.2f} | {a['nll']:.4f} | "
                     f"{a['top_prob']:.3f} |")
    lines += ["", f"Command: `{d['command']}` · machine: {d['machine']}. {d['note']}", ""]
    return lines


def section_students_strong() -> list[str]:
    """Issue #13: <= 0.3M students from the strong teacher's records, long schedule."""
    groups = student_groups(STRONG_STUDENTS)
    if not groups:
        wip = wip_student_lines()
        return (["## ModelNet40 students from the strong teacher, long schedule (issue #13)",
                 "", "student_s, 100 epochs, τ = 1, NWSD β = −0.3, records "
                 "`zoo/records_student_l_modelnet40_k20`; queue and commands: "
                 "`zoo/wip/README.md`.", *wip, ""] if wip else [])
    # τ and the record set from a KD run (a plain run's config carries the default τ)
    first = next((rs[0] for m, rs in groups.items() if m != "plain"),
                 next(iter(groups.values()))[0])
    lines = ["## ModelNet40 students from the strong teacher, long schedule (issue #13)", "",
             f"Student {first['model']} ({first['params'] / 1e6:.3f}M params), "
             f"{first['epochs']} epochs, one schedule for every mode; "
             + (f"τ = {first['tau']:g}; records `{first['records']}`; " if first.get("records")
                else "KD runs: τ = 1, NWSD β = −0.3 (`zoo/wip/README.md`); ")
             + "best epoch on validation, test reported, mean "
             f"± sample std over seeds. Machine: {first['machine']}.", "",
             "| run | seeds | test OA % | test mAcc % | val OA % | test OA % (last epoch) | "
             "s/epoch (median) | min/run |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = sorted(groups, key=lambda m: (mode_label(m), m))
    for mode in order:
        rs = groups[mode]
        sec = [r.get("epoch_seconds_median", r.get("epoch_seconds_mean")) for r in rs
               if "epoch_seconds_mean" in r]
        lines.append(f"| {mode_label(mode)} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{mean_std([r['test_oa'] for r in rs])} | "
                     f"{mean_std([r['test_macc'] for r in rs])} | "
                     f"{mean_std([r['val_oa'] for r in rs])} | "
                     f"{last_epoch_cell(rs)} | "
                     f"{f'{sum(sec) / len(sec):.0f}' if sec else '–'} | "
                     f"{sum(r['train_seconds_total'] for r in rs) / len(rs) / 60:.0f} |")
    eff = load("distill_efficiency_modelnet40_strong.json")
    if eff:
        lines += ["", "s/epoch: median over a run's epochs while two queues shared the 2 cores "
                  "(one thread each), so only indicative; the controlled step-time ratio is "
                  f"online/offline ×{eff['ratios']['online_over_offline_step']:.2f} "
                  f"(offline/plain ×{eff['ratios']['offline_over_plain_step']:.2f}), measured "
                  "side by side in \"Distillation step time and memory\"."]
    lines += paired_lines(groups)
    means = group_means(groups)
    if "plain" in means and len(means) > 1:
        best = max((m for m in means if m != "plain"), key=means.get)
        gain = means[best] - means["plain"]
        met = means[best] >= STRONG_GOAL[0] and gain >= STRONG_GOAL[1]
        lines += ["", f"**Goal {'met' if met else 'not met'}:** best mean {means[best]:.2f}% "
                  f"({mode_label(best)}, {len(groups[best])} seed(s)), {gain:+.2f} points over "
                  f"no KD (goal: ≥ {STRONG_GOAL[0]}% and ≥ +{STRONG_GOAL[1]})."]
        if not met:
            lines += strong_limit_lines(groups, means)
    plot = _plot_student_curves(groups, RESULTS / "students_strong_curves.png")
    if plot:
        lines += ["", "Validation OA per epoch, mean over the seeds run (the schedule is long "
                  "enough when the no-KD curve has flattened before the end):", "",
                  f"![student validation curves](bench/results/{plot})"]
    lines += ["", "Commands (first seed of each mode):", ""]
    lines += [f"- {mode_label(m)}: `{groups[m][0]['command']}`" for m in order]
    return lines + wip_student_lines() + [""]


def strong_limit_lines(groups: dict[str, list[dict]], means: dict[str, float]) -> list[str]:
    """Issue #13: the evidence for what keeps the long-protocol students below the goal."""
    teacher = load(STRONG_TEACHER)
    if teacher is None or "plain" not in groups:
        return []
    t_oa = 100 * next(e["test_oa"] for e in teacher["evaluations"]
                      if e["checkpoint"].startswith("zoo/"))
    best = max(means, key=means.get)
    plain = [100 * r["test_oa"] for r in groups["plain"]]
    lines = ["", "What limits it, with the evidence:", "",
             f"- **The teacher is barely above the student.** The teacher scores {t_oa:.2f}% "
             f"single-view test OA; the student without KD "
             f"{mean_std([r['test_oa'] for r in groups['plain']])}%. The goal "
             f"(≥ {STRONG_GOAL[0]}%) asks a {groups['plain'][0]['params'] / 1e6:.3f}M student to "
             f"beat its {teacher['params'] / 1e6:.2f}M teacher by {STRONG_GOAL[0] - t_oa:.2f} "
             f"points; the best mode reached {means[best]:.2f}% ({mode_label(best)})."]
    overlap = [json.loads(p.read_text()) for p in sorted(RESULTS.glob("overlap_*.json"))]
    if overlap:
        t_only = [o["teacher_only"] for o in overlap]
        s_only = [o["student_only"] for o in overlap]
        n = overlap[0]["shapes"]
        lines.append(
            f"- **What it could still teach is little.** On the {n:,} test shapes the teacher "
            f"is right where a finished student is wrong on {min(t_only)}–{max(t_only)} shapes "
            f"({100 * min(t_only) / n:.1f}–{100 * max(t_only) / n:.1f}%), and the student "
            f"right where the teacher is wrong on {min(s_only)}–{max(s_only)} "
            f"(table \"What the strong teacher could still teach\"). Reaching "
            f"{STRONG_GOAL[0]}% from the no-KD mean takes "
            f"{round((STRONG_GOAL[0] - statistics.fmean(plain)) / 100 * n)} more right shapes, "
            "net: learning most of the teacher-only shapes while losing none of the "
            "student-only ones.")
    p_test = statistics.fmean(plain) / 100
    p_val = statistics.fmean(r["val_oa"] for r in groups["plain"])
    sd_test = 100 * (p_test * (1 - p_test) / TEST_SHAPES) ** 0.5
    sd_val = 100 * (p_val * (1 - p_val) / VAL_SHAPES) ** 0.5
    runs = [r for rs in groups.values() for r in rs if "test_oa_last" in r]
    gaps = [100 * abs(r["test_oa"] - r["test_oa_last"]) for r in runs]
    lines.append(
        f"- **Noise is of the size of the effects.** Seed-to-seed std of the no-KD student: "
        f"{statistics.stdev(plain):.2f} points. A test OA on {TEST_SHAPES:,} shapes has a "
        f"binomial std of ≈ {sd_test:.2f} points, a validation OA on {VAL_SHAPES} shapes "
        f"≈ {sd_val:.2f}; "
        "the best-validation epoch is picked among epochs that validation cannot tell apart"
        + (f", and its test OA differs from the last epoch's by up to {max(gaps):.2f} points "
           f"on the same run ({len(runs)} runs)" if gaps else "") + ".")
    curves = [r["val_oa_curve"] for r in groups["plain"] if r.get("val_oa_curve")]
    if curves and min(len(c) for c in curves) >= 40:
        late = [100 * statistics.fmean(c[-20:]) for c in curves]
        before = [100 * statistics.fmean(c[-40:-20]) for c in curves]
        rise = statistics.fmean(late) - statistics.fmean(before)
        lines.append(
            f"- **The schedule.** Validation OA of the no-KD student, mean over its last 20 "
            f"epochs: {statistics.fmean(late):.2f}%, over the 20 before: "
            f"{statistics.fmean(before):.2f}% ({rise:+.2f}: "
            + ("flat within the validation noise" if abs(rise) < sd_val / 2 else "still moving")
            + "; curves below).")
    votes = load("records_quality_votes.json")
    if votes and len(votes["sets"]) == 2:
        a, b = votes["sets"]
        lines.append(
            f"- **Levers not run here.** A more accurate target from the same teacher: "
            f"`record --votes {b['votes']}` targets are right on "
            f"{100 * b['held_out']['acc']:.2f}% of the replayed copies of the teacher's "
            f"held-out shapes vs {100 * a['held_out']['acc']:.2f}% single-view (\"Teacher "
            "voting at record time\"); a K = 20 voted record set costs 5× the recording "
            "(~1 h of one core) and a new round of students. Beyond that, a teacher of "
            "another kind, alone or as an ensemble member (`record --teacher A --teacher B`).")
    return lines


def _plot_student_curves(groups: dict[str, list[dict]], out: Path) -> str | None:
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for mode, rs in sorted(groups.items(), key=lambda kv: mode_label(kv[0])):
        curves = [r["val_oa_curve"] for r in rs if r.get("val_oa_curve")]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        mean = [100 * sum(c[i] for c in curves) / len(curves) for i in range(n)]
        ax.plot(range(1, n + 1), mean, label=f"{mode_label(mode)} ({len(curves)} seeds)")
    if not ax.lines:
        plt.close(fig)
        return None
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation OA (%)")
    ax.set_ylim(80, 95)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out.name


def goal_lines(groups: dict[str, list[dict]]) -> list[str]:
    """The CPU goal (best student ≥ 90.0% and ≥ +1.5 over no KD), checked on the means, and
    the evidence for what limits it."""
    means = group_means(groups)
    if "plain" not in means:
        return []
    best = max(means, key=means.get)
    gain = means[best] - means["plain"]
    met = means[best] >= 90.0 and gain >= 1.5
    lines = ["", f"**Goal {'met' if met else 'not met'}:** best mean {means[best]:.2f}% "
             f"({mode_label(best)}, {len(groups[best])} seed(s)), {gain:+.2f} points over no "
             "KD (goal: ≥ 90.0% and ≥ +1.5)."]
    t = load("teacher_modelnet40_cpu.json")
    if met or t is None:
        return lines
    lines += ["", "What limits it, with the evidence:", "",
              f"- **Teacher quality.** The CPU teacher scores {100 * t['test_oa']:.2f}% OA / "
              f"{100 * t['test_macc']:.2f}% mAcc on test, below the student trained without it "
              f"({means['plain']:.2f}%). Plain KD from it lowers mAcc "
              f"({_mean(groups, 'plain', 'test_macc'):.2f}% → "
              f"{_mean(groups, 'kd', 'test_macc'):.2f}%: its weak classes are taught too)."]
    floor = noise_floor(groups)
    other = load(f"record_sets/{TEACHER_TAG}.json")
    ens = {b: paired(groups, f"{b}@{TEACHER_TAG}", b) for b in ("kd", "nwsd-0.3")}
    if other and any(ens.values()):
        ev = other["teacher_eval"]["single_view"]
        moved = [abs(sum(d) / len(d)) for d in ens.values() if d]
        verdict = ("did not move them beyond the noise floor" if floor and max(moved) <= floor
                   else "moved them")
        lines.append(
            f"- **A better teacher of the same kind is not enough.** An ensemble of three NWSD "
            f"students as teacher ({100 * ev['oa']:.2f}% test OA, "
            f"{100 * ev['oa'] - 100 * t['test_oa']:.1f} points above PointNet) {verdict}: "
            + " and ".join(f"{_paired_cell(d)} ({mode_label(b)}, paired, seeds "
                           f"{', '.join(str(r['seed']) for r in groups[b + '@' + TEACHER_TAG])})"
                           for b, d in ens.items() if d)
            + " — two-teacher table below. A likely reason: its members share the student's "
            "architecture and errors, so its soft targets carry little the student would not "
            "learn by itself. The "
            "goal needs a teacher well above 90% and of another kind (the GPU protocol's "
            "PointMLP/DGCNN at 93–94%); none could be trained on 2 CPU cores in these sessions "
            "(PointMLP: ~9 h per epoch here).")
    if floor:
        lines.append(f"- **Seed noise is of the same order as the effects.** Runs whose targets "
                     "differ only by logit rounding (fp16 or fp32 instead of int8, KL ~1e-6 "
                     f"apart) differ by up to {floor:.2f} points on the same seed; seed-to-seed "
                     f"std reaches {_max_std(groups):.2f}. Paired differences smaller than that "
                     "are not resolved by 3 seeds.")
    else:
        lines.append(f"- **Seed noise is of the same order as the effects.** Seed-to-seed std of "
                     f"test OA is up to {_max_std(groups):.2f} points, which is why every "
                     "comparison above is also given paired by seed.")
    runs = [r for rs in groups.values() for r in rs]
    last = sum(r["best_epoch"] >= r["epochs"] - 1 for r in runs)
    lines.append(f"- **Schedule.** {runs[0]['epochs']} epochs (~16 of the 30 allowed minutes) per "
                 f"student; in {last} of {len(runs)} runs the best validation epoch is one of the "
                 "last two, i.e. validation OA was still rising when the cosine schedule ended. "
                 "A longer schedule is the cheapest untested lever; it was not run because every "
                 "extra epoch multiplies over all modes and seeds.")
    return lines


def noise_floor(groups: dict[str, list[dict]]) -> float | None:
    """Largest same-seed |Δ test OA| between runs whose targets differ only by logit rounding
    (fp16/fp32 records vs the int8 default): what chaos alone does to one run."""
    d = [abs(x) for tag in ("fp16", "fp32") for x in paired(groups, f"kd@{tag}", "kd")]
    return max(d) if d else None


def _mean(groups: dict[str, list[dict]], mode: str, key: str) -> float:
    rs = groups.get(mode, [])
    return 100 * sum(r[key] for r in rs) / len(rs) if rs else float("nan")


def last_epoch_cell(rs: list[dict]) -> str:
    """Test OA of the final-epoch weights (bench_students --backfill-last), when every run of
    the group has it."""
    if not all("test_oa_last" in r for r in rs):
        return "–"
    return mean_std([r["test_oa_last"] for r in rs])


def paired_lines(groups: dict[str, list[dict]]) -> list[str]:
    """Per-seed (paired) differences in test OA: same seed = same split, init and data order."""
    lines = []
    for base in ("plain", "kd"):
        if base not in groups:
            continue
        ref = {r["seed"]: 100 * r["test_oa"] for r in groups[base]}
        for mode, rs in sorted(groups.items(), key=lambda kv: mode_label(kv[0])):
            d = [100 * r["test_oa"] - ref[r["seed"]] for r in rs if r["seed"] in ref]
            if mode == base or mode == "plain" or len(d) < 2:
                continue
            mu, sd = mean_sd(d)
            lines.append(f"| {mode_label(mode)} | {mode_label(base)} | {len(d)} | "
                         f"{mu:+.2f} ± {sd:.2f} | {', '.join(f'{x:+.2f}' for x in d)} |")
    if not lines:
        return []
    return ["", "Paired by seed (same validation split, initialisation and data order), test "
            "OA difference in points:", "", "| run | against | seeds | mean ± std | per seed |",
            "|---|---|---:|---:|---|", *lines]


def _max_std(groups: dict[str, list[dict]]) -> float:
    return max((mean_sd([100 * r["test_oa"] for r in rs])[1] for rs in groups.values()),
               default=0.0)


def plot_oa_vs_params(groups: dict[str, list[dict]]) -> str | None:
    """OA vs parameters: our students (no KD and the best per teacher, mean ± std over seeds),
    our teachers, and the published anchors."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 6))
    for name, oa, params, _ in ANCHORS:
        ax.scatter(params, oa, marker="s", color="grey")
        ax.annotate(name, (params, oa), fontsize=7, xytext=(4, -3), textcoords="offset points")
    teachers = [("PointNet CPU teacher", load("teacher_modelnet40_cpu.json"), "")]
    other = load(f"record_sets/{TEACHER_TAG}.json")
    if other and other.get("teacher_eval"):
        ev = other["teacher_eval"]
        teachers.append(("3-student ensemble teacher",
                         {"params": ev["params"], "test_oa": ev["single_view"]["oa"]},
                         f"@{TEACHER_TAG}"))
    means = group_means(groups)
    shown = [("plain", "no KD")]
    for name, t, suffix in teachers:
        if t and t.get("test_oa"):
            ax.scatter(t["params"] / 1e6, 100 * t["test_oa"], marker="^", s=50,
                       label=f"{name} ({100 * t['test_oa']:.1f}%)")
        kd = [m for m in means if m != "plain" and (m.endswith(suffix) if suffix else "@" not in m)]
        if kd:
            best = max(kd, key=means.get)
            shown.append((best, f"best student, {name}: {mode_label(best.split('@')[0])}"))
    for mode, label in shown:
        if mode not in groups:
            continue
        oa = [100 * r["test_oa"] for r in groups[mode]]
        mu, sd = mean_sd(oa)
        ax.errorbar(groups[mode][0]["params"] / 1e6, mu, yerr=sd, fmt="o", capsize=3,
                    label=f"{label} ({mu:.2f} ± {sd:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("ModelNet40 test OA (%)")
    ax.set_title("Grey squares: published figures; coloured: measured here (single view)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14))
    fig.tight_layout()
    path = RESULTS / "oa_vs_params.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return "bench/results/oa_vs_params.png"


def section_records() -> list[str]:
    r = load("records.json")
    lines = ["## Record size and recording throughput", ""]
    if r is None:
        return lines + ["_not measured yet_", ""]
    m = r["machine"]
    lines += [f"Command: `{r['command']}` · machine: {m['cpu']}, {m['threads']} threads, "
              f"OMP wait policy {m.get('omp_wait_policy', 'default')} · data: {r['data']}", "",
              f"| logits encoding (40 classes) | bytes per augmented sample | vs a stored "
              f"1,024-point cloud ({r['cloud_bytes']} B) |", "|---|---:|---:|"]
    for enc, b in r["bytes_per_row_40_classes"].items():
        lines.append(f"| {enc}{' (default)' if enc == 'int8' else ''} | {b} | "
                     f"{r['compression_vs_cloud'][enc]:.0f}x smaller |")
    lines += ["", "| teacher | params | batch | rows/round | forward-only rows/s | "
              "recording rows/s | recording / forward |", "|---|---:|---:|---:|---|---|---:|"]
    for t in r["throughput"]:
        fwd = ", ".join(f"{x:.0f}" for x in t["forward_rows_per_s"])
        rec = ", ".join(f"{x:.0f}" for x in t["record_rows_per_s"])
        lines.append(f"| {t['model']} | {t['params'] / 1e6:.2f}M | {t['batch_size']} | "
                     f"{t['rows']} | {fwd} | {rec} | **{t['record_over_forward']:.2f}** |")
    a = r.get("augment_apply")
    if a:
        lines += ["", f"`augment.apply` at batch {a['batch']} x {a['points']} points: "
                  f"{a['apply_ms']:.1f} ms, {100 * a['apply_over_forward']:.1f}% of a PointNet "
                  "forward."]
    info = RESULTS / "records_info_modelnet40.txt"
    if info.is_file():
        lines += ["", "The ModelNet40 record set (`pointkd records info`):", "", "```",
                  info.read_text().rstrip(), "```"]
    return lines + [""]


def section_encodings() -> list[str]:
    e = load("encodings.json")
    lines = ["## Record compression: bytes per row and what the student is taught", ""]
    if e is None:
        return lines + ["_not measured yet_", ""]
    lines += [f"Command: `{e['command']}` · machine: {e['machine']} · {e['rows']} random rows "
              f"of `{e['records']}` replayed through the teacher (float32 logits), then encoded "
              f"and decoded as `pointkd record` and the reader do. KL is "
              f"KL(p_fp32 ‖ p_decoded) at τ = {e['tau']:g}, the distillation target's error.",
              "", "| encoding | bytes/row | vs 1,024-pt cloud | KL mean | KL max | "
              "max abs Δ logit | top-1 agreement |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in e["encodings"]:
        lines.append(f"| {r['encoding']} | {r['bytes_per_row']} | {r['vs_cloud']:.0f}× | "
                     f"{r['kl_tau_mean']:.1e} | {r['kl_tau_max']:.1e} | "
                     f"{r['max_abs_logit_diff']:.3g} | {100 * r['top1_agreement']:.2f}% |")
    lines += ["", "The stored rows decode to exactly what re-encoding the replayed teacher "
              f"logits gives: **{e['stored_rows_equal_reencoded_replay']}** (replay is exact on "
              "real data). int8 (the default) meets the ≤ 64 B target at a target error "
              "(KL ~1e-6) three orders of magnitude below top-k's; its top-1 disagreements are "
              "near-ties.", ""]
    return lines + section_encoding_students()


def paired(groups: dict[str, list[dict]], mode: str, base: str) -> list[float]:
    """Per-seed test OA differences (points) of `mode` against `base`, on shared seeds."""
    ref = {r["seed"]: 100 * r["test_oa"] for r in groups.get(base, [])}
    return [100 * r["test_oa"] - ref[r["seed"]] for r in groups.get(mode, []) if r["seed"] in ref]


def _paired_cell(d: list[float]) -> str:
    if not d:
        return "–"
    if len(d) == 1:
        return f"{d[0]:+.2f} (1 seed)"
    return "{:+.2f} ± {:.2f}".format(*mean_sd(d))


def section_encoding_students() -> list[str]:
    """Student OA per record encoding: same teacher, K, seeds and schedule; only logits differ."""
    groups = student_groups()
    sets = {tag: load(f"record_sets/{tag}.json") for tag in ENCODING_TAGS}
    modes = {tag: "kd" if tag == "int8" else f"kd@{tag}" for tag in ENCODING_TAGS}
    lines = ["### Student OA per encoding", ""]
    if not any(f"kd@{t}" in groups for t in ENCODING_TAGS):
        return lines + ["_not measured yet_", ""]
    lines += ["Offline KD (β = 0) of student_s from the same PointNet teacher, K = 10, seed 0 "
              "augmentations, 15 epochs, same seeds; only the stored logits differ. Paired Δ is "
              "per seed against int8 (the default).", "",
              "| logits | bytes/row | record set | recording | seeds | test OA % | test mAcc % | "
              "paired Δ OA vs int8 |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for tag in ENCODING_TAGS:
        rs, rec = groups.get(modes[tag], []), sets[tag]
        if not rs or rec is None:
            continue
        seconds = (rec.get("recording") or {}).get("seconds")
        delta = "(reference)" if tag == "int8" else _paired_cell(paired(groups, modes[tag], "kd"))
        lines.append(
            (f"| top-{rec['logits']['topk']} (fp16 values + the rest's log-sum-exp)"
             if rec["logits"]["topk"] else f"| {rec['logits']['encoding']}")
            + f" | {rec['bytes_per_row']} | {rec['bytes'] / 1e6:.1f} MB | "
            + (f"{seconds / 60:.1f} min" if seconds else "–")
            + f" | {', '.join(str(r['seed']) for r in rs)} | "
            f"{mean_std([r['test_oa'] for r in rs])} | {mean_std([r['test_macc'] for r in rs])}"
            f" | {delta} |")
    deltas = {t: paired(groups, modes[t], "kd") for t in ENCODING_TAGS if t != "int8"}
    deltas = {t: sum(d) / len(d) for t, d in deltas.items() if d}
    floor = noise_floor(groups)
    enc = load("encodings.json")
    i8, t5 = sets["int8"], sets["top5"]
    if deltas and floor is not None and enc and i8 and t5:
        kl = {r["encoding"]: r["kl_tau_mean"] for r in enc["encodings"]}
        same = all(abs(d) <= floor for d in deltas.values())
        lines += ["", "**Default: int8.** Mean paired differences against int8 are "
                  + ", ".join(f"{t} {d:+.2f}" for t, d in deltas.items())
                  + f" points; the largest same-seed gap between runs whose targets differ only "
                  f"by rounding is {floor:.2f}. "
                  + ("Student OA does not separate the encodings at this noise level, so the "
                     "choice rests on size and fidelity: int8 is the smallest encoding that "
                     f"keeps the whole distribution (KL {kl['int8']:.0e} from fp32, table above) "
                     f"at {i8['bytes_per_row']} B per row; top-5 saves another "
                     f"{i8['bytes_per_row'] - t5['bytes_per_row']} B per row "
                     f"({t5['bytes'] / 1e6:.1f} vs {i8['bytes'] / 1e6:.1f} MB here) at a "
                     f"{kl['top-5'] / kl['int8']:,.0f}× larger target error — `--topk` is the "
                     "option when bytes matter more, e.g. with many classes, where it saves more."
                     if same else "At least one encoding moved the student beyond that gap; "
                     "see the rows above.")]
    lines += ["", "Recording times are wall times of one process with 1 torch thread; only the "
              "int8 set was recorded with the other core idle, the others beside other jobs "
              "(see each command's machine note), so they are not a throughput comparison — "
              "the record-size section has that. Record commands:", ""]
    lines += [f"- {tag}: `{sets[tag]['command']}` ({sets[tag]['machine']})"
              for tag in ENCODING_TAGS if sets[tag]]
    lines += ["", "Student commands (seed 0):", ""]
    lines += [f"- {tag}: `{groups[modes[tag]][0]['command']}`" for tag in ENCODING_TAGS
              if groups.get(modes[tag])]
    return lines + [""]


def section_teachers() -> list[str]:
    """The same students distilled from two teachers: the PointNet CPU teacher and TEACHER_TAG."""
    groups = student_groups()
    t, other = load("teacher_modelnet40_cpu.json"), load(f"record_sets/{TEACHER_TAG}.json")
    lines = ["## Does a better teacher help? Two teachers side by side", ""]
    if t is None or other is None or not any(m.endswith(f"@{TEACHER_TAG}") for m in groups):
        return lines + ["_not measured yet_", ""]
    ev = other["teacher_eval"]
    members = ", ".join(f"{100 * m['oa']:.2f}%" for m in ev.get("members", []))
    lines += [f"Second teacher: {TAG_LABELS[TEACHER_TAG].removeprefix('teacher: ')} — the three "
              "seeds of the (c) β = −0.3 "
              "student above, their logits averaged (`pointkd record --teacher A --teacher B "
              f"--teacher C`, `--combine mean`). Members score {members} on test; the ensemble "
              f"{100 * ev['single_view']['oa']:.2f}% (`{ev['command']}`). Each member was "
              "selected on its own validation split, but the β = −0.3 recipe was picked from "
              "the test table above, so the teacher's own test figure is slightly optimistic.",
              "",
              "| teacher | params | teacher test OA % | teacher test mAcc % | record set | "
              "student mode | seeds | student test OA % | student test mAcc % |",
              "|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    rec_int8 = load("record_sets/int8.json")
    rows = [(f"{t['model']} (CPU teacher)", t["params"], t["test_oa"], t["test_macc"],
             rec_int8, ""),
            (TAG_LABELS[TEACHER_TAG].removeprefix("teacher: "), ev["params"],
             ev["single_view"]["oa"], ev["single_view"]["macc"], other, f"@{TEACHER_TAG}")]
    for name, params, oa, macc, rec, suffix in rows:
        for base in ("kd", "nwsd-0.3"):
            rs = groups.get(base + suffix, [])
            if not rs:
                continue
            lines.append(f"| {name} | {params / 1e6:.3f}M | {100 * oa:.2f} | {100 * macc:.2f} | "
                         f"{rec['bytes'] / 1e6:.1f} MB, {rec['bytes_per_row']} B/row | "
                         f"{mode_label(base)} | {', '.join(str(r['seed']) for r in rs)} | "
                         f"{mean_std([r['test_oa'] for r in rs])} | "
                         f"{mean_std([r['test_macc'] for r in rs])} |")
    lines += ["", "Paired by seed, student test OA, ensemble teacher minus PointNet teacher: "
              + "; ".join(f"{mode_label(b)} {_paired_cell(paired(groups, f'{b}@{TEACHER_TAG}', b))}"
                          for b in ("kd", "nwsd-0.3") if f"{b}@{TEACHER_TAG}" in groups) + ".",
              "", f"Record command: `{other['command']}` ({other['machine']}, "
              f"{other['recording']['seconds'] / 60:.1f} min for {other['rows']:,} rows).", "",
              "Student commands (seed 0):", ""]
    lines += [f"- {mode_label(m)}: `{groups[m][0]['command']}`"
              for m in (f"kd@{TEACHER_TAG}", f"nwsd-0.3@{TEACHER_TAG}") if m in groups]
    return lines + [""]


def section_distill() -> list[str]:
    lines = ["## Distillation step time and memory (plain vs offline KD vs online KD)", ""]
    found = False
    for name, what in (("distill_efficiency_modelnet40_strong.json",
                        "ModelNet40, the strong CPU teacher (student_l, 0.97M params) and its "
                        "K=20 records, as in the long protocol (issue #13), β = 0; measured "
                        "with the two training queues paused (SIGSTOP)"),
                       ("distill_efficiency_modelnet40.json",
                        "ModelNet40, 1,024 points, the CPU teacher (PointNet) and its K=10 "
                        "records"),
                       ("distill_efficiency.json", "the synthetic demo's artefacts "
                        "(teacher student_m)")):
        d = load(name)
        if d is None:
            continue
        found = True
        s, m, q = d["step_seconds"], d["peak_rss_mb"], d["ratios"]
        env = "POINTKD_NATIVE_OPS=1 " if "strong" in name else ""
        lines += [f"**{what}.** Command: `{env}{d['command']}` · machine: {d['machine']['cpu']}, "
                  f"{d['machine']['threads']} threads · student {d['setup']['student']}, batch "
                  f"{d['setup']['batch_size']}, {d['setup']['steps']} steps × "
                  f"{d['setup']['repeats']} interleaved rounds (median)", "",
                  "| mode | s/step | peak RSS |", "|---|---:|---:|"]
        for mode in ("plain", "offline", "online"):
            lines.append(f"| {mode} | {s[mode]:.3f} | {m[mode]:.0f} MB |")
        lines += ["", f"offline/plain step time **{q['offline_over_plain_step']:.3f}** "
                  "(target ≤ 1.05), "
                  f"online/offline **{q['online_over_offline_step']:.2f}**, offline/plain peak "
                  f"RSS **{q['offline_over_plain_rss']:.3f}** (target ≤ 1.10).", ""]
    if not found:
        return lines + ["_not measured yet_", ""]
    lines += ["Online KD costs one teacher forward per step; with these small teachers that is "
              "1.3–1.7× a student step (PointNet: 0.30 GFLOPs per cloud, student_s: 0.041). A "
              "PointMLP teacher (28.3 GFLOPs, ~700× student_s, counted with "
              "`pointkd.evaluate.count_flops`) would make online KD many times slower, while "
              "offline KD stays at the plain cost.", ""]
    return lines


def section_speed() -> list[str]:
    sp = load("speed.json")
    lines = ["## Model speed on this machine (1,024 points)", ""]
    if sp is None:
        return lines + ["_not measured yet_", ""]
    c, m = sp["config"], sp["machine"]
    lines += [f"Command: `{sp.get('command', 'python bench/bench_speed.py')}` · machine: "
              f"{m['cpu']}, {m['threads']} threads, 1-min load average {m['loadavg_1min_at_start']}"
              f" at the start · train step at batch {c['train_batch']} ({c['optimizer']}), "
              f"inference at batch {c['infer_batch']} under `torch.inference_mode`; input "
              f"{c['input']}", "",
              "Public = the widely used public implementations on this kind of machine (numbers "
              "given in issue #3); target ≥ 2× in both columns. Grouping = the share of the "
              "inference forward spent in sampling/grouping ops (FPS, kNN, ball query, "
              "gathers; target ≤ 30%).", "",
              "| model | params | train samples/s | public | × | infer samples/s | public | × | "
              "grouping |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in sp["models"].items():
        ref = r.get("reference") or {}
        lines.append(
            f"| {name} | {r['params'] / 1e6:.3f}M | {r['train_samples_per_s']:.1f} | "
            f"{ref.get('train', '–')} | {_x(r.get('ratio_train'))} | "
            f"{r['infer_samples_per_s']:.1f} | {ref.get('infer', '–')} | "
            f"{_x(r.get('ratio_infer'))} | {100 * r.get('grouping_fraction_infer', 0):.0f}% |")
    notes = [f"{n}: {r['note']}" for n, r in sp["models"].items() if r.get("note")]
    if notes:
        lines += [""] + [f"- {x}" for x in notes]
    over = {n: r for n, r in sp["models"].items() if r.get("grouping_fraction_infer", 0) > 0.3}
    if over:
        parts = []
        for n, r in over.items():
            ms = 1000 / r["infer_samples_per_s"]
            parts.append(f"{n} {100 * r['grouping_fraction_infer']:.0f}% of {ms:.1f} ms/cloud"
                         f" = {ms * r['grouping_fraction_infer']:.1f} ms")
        lines += ["", "**Grouping above 30%:** " + "; ".join(parts) + ". Not met. These models "
                  "compute their edge/local layer W·[x_j − x_i, x_i] as A·x_j + (B − A)·x_i "
                  "per point before the gather (k = 16–20 times fewer multiply-adds), which "
                  "leaves the kNN search — a distance matmul plus an exact two-stage top-k, "
                  "already tiled — as most of what remains. The share rose because everything "
                  "else shrank: DGCNN's kNN alone takes less time per cloud than 1/15 of the "
                  "public DGCNN's whole forward. Students can trade accuracy for speed with "
                  "`sampler=first` (no FPS; see `models/student.py`)."]
    return lines + [""]


def section_grouping_native() -> list[str]:
    """Where the students' inference forward goes with the C++ kernels (issue #18, goal 3)."""
    d = load("speed_students_native_t1.json")
    if d is None:
        return []
    c, m = d["config"], d["machine"]
    lines = ["## Students: sampling/grouping share with the C++ kernels", "",
             f"Command: `{d.get('command', 'python bench/bench_speed.py')}` · machine: "
             f"{m['cpu']}, {m['threads']} thread(s), 1-min load {m['loadavg_1min_at_start']} at "
             f"the start, {m['date']} · inference at batch {c['infer_batch']} under "
             "`torch.inference_mode`, input " + c["input"], "",
             "| model | infer ms/cloud | sampling/grouping | of which (ms/cloud) |",
             "|---|---:|---:|---|"]
    for name, r in d["models"].items():
        ms = 1000 / r["infer_samples_per_s"]
        ops_ms = ", ".join(f"{op} {ms * share:.2f}" for op, share in
                           sorted(r["op_share_infer"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {name} | {ms:.2f} | {100 * r['grouping_fraction_infer']:.0f}% = "
                     f"{ms * r['grouping_fraction_infer']:.2f} ms | {ops_ms} |")
    goal = []
    for name, r in d["models"].items():
        share = r["grouping_fraction_infer"]
        pool = r["op_share_infer"].get("gather_max", 0.0)
        goal.append(f"{name} {100 * share:.1f}% ({'met' if share <= 0.30 else 'not met'}; "
                    f"{100 * (share - pool):.1f}% without the pool)")
    lines += ["", "**Issue #18 goal 3** (sampling/grouping ≤ 30% of the student forward): "
              + "; ".join(goal) + ".", "",
              "fps_knn is the farthest-point-sampling loop with the first stage's kNN in "
              "it; prefix_knn the later stages' kNN; gather_max the inference pool "
              "(gather + max + activation, which also does the layer's pooling work, so it "
              "is counted as grouping here only because it reads the neighbours). What is "
              "left of fps_knn is 256 sequential steps, each a distance, min and argmax over "
              "1,024 points plus the selection of 16 neighbours (branch-free, vectorised: "
              "~0.2 ms per cloud at batch 32, ~0.14 ms when the same cloud repeats and the "
              "branch predictor has learnt it). Absolute times scale with the machine's "
              "load (shown above); the share is the steadier figure.", ""]
    return lines


def section_speed_vs_ref() -> list[str]:
    """Old/new ratios measured side by side (bench_speed.py --ref), one table per JSON."""
    lines = ["## Speed of this code against an older commit, side by side", ""]
    files = sorted(RESULTS.glob("speed_vs_*.json"))
    if not files:
        return lines + ["_not measured yet_", ""]
    lines += ["Each ratio is old time / new time, measured **side by side in one run**: the two "
              "source trees alternate, each in its own process, over the same inputs and "
              "thread count; the median of the per-round ratios is shown (rounds in the JSON). "
              "Train = forward + backward + AdamW step; infer = eval mode under "
              "`torch.inference_mode`. max |Δ| compares the two trees' eval logits and one "
              "training step's gradients for the same weights and input. On a shared machine "
              "the CPU-time ratio is the steadier one (wall time also counts the time other "
              "processes held the core).", "",
              "Which old tree: `speed_vs_ref_*` compare with commit 152ab98 (`/work/wt-ref18`, "
              "the code when issue #18 was filed: its goals are ratios against it); "
              "`speed_vs_532_*` with commit 532f395, the start of the second round of issue "
              "#18, which already had the first round's kernels; `speed_vs_self_*` run the "
              "same tree on both sides and change only the allocator setting "
              "(`pointkd.cpu.keep_freed_memory`).", ""]
    goals = _speed_goal_lines()
    if goals:
        lines += goals + [""]
    for path in files:
        d = json.loads(path.read_text())
        c, m = d["config"], d["machine"]
        native = "on" if c.get("native_ops") else "off"
        commits = d.get("commits") or {}
        old_tree = f"`{d['trees']['ref']}`" + (f" (commit {commits['ref']})"
                                               if commits.get("ref") else "")
        new_tree = f" · new tree commit {commits['new']}" if commits.get("new") else ""
        malloc = f" · allocator: {c['malloc']}" if c.get("malloc") else ""
        commands = sorted({r.get("command", d["command"]) for r in d["models"].values()})
        lines += [f"**{path.name}** — command(s): {'; '.join(f'`{x}`' for x in commands)} · "
                  f"machine: {m['cpu']}, "
                  f"{c.get('threads', m['threads'])} thread(s), {m['omp_wait_policy']} OpenMP "
                  f"wait, {m['date']} · old tree {old_tree}{new_tree} · native C++ ops "
                  f"(new tree): {native}{malloc} · train batch {c['train_batch']}, "
                  f"inference batch 1 and "
                  f"{c['infer_batch']}, {c['rounds']} rounds × {c['iters']} timed calls "
                  f"(settings of the last command), input {c['input']}", "",
                  "| model | train × (wall) | train × (CPU) | new train samples/s | "
                  "infer b1 × | new ms/cloud b1 | infer b" + str(c["infer_batch"]) + " × | "
                  "new ms/cloud b" + str(c["infer_batch"]) + " | max \\|Δ logits\\| | "
                  "max \\|Δ grad\\| / max \\|grad\\| | 1-min load per round | measured (UTC) |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for name, r in d["models"].items():
            lines.append(
                f"| {name} | {r['train_speedup_wall']:.2f} | {r['train_speedup_cpu']:.2f} | "
                f"{c['train_batch'] / r['train_seconds_new']:.1f} | "
                f"{r['infer_b1_speedup_wall']:.2f} | {1000 * r['infer_b1_seconds_new']:.2f} | "
                f"{r['infer_speedup_wall']:.2f} | "
                f"{1000 * r['infer_seconds_new'] / c['infer_batch']:.2f} | "
                f"{r['max_abs_diff_eval_logits']:.1e} | "
                f"{r['max_abs_diff_grads'] / max(r['max_abs_grad'], 1e-30):.1e} | "
                f"{', '.join(str(x) for x in r['loadavg_1min_per_round'])} | "
                f"{r.get('date', '?')[:16].replace('T', ' ')} |")
        lines.append("")
    lines += ["Rows of one file may come from different runs (a run keeps the models it did "
              "not measure): each row's date says when, the header describes the latest run. "
              "Rows measured before the second round of issue #18 (before 16:00 UTC on "
              "2026-11-29) compare the first round's code.", "",
              "The table in the next section (`speed.json`) holds absolute throughputs from "
              "one earlier run, of the code before these changes (see its date); its "
              "\"public\" ratios are against figures measured on another day (issue #3), "
              "**not** side by side.", ""]
    return lines


SPEED_GOALS = {"student_s": 2.0, "student_l": 2.0, "pointmlp_elite": 1.25}


def _speed_goal_lines() -> list[str]:
    """Issue #18's training-throughput goals against the code it was filed on (152ab98): per
    model the latest row of the 1-thread, C++-kernel files against that tree."""
    latest: dict[str, tuple[dict, str]] = {}
    for path in sorted(RESULTS.glob("speed_vs_ref_native_t1*.json")):
        for name, r in json.loads(path.read_text())["models"].items():
            if name not in latest or r.get("date", "") > latest[name][0].get("date", ""):
                latest[name] = (r, path.name)
    parts = []
    for name, goal in SPEED_GOALS.items():
        if name not in latest:
            continue
        r, file = latest[name]
        got = r["train_speedup_cpu"]
        parts.append(f"{name} ×{got:.2f} CPU time (×{r['train_speedup_wall']:.2f} wall; "
                     f"{file}, {r.get('date', '?')[:16].replace('T', ' ')} UTC) against a goal "
                     f"of ×{goal:g}: {'met' if got >= goal else 'not met'}")
    return (["**Issue #18 training goals** (1 thread, C++ kernels on, against 152ab98; the "
             "latest row per model): " + "; ".join(parts) + "."] if parts else [])


def _x(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return f"**{ratio:.1f}×**" if ratio >= 2 else f"{ratio:.2f}× (below 2×)"


LATENCY_FILES = ("latency.json", "latency_passive.json", "latency_t1.json",
                 "latency_torch_ops.json")


def section_latency() -> list[str]:
    lines = ["## Student inference latency (`pointkd export` path)", ""]
    found = [(n, load(n)) for n in LATENCY_FILES]
    found = [(n, d) for n, d in found if d is not None]
    if not found:
        return lines + ["_not measured yet_", ""]
    goal = []
    for name, d in found:
        mach = d["machine"]
        load_note = (f", 1-min load {mach['loadavg_1min_at_start']} → "
                     f"{mach['loadavg_1min_at_end']}" if "loadavg_1min_at_start" in mach else "")
        native = ("; eager uses the C++ kernels"
                  if mach.get("native_ops") else "; PyTorch ops only" if "native_ops" in mach
                  else "")
        wait = (f", OpenMP wait policy {mach['omp_wait_policy']}"
                if "omp_wait_policy" in mach else "")
        lines += [f"**{name}** — command: `{d['command']}` · machine: {mach['cpu']}, "
                  f"{mach['threads']} threads{wait}{load_note} · {d['model']} "
                  f"({d['params'] / 1e6:.3f}M params), {d['num_points']} points; backends "
                  f"alternated in each round{native}", "",
                  "| backend | batch 1: ms/cloud | batch 32: ms/cloud | batch 32: clouds/s |",
                  "|---|---:|---:|---:|"]
        for backend, v in d["latency"].items():
            lines.append(f"| {backend} | {v['batch1']['ms_per_cloud']:.2f} | "
                         f"{v['batch32']['ms_per_cloud']:.2f} | "
                         f"{v['batch32']['clouds_per_s']:.0f} |")
        lines.append("")
        best = min(d["latency"].items(), key=lambda kv: kv[1]["batch1"]["ms_per_cloud"])
        b1, b32 = best[1]["batch1"]["ms_per_cloud"], best[1]["batch32"]["ms_per_cloud"]
        goal.append(f"{name} ({mach['threads']} thread(s){wait}): fastest at batch 1 is "
                    f"{best[0]}, {b1:.2f} ms ({'≤' if b1 <= 2 else '>'} 2 ms), batch 32 "
                    f"{b32:.2f} ms/cloud ({'below' if b32 < b1 else 'not below'} batch 1)")
    lines += ["**Issue #18 latency goal** (batch 1 ≤ 2 ms per cloud on 2 threads, batch 32 "
              "per cloud below batch 1): " + "; ".join(goal) + ".", "",
              "Each backend runs in its own worker process, the backends alternating in each "
              "round (in one process, ONNX Runtime's threads and the other backends slowed "
              "eager PyTorch at batch 1 by ~40%). TorchScript and ONNX graphs are traced, so "
              "they hold the PyTorch ops (the FPS loop unrolled); the C++ kernels serve eager "
              "PyTorch only. The OpenMP wait policy matters at batch 1: with PASSIVE (what "
              "the Makefile sets, so that training jobs sharing the cores do not spin) idle "
              "threads sleep, and every parallel op pays to wake them; the default policy "
              "spins briefly first. On this shared VM absolute times vary by ±30% between "
              "runs; the files above were measured with the training jobs paused. To "
              "re-measure, the command of each file.", ""]
    return lines


def section_gpu() -> list[str]:
    """The GPU protocol (issue #6, item 5): not measured yet, so this says so and what is ready.
    Its tables belong here, generated from their JSON, once a GPU run exists."""
    return ["## GPU protocol (strong teacher, ≤ 0.5M students)", "",
            "**Not run: no GPU was lent to this task** (the device tool's `status` reported "
            "`can_start_another: false` in every session so far). The CPU protocol above is "
            "the whole of what is measured. What is ready for it: `configs/modelnet40_gpu.yaml` "
            "(PointMLP's public recipe, bf16 autocast), CUDA paths for train / record / distill, "
            "deterministic GPU recording, and torchrun/DDP (docs/distributed.md). The plan, "
            "to be filled in here by its JSON:", "",
            "1. `pointkd train --config configs/modelnet40_gpu.yaml --model pointmlp --out "
            "runs/pointmlp` (or `--model dgcnn`), resumed across 10-minute calls;",
            "2. `pointkd record --teacher runs/pointmlp/best.pt --data ../shared/data/"
            "modelnet40_1024 --k 20 --out zoo/records_pointmlp_k20` (int8: 196,860 rows × 64 B "
            "= 12.6 MB, inside the zoo's 16 MB; fp16 would be 20 MB);",
            "3. the students of the CPU table against those records, side by side with the "
            "PointNet teacher's rows.", ""]


STATS_FILES = (("records_stats_student_l_k20.json", "`pointkd records stats "
                "zoo/records_student_l_modelnet40_k20 --data ../shared/data/modelnet40_1024 "
                "--json`"),
               ("records_stats_pointnet_k10.json", "`pointkd records stats "
                "zoo/records_pointnet_modelnet40_k10 --data ../shared/data/modelnet40_1024 "
                "--json`"))


def section_records_stats() -> list[str]:
    """What each committed record set carries (`pointkd records stats`)."""
    found = [(load(name), cmd) for name, cmd in STATS_FILES if load(name) is not None]
    lines = ["## What the committed record sets carry (`pointkd records stats`)", ""]
    if not found:
        return lines + ["_not measured yet_", ""]
    lines += ["| record set | rows | B/row | teacher right on rows | top-1 prob τ=1 | "
              "entropy τ=1 (nats) | KL(view ‖ shape mean) mean / median | top-1 changes "
              "across views |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for d, _ in found:
        tau1 = next(t for t in d["taus"] if t["tau"] == 1.0)
        acc = pct(d.get("teacher_accuracy"))
        lines.append(f"| `{d['records']}` | {d['rows']:,} | {d['bytes_per_row']} | {acc} | "
                     f"{tau1['mean_top_prob']:.3f} | {tau1['mean_entropy_nats']:.3f} "
                     f"(uniform {d['uniform_entropy_nats']:.3f}) | "
                     f"{d['view_kl_mean_nats']:.4f} / {d['view_kl_median_nats']:.4f} | "
                     f"{pct(d['top1_change_fraction'])} |")
    lines += ["", "Commands: " + "; ".join(cmd for _, cmd in found) + ". Definitions: "
              + "; ".join(f"{k}: {v}" for k, v in found[0][0]["definitions"].items()) + ".",
              ""]
    return lines


def section_export_samplers() -> list[str]:
    """`pointkd export --sampler`: the accuracy a cheaper sampler costs, beside its latency."""
    d = load("export_samplers_student_l.json")
    lines = ["## ONNX export with a cheaper anchor sampler (`pointkd export --sampler`)", ""]
    if d is None:
        return lines + ["_not measured yet_", ""]
    lat = next((x for x in (load(n) for n in LATENCY_FILES) if x and any(
        k.startswith("onnxruntime_") for k in x["latency"])), None)
    trained = next(v["check_oa_trained"] for v in d["samplers"].values()
                   if "check_oa_trained" in v)
    lines += [f"Command: `{d['command']}` · machine: {d['machine']['cpu']}, "
              f"{d['machine']['threads']} thread(s) · test OA on all {d['test_shapes']:,} test "
              "shapes of the exported graph (parity with PyTorch running the same sampler)",
              "", "| sampler | test OA | top-1 agreement with the model as trained | "
              "ONNX Runtime batch 1 | batch 32 (per cloud) |", "|---|---:|---:|---:|---:|"]
    for name, v in d["samplers"].items():
        oa = v.get("check_oa_exported", trained)
        agree = v.get("top1_agreement_with_trained", 1.0)
        key = "onnxruntime" if name == "fps" else f"onnxruntime_{name}"
        times = lat["latency"].get(key) if lat else None
        t1, t32 = ((f"{times['batch1']['ms_per_cloud']:.2f} ms",
                    f"{times['batch32']['ms_per_cloud']:.2f} ms") if times else ("–", "–"))
        lines.append(f"| {name}{' (as trained)' if name == 'fps' else ''} | {pct(oa)} | "
                     f"{pct(agree)} | {t1} | {t32} |")
    if lat:
        lines += ["", f"Latency: `{lat['command']}` ({lat['machine']['cpu']}, "
                  f"{lat['machine']['threads']} thread(s)), a student_s of random weights "
                  "(the time does not depend on them)."]
    return lines + [""]


def section_teacher_members() -> list[str]:
    """The CPU teacher ensemble so far: each member and the ensemble with the zoo teacher."""
    d = load("teacher_members.json")
    if d is None:
        return []
    lines = ["## Teacher-ensemble members (CPU, trained across sessions)", "",
             "| member | epochs | best val OA (epoch) | test OA | test mAcc | core-hours | "
             "sha256 |", "|---|---:|---:|---:|---:|---:|---|"]
    by_path = {m["checkpoint"]: m for m in d["ensemble"]["members"]}
    for m in d["members"]:
        ev = by_path.get(m["zoo"], {})
        lines.append(f"| `{m['zoo']}` | {m['epochs']} | {pct(m['val_oa'])} ({m['best_epoch']}) "
                     f"| {pct(ev.get('oa'))} | {pct(ev.get('macc'))} | "
                     f"{m['train_core_hours']:.1f} | `{m['sha256'][:16]}…` |")
    e = d["ensemble"]
    names = " + ".join(f"`{m['checkpoint']}` ({pct(m['oa'])})" for m in e["members"])
    lines += ["", f"Ensemble (mean logits) of {names}: **{pct(e['single_view']['oa'])}** test OA "
              f"single view, mAcc {pct(e['single_view']['macc'])}"
              + (f"; with {e['voting']['votes']} rescaled votes {pct(e['voting']['oa'])}"
                 if e.get("voting") else "") + f" (`{e['command']}`).", "",
              "Training: " + "; ".join(f"`{m['command']}` ({m['machine']})" for m in d["members"])
              + ". The members' validation splits differ (train.seed 0 and 1; `data.split_seed` "
              "now keeps one split across members), so the ensemble's members and votes are not "
              "chosen on validation yet: these are test numbers, reported, not selected on.", ""]
    return lines


def section_anchors() -> list[str]:
    lines = ["## Published anchors (not measured here)", "",
             "| model | ModelNet40 OA | params | source |", "|---|---:|---:|---|"]
    lines += [f"| {n} | {oa}% | {p}M | {src} |" for n, oa, p, src in ANCHORS]
    return lines + [""]


def wrap_prose(lines: list[str], width: int = 100) -> list[str]:
    """Prose lines wrapped at `width` (Markdown joins them back into one paragraph); table
    rows, headings, list items' first lines keep their shape, and nothing is reworded."""
    import textwrap

    out: list[str] = []
    for block in lines:
        for line in block.split("\n"):
            if len(line) <= width or line.startswith(("|", "#", "```", "    ", "!")):
                out.append(line)
                continue
            lead = "- " if line.startswith("- ") else ""
            out += textwrap.wrap(line, width, initial_indent="", subsequent_indent=" " * len(lead),
                                 break_long_words=False, break_on_hyphens=False)
    return out


def main() -> None:
    parts = ["# BENCHMARKS", "",
             "Generated by `python bench/make_benchmarks.py` from the JSON files in "
             "`bench/results/`; every number names the command that produced it. Timings "
             "compared with each other were measured side by side in one run.", ""]
    for section in (section_demo, section_demo_probe, section_teacher, section_teacher_members,
                    section_teacher_wip,
                    section_records_stats,
                    section_records_strong,
                    section_flatness,
                    section_tau_probe_l, section_beta_probe_l, section_students_strong,
                    section_overlap, section_record_votes,
                    section_students,
                    section_teachers, section_records,
                    section_encodings, section_distill,
                    section_latency, section_export_samplers, section_speed_vs_ref,
                    section_grouping_native,
                    section_speed, section_gpu,
                    section_anchors):
        parts += section()
    OUT.write_text("\n".join(wrap_prose(parts)))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
