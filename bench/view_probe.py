"""Which views pay? The demo's setting, measured on validation data only.

The demo's teacher (configs/synthetic_demo.yaml) is trained once; it records the students'
labelled shapes and the unlabelled pool with the plain views, and again with a stronger
augmentation (`--view`: mixed views, rotation about the up axis, point dropout, wider
anisotropic scaling). Students, paired by seed, are scored on the test split of an
independent draw (`synthetic:seed=99`: validation data, never the demo's test split):

    no KD              plain views, CE
    no KD, VIEW        the same views as the VIEW records, CE (share-weighted for mixed views:
                       a gain of KD over this is the teacher's, not the augmentation's)
    KD + pool          the demo's distilled mode (plain records)
    KD + pool, VIEW    the same, from the VIEW records

    python bench/view_probe.py --out runs/view_probe --seeds 0 1 2 --view ball \
        --machine-note '2 cores, nothing else running'
writes bench/results/view_probe_<view>.json. One thread per run; the teacher, the plain
records and the plain students are shared by every view in the same --out.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name  # bench/machine.py (script dir on sys.path)

PRESET = "configs/synthetic_demo.yaml"
LABELLED = "synthetic:train_per_class=20"
POOL = "synthetic:seed=7,train_per_class=40"
VALIDATION = "synthetic:seed=99"
# each view: its `augment` overrides of the preset (mixing: the declared defaults)
VIEWS = {
    "ball": {"mix": "ball", "mix_prob": 0.5, "mix_max": 0.5},
    "points": {"mix": "points", "mix_prob": 0.5, "mix_max": 0.5},
    "rotate": {"rotate": True},
    "dropout": {"dropout": 0.5},
    "scale": {"scale_low": 0.5, "scale_high": 2.0},
}
# the plain views every view is measured against: the preset's before it rotated (commit
# 39bc7fa, chosen by these probes), pinned so that the probes stay paired with their results
BASELINE = {"rotate": False}


def overrides(aug: dict) -> list[str]:
    """`augment` settings as CLI overrides: {"rotate": False} -> ["augment.rotate=false"]."""
    return [f"augment.{k}={str(v).lower()}" for k, v in aug.items()]


TEACHER = ["--data", "synthetic:train_per_class=80", "model.name=student_m", "model.kwargs={}",
           "data.val_fraction=0.0", "train.epochs=8", *overrides(BASELINE)]


def pointkd(*args: str) -> str:
    """Run `pointkd ARGS` (one thread), fail loudly, return its stdout."""
    cmd = [sys.executable, "-m", "pointkd", *map(str, args)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return done.stdout


def shown(args: list[str]) -> str:
    return "pointkd " + " ".join(f'"{a}"' if " " in a or "{" in a else a for a in args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/view_probe"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--view", choices=sorted(VIEWS), default="ball")
    ap.add_argument("--machine-note", required=True,
                    help="what else shared the machine (recorded with the results), e.g. "
                    "'2 cores, nothing else running'")
    args = ap.parse_args()
    out, view = args.out, args.view
    out.mkdir(parents=True, exist_ok=True)
    views = {**BASELINE, **VIEWS[view]}
    for name, aug in (("plain", BASELINE), (view, views)):  # record-time configs
        spec = ", ".join(o.removeprefix("augment.").replace("=", ": ") for o in overrides(aug))
        (out / f"{name}.yaml").write_text(f"augment: {{{spec}}}\n")
    t0 = time.perf_counter()
    teacher = out / "teacher"
    teacher_cmd = ["train", "--config", PRESET, "--out", str(teacher), "--threads", "1",
                   "--overwrite", *TEACHER]
    if not (teacher / "results.json").exists():
        pointkd(*teacher_cmd)
    records: dict[str, list[str]] = {}
    for name, data, extra in (("L", LABELLED, []), ("U", POOL, ["--unlabelled"])):
        for tag, config in (("plain", str(out / "plain.yaml")),
                            (view, str(out / f"{view}.yaml"))):
            rec = out / f"rec{name}_{tag}"
            cmd = ["record", "--teacher", str(teacher / "best.pt"), "--data", data,
                   "--config", config, "--k", "10", "--out", str(rec), "--threads", "1",
                   "--no-progress", *extra]
            if not (rec / "manifest.json").exists():
                pointkd(*cmd)
            records[f"{name}_{tag}"] = cmd
    variants = {
        "nokd": ("no KD", ["train", "--data", LABELLED, "distill.alpha=0.0",
                           "distill.beta=0.0", *overrides(BASELINE)]),
        f"nokd_{view}": (f"no KD, {view} views" + (" (share-weighted CE)" if "mix" in
                                                     VIEWS[view] else ""),
                         ["train", "--data", LABELLED, "distill.alpha=0.0", "distill.beta=0.0",
                          *overrides(views)]),
        "kd_pool": ("offline KD + unlabelled pool", ["distill", "--records",
                    str(out / "recL_plain"), "--records", str(out / "recU_plain"),
                    "distill.beta=0.0"]),
        f"kd_pool_{view}": (f"offline KD + unlabelled pool, {view}-view records",
                            ["distill", "--records", str(out / f"recL_{view}"), "--records",
                             str(out / f"recU_{view}"), "distill.beta=0.0"]),
    }
    results: dict[str, dict] = {}
    for key, (label, base) in variants.items():
        results[key] = {"label": label, "command": shown([*base[:1], "--config", PRESET,
                                                          "--seed", "S", "--threads", "1",
                                                          *base[1:]]),
                        "val_oa": [], "test_split_not_used": True}
        for seed in args.seeds:
            run = out / f"{key}_s{seed}"
            if not (run / "results.json").exists():
                pointkd(base[0], "--config", PRESET, "--seed", seed, "--threads", "1",
                        "--out", run, "--overwrite", *base[1:])
            ev = run / "validation" / "eval_test.json"
            if not ev.exists():
                pointkd("eval", run / "best.pt", "--data", VALIDATION, "--no-latency",
                        "--threads", "1", "--out", run / "validation")
            oa = json.loads(ev.read_text())["single_view"]["oa"]
            results[key]["val_oa"].append(oa)
            print(f"{key} seed {seed}: validation OA {100 * oa:.2f}%", flush=True)
    summary = {
        "purpose": f"does recording {view} views pay? the demo's setting, validation data "
                   f"only (the test split of {VALIDATION}); seeds {args.seeds}",
        "view": {"name": view, "augment": VIEWS[view]}, "baseline": BASELINE,
        "teacher": shown(teacher_cmd), "records": {k: shown(v) for k, v in records.items()},
        "validation": f"pointkd eval RUN/best.pt --data {VALIDATION} --no-latency --out "
                      "RUN/validation",
        "machine": f"{cpu_name()}, {args.machine_note}; one thread per run",
        "seconds": round(time.perf_counter() - t0, 1), "variants": results,
    }
    dst = Path(__file__).parent / "results" / f"view_probe_{view}.json"
    dst.write_text(json.dumps(summary, indent=1))
    print(f"wrote {dst}")


if __name__ == "__main__":
    main()
