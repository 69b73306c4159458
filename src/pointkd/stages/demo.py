"""`pointkd demo`: the whole method, end to end, in a few minutes.

Built-in synthetic data (`make demo`): a teacher -> record its logits for K augmented copies
of every training shape -> the same small student, from the same seeds and budget, without
KD, with offline KD and with offline KD + NWSD, each over several seeds -> a table of means
with every seed's paired difference to no KD, a plain verdict on whether the gains held on
every seed, and `summary.png`. What runs is read from the preset's `demo` section
(configs/synthetic_demo.yaml); every stage is the function the CLI calls.

ModelNet40 (`pointkd demo --data PATH`): a student distilled from the committed zoo record set
against the same student without KD, the two runs side by side (one core each), with the
protocol of BENCHMARKS.md (configs/modelnet40_distill_cpu.yaml).
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from pointkd import rundir
from pointkd.config.files import load_yaml_file
from pointkd.config.merge import save_config
from pointkd.config.run import RunConfig, augment_spec, from_dict, load_config
from pointkd.config.stages import RecordConfig
from pointkd.errors import ConfigError

DEMO_CONFIG = "configs/synthetic_demo.yaml"
MODELNET_CONFIG = "configs/modelnet40_distill_cpu.yaml"
ZOO_RECORDS = "zoo/records_student_l_modelnet40_k20"  # the 91.29% student_l teacher, K = 20
# what BENCHMARKS.md measured with the preset's protocol (issue #13), for the demo's verdict
MEASURED = ("BENCHMARKS.md measured 91.13 ± 0.12% (offline KD + NWSD) against 90.56 ± 0.71% "
            "(no KD) over 3 seeds with this protocol, paired +1.05, -0.12, +0.77; one pair is "
            "indicative, not proof")
RECORDS = "@records"  # in a student's overrides: the demo's record set
POOL = "@pool"  # in a student's overrides: the record set of the unlabelled pool


def read_demo_preset(path: str | Path) -> tuple[RunConfig, dict]:
    """(the shared run config, the `demo` section: teacher, k, seeds, students)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"demo preset not found: {p} (run from the repository root, or "
                          "pass --config)")
    values = load_yaml_file(p) or {}  # bounded: no alias bombs, one-line errors
    plan = values.pop("demo", None)
    if not isinstance(plan, dict) or not {"teacher", "k", "seeds", "students"} <= set(plan):
        raise ConfigError(f"{p}: needs a `demo` section with teacher, k, seeds and students")
    return from_dict(values), plan


def _cfg(base: RunConfig, overrides: list[str]) -> RunConfig:
    return load_config(None, overrides, base=copy.deepcopy(base))


def run_demo(out: str | Path = "runs/demo", quick: bool = False, config: str | None = None,
             data: str | None = None, epochs: int | None = None,
             device: str | None = None, overrides: list[str] | None = None) -> dict:
    """The synthetic demo, or with `data` the ModelNet40 one; returns the summary dict.
    `overrides` (dotted, e.g. train.max_steps_per_epoch=20) apply to every run."""
    if data:
        return run_modelnet_demo(data, out, config or MODELNET_CONFIG, epochs, device,
                                 overrides or [])
    return run_synthetic_demo(out, quick, config or DEMO_CONFIG, epochs, device,
                              overrides or [])


