"""`pointkd demo`: the whole method, end to end, in a few minutes.

Built-in synthetic data (`make demo`): a teacher -> record its logits for K augmented copies
of every training shape -> the same small student, from the same seeds and budget, without
KD, with offline KD and with offline KD + NWSD, each over several seeds -> a table of means
with every seed's paired difference to no KD, a plain verdict on whether the gains held on
every seed, and `summary.png`. What runs is read from the preset's `demo` section
(configs/synthetic_demo.yaml); every stage is the function the CLI calls (`train.run`,
`record.run`; `train.run` tests with `evaluate.run`).

ModelNet40 (`pointkd demo --data PATH`): a student distilled from the committed zoo record set
against the same student without KD, the two runs side by side (one core each), with the
protocol of BENCHMARKS.md (configs/modelnet40_distill_cpu.yaml), beside what that protocol
measured (read from bench/results/ where the repository is there).

`run_demo` returns a `DemoResult`; its progress lines go to `say` (default: stdout), the last
of them `result.text()`. The table, verdict and plot are made in `_demo_report`.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pointkd import rundir
from pointkd.config.files import load_yaml_file
from pointkd.config.merge import save_config
from pointkd.config.run import RunConfig, augment_spec, from_dict, load_config
from pointkd.config.stages import RecordConfig
from pointkd.errors import ConfigError
from pointkd.stages import _demo_report as report
from pointkd.stages._demo_report import format_table, plot_summary, summarize, verdict

__all__ = ["DemoResult", "run_demo", "read_demo_preset", "summarize", "verdict",
           "format_table", "plot_summary"]

DEMO_CONFIG = "configs/synthetic_demo.yaml"
MODELNET_CONFIG = "configs/modelnet40_distill_cpu.yaml"
ZOO_RECORDS = "zoo/records_student_l_modelnet40_k20"  # the strong student_l teacher's records
RECORDS = "@records"  # in a student's overrides: the demo's record set
POOL = "@pool"  # in a student's overrides: the record set of the unlabelled pool


@dataclass
class DemoResult:
    """What a demo run found; `text()` is the table and verdict it ends with."""

    kind: str  # "synthetic" or "modelnet40"
    runs: dict[str, dict]  # each training run's results: "teacher", "no KD|0", ... by key
    paired_diff: dict[str, list[float]]  # each KD mode: test OA minus no KD's, points, per seed
    verdict: list[str]  # the verdict, in plain sentences
    table: str  # the table and the verdict (summary.md)
    files: dict[str, Path]  # summary.md, summary.json (the synthetic demo: summary.png)
    out: Path
    total_seconds: float
    summary: dict = field(repr=False, default_factory=dict)  # what summary.json holds

    @property
    def held(self) -> dict[str, bool]:
        """Each KD mode: did it beat no KD on every seed?"""
        return {mode: bool(d) and all(x > 0 for x in d) for mode, d in self.paired_diff.items()}

    def text(self) -> str:
        took = (f"{self.total_seconds / 60:.1f} min" if self.kind == "modelnet40"
                else f"{self.total_seconds:.0f} s")
        return f"{self.table}\n\ntotal {took}; outputs in {self.out}/"


def print_line(text: str) -> None:
    """The default `say`: the line on stdout at once. With it (only), the stages show their
    own progress too: a live count on a terminal, the recorder's tenths elsewhere."""
    print(text, flush=True)


def run_demo(out: str | Path = "runs/demo", quick: bool = False, config: str | None = None,
             data: str | None = None, epochs: int | None = None,
             device: str | None = None, overrides: list[str] | None = None,
             say: Callable[[str], None] = print_line) -> DemoResult:
    """The synthetic demo, or with `data` the ModelNet40 one. `overrides` (dotted, e.g.
    train.max_steps_per_epoch=20) apply to every run; progress lines go to `say`."""
    if data:
        return run_modelnet_demo(data, out, config or MODELNET_CONFIG, epochs, device,
                                 overrides or [], say=say)
    return run_synthetic_demo(out, quick, config or DEMO_CONFIG, epochs, device,
                              overrides or [], say=say)


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


# --- the synthetic demo: data -> teacher -> record -> students -> verdict ---------------------

