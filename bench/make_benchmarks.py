"""Generate BENCHMARKS.md from the JSON results in bench/results/.

This script computes the numbers and builds the tables; the words around them are Markdown
templates in bench/templates/ (`string.Template`: `$name` placeholders), one per subsection or
caption. Long write-ups live in docs/experiments/ and the templates link to them.

    python bench/make_benchmarks.py
"""

from __future__ import annotations

import csv
import json
import re
import statistics
import string
import textwrap
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
TEMPLATES = BENCH / "templates"
OUT = BENCH.parent / "BENCHMARKS.md"

# published single-view ModelNet40 figures, for context only (not measured here)
ANCHORS = [("PointNet", 89.2, 3.5, "Qi et al., CVPR 2017"),
           ("PointNet++ (SSG)", 90.7, 1.5, "Qi et al., NeurIPS 2017"),
           ("DGCNN", 92.9, 1.8, "Wang et al., TOG 2019"),
           ("PointMLP", 94.1, 13.2, "Ma et al., ICLR 2022"),
           ("PointMLP-elite", 93.6, 0.68, "Ma et al., ICLR 2022"),
           ("PointNeXt-S", 93.2, 1.4, "Qian et al., NeurIPS 2022")]

# issue #25's anchors for the ensemble protocol: SLNet-S's paper figure is the best epoch on
# test, its last epoch lower; PointMLP-elite's independent re-runs at the last epoch
ENS_ANCHORS = [("SLNet-S (paper, best epoch on test)", 93.64, 0.14),
               ("SLNet-S (last epoch)", 92.71, 0.14),
               ("SLNet-S public checkpoint on our test split", 90.24, 0.14),
               ("PointMLP-elite (re-runs, last epoch: 92.2-93.0)", 92.6, 0.68)]
STRONG_TEACHER = "teacher_student_l_modelnet40_cpu.json"
TEACHER_GOAL, TEACHER_BUDGET_H = 93.0, 8  # the strong teacher's test OA target (%), core-hours
CPU_GOAL = (90.0, 1.5)  # best mean test OA (%) of a student and its gain over no KD (points)
STRONG_GOAL = (92.0, 1.5)  # the same for the strong teacher's long schedule
VAL_SHAPES = 985  # ModelNet40: the 10% of its 9,843 training shapes held out for validation
SPEED_GOALS = {"student_s": 2.0, "student_l": 2.0, "pointmlp_elite": 1.25}  # train × vs 152ab98
LATENCY_FILES = ("latency.json", "latency_passive.json", "latency_t1.json",
                 "latency_torch_ops.json", "latency_avx2.json")
ONNX_GOAL_MS = 2.0  # issue #27: ONNX Runtime, batch 1, 1-2 threads
STATS_FILES = {"records_stats_ens_ab_k8.json": "zoo/records_ens_ab_modelnet40_k8",
               "records_stats_ens_ab_mix_k8.json": "zoo/records_ens_ab_mix_modelnet40_k8",
               "records_stats_student_l_k20.json": "zoo/records_student_l_modelnet40_k20",
               "records_stats_pointnet_k10.json": "zoo/records_pointnet_modelnet40_k10"}
DISTILL_RUNS = {  # bench_distill.py results: file -> what was distilled
    "distill_efficiency_modelnet40_ens.json":
        "ModelNet40, the teacher ensemble (members A + B, 4 votes each: 10 student_l forwards "
        "per online batch) and its K=8 records, β = 0, beside the two training queues, 1 thread "
        "each",
    "distill_efficiency_modelnet40_strong.json":
        "ModelNet40, the strong CPU teacher (student_l, 0.97M params) and its K=20 records, as "
        "in the long protocol, β = 0; measured with the two training queues paused (SIGSTOP)",
    "distill_efficiency_modelnet40.json":
        "ModelNet40, 1,024 points, the CPU teacher (PointNet) and its K=10 records",
    "distill_efficiency.json": "The synthetic demo's artefacts (teacher student_m)"}

MODE_LABELS = {"plain": "(a) no KD", "kd": "(b) offline KD", "online": "(d) online KD"}
# record sets other than the default (PointNet teacher, int8, K = 10), by bench_students tag
TAG_LABELS = {"fp32": "fp32 logits", "fp16": "fp16 logits", "top5": "top-5 logits",
              "ens3": "teacher: ensemble of 3 NWSD students",
              "mix": "mixed views", "fixed": "single-shape views"}
XS_GOAL = 91.5  # issue #25: the <= 0.15M student's best mode, mean test OA (%)
MIX_GOAL = 1.0  # issue #26: the best recipe's gain over same-augmentation no KD, every seed
MIX_RECORDS = "zoo/records_ens_ab_mix_modelnet40_k8"  # the mixed-view record set, committed
TEACHER_TAG = "ens3"  # the second teacher of the teacher-quality comparison
ENCODING_TAGS = ["fp32", "fp16", "int8", "top5"]  # int8 = the default record set ("kd")


# --- reading results, filling templates, building tables ---------------------------------------

def load(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def load_all(pattern: str) -> list[tuple[Path, dict]]:
    return [(p, json.loads(p.read_text())) for p in sorted(RESULTS.glob(pattern))]


def pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}%"


def millions(n: float, digits: int = 3) -> str:
    return f"{n / 1e6:.{digits}f}M"


def when(date: str) -> str:
    return date[:16].replace("T", " ")


# a template line that starts a block of its own, and one that no following line joins onto
NEW_BLOCK = re.compile(r"- |\d+\. |\||#|!\[|```|\$\{?\w+\}?$")
CLOSED = re.compile(r"\||#|!\[|```|\$\{?\w+\}?$")


def unwrap(text: str) -> str:
    """One line per paragraph or list item: templates are wrapped for reading, and
    `wrap_prose` wraps the filled text again."""
    out: list[str] = []
    for line in text.splitlines():
        if (out and out[-1] and line.strip() and not NEW_BLOCK.match(line)
                and not CLOSED.match(out[-1])):
            out[-1] += " " + line.strip()
        else:
            out.append(line)
    return "\n".join(out)


def fill(template: str, /, **values: object) -> str:
    """bench/templates/<template>.md with its `$placeholders` filled."""
    text = unwrap((TEMPLATES / f"{template}.md").read_text())
    return string.Template(text).substitute(values).strip("\n")