def run_synthetic_demo(out: str | Path, quick: bool, config: str | Path,
                       epochs: int | None = None, device: str | None = None,
                       overrides: list[str] = ()) -> dict:
    """Teacher and no-KD students first, side by side (they do not need each other); then the
    recording; then the distilled students. Each training run is a worker process with one
    thread (small models use a core better that way) writing its per-epoch lines to
    `<run>.log` beside its run directory; the demo prints one line per finished run."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from pointkd.data import describe, load_split, save_preview
    from pointkd.models.kernels import native
    from pointkd.stages import record

    out = rundir.check_output_path(out)  # never ., /, home, a file; its runs are locked
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    base, plan = read_demo_preset(config)
    common = ["train.progress=true"]
    if device:
        common.append(f"train.device={device}")
    if epochs:
        common.append(f"train.epochs={epochs}")
    teacher_extra = list(plan["teacher"])
    if quick:  # a smoke test of the pipeline, not a result
        common += ["train.epochs=2", "train.max_steps_per_epoch=3"]
    if quick or epochs:
        teacher_extra = [o for o in teacher_extra if not o.startswith("train.epochs=")]
    cfg = _cfg(base, common + list(overrides))
    save_config(cfg, out / "demo_config.yaml")  # the resolved recipe (record reads `augment`)
    data = cfg.data.path
    seeds = list(plan["seeds"])[: 1 if quick else None]
    students = plan["students"]
    first, *distilled = students  # the first mode (no KD) needs no records
    workers = max(1, min(int(plan.get("workers", 2)), os.cpu_count() or 1))

    unlabelled = plan.get("pool")  # shapes whose labels the students never see
    _stage(1, "data: the built-in synthetic set (20 fine-grained classes in pairs)")
    print(describe(data, num_points=cfg.data.num_points).split("\n\n")[0])
    print(setting_line(data, unlabelled))
    save_preview(load_split(data, "train", num_points=cfg.data.num_points), out / "samples.png",
                 per_class=2)

    teacher_cfg = _cfg(base, common + teacher_extra + list(overrides)
                       + [f"out={out / 'teacher'}"])
    jobs: dict[str, RunConfig] = {"teacher": teacher_cfg}

    def student(label: str, seed: int, records_dir: Path | None = None,
                pool_dir: Path | None = None) -> None:
        extra = [str(o).replace(RECORDS, str(records_dir)).replace(POOL, str(pool_dir))
                 for o in students[label]]
        name = f"{_slug(label)}-s{seed}"
        jobs[f"{label}|{seed}"] = _cfg(base, common + extra + list(overrides)
                                       + [f"train.seed={seed}", f"out={out / name}"])

    for seed in seeds:
        student(first, seed)
    student_cfg = jobs[f"{first}|{seeds[0]}"]
    teacher_data = ("" if teacher_cfg.data.path == data
                    else f" on {teacher_cfg.data.path}; the students get {data}")
    _stage(2, f"teacher ({teacher_cfg.model.name}, {teacher_cfg.train.epochs} epochs"
              f"{teacher_data}) and the {first} students ({student_cfg.model.name}, "
              f"{student_cfg.train.epochs} epochs, seeds {', '.join(map(str, seeds))}), "
              f"{workers} at a time")
    done: dict[str, dict] = {}
    native.available()  # a first build of the CPU kernels happens here, not in every worker
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        _run_jobs(pool, jobs, done)
        teacher = done["teacher"]

        k = 2 if quick else int(plan["k"])
        _stage(3, f"record: the teacher's logits for K = {k} augmented copies of every "
                  "training shape")
        records_dir = record.run(RecordConfig(
            teachers=[str(out / "teacher" / "best.pt")], data=data, out=str(out / "records"),
            k=k, seed=0, logits="int8", topk=0, combine="mean", batch_size=64,
            device=cfg.train.device, resume=False, overwrite=True,
            augment=augment_spec(out / "demo_config.yaml"))).root
        recording = _records_summary(records_dir)
        print(f"   {recording['rows']:,} rows x {recording['bytes_per_row']} B = "
              f"{recording['bytes'] / 1e3:.0f} kB in {recording['seconds']:.1f} s")
        pool_dir = None
        if unlabelled:
            pool_dir = record.run(RecordConfig(
                teachers=[str(out / "teacher" / "best.pt")], data=unlabelled["data"],
                out=str(out / "records_pool"), k=2 if quick else int(unlabelled["k"]), seed=0,
                unlabelled=True, device=cfg.train.device, overwrite=True,
                augment=augment_spec(out / "demo_config.yaml"))).root
            pool_rec = _records_summary(pool_dir)
            recording["pool"] = pool_rec
            print(f"   and the unlabelled pool ({unlabelled['data']}): {pool_rec['rows']:,} rows = "
                  f"{pool_rec['bytes'] / 1e3:.0f} kB in {pool_rec['seconds']:.1f} s, "
                  "labels withheld")

        _stage(4, f"distilled students: {', '.join(distilled)}; the same model, seeds and "
                  "budget")
        jobs.clear()
        for seed in seeds:
            for label in distilled:
                student(label, seed, records_dir, pool_dir)
        _run_jobs(pool, jobs, done)

    runs = [{"run": key.split("|")[0], **r} for key, r in done.items() if key != "teacher"]
    rows = summarize(runs, list(students))
    teacher_row = {"run": f"teacher ({teacher['model']})", "seeds": [teacher["seed"]],
                   "test_oa": [teacher["test_oa"]], "mean": teacher["test_oa"],
                   "std": 0.0, "params": teacher["params"], "seconds": teacher["seconds"]}
    total = time.perf_counter() - t_all
    summary = {
        "command": "pointkd demo" + (" --quick" if quick else ""), "machine": _machine(),
        "commit": _commit(), "config": str(config), "total_seconds": total,
        "workers": workers, "record_seconds": recording["seconds"], "recording": recording,
        "test_shapes": _test_count(data),
        "teacher": teacher, "rows": [teacher_row, *rows], "runs": runs,
        "setting": setting_line(data, unlabelled),
    }
    summary["verdict"] = verdict(summary)
    table = format_table(summary)
    print("\n" + table + f"\n\ntotal {total:.0f} s; outputs in {out}/")
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    plot_summary(summary, out / "summary.png")
    return summary


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


def _train_job(cfg: RunConfig, threads: int) -> dict:
    """One training run in a worker process; its own output goes to `<out>/train.log`."""
    import contextlib

    import torch

    from pointkd.stages import train
    from pointkd.training.outputs import epoch_line

    def say_epoch(row: dict) -> None:  # into the run's log, as `pointkd train` prints it
        print(epoch_line(row, cfg.train.epochs), flush=True)

    torch.set_num_threads(threads)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(Path(cfg.out).with_suffix(".log"), "w") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = dict(train.run(cfg, overwrite=True,
                                on_epoch=say_epoch if cfg.train.progress else None))
    result["seconds"] = time.perf_counter() - t0
    return _slim(result)


def _run_jobs(pool, jobs: dict[str, RunConfig], done: dict[str, dict]) -> None:
    """Run training jobs on the pool; a line per finished run (a live count on a terminal)."""
    from concurrent.futures import as_completed

    from pointkd.progress import Progress

    futures = {pool.submit(_train_job, cfg, 1): key for key, cfg in jobs.items()}
    with Progress(len(futures), "runs", unit="run", lines=False) as bar:
        for future in as_completed(futures):
            key = futures[future]
            done[key] = result = future.result()
            label = "teacher" if key == "teacher" else ", seed ".join(key.split("|"))
            bar.write(f"   {label}: {_result(result)} (log: {jobs[key].out}.log)")
            bar.update(1)


def _stage(i: int, text: str) -> None:
    print(f"\n== {i}/4 {text}", flush=True)


def _result(r: dict) -> str:
    picked = (f"best val OA {100 * r['val_oa']:.2f}% at epoch {r['best_epoch']}"
              if r.get("val_oa") is not None else f"last epoch, {r['best_epoch']}")
    return f"test OA {100 * r['test_oa']:.2f}% ({picked}), {r['seconds']:.0f} s"


def _slug(label: str) -> str:
    return label.replace(" + ", "-").replace(" ", "-").lower()


def _slim(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "test_per_class"}


def _records_summary(root: Path) -> dict:
    from pointkd.records import read_manifest

    m = read_manifest(root)
    return {"rows": m["total_rows"], "k": m["k"], "bytes_per_row": m["bytes_per_row"],
            "bytes": sum((Path(root) / s["file"]).stat().st_size for s in m["shards"]),
            "seconds": m["recording"]["seconds"]}


def _test_count(data: str) -> int:
    from pointkd.data.synthetic import parse_options

    opts = parse_options(data)
    from pointkd.data import synthetic, synthetic_v1

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
             + ("" if gap >= 3 else " — the teacher is NOT clearly stronger here, so KD has "
                "little to pass on")]
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


# --- ModelNet40 -------------------------------------------------------------------------------

def run_modelnet_demo(data: str, out: str | Path, config: str | Path,
                      epochs: int | None = None, device: str | None = None,
                      overrides: list[str] = ()) -> dict:
    """Distil a student from the zoo records and train it without KD, side by side."""
    from pointkd.records import read_manifest

    out = rundir.check_output_path(out, inputs=[data, ZOO_RECORDS])
    if not Path(ZOO_RECORDS, "manifest.json").is_file():
        raise ConfigError(f"{ZOO_RECORDS} not found: run `pointkd demo --data` from the "
                          "repository root")
    if not Path(config).is_file():
        raise ConfigError(f"config file not found: {config}")
    cfg = load_config(config, ([f"train.epochs={epochs}"] if epochs else []) + list(overrides))
    manifest = read_manifest(ZOO_RECORDS)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--config", str(config), "--data", str(data), "--overwrite", "--threads", "1",
              "train.progress=true"] + (["--epochs", str(epochs)] if epochs else []) + (
              ["--device", device] if device else []) + list(overrides)
    folders = {"no KD": "no-kd", "offline KD + NWSD": "offline-kd-nwsd"}
    runs = {
        "no KD": ["train", "--model", cfg.model.name, "--out", str(out / folders["no KD"])],
        "offline KD + NWSD": ["distill", "--records", ZOO_RECORDS, "--student", cfg.model.name,
                              "--out", str(out / folders["offline KD + NWSD"])],
    }
    print(f"== ModelNet40 demo: {cfg.model.name}, {cfg.train.epochs} epochs, from "
          f"{ZOO_RECORDS} (teacher {manifest['teachers'][0]['model']}, K = {manifest['k']}, "
          f"{manifest['total_rows']:,} rows) vs no KD; data {data}", flush=True)
    t0 = time.perf_counter()
    side_by_side = (os.cpu_count() or 1) >= 2
    _run_commands({label: args + common for label, args in runs.items()}, side_by_side)
    results = {label: json.loads((out / folder / "results.json").read_text())
               for label, folder in folders.items()}
    total = time.perf_counter() - t0
    base, kd = results["no KD"], results["offline KD + NWSD"]
    diff = 100 * (kd["test_oa"] - base["test_oa"])
    lines = ["| run | test OA | test mAcc | params | train time |", "|---|---:|---:|---:|---:|"]
    for label, r in results.items():
        lines.append(f"| {label} | {100 * r['test_oa']:.2f}% | {100 * r['test_macc']:.2f}% | "
                     f"{r['params'] / 1e6:.3f}M | {r['train_seconds_total'] / 60:.1f} min |")
    lines += ["", f"offline KD + NWSD vs no KD: {diff:+.2f} points (one seed each). "
              + MEASURED + "."]
    if (epochs and epochs != load_config(config).train.epochs) or overrides:
        lines.append(f"(NOT the measured protocol: {cfg.train.epochs} epochs"
                     + (f", {' '.join(overrides)}" if overrides else "") + ")")
    table = "\n".join(lines)
    print("\n" + table + f"\n\ntotal {total / 60:.1f} min; outputs in {out}/")
    summary = {"command": f"pointkd demo --data {data}", "machine": _machine(),
               "commit": _commit(), "total_seconds": total, "epochs": cfg.train.epochs,
               "records": ZOO_RECORDS, "runs": {k: _slim(v) for k, v in results.items()},
               "diff_points": diff}
    (out / "summary.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _run_commands(commands: dict[str, list[str]], side_by_side: bool) -> None:
    """Run `pointkd` subcommands, each line of their output prefixed with its label; side by
    side (one core each) or one after another. A failure stops the demo with its message."""
    def start(label: str, args: list[str]) -> tuple[subprocess.Popen, threading.Thread]:
        proc = subprocess.Popen([sys.executable, "-m", "pointkd", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                bufsize=1, env={**os.environ, "OMP_NUM_THREADS": "1"})
        tail: list[str] = []

        def pump() -> None:
            for line in proc.stdout:
                tail[:] = [line.rstrip()]
                print(f"[{label}] {line.rstrip()}", flush=True)

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        proc.tail = tail  # type: ignore[attr-defined]
        return proc, t

    batches = [list(commands.items())] if side_by_side else [[c] for c in commands.items()]
    for batch in batches:
        procs = {label: start(label, args) for label, args in batch}
        for label, (proc, pump) in procs.items():
            proc.wait()
            pump.join()
            if proc.returncode != 0:
                last = proc.tail[0] if proc.tail else f"exit code {proc.returncode}"
                raise ConfigError(f"demo run '{label}' failed: {last}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
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