def run_synthetic_demo(out: str | Path, quick: bool, config: str | Path,
                       epochs: int | None = None, device: str | None = None,
                       overrides: list[str] = (), say: Callable[[str], None] = print_line
                       ) -> DemoResult:
    """Teacher and no-KD students first, side by side (they do not need each other); then the
    recording; then the distilled students. Each training run is a worker process with one
    thread (small models use a core better that way) writing its per-epoch lines to
    `<run>.log` beside its run directory; one line per finished run goes to `say`."""
    from pointkd.data import describe, load_split, save_preview

    out = rundir.check_output_path(out)  # never ., /, home, a file; its runs are locked
    out.mkdir(parents=True, exist_ok=True)
    t_all = time.perf_counter()
    console = say is print_line
    base, plan = read_demo_preset(config)
    common = ["train.progress=true"] + ([f"train.device={device}"] if device else []) + (
        [f"train.epochs={epochs}"] if epochs else [])
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

    def student_jobs(labels: list[str], records_dir: Path | None = None,
                     pool_dir: Path | None = None) -> dict[str, RunConfig]:
        jobs = {}
        for seed in seeds:
            for label in labels:
                extra = [str(o).replace(RECORDS, str(records_dir)).replace(POOL, str(pool_dir))
                         for o in students[label]]
                jobs[f"{label}|{seed}"] = _cfg(base, common + extra + list(overrides) + [
                    f"train.seed={seed}", f"out={out / f'{_slug(label)}-s{seed}'}"])
        return jobs

    _stage(say, 1, "data: the built-in synthetic set (20 fine-grained classes in pairs)")
    say(describe(data, num_points=cfg.data.num_points).split("\n\n")[0])
    say(report.setting_line(data, unlabelled))
    save_preview(load_split(data, "train", num_points=cfg.data.num_points), out / "samples.png",
                 per_class=2)

    teacher_cfg = _cfg(base, common + teacher_extra + list(overrides)
                       + [f"out={out / 'teacher'}"])
    jobs = {"teacher": teacher_cfg, **student_jobs([first])}
    student_cfg = jobs[f"{first}|{seeds[0]}"]
    teacher_data = ("" if teacher_cfg.data.path == data
                    else f" on {teacher_cfg.data.path}; the students get {data}")
    _stage(say, 2, f"teacher ({teacher_cfg.model.name}, {teacher_cfg.train.epochs} epochs"
                   f"{teacher_data}) and the {first} students ({student_cfg.model.name}, "
                   f"{student_cfg.train.epochs} epochs, seeds {', '.join(map(str, seeds))}), "
                   f"{workers} at a time")
    with _training_pool(workers) as pool:
        done = _run_jobs(pool, jobs, say, console)

        k = 2 if quick else int(plan["k"])
        _stage(say, 3, f"record: the teacher's logits for K = {k} augmented copies of every "
                       "training shape")
        record = _recorder(out / "teacher" / "best.pt", cfg.train.device,
                           augment_spec(out / "demo_config.yaml"), progress=console)
        records_dir = record(data, out / "records", k)
        recording = report.records_summary(records_dir)
        say(f"   {recording['rows']:,} rows x {recording['bytes_per_row']} B = "
            f"{recording['bytes'] / 1e3:.0f} kB in {recording['seconds']:.1f} s")
        pool_dir = None
        if unlabelled:
            pool_dir = record(unlabelled["data"], out / "records_pool",
                              2 if quick else int(unlabelled["k"]), unlabelled=True)
            recording["pool"] = pool_rec = report.records_summary(pool_dir)
            say(f"   and the unlabelled pool ({unlabelled['data']}): {pool_rec['rows']:,} rows = "
                f"{pool_rec['bytes'] / 1e3:.0f} kB in {pool_rec['seconds']:.1f} s, "
                "labels withheld")

        _stage(say, 4, f"distilled students: {', '.join(distilled)}; the same model, seeds and "
                       "budget")
        done.update(_run_jobs(pool, student_jobs(distilled, records_dir, pool_dir), say,
                              console))

    teacher = done["teacher"]
    runs = [{"run": key.split("|")[0], **r} for key, r in done.items() if key != "teacher"]
    rows = summarize(runs, list(students))
    teacher_row = {"run": f"teacher ({teacher['model']})", "seeds": [teacher["seed"]],
                   "test_oa": [teacher["test_oa"]], "mean": teacher["test_oa"],
                   "std": 0.0, "params": teacher["params"], "seconds": teacher["seconds"]}
    total = time.perf_counter() - t_all
    summary = {
        "command": "pointkd demo" + (" --quick" if quick else ""), "machine": report.machine(),
        "commit": report.commit(), "config": str(config), "total_seconds": total,
        "workers": workers, "record_seconds": recording["seconds"], "recording": recording,
        "test_shapes": report.count_test_shapes(data),
        "teacher": teacher, "rows": [teacher_row, *rows], "runs": runs,
        "setting": report.setting_line(data, unlabelled),
    }
    summary["verdict"] = verdict(summary)
    table = format_table(summary)
    files = _write_summary(out, summary, table)
    plot_summary(summary, files["summary.png"])
    result = DemoResult("synthetic", done, {r["run"]: r["paired_diff"] for r in rows[1:]},
                        summary["verdict"], table, files, out, total, summary)
    say("\n" + result.text())
    return result