def table(cols: Sequence[object], align: str, rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table; `align` has one letter per column: l(eft) or r(ight)."""
    assert len(align) == len(cols), (cols, align)
    lines = ["| " + " | ".join(map(str, cols)) + " |",
             "|" + "".join("---|" if a == "l" else "---:|" for a in align)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def bullets(items: Iterable[str]) -> str:
    return "\n".join(f"- {x}" for x in items)


def code(text: str) -> str:
    return f"```\n{text.rstrip()}\n```"


def commands(cmds: Iterable[str]) -> str:
    return "; ".join(f"`{c}`" for c in cmds)


# --- students: modes, groups, paired differences -----------------------------------------------

def mode_label(mode: str) -> str:
    base, _, tag = mode.partition("@")
    if base.startswith("nwsd-"):
        beta, _, tau = base.removeprefix("nwsd-").partition("-t")
        label = f"(c) offline KD + NWSD, β = −{beta}" + (f", τ = {tau}" if tau else "")
    elif base.startswith("kd-k"):
        label = f"offline KD, K = {base.removeprefix('kd-k')} (distill.use_k)"
    elif base.startswith("kd-t"):
        label = f"(b) offline KD, τ = {base.removeprefix('kd-t')}"
    else:
        label = MODE_LABELS.get(base, base)
    return f"{label}, {TAG_LABELS.get(tag, tag + ' records')}" if tag else label


def student_groups(folder: str = "students") -> dict[str, list[dict]]:
    """bench/results/<folder>/*.json grouped by mode, seeds sorted."""
    groups: dict[str, list[dict]] = {}
    for _, r in load_all(f"{folder}/*.json"):
        groups.setdefault(r["mode"], []).append(r)
    return {m: sorted(rs, key=lambda r: r["seed"]) for m, rs in groups.items()}


def by_label(groups: dict[str, list[dict]]) -> list[str]:
    return sorted(groups, key=lambda m: (mode_label(m), m))


def seed_list(rs: list[dict]) -> str:
    return ", ".join(str(r["seed"]) for r in rs)


def mean_sd(v: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    mu = sum(v) / len(v)
    return mu, (sum((x - mu) ** 2 for x in v) / (len(v) - 1)) ** 0.5 if len(v) > 1 else 0.0


def mean_std(rs: list[dict], key: str) -> str:
    v = [100 * r[key] for r in rs]
    if len(v) == 1:
        return f"{v[0]:.2f} (1 seed)"
    return "{:.2f} ± {:.2f}".format(*mean_sd(v))


def last_epoch(rs: list[dict]) -> str:
    """Mean ± std of the last epoch's test OA, or – when a run predates that field."""
    return mean_std(rs, "test_oa_last") if all("test_oa_last" in r for r in rs) else "–"


def group_means(groups: dict[str, list[dict]]) -> dict[str, float]:
    """Mean test OA (%) of each mode over its seeds."""
    return {m: 100 * statistics.fmean(r["test_oa"] for r in rs) for m, rs in groups.items()}


def paired(groups: dict[str, list[dict]], mode: str, base: str, key: str = "test_oa"
           ) -> list[float]:
    """Per-seed differences of `key` (points) of `mode` against `base`, on shared seeds."""
    ref = {r["seed"]: 100 * r[key] for r in groups.get(base, []) if key in r}
    return [100 * r[key] - ref[r["seed"]] for r in groups.get(mode, [])
            if r["seed"] in ref and key in r]


def paired_cell(d: list[float]) -> str:
    if not d:
        return "–"
    if len(d) == 1:
        return f"{d[0]:+.2f} (1 seed)"
    return "{:+.2f} ± {:.2f}".format(*mean_sd(d))


def paired_table(groups: dict[str, list[dict]], last: bool = False) -> str:
    """Per-seed (paired) differences in test OA against no KD and against offline KD; with
    `last`, also at the last epoch (no model selection on the 985 validation shapes, whose
    choice of epoch moves one run's test OA by more than the effect being measured)."""
    rows = []
    for base in ("plain", "kd"):
        for mode in by_label(groups) if base in groups else []:
            d = paired(groups, mode, base)
            if mode in (base, "plain") or len(d) < 2:
                continue
            row = [mode_label(mode), mode_label(base), len(d), paired_cell(d),
                   ", ".join(f"{x:+.2f}" for x in d)]
            if last:
                d = paired(groups, mode, base, "test_oa_last")
                row += [paired_cell(d), ", ".join(f"{x:+.2f}" for x in d)]
            rows.append(row)
    if not rows:
        return ""
    cols = ["run", "against", "seeds", "mean ± std", "per seed"]
    if last:
        cols = cols[:3] + ["picked on val: mean ± std", "per seed", "last epoch: mean ± std",
                           "per seed"]
    return fill("paired", table=table(cols, "llrrlrl"[:len(cols)], rows))


def goal(groups: dict[str, list[dict]], target: tuple[float, float]) -> str:
    """The best distilled mode's mean test OA and gain over no KD, against `target`."""
    means = group_means(groups)
    if "plain" not in means or len(means) < 2:
        return ""
    best = max((m for m in means if m != "plain"), key=means.get)
    gain = means[best] - means["plain"]
    met = means[best] >= target[0] and gain >= target[1]
    return fill("goal", verdict="met" if met else "not met", best=f"{means[best]:.2f}",
                label=mode_label(best), seeds=len(groups[best]), gain=f"{gain:+.2f}",
                goal_oa=target[0], goal_gain=target[1])


def noise_floor(groups: dict[str, list[dict]]) -> float | None:
    """Largest same-seed |Δ test OA| between runs whose targets differ only by logit rounding
    (fp16/fp32 records vs the int8 default): what chaos alone does to one run."""
    d = [abs(x) for tag in ("fp16", "fp32") for x in paired(groups, f"kd@{tag}", "kd")]
    return max(d) if d else None


def student_rows(groups: dict[str, list[dict]], extra: Callable[[list[dict]], list[str]]
                 ) -> list[list[str]]:
    """One row per mode: seeds, test OA, test mAcc and val OA over seeds, then `extra`."""
    return [[mode_label(m), seed_list(rs), mean_std(rs, "test_oa"), mean_std(rs, "test_macc"),
             mean_std(rs, "val_oa"), *extra(rs)] for m, rs in
            ((m, groups[m]) for m in by_label(groups))]


def first_commands(groups: dict[str, list[dict]], modes: Iterable[str] | None = None) -> str:
    return bullets(f"{mode_label(m)}: `{groups[m][0]['command']}`"
                   for m in (modes or by_label(groups)) if m in groups)


# --- plots (matplotlib optional: without it the committed PNGs stay) ---------------------------

def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, ax: Any, out: Path, legend: dict) -> None:
    ax.grid(alpha=0.3)
    ax.legend(**legend)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def plot_teacher_curve(rows: list[dict], out: Path) -> None:
    if (plt := pyplot()) is None:
        return
    epochs = [int(r["epoch"]) for r in rows]
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    ax.plot(epochs, [100 * float(r["val_oa"]) for r in rows], label="validation OA")
    ax.plot(epochs, [100 * float(r["train_acc"]) for r in rows], label="train accuracy (augmented)",
            alpha=0.6)
    ax.set_xlabel("epoch (of 150)")
    ax.set_ylabel("%")
    ax.set_ylim(80, 100)
    save(fig, ax, out, {"loc": "lower right"})
    plt.close(fig)


def plot_student_curves(groups: dict[str, list[dict]], out: Path) -> None:
    if (plt := pyplot()) is None:
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for mode, rs in sorted(groups.items(), key=lambda kv: mode_label(kv[0])):
        curves = [r["val_oa_curve"] for r in rs if r.get("val_oa_curve")]
        if curves:
            n = min(len(c) for c in curves)
            mean = [100 * sum(c[i] for c in curves) / len(curves) for i in range(n)]
            ax.plot(range(1, n + 1), mean, label=f"{mode_label(mode)} ({len(curves)} seeds)")
    if ax.lines:
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation OA (%)")
        ax.set_ylim(80, 95)
        save(fig, ax, out, {"loc": "lower right", "fontsize": 7})
    plt.close(fig)


def plot_oa_vs_params(groups: dict[str, list[dict]], out: Path) -> None:
    """OA vs parameters: our students (no KD and the best per teacher, mean ± std over seeds),
    our teachers, and the published anchors."""
    if (plt := pyplot()) is None:
        return
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
        if mode in groups:
            mu, sd = mean_sd([100 * r["test_oa"] for r in groups[mode]])
            ax.errorbar(groups[mode][0]["params"] / 1e6, mu, yerr=sd, fmt="o", capsize=3,
                        label=f"{label} ({mu:.2f} ± {sd:.2f}%)")
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("ModelNet40 test OA (%)")
    ax.set_title("Grey squares: published figures; coloured: measured here (single view)")
    save(fig, ax, out, {"fontsize": 7, "loc": "upper center", "bbox_to_anchor": (0.5, -0.14)})
    plt.close(fig)


def plot_students_ens(groups: dict[str, dict[str, list[dict]]],
                      teacher: tuple[float, float, str], out: Path) -> None:
    """Test OA vs parameters for the ensemble protocol: each student size's modes (mean ± std
    over seeds, model picked on validation, and the last epoch), the teacher, the anchors."""
    if (plt := pyplot()) is None:
        return
    fig, ax = plt.subplots(figsize=(7.5, 6))
    for name, oa, params in ENS_ANCHORS:
        ax.scatter(params, oa, marker="s", color="grey")
        ax.annotate(name, (params, oa), fontsize=7, xytext=(4, -3), textcoords="offset points")
    ax.vlines(0.68, 92.2, 93.0, color="grey")
    ax.scatter(*teacher[:2], marker="^", s=50, label=f"{teacher[2]} ({teacher[1]:.2f}%)")
    for size, modes in groups.items():
        for i, (mode, rs) in enumerate(sorted(modes.items(), key=lambda kv: mode_label(kv[0]))):
            x = rs[0]["params"] / 1e6 * (1 + 0.04 * i)  # side by side on the log axis
            mu, sd = mean_sd([100 * r["test_oa"] for r in rs])
            ax.errorbar(x, mu, yerr=sd, fmt="o", capsize=3,
                        label=f"{size} {mode_label(mode)}: {mu:.2f} ± {sd:.2f}% "
                              f"({len(rs)} seed{'s' if len(rs) > 1 else ''})")
            if all("test_oa_last" in r for r in rs):
                ax.scatter(x, statistics.fmean(100 * r["test_oa_last"] for r in rs), marker="x",
                           color="black", s=20)
    ax.set_xscale("log")
    ax.set_xlabel("parameters (millions, log scale)")
    ax.set_ylabel("ModelNet40 test OA (%)")
    ax.set_title("Grey: SLNet-S and PointMLP-elite as published (another sampling of ModelNet40)\n"
                 "and SLNet-S's public checkpoint on our test split; coloured: measured here; "
                 "x: last epoch", fontsize=8)
    save(fig, ax, out, {"fontsize": 7, "loc": "upper center", "bbox_to_anchor": (0.5, -0.14)})
    plt.close(fig)


# --- Demo ---------------------------------------------------------------------------------------

def demo() -> str:
    d = load("demo.json")
    if d is None:
        return ""
    rows = []
    for r in d["rows"]:
        diff = r.get("paired_diff")
        spread = f" ± {100 * r['std']:.2f}" if len(r["seeds"]) > 1 else ""
        rows.append([r["run"], r.get("model", d["teacher"]["model"]), millions(r["params"]),
                     ", ".join(map(str, r["seeds"])), f"{100 * r['mean']:.2f}{spread}%",
                     ", ".join(f"{100 * x:.2f}" for x in r["test_oa"]),
                     ", ".join(f"{x:+.2f}" for x in diff) if diff else "–",
                     f"{statistics.fmean(diff):+.2f}" if diff else "–", f"{r['seconds']:.0f} s"])
    rec, pool = d["recording"], d["recording"]["pool"]
    return fill(
        "demo", setting=d["setting"].strip().removeprefix("setting: "), command=d["command"],
        commit=d["commit"], config=d["config"], machine=d["machine"], load=d["load"],
        wall=f"{d.get('make_demo_wall_seconds', d['total_seconds']):.0f}",
        test_shapes=f"{d['test_shapes']:,}", per_point=f"{d['test_shapes'] / 100:.0f}",
        table=table(["run", "model", "params", "seeds", "test OA", "per seed", "Δ per seed",
                     "Δ mean", "time per run"], "llrlrllrr", rows),
        rows=f"{rec['rows']:,}", k=rec["k"], bytes_per_row=rec["bytes_per_row"],
        kb=f"{rec['bytes'] / 1e3:.0f}", seconds=f"{rec['seconds']:.1f}",
        pool_rows=f"{pool['rows']:,}", pool_k=pool["k"], pool_kb=f"{pool['bytes'] / 1e3:.0f}",
        pool_seconds=f"{pool['seconds']:.1f}", verdict=bullets(d["verdict"]),
        earlier_runs=d.get("earlier_runs", ""))


def demo_probe() -> str:
    d = load("demo_pool_probe.json")
    if d is None:
        return ""
    rows = [[v["label"], pct(a), pct(b), pct((a + b) / 2), f"`{v['command']}`"]
            for v in d["variants"].values() for a, b in [v["val_oa"]]]
    return fill("demo_probe", purpose=d["purpose"][0].upper() + d["purpose"][1:],
                teacher=d["teacher"], records=commands(d["records"]),
                validation=d["validation"], machine=d["machine"],
                table=table(["candidate", "val OA seed 0", "seed 1", "mean",
                             "command (S = seed)"], "lrrrl", rows))


def label_smoothing() -> str:
    d = load("teacher_label_smoothing.json")
    if d is None:
        return ""
    rows = []
    for t in d["teachers"]:
        st = t["stats"]
        cells = [f"{x['mean_top_prob']:.3f} / {x['mean_entropy_nats']:.2f}" for x in st["taus"]]
        rows.append([f"`{t['checkpoint']}`", t["label_smoothing"], pct(t["test_oa"]),
                     pct(st["teacher_accuracy"]), *cells,
                     f"{st['view_kl_mean_nats']:.4f} / {st['view_kl_median_nats']:.4f}"])
    taus = [f"τ = {x['tau']:g}: top-1 prob / entropy" for x in d["teachers"][0]["stats"]["taus"]]
    cmds = [c for t in d["teachers"] for c in (t["record_command"], t["stats_command"])]
    uniform = d["teachers"][0]["stats"]["uniform_entropy_nats"]
    st = d.get("students", {"runs": [], "protocol": "", "machine": ""})
    student_rows = [[f"`{r['records']}`", f"{r['tau']:g}",
                     f"{pct(r['val_oa'])} ({r['best_epoch']})", pct(r["test_oa"]),
                     f"`{r['command']}`"] for r in st["runs"]]
    return fill("label_smoothing", purpose=d["purpose"][0].upper() + d["purpose"][1:],
                machine=d["machine"], commands=commands(cmds), uniform=f"{uniform:.2f}",
                protocol=st["protocol"], student_machine=st["machine"],
                students=table(["records", "τ", "best val OA (epoch)", "test OA", "command"],
                               "lrrrl", student_rows),
                table=table(["teacher", "label smoothing", "test OA", "right on its rows",
                             *taus, "KL(view ‖ shape mean) mean / median"],
                            "lrrr" + "r" * len(taus) + "r", rows))


def view_pairs(view: str) -> tuple[tuple[str, str], ...]:
    """The paired differences of a view probe: (minuend, subtrahend) variant keys."""
    return ((f"nokd_{view}", "nokd"), ("kd_pool", "nokd"), (f"kd_pool_{view}", "kd_pool"),
            (f"kd_pool_{view}", f"nokd_{view}"))


def views() -> str:
    probes = load_all("view_probe_*.json")
    if not probes:
        return ""
    parts, summary = [], []
    for _, d in probes:
        v, name = d["variants"], d["view"]["name"]
        seeds = len(next(iter(v.values()))["val_oa"])
        rows = [[x["label"], *(pct(a) for a in x["val_oa"]),
                 "{:.2f} ± {:.2f}".format(*mean_sd([100 * a for a in x["val_oa"]])),
                 f"`{x['command']}`"] for x in v.values()]

        def gaps(a: str, b: str, v: dict = v) -> list[float]:
            return [100 * (x - y) for x, y in zip(v[a]["val_oa"], v[b]["val_oa"], strict=True)]

        pairs = [(a, b) for a, b in view_pairs(name) if a in v and b in v]
        diffs = [[f"{v[a]['label']} − {v[b]['label']}", *(f"{g:+.2f}" for g in gaps(a, b)),
                  paired_cell(gaps(a, b))] for a, b in pairs]
        if len(pairs) == 4:
            summary.append([f"`{name}`", *(paired_cell(gaps(a, b)) + " ("
                                           + ", ".join(f"{g:+.2f}" for g in gaps(a, b)) + ")"
                                           for a, b in (pairs[0], *pairs[2:]))])
        seed_cols = [f"seed {i}" for i in range(seeds)]
        augment = ", ".join(f"augment.{k}={str(x).lower()}"
                            for k, x in d["view"]["augment"].items())
        parts.append(fill(
            "view_probe", name=name, augment=augment,
            purpose=d["purpose"][0].upper() + d["purpose"][1:], teacher=d["teacher"],
            note=f" {d['note']}" if d.get("note") else "",
            records=commands(d["records"].values()),
            validation=d["validation"], machine=d["machine"],
            table=table(["student", *seed_cols, "mean ± std", "command (S = seed)"],
                        "l" + "r" * (seeds + 1) + "l", rows),
            paired=table(["paired by seed", *seed_cols, "mean ± std"],
                         "l" + "r" * (seeds + 1), diffs)))
    parts.insert(0, fill("view_probes_summary", table=table(
        ["view", "no KD, view − no KD", "KD + pool, view − KD + pool",
         "KD + pool, view − no KD, view"], "lrrr", summary)))
    cost = load("mix_replay.json")
    if cost is not None:
        ms, share = cost["ms_per_batch"], cost["share_of_a_step"]
        rows = [[kind, cost["bytes_per_row"]["plain" if kind == "none" else "mixed"],
                 f"{ms[kind]:.2f}", f"{100 * share[kind]:.1f}%"] for kind in share]
        parts.append(fill("mix_replay", command=cost["command"], machine=cost["machine"],
                          model=cost["model"], step=f"{ms['train_step']:.0f}",
                          batch=cost["batch_size"],
                          table=table(["mix", "bytes/row (int8, 40 classes)",
                                       "ms to build a batch", "of a training step"], "lrrr",
                                      rows)))
    return "\n\n".join(parts).replace("../main/", "")  # run from a worktree beside main


# --- Teachers -----------------------------------------------------------------------------------

def teacher_pointnet() -> str:
    t = load("teacher_modelnet40_cpu.json")
    if t is None:
        return ""
    row = [t["model"], millions(t["params"]), f"{t['flops'] / 1e9:.2f} G", t["epochs"],
           f"{t['train_seconds_total'] / 60:.0f} min", pct(t["val_oa"]), pct(t["test_oa"]),
           pct(t["test_macc"])]
    return fill("teacher_pointnet", command=t["command"], machine=t["machine"],
                eval_command=t["eval_command"], checkpoint=t["checkpoint"], note=t["note"],
                table=table(["model", "params", "FLOPs/cloud", "epochs", "train time",
                             "val OA (best)", "test OA", "test mAcc"], "lrrrrrrr", [row]))


def teacher_strong() -> str:
    t, curve = load(STRONG_TEACHER), RESULTS / "teacher_student_l_metrics.csv"
    if t is None or not curve.is_file():
        return ""
    epochs = list(csv.DictReader(curve.read_text().splitlines()))
    plot_teacher_curve(epochs, RESULTS / "teacher_student_l_curve.png")
    every10 = epochs[9::10]
    test_oa = next(e["test_oa"] for e in t["evaluations"] if e["checkpoint"].startswith("zoo/"))
    rows = [[e["checkpoint"], t["best_epoch"], pct(t["val_oa"]), pct(e["test_oa"]),
             pct(e["test_macc"])] for e in t["evaluations"]]
    return fill(
        "teacher_strong", model=t["model"], params=millions(t["params"]),
        gflops=f"{t['flops'] / 1e9:.2f}", epochs=t["epochs"], sessions=t["sessions"],
        hours=f"{t['train_seconds_total'] / 3600:.1f}", command=t["command"],
        machine=t["machine"], val_shapes=VAL_SHAPES,
        eval_commands=" ".join(f"`{e['command']}`." for e in t["evaluations"]),
        table=table(["checkpoint", "best epoch (val)", "val OA", "test OA", "test mAcc"],
                    "lrrrr", rows),
        goal=TEACHER_GOAL, verdict="reached" if 100 * test_oa >= TEACHER_GOAL else "not reached",
        test_oa=pct(test_oa), val_oa=f"{100 * t['val_oa']:.1f}%",
        gap=f"{100 * (t['val_oa'] - test_oa):.0f}", budget=TEACHER_BUDGET_H,
        pointnet_oa=f"{100 * load('teacher_modelnet40_cpu.json')['test_oa']:.0f}%",
        curve=table(["epoch", *(r["epoch"] for r in every10)], "l" + "r" * len(every10),
                    [["val OA", *(f"{100 * float(r['val_oa']):.1f}" for r in every10)]]))


def teacher_members() -> str:
    d = load("teacher_members.json")
    if d is None:
        return ""
    e = d["ensemble"]
    by_path = {m["checkpoint"]: m for m in e["members"]}
    rows = [[f"`{m['zoo']}`", m["epochs"], f"{pct(m['val_oa'])} ({m['best_epoch']})",
             pct(by_path.get(m["zoo"], {}).get("oa")), pct(by_path.get(m["zoo"], {}).get("macc")),
             f"{m['train_core_hours']:.1f}", f"`{m['sha256'][:16]}…`"] for m in d["members"]]
    return fill(
        "teacher_members",
        table=table(["member", "epochs", "best val OA (epoch)", "test OA", "test mAcc",
                     "core-hours", "sha256"], "lrrrrrl", rows),
        members=" + ".join(f"`{m['checkpoint']}` ({pct(m['oa'])})" for m in e["members"]),
        oa=pct(e["single_view"]["oa"]), macc=pct(e["single_view"]["macc"]),
        votes=e["voting"]["votes"], vote_oa=pct(e["voting"]["oa"]), command=e["command"],
        training="; ".join(f"`{m['command']}` ({m['machine']})" for m in d["members"]))


def teacher_ensemble() -> str:
    d = load("teacher_ensemble.json")
    if d is None:
        return ""
    names = {**d["members"], **d["others"]}
    seen = {True: " (seen)", False: ""}
    rows = [[" + ".join(c["members"]), c["votes"],
             f"{c['val']['nll_calibrated']:.4f} (T {c['val']['temperature']})"
             + seen[c["val_includes_training_shapes"]],
             pct(c["val"]["oa"]) + seen[c["val_includes_training_shapes"]],
             pct(c["test"]["oa"]), pct(c["test"]["macc"])]
            for c in sorted(d["candidates"], key=lambda c: (c["val_includes_training_shapes"],
                                                             c["val"]["nll_calibrated"]))]
    ch = d["chosen"]
    return fill("teacher_ensemble", val_seed=d["val_seed"], machine=d["machine"],
                names="; ".join(f"{k} = `{v}`" for k, v in names.items()),
                others=", ".join(d["others"]) or "none",
                chosen=" + ".join(ch["members"]), chosen_votes=ch["votes"],
                chosen_val=pct(ch["val"]["oa"]), chosen_test=pct(ch["test"]["oa"]),
                chosen_nll=f"{ch['val']['nll_calibrated']:.4f}", chosen_t=ch["val"]["temperature"],
                chosen_macc=pct(ch["test"]["macc"]), goal=f"{TEACHER_GOAL:.1f}%",
                command=ch["command"], any_right=pct(d["diversity_test"]["any_right"]),
                table=table(["members", "votes", "val NLL at best T", "val OA", "test OA",
                             "test mAcc"], "lrrrrr", rows),
                pairs=table(["members (test, single view)", "agree", "at least one right"],
                            "lrr", [[" + ".join(q["members"]), pct(q["agree"]),
                                     pct(q["either_right"])]
                                    for q in d["diversity_test"]["pairs"]]))


def flatness() -> str:
    runs = load_all("teacher_flatness_*.json")
    if not runs:
        return ""
    rows = []
    for path, d in runs:
        name = (f"student_l wip (epoch {d['teacher_epoch'] + 1} of 150)" if "wip" in path.name
                else Path(d["teacher"]).name)
        rows += [[name, f"{r['tau']:g}", f"{r['mean_top_prob']:.3f}",
                  f"{r['mean_second_prob']:.3f}", f"{r['mean_entropy_nats']:.2f}"]
                 for r in d["per_tau"]]
    sources = [f"`{p.name}`: `{d['command']}` · {d['machine']}"
               + (f" · {d['note']}" if d.get("note") else "") for p, d in runs]
    return fill("flatness", sources="\n\n".join(sources),
                table=table(["teacher", "τ", "top prob", "2nd prob", "entropy (nats)"],
                            "lrrrr", rows))


# --- Records ------------------------------------------------------------------------------------

def records_stats() -> str:
    found = {records: d for name, records in STATS_FILES.items() if (d := load(name))}
    if not found:
        return ""
    rows = []
    for d in found.values():
        tau1 = next(t for t in d["taus"] if t["tau"] == 1.0)
        rows.append([f"`{d['records']}`", f"{d['rows']:,}", d["bytes_per_row"],
                     pct(d.get("teacher_accuracy")), f"{tau1['mean_top_prob']:.3f}",
                     f"{tau1['mean_entropy_nats']:.3f} (uniform {d['uniform_entropy_nats']:.3f})",
                     f"{d['view_kl_mean_nats']:.4f} / {d['view_kl_median_nats']:.4f}",
                     pct(d["top1_change_fraction"])])
    cmds = [f"pointkd records stats {r} --data ../shared/data/modelnet40_1024 --json"
            for r in found]
    return fill(
        "records_stats", commands=commands(cmds),
        definitions="; ".join(f"{k}: {v}"
                              for k, v in next(iter(found.values()))["definitions"].items()),
        table=table(["record set", "rows", "B/row", "teacher right on rows", "top-1 prob τ=1",
                     "entropy τ=1 (nats)", "KL(view ‖ shape mean) mean / median",
                     "top-1 changes across views"], "lrrrrrrr", rows))


def records_strong(tag: str = "student_l_k20", template: str = "records_strong") -> str:
    r = load(f"records_{tag}.json")
    info, verify = (RESULTS / f"records_{x}_{tag}.txt" for x in ("info", "verify"))
    if r is None or not info.is_file() or not verify.is_file():
        return ""
    # rows and recording time as the committed record set's manifest has them
    manifest = BENCH.parent / STATS_FILES[f"records_stats_{tag}.json"] / "manifest.json"
    made = json.loads(manifest.read_text())["recording"]
    k20 = load("records_stats_student_l_k20.json") or {}
    return fill(template, rows=f"{made['rows']:,}", minutes=f"{made['seconds'] / 60:.1f}",
                k20_change=pct(k20.get("top1_change_fraction")),
                machine=r["machine"], command=r["command"], info_command=r["info_command"],
                info=code(info.read_text()), verify_command=r["verify_command"],
                verify=code(verify.read_text()))


def records_size() -> str:
    r = load("records.json")
    if r is None:
        return ""
    m, a = r["machine"], r["augment_apply"]
    sizes = [[f"{enc}{' (default)' if enc == 'int8' else ''}", b,
              f"{r['compression_vs_cloud'][enc]:.0f}x smaller"]
             for enc, b in r["bytes_per_row_40_classes"].items()]
    speed = [[t["model"], millions(t["params"], 2), t["batch_size"], t["rows"],
              ", ".join(f"{x:.0f}" for x in t["forward_rows_per_s"]),
              ", ".join(f"{x:.0f}" for x in t["record_rows_per_s"]),
              f"**{t['record_over_forward']:.2f}**"] for t in r["throughput"]]
    info = RESULTS / "records_info_modelnet40.txt"
    return fill(
        "records_size", command=r["command"], cpu=m["cpu"], threads=m["threads"],
        omp=m.get("omp_wait_policy", "default"), data=r["data"],
        sizes=table(["logits encoding (40 classes)", "bytes per augmented sample",
                     f"vs a stored 1,024-point cloud ({r['cloud_bytes']} B)"], "lrr", sizes),
        throughput=table(["teacher", "params", "batch", "rows/round", "forward-only rows/s",
                          "recording rows/s", "recording / forward"], "lrrrllr", speed),
        batch=a["batch"], points=a["points"], apply_ms=f"{a['apply_ms']:.1f}",
        apply_share=f"{100 * a['apply_over_forward']:.1f}",
        info=code(info.read_text()) if info.is_file() else "")


def encodings() -> str:
    e = load("encodings.json")
    if e is None:
        return ""
    rows = [[r["encoding"], r["bytes_per_row"], f"{r['vs_cloud']:.0f}×", f"{r['kl_tau_mean']:.1e}",
             f"{r['kl_tau_max']:.1e}", f"{r['max_abs_logit_diff']:.3g}",
             pct(r["top1_agreement"])] for r in e["encodings"]]
    return fill("encodings", command=e["command"], machine=e["machine"], rows=e["rows"],
                records=e["records"], tau=f"{e['tau']:g}",
                exact=e["stored_rows_equal_reencoded_replay"],
                table=table(["encoding", "bytes/row", "vs 1,024-pt cloud", "KL mean", "KL max",
                             "max abs Δ logit", "top-1 agreement"], "lrrrrrr", rows))


def encoding_verdict(groups: dict[str, list[dict]], sets: dict[str, dict | None],
                     modes: dict[str, str]) -> str:
    """int8 as the default: student OA against the noise floor, then size and fidelity."""
    deltas = {t: paired(groups, modes[t], "kd") for t in ENCODING_TAGS if t != "int8"}
    deltas = {t: statistics.fmean(d) for t, d in deltas.items() if d}
    floor, enc = noise_floor(groups), load("encodings.json")
    i8, t5 = sets["int8"], sets["top5"]
    if not deltas or floor is None or not (enc and i8 and t5):
        return ""
    kl = {r["encoding"]: r["kl_tau_mean"] for r in enc["encodings"]}
    same = all(abs(d) <= floor for d in deltas.values())
    return fill("encodings_verdict_same" if same else "encodings_verdict_differs",
                deltas=", ".join(f"{t} {d:+.2f}" for t, d in deltas.items()),
                floor=f"{floor:.2f}", kl_int8=f"{kl['int8']:.0e}", int8_bytes=i8["bytes_per_row"],
                saved=i8["bytes_per_row"] - t5["bytes_per_row"], top5_mb=f"{t5['bytes'] / 1e6:.1f}",
                int8_mb=f"{i8['bytes'] / 1e6:.1f}", kl_ratio=f"{kl['top-5'] / kl['int8']:,.0f}")


def encoding_students() -> str:
    """Student OA per record encoding: same teacher, K, seeds and schedule; only logits differ."""
    groups = student_groups()
    sets = {tag: load(f"record_sets/{tag}.json") for tag in ENCODING_TAGS}
    modes = {tag: "kd" if tag == "int8" else f"kd@{tag}" for tag in ENCODING_TAGS}
    tags = [t for t in ENCODING_TAGS if groups.get(modes[t]) and sets[t]]
    if tags == ["int8"] or not tags:
        return ""
    rows = []
    for tag in tags:
        rs, rec = groups[modes[tag]], sets[tag]
        seconds = (rec.get("recording") or {}).get("seconds")
        rows.append([f"top-{rec['logits']['topk']} (fp16 values + the rest's log-sum-exp)"
                     if rec["logits"]["topk"] else rec["logits"]["encoding"],
                     rec["bytes_per_row"], f"{rec['bytes'] / 1e6:.1f} MB",
                     f"{seconds / 60:.1f} min" if seconds else "–", seed_list(rs),
                     mean_std(rs, "test_oa"), mean_std(rs, "test_macc"),
                     "(reference)" if tag == "int8" else paired_cell(paired(groups, modes[tag],
                                                                            "kd"))])
    return fill(
        "encoding_students", verdict=encoding_verdict(groups, sets, modes),
        table=table(["logits", "bytes/row", "record set", "recording", "seeds", "test OA %",
                     "test mAcc %", "paired Δ OA vs int8"], "lrrrrrrr", rows),
        record_commands=bullets(f"{t}: `{sets[t]['command']}` ({sets[t]['machine']})"
                                for t in tags),
        student_commands=bullets(f"{t}: `{groups[modes[t]][0]['command']}`" for t in tags))


def record_votes() -> str:
    d = load("records_quality_votes.json")
    if d is None:
        return ""
    rows = [[f"`{e['records']}`", e["votes"], f"{100 * e['held_out']['acc']:.2f}",
             f"{e['held_out']['nll']:.4f}", f"{100 * e['all']['acc']:.2f}",
             f"{e['all']['nll']:.4f}", f"{e['all']['top_prob']:.3f}"] for e in d["sets"]]
    return fill("record_votes",
                copies="copy k = 0" if d["copies"] == 1 else f"copies k < {d['copies']}",
                held_out=d["held_out_shapes"], command=d["command"], machine=d["machine"],
                note=d["note"],
                table=table(["records", "votes", "held-out acc %", "held-out NLL",
                             "all rows acc %", "all rows NLL", "mean top prob"], "lrrrrrr", rows))


# --- Students -----------------------------------------------------------------------------------

def students_strong() -> str:
    """Students from the strong teacher's records, long schedule, every mode."""
    groups = student_groups("students_strong")
    eff = load("distill_efficiency_modelnet40_strong.json")
    if not groups or eff is None:
        return ""
    # τ and the record set from a KD run (a plain run's config carries the default τ)
    first = next(rs[0] for m, rs in groups.items() if m != "plain")

    def extra(rs: list[dict]) -> list[str]:
        sec = [r.get("epoch_seconds_median", r["epoch_seconds_mean"]) for r in rs
               if "epoch_seconds_mean" in r]
        return [last_epoch(rs), f"{statistics.fmean(sec):.0f}" if sec else "–",
                f"{statistics.fmean(r['train_seconds_total'] for r in rs) / 60:.0f}"]

    plot_student_curves(groups, RESULTS / "students_strong_curves.png")
    return fill(
        "students_strong", model=first["model"], params=millions(first["params"]),
        epochs=first["epochs"], tau=f"{first['tau']:g}", records=first["records"],
        machine=first["machine"],
        table=table(["run", "seeds", "test OA %", "test mAcc %", "val OA %",
                     "test OA % (last epoch)", "s/epoch (median)", "min/run"], "lrrrrrrr",
                    student_rows(groups, extra)),
        online=f"{eff['ratios']['online_over_offline_step']:.2f}",
        offline=f"{eff['ratios']['offline_over_plain_step']:.2f}",
        paired=paired_table(groups), goal=goal(groups, STRONG_GOAL),
        commands=first_commands(groups))


def students_ens() -> str:
    """Students from the teacher ensemble's records: the protocol, paired by seed."""
    groups = student_groups("students_ens")
    if not groups:
        return ""
    first = next(iter(groups.values()))[0]
    kd = next((rs[0] for m, rs in groups.items() if m != "plain"), None)

    def extra(rs: list[dict]) -> list[str]:
        sec = [r.get("epoch_seconds_median", r["epoch_seconds_mean"]) for r in rs]
        return [last_epoch(rs), f"{statistics.fmean(sec):.0f}"]

    plot_student_curves(groups, RESULTS / "students_ens_curves.png")
    chosen = (load("teacher_ensemble.json") or {}).get("chosen", {})
    member = load(STRONG_TEACHER)  # every member is a student_l
    if chosen.get("members") and chosen.get("test") and member:
        sizes = {first["model"]: groups}
        if xs := student_groups("students_xs"):
            sizes[next(iter(xs.values()))[0]["model"]] = xs
        teacher = (len(chosen["members"]) * member["params"] / 1e6, 100 * chosen["test"]["oa"],
                   "teacher ensemble " + " + ".join(chosen["members"]))
        plot_students_ens(sizes, teacher, RESULTS / "students_ens_oa_vs_params.png")
    return fill(
        "students_ens", teacher_val=pct(chosen.get("val", {}).get("oa")),
        teacher_test=pct(chosen.get("test", {}).get("oa")),
        model=first["model"], params=millions(first["params"]),
        epochs=first["epochs"], records=kd["records"] if kd else "zoo/records_ens_ab_modelnet40_k8",
        machine=first["machine"],
        table=table(["run", "seeds", "test OA %", "test mAcc %", "val OA %",
                     "test OA % (last epoch)", "s/epoch (median)"], "lrrrrrr",
                    student_rows(groups, extra)),
        paired=paired_table(groups, last=True), goal=goal(groups, STRONG_GOAL),
        limit=ens_limit(groups, chosen), online=ens_online_cost(groups),
        commands=first_commands(groups))


def students_xs() -> str:
    """Protocol item (e): the <= 0.15M student, no KD and the best mode, paired by seed."""
    groups = student_groups("students_xs")
    if not groups:
        return ""
    first = next(iter(groups.values()))[0]

    def extra(rs: list[dict]) -> list[str]:
        # no time column: these seeds ran on AVX2 and AVX-512 machines, 1.5-4x apart
        return [last_epoch(rs)]

    means = group_means(groups)
    best = max(means, key=means.get)
    return fill(
        "students_xs", model=first["model"], params=millions(first["params"]),
        epochs=first["epochs"], machine=first["machine"],
        table=table(["run", "seeds", "test OA %", "test mAcc %", "val OA %",
                     "test OA % (last epoch)"], "lrrrrr", student_rows(groups, extra)),
        paired=paired_table(groups, last=True),
        verdict="met" if means[best] >= XS_GOAL else "not met", best=f"{means[best]:.2f}",
        label=mode_label(best), goal_oa=f"{XS_GOAL:g}", commands=first_commands(groups))


def records_note(used: str, committed: str) -> str:
    """The record set a run read and, when that was a working copy, the committed copy it was
    made as (the zoo's README gives the shard's sha256 to check it by)."""
    return f"`{used}`" + ("" if used == committed else f" (the same bytes as `{committed}`)")


def mix_verdict(groups: dict[str, list[dict]], modes: list[str]) -> str:
    """The distilled mixed-view mode best on validation (mean over its seeds) against no KD on
    the same views, seed by seed, against issue #26's goal."""
    modes = [m for m in modes if paired(groups, m, "plain@mix")]
    if not modes:
        return ""
    best = max(modes, key=lambda m: statistics.fmean(r["val_oa"] for r in groups[m]))
    d = paired(groups, best, "plain@mix")
    met = len(d) >= 3 and all(x >= MIX_GOAL for x in d)
    return (f"**Goal {'met' if met else 'not met'}:** the mode best on validation, "
            f"{mode_label(best)}, is {', '.join(f'{x:+.2f}' for x in d)} points over no KD on "
            f"the same views ({len(d)} seed{'s' if len(d) > 1 else ''}; goal: ≥ +{MIX_GOAL:g} "
            "on each of 3 seeds).")


def students_mix() -> str:
    """Mixed views (issue #26, item 6): the same teacher ensemble recorded on mixed clouds,
    each distilled mode beside no KD trained on the same mixed clouds (λ-weighted labels), and
    both beside the single-shape-view protocol on the same seeds."""
    mixed = student_groups("students_mix")
    if not mixed:
        return ""
    fixed = student_groups("students_ens")
    groups = {f"{m}@mix": rs for m, rs in mixed.items()}
    groups |= {f"{m}@fixed": [r for r in rs if r["seed"] in {x["seed"] for x in mixed[m]}]
               for m, rs in fixed.items() if m in mixed}
    groups = {m: rs for m, rs in groups.items() if rs}

    def extra(rs: list[dict]) -> list[str]:
        return [last_epoch(rs)]

    pairs = [(f"{m}@mix", "plain@mix") for m in mixed if m != "plain"]
    pairs += [(f"{m}@mix", f"{m}@fixed") for m in mixed]
    rows = []
    for mode, base in pairs:
        d, dl = paired(groups, mode, base), paired(groups, mode, base, "test_oa_last")
        if d:
            rows.append([mode_label(mode), mode_label(base), len(d), paired_cell(d),
                         paired_cell(dl)])
    kd = next((rs[0] for m, rs in mixed.items() if m != "plain"), None)
    verdict = mix_verdict(groups, [f"{m}@mix" for m in mixed if m != "plain"])
    stats = {t: load(f"records_stats_ens_ab{t}_k8.json") for t in ("", "_mix")}
    spread = ""
    if all(stats.values()):
        a, b = stats[""], stats["_mix"]
        spread = fill("students_mix_spread", kl_fixed=f"{a['view_kl_mean_nats']:.3f}",
                      kl_mix=f"{b['view_kl_mean_nats']:.3f}",
                      change_fixed=pct(a["top1_change_fraction"]),
                      change_mix=pct(b["top1_change_fraction"]),
                      mixed=pct(b["mixed_fraction"]), share=f"{b['mixed_mean_share']:.3f}",
                      own=f"{b['mixed_own_class_prob']:.3f}",
                      partner=f"{b['mixed_partner_class_prob']:.3f}",
                      bytes_fixed=a["bytes_per_row"], bytes_mix=b["bytes_per_row"])
    paired_rows = ("Paired by seed, test OA difference in points:\n\n"
                   + table(["run", "against", "seeds", "Δ test OA (picked on val)",
                            "Δ test OA (last epoch)"], "llrrr", rows)) if rows else ""
    return fill(
        "students_mix", model=kd["model"] if kd else next(iter(mixed.values()))[0]["model"],
        records=records_note(kd["records"] if kd else MIX_RECORDS, MIX_RECORDS), spread=spread,
        table=table(["run", "seeds", "test OA %", "test mAcc %", "val OA %",
                     "test OA % (last epoch)"], "lrrrrr", student_rows(groups, extra)),
        paired=paired_rows, verdict=verdict,
        machine=next(iter(mixed.values()))[0]["machine"],
        commands=first_commands(mixed))


def ens_online_cost(groups: dict[str, list[dict]]) -> str:
    """Protocol item (d), its cost: online KD from the ensemble against offline, step time
    side by side (bench_distill.py), scaled to this protocol's epochs."""
    d = load("distill_efficiency_modelnet40_ens.json")
    kd = next((rs for m, rs in groups.items() if m.startswith("kd")), None)
    if d is None or not kd:
        return ""
    ratio = d["ratios"]["online_over_offline_step"]
    epoch = statistics.fmean(r.get("epoch_seconds_median", r["epoch_seconds_mean"]) for r in kd)
    hours = ratio * epoch * kd[0]["epochs"] / 3600
    views, members = d["setup"]["teacher_votes"] + 1, len(d["setup"]["teacher"])
    online, offline = d["step_seconds"]["online"], d["step_seconds"]["offline"]
    return (f"Online KD from this ensemble (protocol item (d)) runs {views} views × {members} "
            f"members on every batch: ×{ratio:.1f} the offline step ({online:.2f} vs "
            f"{offline:.2f} s, side by side, {d['machine']['cpu']}; `{d['command']}`), so one "
            f"{kd[0]['epochs']}-epoch seed would take about {hours:.0f} core-hours at the "
            f"offline runs' {epoch:.0f} s/epoch, against {epoch * kd[0]['epochs'] / 3600:.1f} "
            "offline. It has not been run; its targets are the records' own (tested equal), so "
            "it would measure K = 8 recorded views against fresh ones every step.")


def ens_limit(groups: dict[str, list[dict]], chosen: dict) -> str:
    """The room distillation works in: the teacher's test margin over the no-KD student (a
    student can beat its teacher, but KD's gain here has stayed well inside this margin)."""
    if "plain" not in groups or not chosen.get("test"):
        return ""
    plain = statistics.fmean(100 * r["test_oa"] for r in groups["plain"])
    margin = 100 * chosen["test"]["oa"] - plain
    verdict = "less than" if margin < STRONG_GOAL[1] else "at least"
    return (f"The teacher is {margin:.2f} points above the no-KD student on test: {verdict} the "
            f"+{STRONG_GOAL[1]:g} points the goal asks of distillation. A student that matched "
            f"its teacher exactly would gain {margin:.2f}.")


def overlap() -> str:
    """Teacher vs student on each test shape: what the strong teacher could still teach."""
    found = load_all("overlap_*.json")
    if not found:
        return ""
    rows = [[f"`{d['teacher']}`", f"`{d['student']}`", f"{100 * d['teacher_oa']:.2f}",
             f"{100 * d['student_oa']:.2f}", d["both_right"], d["teacher_only"],
             d["student_only"], d["both_wrong"]] for _, d in found]
    by_mode: dict[str, list[dict]] = {}
    for path, d in found:  # overlap_<teacher>_<mode>-s<seed>.json
        by_mode.setdefault(path.stem.rsplit("-s", 1)[0].split("_")[-1], []).append(d)
    means = [[mode_label(m), len(ds), f"{statistics.fmean(d['teacher_only'] for d in ds):.1f}",
              f"{statistics.fmean(d['student_only'] for d in ds):.1f}"]
             for m, ds in sorted(by_mode.items(), key=lambda kv: mode_label(kv[0]))]
    return fill(
        "overlap", commands=commands(d["command"] for _, d in found),
        machine=found[0][1]["machine"],
        table=table(["teacher", "student", "teacher OA %", "student OA %", "both right",
                     "teacher only", "student only", "both wrong"], "llrrrrrr", rows),
        means=table(["mode", "runs", "teacher only (mean)", "student only (mean)"], "lrrr",
                    means))


def probe_choice(runs: list[dict], key: str) -> str:
    """Which value of `key` the one-seed probes chose on validation, and by how much."""
    a, b = sorted(runs, key=lambda r: -r["val_oa"])[:2]
    gap = a["val_oa"] - b["val_oa"]
    return fill("probe_choice", key=key, a=f"{a[key]:g}", b=f"{b[key]:g}",
                gap=f"{100 * gap:.2f}", shapes=round(gap * VAL_SHAPES), val_shapes=VAL_SHAPES,
                rank="the same way" if a["test_oa"] >= b["test_oa"] else "the other way",
                test_a=pct(a["test_oa"]), test_b=pct(b["test_oa"]))


def probe(folder: str, key: str, extra: list[dict] | None = None,
          fields: dict | None = None) -> str:
    """One-seed probes of one distillation setting on validation (bench_students runs);
    `fields` fill the template's other placeholders."""
    runs = sorted([d for _, d in load_all(f"{folder}/*.json")] + (extra or []),
                  key=lambda r: r[key])
    if not runs:
        return ""
    rows = [[f"{r[key]:g}", pct(r["val_oa"]), pct(r["test_oa"]), r["best_epoch"],
             f"`{r['command']}`"] for r in runs]
    return fill(folder, machine=runs[0]["machine"], **(fields or {}),
                choice=probe_choice(runs, key) if len(runs) > 1 else "",
                table=table([key, "best val OA", "test OA", "best epoch", "command"], "rrrrl",
                            rows))


def tau_probe_pointnet() -> str:
    d, t = load("tau_probe_pointnet.json"), load("teacher_modelnet40_cpu.json")
    if d is None or t is None or len(d["runs"]) != 2:
        return ""
    a, b = sorted(d["runs"], key=lambda r: r["tau"])
    rows = [[f"{r['tau']:g}", pct(r["val_oa"]), pct(r["test_oa"]), f"`{r['command']}`"]
            for r in (a, b)]
    return fill("tau_probe_pointnet", teacher_oa=f"{100 * t['test_oa']:.1f}%",
                tau_a=f"{a['tau']:g}", tau_b=f"{b['tau']:g}",
                val_a=f"{100 * a['val_oa']:.2f}", val_b=f"{100 * b['val_oa']:.2f}",
                test_a=f"{100 * a['test_oa']:.2f}", test_b=f"{100 * b['test_oa']:.2f}",
                table=table(["τ", "best val OA", "test OA", "command"], "rrrl", rows))


def tau_probe_strong() -> str:
    return probe("tau_probe_student_l", "tau")


def tau_probe_ens() -> str:
    stats = load("records_stats_ens_ab_k8.json")
    if stats is None:
        return ""
    top = {t["tau"]: f"{t['mean_top_prob']:.3f}" for t in stats["taus"]}
    return probe("tau_probe_ens", "tau", fields={"top_1": top.get(1.0, "–"),
                                                 "top_4": top.get(4.0, "–")})


def beta_probe_strong() -> str:
    taus = [d for _, d in load_all("tau_probe_student_l/*.json")]
    return probe("beta_probe_student_l", "beta",
                 extra=[max(taus, key=lambda r: r["val_oa"])] if taus else [])


def students_cpu() -> str:
    """The CPU protocol: student_s from the PointNet teacher's records, 15 epochs."""
    all_groups = student_groups()
    groups = {m: rs for m, rs in all_groups.items() if "@" not in m}
    t, rec = load("teacher_modelnet40_cpu.json"), load("records_modelnet40.json")
    eff = load("distill_efficiency_modelnet40.json")
    if not groups or t is None or rec is None or eff is None:
        return ""
    first = next(iter(groups.values()))[0]
    steps = -(-int(0.9 * 9843) // eff["setup"]["batch_size"])  # training shapes / batch
    st = eff["step_seconds"]
    student = statistics.fmean(r["train_seconds_total"] for rs in groups.values() for r in rs)
    total = t["train_seconds_total"] + rec["recording"]["seconds"] + student
    plot_oa_vs_params(all_groups, RESULTS / "oa_vs_params.png")

    def minutes(rs: list[dict]) -> list[str]:
        return [f"{statistics.fmean(r['train_seconds_total'] for r in rs) / 60:.0f}"]

    return fill(
        "students_cpu", model=first["model"], params=millions(first["params"]),
        epochs=first["epochs"], machine=first["machine"],
        table=table(["run", "seeds", "test OA %", "test mAcc %", "val OA %", "train min/run"],
                    "lrrrrr", student_rows(groups, minutes)),
        paired=paired_table(groups), goal=goal(all_groups, CPU_GOAL),
        online=f"{st['online']:.3f}", offline=f"{st['offline']:.3f}", plain=f"{st['plain']:.3f}",
        threads=eff["machine"]["threads"], batch=eff["setup"]["batch_size"],
        eff_command=eff["command"], online_min=f"{steps * st['online'] / 60:.1f}",
        offline_min=f"{steps * st['offline'] / 60:.1f}", steps=steps,
        teacher_min=f"{t['train_seconds_total'] / 60:.0f}", k=rec["k"],
        rows=f"{rec['total_rows']:,}", rec_min=f"{rec['recording']['seconds'] / 60:.1f}",
        student_min=f"{student / 60:.0f}", total_min=f"{total / 60:.0f}",
        commands=first_commands(groups))


def two_teachers() -> str:
    """The same students distilled from two teachers: the PointNet CPU teacher and TEACHER_TAG."""
    groups = student_groups()
    t, other = load("teacher_modelnet40_cpu.json"), load(f"record_sets/{TEACHER_TAG}.json")
    rec_int8 = load("record_sets/int8.json")
    if t is None or other is None or rec_int8 is None or f"kd@{TEACHER_TAG}" not in groups:
        return ""
    ev = other["teacher_eval"]
    name = TAG_LABELS[TEACHER_TAG].removeprefix("teacher: ")
    teachers = [(f"{t['model']} (CPU teacher)", t["params"], t["test_oa"], t["test_macc"],
                 rec_int8, ""),
                (name, ev["params"], ev["single_view"]["oa"], ev["single_view"]["macc"], other,
                 f"@{TEACHER_TAG}")]
    rows = [[who, millions(params), f"{100 * oa:.2f}", f"{100 * macc:.2f}",
             f"{rec['bytes'] / 1e6:.1f} MB, {rec['bytes_per_row']} B/row", mode_label(base),
             seed_list(rs), mean_std(rs, "test_oa"), mean_std(rs, "test_macc")]
            for who, params, oa, macc, rec, suffix in teachers for base in ("kd", "nwsd-0.3")
            if (rs := groups.get(base + suffix))]
    bases = [b for b in ("kd", "nwsd-0.3") if f"{b}@{TEACHER_TAG}" in groups]
    return fill(
        "two_teachers", name=name,
        members=", ".join(f"{100 * m['oa']:.2f}%" for m in ev.get("members", [])),
        oa=f"{100 * ev['single_view']['oa']:.2f}%", eval_command=ev["command"],
        table=table(["teacher", "params", "teacher test OA %", "teacher test mAcc %",
                     "record set", "student mode", "seeds", "student test OA %",
                     "student test mAcc %"], "lrrrrlrrr", rows),
        paired="; ".join(f"{mode_label(b)} {paired_cell(paired(groups, f'{b}@{TEACHER_TAG}', b))}"
                         for b in bases),
        record_command=other["command"], machine=other["machine"],
        minutes=f"{other['recording']['seconds'] / 60:.1f}", rows=f"{other['rows']:,}",
        commands=first_commands(groups, [f"{b}@{TEACHER_TAG}" for b in bases]))


# --- Speed --------------------------------------------------------------------------------------

def distill_steps() -> str:
    blocks = []
    for name, what in DISTILL_RUNS.items():
        if (d := load(name)) is None:
            continue
        s, m, q, setup = d["step_seconds"], d["peak_rss_mb"], d["ratios"], d["setup"]
        blocks.append(fill(
            "distill_run", what=what, cpu=d["machine"]["cpu"], threads=d["machine"]["threads"],
            command=("POINTKD_NATIVE_OPS=1 " if "strong" in name else "") + d["command"],
            student=setup["student"], batch=setup["batch_size"], steps=setup["steps"],
            repeats=setup["repeats"],
            offline_plain=f"{q['offline_over_plain_step']:.3f}",
            online_offline=f"{q['online_over_offline_step']:.2f}",
            rss=f"{q['offline_over_plain_rss']:.3f}",
            table=table(["mode", "s/step", "peak RSS"], "lrr",
                        [[x, f"{s[x]:.3f}", f"{m[x]:.0f} MB"]
                         for x in ("plain", "offline", "online")])))
    return fill("distill", runs="\n\n".join(blocks)) if blocks else ""


def latency() -> str:
    found = [(n, d) for n in LATENCY_FILES if (d := load(n))]
    if not found:
        return ""
    blocks, goals = [], []
    for name, d in found:
        mach = d["machine"]
        blocks.append(fill(
            "latency_run", name=name, command=d["command"], cpu=mach["cpu"],
            threads=mach["threads"], wait=mach["omp_wait_policy"],
            load_start=mach["loadavg_1min_at_start"], load_end=mach["loadavg_1min_at_end"],
            model=d["model"], params=millions(d["params"]), points=d["num_points"],
            ops="eager uses the C++ kernels" if mach["native_ops"] else "PyTorch ops only",
            table=table(["backend", "batch 1: ms/cloud", "batch 32: ms/cloud",
                         "batch 32: clouds/s"], "lrrr",
                        [[b, f"{v['batch1']['ms_per_cloud']:.2f}",
                          f"{v['batch32']['ms_per_cloud']:.2f}",
                          f"{v['batch32']['clouds_per_s']:.0f}"]
                         for b, v in d["latency"].items()])))
        best, v = min(d["latency"].items(), key=lambda kv: kv[1]["batch1"]["ms_per_cloud"])
        b1, b32 = v["batch1"]["ms_per_cloud"], v["batch32"]["ms_per_cloud"]
        goals.append([name, mach["threads"], mach["omp_wait_policy"], best, f"{b1:.2f}",
                      "yes" if b1 <= 2 else "no", f"{b32:.2f}", "yes" if b32 < b1 else "no"])
    return fill("latency", runs="\n\n".join(blocks),
                goals=table(["file", "threads", "OpenMP wait policy", "fastest at batch 1",
                             "batch 1 ms/cloud", "≤ 2 ms", "batch 32 ms/cloud",
                             "below batch 1"], "lrllrlrl", goals))


def export_samplers() -> str:
    d = load("export_samplers_student_l.json")
    lat = next((x for x in (load(n) for n in LATENCY_FILES)
                if x and any(k.startswith("onnxruntime_") for k in x["latency"])), None)
    if d is None or lat is None:
        return ""
    trained = next(v["check_oa_trained"] for v in d["samplers"].values()
                   if "check_oa_trained" in v)
    rows = []
    for name, v in d["samplers"].items():
        times = lat["latency"].get("onnxruntime" if name == "fps" else f"onnxruntime_{name}")
        rows.append([f"{name}{' (as trained)' if name == 'fps' else ''}",
                     pct(v.get("check_oa_exported", trained)),
                     pct(v.get("top1_agreement_with_trained", 1.0)),
                     *((f"{times[b]['ms_per_cloud']:.2f} ms" for b in ("batch1", "batch32"))
                       if times else ("–", "–"))])
    return fill(
        "export_samplers", command=d["command"], cpu=d["machine"]["cpu"],
        threads=d["machine"]["threads"], shapes=f"{d['test_shapes']:,}",
        lat_command=lat["command"], lat_cpu=lat["machine"]["cpu"],
        lat_threads=lat["machine"]["threads"],
        table=table(["sampler", "test OA", "top-1 agreement with the model as trained",
                     "ONNX Runtime batch 1", "batch 32 (per cloud)"], "lrrrr", rows))


def vm_ratio(slow: str, fast: str) -> str:
    """Per backend, how much slower batch 1 ran in latency file `slow` than in `fast` (same
    threads): the VM, not the code, differs."""
    a, b = load(slow), load(fast)
    if not a or not b or a["machine"]["threads"] != b["machine"]["threads"]:
        return ""
    shared = [k for k in a["latency"] if k in b["latency"]]
    def b1(d: dict, k: str) -> float:
        return d["latency"][k]["batch1"]["ms_per_cloud"]

    ratios = ", ".join(f"{k} ×{b1(a, k) / b1(b, k):.1f}" for k in shared)
    return (f"`{slow}` ({a['machine']['cpu']}) against `{fast}` ({b['machine']['cpu']}), both "
            f"{a['machine']['threads']} threads, batch 1: {ratios} the time")


def sampler_students() -> str:
    """The ONNX goal: a student trained with the `first` sampler (its ONNX graph has no FPS
    loop) against the FPS-trained students of the same protocol, and its ONNX Runtime time."""
    fps = student_groups("students_ens").get("plain", [])
    first = student_groups("students_first").get("plain", [])
    if not first or not fps:
        return ""

    def row(name: str, rs: list[dict]) -> list[str]:
        return [name, seed_list(rs), mean_std(rs, "val_oa"), mean_std(rs, "test_oa"),
                last_epoch(rs)]

    goals, best = [], None
    for name in LATENCY_FILES:  # the goal is for 1-2 threads
        d = load(name)
        if not d or "onnxruntime_first" not in d["latency"] or d["machine"]["threads"] > 2:
            continue
        lat = d["latency"]
        b1, b32 = (lat["onnxruntime_first"][f"batch{b}"]["ms_per_cloud"] for b in (1, 32))
        best = b1 if best is None else min(best, b1)
        goals.append([name, d["machine"]["cpu"], d["machine"]["threads"],
                      f"{lat['onnxruntime']['batch1']['ms_per_cloud']:.2f}", f"{b1:.2f}",
                      "yes" if b1 <= ONNX_GOAL_MS else "no", f"{b32:.2f}",
                      "yes" if b32 < b1 else "no"])
    verdict = ("not measured" if best is None else
               f"met ({best:.2f} ms)" if best <= ONNX_GOAL_MS else
               f"not met in the committed measurements (best {best:.2f} ms)")
    pairs = {r["seed"]: r for r in fps}
    diffs = [(r["seed"], 100 * (r["test_oa"] - pairs[r["seed"]]["test_oa"]),
              100 * (r["val_oa"] - pairs[r["seed"]]["val_oa"]))
             for r in first if r["seed"] in pairs]
    paired_text = "; ".join(f"seed {seed}: test {t:+.2f}, validation {v:+.2f}"
                            for seed, t, v in diffs) or "no shared seed"
    model = first[0]["model"]
    return fill(
        "sampler_students", fps_command=fps[0]["command"], first_command=first[0]["command"],
        machine=first[0]["machine"], paired=paired_text, model=model,
        goal_ms=f"{ONNX_GOAL_MS:g}", verdict=verdict,
        vm=vm_ratio("latency_avx2.json", "latency.json") or "–",
        students=table([f"{model} trained with", "seeds", "val OA %", "test OA %",
                        "test OA % (last epoch)"], "llrrr",
                       [row("fps (the default)", fps), row("first", first)]),
        goals=table(["file", "CPU", "threads", "ONNX fps, batch 1 ms", "ONNX first, batch 1 ms",
                     f"≤ {ONNX_GOAL_MS:g} ms", "first, batch 32 ms/cloud", "below batch 1"],
                    "llrrrlrl", goals) if goals else "_no latency file with the `first` graph_")


def speed_goals() -> str:
    """Training-throughput goals against commit 152ab98: per model, the latest row of the
    1-thread, C++-kernel files against that tree."""
    latest: dict[str, tuple[dict, str]] = {}
    for path, d in load_all("speed_vs_ref_native_t1*.json"):
        for name, r in d["models"].items():
            if name not in latest or r.get("date", "") > latest[name][0].get("date", ""):
                latest[name] = (r, path.name)
    rows = [[name, f"×{goal:g}", f"×{r['train_speedup_cpu']:.2f}",
             f"×{r['train_speedup_wall']:.2f}", file, when(r.get("date", "?")),
             "met" if r["train_speedup_cpu"] >= goal else "not met"]
            for name, goal in SPEED_GOALS.items() if name in latest
            for r, file in [latest[name]]]
    return table(["model", "goal (train, CPU time)", "CPU time", "wall", "file",
                  "measured (UTC)", "verdict"], "lrrrlll", rows) if rows else ""


def speed_vs_ref_file(path: Path, d: dict) -> str:
    c, m = d["config"], d["machine"]
    commits = d.get("commits") or {}
    b = c["infer_batch"]
    rows = [[name, f"{r['train_speedup_wall']:.2f}", f"{r['train_speedup_cpu']:.2f}",
             f"{c['train_batch'] / r['train_seconds_new']:.1f}",
             f"{r['infer_b1_speedup_wall']:.2f}", f"{1000 * r['infer_b1_seconds_new']:.2f}",
             f"{r['infer_speedup_wall']:.2f}", f"{1000 * r['infer_seconds_new'] / b:.2f}",
             f"{r['max_abs_diff_eval_logits']:.1e}",
             f"{r['max_abs_diff_grads'] / max(r['max_abs_grad'], 1e-30):.1e}",
             ", ".join(str(x) for x in r["loadavg_1min_per_round"]), when(r.get("date", "?"))]
            for name, r in d["models"].items()]
    return fill(
        "speed_vs_ref_file", name=path.name,
        commands=commands(sorted({r.get("command", d["command"]) for r in d["models"].values()})),
        cpu=m["cpu"], threads=c.get("threads", m["threads"]), omp=m["omp_wait_policy"],
        date=m["date"], old_tree=d["trees"]["ref"],
        old_commit=f" (commit {commits['ref']})" if commits.get("ref") else "",
        new_commit=f" · new tree commit {commits['new']}" if commits.get("new") else "",
        native="on" if c.get("native_ops") else "off",
        malloc=f" · allocator: {c['malloc']}" if c.get("malloc") else "",
        train_batch=c["train_batch"], infer_batch=b, rounds=c["rounds"], iters=c["iters"],
        input=c["input"],
        table=table(["model", "train × (wall)", "train × (CPU)", "new train samples/s",
                     "infer b1 ×", "new ms/cloud b1", f"infer b{b} ×", f"new ms/cloud b{b}",
                     "max \\|Δ logits\\|", "max \\|Δ grad\\| / max \\|grad\\|",
                     "1-min load per round", "measured (UTC)"], "lrrrrrrrrrll", rows))


def speed_vs_ref() -> str:
    """Old/new ratios measured side by side (bench_speed.py --ref), one table per JSON."""
    files = load_all("speed_vs_*.json")
    if not files:
        return ""
    return fill("speed_vs_ref", goals=speed_goals(),
                files="\n\n".join(speed_vs_ref_file(p, d) for p, d in files))


def grouping_native() -> str:
    """Where the students' inference forward goes with the C++ kernels."""
    d = load("speed_students_native_t1.json")
    if d is None:
        return ""
    c, m = d["config"], d["machine"]
    rows, goals = [], []
    for name, r in d["models"].items():
        ms, share = 1000 / r["infer_samples_per_s"], r["grouping_fraction_infer"]
        ops = sorted(r["op_share_infer"].items(), key=lambda kv: -kv[1])
        rows.append([name, f"{ms:.2f}", f"{100 * share:.0f}% = {ms * share:.2f} ms",
                     ", ".join(f"{op} {ms * s:.2f}" for op, s in ops)])
        pool = r["op_share_infer"].get("gather_max", 0.0)
        goals.append([name, f"{100 * share:.1f}%", f"{100 * (share - pool):.1f}%",
                      "met" if share <= 0.30 else "not met"])
    return fill(
        "grouping_native", command=d.get("command", "python bench/bench_speed.py"), cpu=m["cpu"],
        threads=m["threads"], load=m["loadavg_1min_at_start"], date=m["date"],
        batch=c["infer_batch"], input=c["input"],
        table=table(["model", "infer ms/cloud", "sampling/grouping", "of which (ms/cloud)"],
                    "lrrl", rows),
        goals=table(["model", "sampling/grouping", "without the pool", "≤ 30%"], "lrrl",
                    goals))


def times(ratio: float | None) -> str:
    if ratio is None:
        return "–"
    return f"**{ratio:.1f}×**" if ratio >= 2 else f"{ratio:.2f}× (below 2×)"


def model_speed() -> str:
    sp = load("speed.json")
    if sp is None:
        return ""
    c, m, models = sp["config"], sp["machine"], sp["models"]
    rows = [[name, millions(r["params"]), f"{r['train_samples_per_s']:.1f}",
             (r.get("reference") or {}).get("train", "–"), times(r.get("ratio_train")),
             f"{r['infer_samples_per_s']:.1f}", (r.get("reference") or {}).get("infer", "–"),
             times(r.get("ratio_infer")), f"{100 * r.get('grouping_fraction_infer', 0):.0f}%"]
            for name, r in models.items()]
    over = [[n, f"{100 * g:.0f}%", f"{1000 / r['infer_samples_per_s']:.1f}",
             f"{1000 / r['infer_samples_per_s'] * g:.1f}"] for n, r in models.items()
            if (g := r.get("grouping_fraction_infer", 0)) > 0.3]
    return fill(
        "model_speed", command=sp.get("command", "python bench/bench_speed.py"), cpu=m["cpu"],
        threads=m["threads"], load=m["loadavg_1min_at_start"], train_batch=c["train_batch"],
        optimizer=c["optimizer"], infer_batch=c["infer_batch"], input=c["input"],
        table=table(["model", "params", "train samples/s", "public", "×", "infer samples/s",
                     "public", "×", "grouping"], "lrrrrrrrr", rows),
        notes=bullets(f"{n}: {r['note']}" for n, r in models.items() if r.get("note")),
        over=fill("model_speed_grouping", table=table(
            ["model", "grouping", "infer ms/cloud", "of which grouping (ms)"], "lrrr", over))
        if over else "")


# --- Reliability, anchors -----------------------------------------------------------------------

def gpu() -> str:
    return fill("gpu")


def anchors() -> str:
    return fill("anchors", table=table(["model", "ModelNet40 OA", "params", "source"], "lrrl",
                                       [[n, f"{oa}%", f"{p}M", s] for n, oa, p, s in ANCHORS]))


# --- the document -------------------------------------------------------------------------------

Section = tuple[str | None, Callable[[], str]]
OUTLINE: list[tuple[str, list[Section]]] = [
    ("Demo", [("Synthetic demo (`make demo`)", demo),
              ("How the demo's distilled mode was chosen", demo_probe)]),
    ("Teachers", [("ModelNet40 teacher trained on 2 CPU cores (PointNet)", teacher_pointnet),
                  ("The strong CPU teacher (student_l)", teacher_strong),
                  ("Teacher-ensemble members (CPU, trained across sessions)", teacher_members),
                  ("The teacher ensemble, chosen on validation", teacher_ensemble),
                  ("How flat the teachers' targets are (choosing τ)", flatness)]),
    ("Records", [("What the committed record sets carry (`pointkd records stats`)",
                  records_stats),
                 ("The teacher ensemble's record set",
                  lambda: records_strong("ens_ab_k8", "records_ens")),
                 ("The strong teacher's record set", records_strong),
                 ("Record size and recording throughput", records_size),
                 ("Record compression: bytes per row and what the student is taught", encodings),
                 ("Student OA per record encoding", encoding_students),
                 ("Teacher voting at record time", record_votes),
                 ("Stronger views: do they pay? (demo setting, validation data)", views),
                 ("Label smoothing and what a teacher's rows say", label_smoothing)]),
    ("Students", [("ModelNet40 students from the teacher ensemble's records", students_ens),
                  ("A ≤ 0.15M student from the same records", students_xs),
                  ("Mixed views: records and no-KD baseline on mixed clouds", students_mix),
                  ("τ on validation, teacher ensemble", tau_probe_ens),
                  ("ModelNet40 students from the strong teacher, long schedule", students_strong),
                  ("What the strong teacher could still teach", overlap),
                  ("τ on validation, PointNet teacher", tau_probe_pointnet),
                  ("τ on validation, strong teacher", tau_probe_strong),
                  ("β on validation, strong teacher", beta_probe_strong),
                  ("ModelNet40 students on 2 CPU cores (CPU protocol, PointNet teacher)",
                   students_cpu),
                  ("Does a better teacher help? Two teachers side by side", two_teachers)]),
    ("Speed", [("Distillation step time and memory (plain vs offline KD vs online KD)",
                distill_steps),
               ("Student inference latency (`pointkd export` path)", latency),
               ("ONNX export with a cheaper anchor sampler (`pointkd export --sampler`)",
                export_samplers),
               ("A student trained for the FPS-free ONNX graph (the ONNX latency goal)",
                sampler_students),
               ("Speed of this code against an older commit, side by side", speed_vs_ref),
               ("Students: sampling/grouping share with the C++ kernels", grouping_native),
               ("Model speed on this machine (1,024 points)", model_speed)]),
    ("Reliability", [("GPU protocol (strong teacher, ≤ 0.5M students)", gpu)]),
    ("Published anchors", [(None, anchors)]),
]


def relative(text: str) -> str:
    """Machine-absolute paths (from the JSON's commands) relative to the repository root."""
    text = re.sub(r"(?<![\w.])/work/main/", "", text)
    text = re.sub(r"(?<![\w.])/work/", "../", text)
    return re.sub(r"(?<![\w.])/tmp/", "tmp/", text)


def wrap_prose(lines: list[str], width: int = 100) -> list[str]:
    """Prose lines wrapped at `width` (Markdown joins them back into one paragraph); table
    rows, headings, list items' first lines keep their shape, and nothing is reworded."""
    out: list[str] = []
    fenced = False
    for block in lines:
        for line in block.split("\n"):
            if line.startswith("```"):
                fenced = not fenced
            if fenced or len(line) <= width or line.startswith(("|", "#", "```", "    ", "!")):
                out.append(line)
                continue
            lead = "- " if line.startswith("- ") else ""
            out += textwrap.wrap(line, width, initial_indent="", subsequent_indent=" " * len(lead),
                                 break_long_words=False, break_on_hyphens=False)
    return out


def render() -> str:
    parts = [fill("intro")]
    for topic, sections in OUTLINE:
        bodies = [(title, body()) for title, body in sections]
        if any(text for _, text in bodies):
            parts.append(f"## {topic}")
            parts += [f"### {title}\n\n{text or '_not measured yet_'}" if title else text
                      for title, text in bodies]
    text = relative("\n\n".join(parts))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(wrap_prose(text.split("\n")))).strip() + "\n"


def main() -> None:
    OUT.write_text(render())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