def _stage(say: Callable[[str], None], i: int, text: str) -> None:
    say(f"\n== {i}/4 {text}")


def _slug(label: str) -> str:
    return label.replace(" + ", "-").replace(" ", "-").lower()


def _recorder(teacher: Path, device: str, augment, progress: bool) -> Callable[..., Path]:
    """`record(data, out, k, unlabelled=False)`: the teacher's record set of `data` (the
    `record` stage, pointkd record's defaults), returning its directory."""
    from pointkd.stages import record

    def run(data: str, out: Path, k: int, unlabelled: bool = False) -> Path:
        return record.run(RecordConfig(
            teachers=[str(teacher)], data=data, out=str(out), k=k, seed=0,
            unlabelled=unlabelled, device=device, overwrite=True, augment=augment,
            progress=progress)).root

    return run


def _write_summary(out: Path, summary: dict, table: str) -> dict[str, Path]:
    files = {name: out / name for name in ("summary.md", "summary.json", "summary.png")}
    files["summary.md"].write_text(table + "\n")
    files["summary.json"].write_text(json.dumps(summary, indent=1))
    return files


# --- the ModelNet40 demo: zoo records -> no KD and offline KD + NWSD side by side -------------

def run_modelnet_demo(data: str, out: str | Path, config: str | Path,
                      epochs: int | None = None, device: str | None = None,
                      overrides: list[str] = (), say: Callable[[str], None] = print_line
                      ) -> DemoResult:
    """Distil a student from the zoo records and train it without KD, side by side; each
    run's epoch lines go to `say` as they come, prefixed with its label."""
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
    # as `pointkd train/distill --config C --data D --threads 1 [--epochs] [--device] --out`
    shortcuts = [f"data.path={json.dumps(str(data))}", "train.threads=1"] + (
        [f"train.epochs={epochs}"] if epochs else []) + (
        [f"train.device={json.dumps(device)}"] if device else [])
    runs = {"no KD": ("no-kd", []), "offline KD + NWSD": (
        "offline-kd-nwsd", [f"distill.records={json.dumps(ZOO_RECORDS)}"])}
    jobs = {label: load_config(config, shortcuts + [
        f"out={json.dumps(str(out / folder))}", f"model.name={cfg.model.name}", *extra,
        "train.progress=true", *overrides]) for label, (folder, extra) in runs.items()}
    say(f"== ModelNet40 demo: {cfg.model.name}, {cfg.train.epochs} epochs, from "
        f"{ZOO_RECORDS} (teacher {manifest['teachers'][0]['model']}, K = {manifest['k']}, "
        f"{manifest['total_rows']:,} rows) vs no KD; data {data}")
    t0 = time.perf_counter()
    with _training_pool(min(2, os.cpu_count() or 1)) as pool:  # one core each
        results = _run_jobs(pool, jobs, say, say is print_line, echo=True,
                            keep_freed_memory=True)
    results = {label: results[label] for label in runs}
    total = time.perf_counter() - t0
    base, kd = results["no KD"], results["offline KD + NWSD"]
    diff = 100 * (kd["test_oa"] - base["test_oa"])
    preset = load_config(config)
    measured = report.measured_line(preset, ZOO_RECORDS)  # from the committed results, if here
    lines = [f"offline KD + NWSD vs no KD: {diff:+.2f} points (one seed each)."
             + (f" {measured}." if measured else "")]
    if (epochs and epochs != preset.train.epochs) or overrides:
        lines.append(f"(NOT the measured protocol: {cfg.train.epochs} epochs"
                     + (f", {' '.join(overrides)}" if overrides else "") + ")")
    table = "\n".join([*report.modelnet_table(results), "", *lines])
    summary = {"command": f"pointkd demo --data {data}", "machine": report.machine(),
               "commit": report.commit(), "total_seconds": total, "epochs": cfg.train.epochs,
               "records": ZOO_RECORDS, "runs": results, "diff_points": diff}
    files = _write_summary(out, summary, table)
    del files["summary.png"]
    result = DemoResult("modelnet40", results, {"offline KD + NWSD": [diff]}, lines, table,
                        files, out, total, summary)
    say("\n" + result.text())
    return result


# --- training runs side by side: a process pool, one thread each -----------------------------

def _training_pool(workers: int):
    """Worker processes for training runs, spawned (a fresh torch in each); the CPU kernels
    are built here first, once, not in every worker."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from pointkd.models.kernels import native

    native.available()
    return ProcessPoolExecutor(workers, mp_context=get_context("spawn"))


def _run_jobs(pool, jobs: dict[str, RunConfig], say: Callable[[str], None], console: bool,
              echo: bool = False, keep_freed_memory: bool = False) -> dict[str, dict]:
    """Run training jobs on the pool; returns their results by key. A line per finished run
    goes to `say` (and a live count on the console's terminal); with `echo` also each line of
    a run's log as it comes, prefixed with the run's label."""
    from concurrent.futures import FIRST_COMPLETED, wait

    from pointkd.progress import Progress

    logs = {key: _LogTail(_log_path(cfg)) for key, cfg in jobs.items()} if echo else {}
    futures = {pool.submit(_train_job, cfg, 1, keep_freed_memory): key
               for key, cfg in jobs.items()}
    done: dict[str, dict] = {}
    with Progress(len(futures), "runs", unit="run", lines=False, enabled=console) as bar:
        write = bar.write if console else say
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=2 if echo else None,
                                     return_when=FIRST_COMPLETED)
            for key, log in logs.items():
                for line in log.new_lines():
                    write(f"[{_label(key)}] {line}")
            for future in finished:
                key = futures[future]
                done[key] = result = future.result()  # a failed run stops the demo
                write(f"   {_label(key)}: {_result(result)} (log: {_log_path(jobs[key])})")
                bar.update(1)
    return done


def _train_job(cfg: RunConfig, threads: int, keep_freed_memory: bool = False) -> dict:
    """One training run (the `train` stage) in a worker process, its output into
    `<out>.log`; `keep_freed_memory`: on CPU, as `pointkd train` runs (pointkd.cpu)."""
    import contextlib

    import torch

    from pointkd.stages import train
    from pointkd.training.outputs import epoch_line

    def say_epoch(row: dict) -> None:  # into the run's log, as `pointkd train` prints it
        print(epoch_line(row, cfg.train.epochs), flush=True)

    if keep_freed_memory and os.environ.get("POINTKD_KEEP_FREED_MEMORY", "1") != "0":
        from pointkd.cpu import keep_freed_memory as keep
        from pointkd.device import resolve_device

        if resolve_device(cfg.train.device).type == "cpu":
            keep()
    torch.set_num_threads(threads)
    Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(_log_path(cfg), "w") as log, \
            contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        result = dict(train.run(cfg, overwrite=True,
                                on_epoch=say_epoch if cfg.train.progress else None))
    result["seconds"] = time.perf_counter() - t0
    result.pop("test_per_class", None)
    return result


def _log_path(cfg: RunConfig) -> Path:
    return Path(f"{cfg.out}.log")


class _LogTail:
    """The lines a run has added to its log since the last look (the log is emptied first,
    so that a log of an earlier demo is not read as this one's)."""

    def __init__(self, path: Path) -> None:
        self.path, self.pos = path, 0
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.pos)
                chunk = f.read()
        except OSError:
            return []
        end = chunk.rfind(b"\n") + 1  # whole lines only
        self.pos += end
        return chunk[:end].decode(errors="replace").splitlines()


def _label(key: str) -> str:
    return "teacher" if key == "teacher" else ", seed ".join(key.split("|"))


def _result(r: dict) -> str:
    picked = (f"best val OA {100 * r['val_oa']:.2f}% at epoch {r['best_epoch']}"
              if r.get("val_oa") is not None else f"last epoch, {r['best_epoch']}")
    return f"test OA {100 * r['test_oa']:.2f}% ({picked}), {r['seconds']:.0f} s"
