"""Behaviour fingerprint for refactors: record sets and seeded training, printed as text.

Run it before and after a change that must not change behaviour and diff the two outputs:

    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/check_behaviour.py > before.txt
    ... change the code ...
    PYTHONPATH=src OMP_NUM_THREADS=1 python bench/check_behaviour.py > after.txt
    diff before.txt after.txt        # must be empty

It (a) trains a tiny teacher on the synthetic set (plain mode), records it with K 3 as int8,
fp16, top-k and two teachers stored each, and prints the sha256 of every shard and of the
manifest without its timestamps; (b) runs short seeded trainings in every mode (plain, online
KD, offline KD with NWSD beta < 0 and each self target, offline KD over every row with use_k;
offline KD with a second, unlabelled record set recorded with votes) and prints every epoch's
metrics except the timings, and the results without them.
Single thread, CPU, a few minutes on one core. Nothing is written outside a temporary folder.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path

import torch

from pointkd.config.run import load_config
from pointkd.config.stages import RecordConfig
from pointkd.stages import record, train

DATA = "synthetic:version=1,train_per_class=12,test_per_class=4"
BASE = [f"data.path={DATA}", "data.num_points=128", "train.epochs=2",
        "train.max_steps_per_epoch=4", "train.batch_size=16", "train.progress=false",
        "train.device=cpu", "train.eval_batch_size=128", "train.threads=1"]
POOL = "synthetic:version=1,seed=3,train_per_class=6,test_per_class=1"  # shapes without labels
TIMINGS = {"epoch_seconds", "samples_per_s", "train_seconds_this_session",
           "train_seconds_total"}
STUDENT = "student_xs"

# (name, model, extra overrides); "{teacher}" / "{records}" are filled in
RUNS = [
    ("plain", STUDENT, []),
    ("online", STUDENT, ["distill.online=true", "distill.teacher={teacher}"]),
    ("online-nwsd-ema", STUDENT, ["distill.online=true", "distill.teacher={teacher}",
                                  "distill.beta=-0.2", "distill.self_target=ema",
                                  "distill.nwsd_warmup_epochs=1", "distill.ema_decay=0.9"]),
    ("offline", STUDENT, ["distill.records={records}"]),
    ("offline-nwsd-shape", STUDENT, ["distill.records={records}", "distill.beta=-0.3",
                                     "distill.nwsd_warmup_epochs=1"]),
    ("offline-nwsd-row", STUDENT, ["distill.records={records}", "distill.beta=-0.3",
                                   "distill.self_target=row", "distill.nwsd_warmup_epochs=1"]),
    ("offline-nwsd-ema", STUDENT, ["distill.records={records}", "distill.beta=0.3",
                                   "distill.self_target=ema", "distill.nwsd_warmup_epochs=1"]),
    ("offline-pooled", STUDENT, ["distill.records={records}",
                                 "distill.extra_records=[{pool}]"]),
    ("offline-all-usek", STUDENT, ["distill.records={records}", "distill.rows_per_epoch=all",
                                   "distill.use_k=2", "train.max_steps_per_epoch=0",
                                   "train.batch_size=64", "optim.name=sgd",
                                   "train.label_smoothing=0.1", "train.grad_clip=1.0"]),
]

RECORDINGS = [
    ("int8", {"logits": "int8"}),
    ("fp16", {"logits": "fp16"}),
    ("topk3", {"logits": "int8", "topk": 3}),
    ("each-fp32", {"logits": "fp32", "combine": "each", "two": True}),
    ("pool-votes", {"data": POOL, "votes": 2, "unlabelled": True}),
]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_digest(root: Path) -> str:
    """The manifest minus what differs between two identical recordings: times, and the
    teacher files' names and hashes (a checkpoint holds its temporary run directory)."""
    m = json.loads((root / "manifest.json").read_text())
    for key in ("created", "completed", "recording"):
        m.pop(key, None)
    for t in m["teachers"]:
        t.pop("file", None)
        t.pop("sha256", None)
    return hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()


def recordings(tmp: Path, teachers: list[Path]) -> None:
    for name, kw in RECORDINGS:
        kw = dict(kw)
        chosen = teachers if kw.pop("two", False) else teachers[:1]
        data = kw.pop("data", DATA)
        out = record.run(RecordConfig(teachers=[str(t) for t in chosen], data=data,
                                  out=str(tmp / f"rec-{name}"), k=3, seed=5, batch_size=32,
                                  device="cpu", progress=False, **kw)).root
        for shard in sorted(out.glob("shard-*.bin")):
            print(f"record {name} {shard.name} {sha(shard)}")
        print(f"record {name} manifest {manifest_digest(out)}")


def training(name: str, model: str, extra: list[str], tmp: Path, fill: dict) -> None:
    out = tmp / f"run-{name}"
    cfg = load_config(None, BASE + [f"out={out}", f"model.name={model}"]
                      + [e.format(**fill) for e in extra])
    results = train.run(cfg)
    for row in json.loads((out / "metrics.json").read_text()):
        kept = {k: v for k, v in row.items() if k not in TIMINGS}
        print(f"train {name} epoch {json.dumps(kept, sort_keys=True)}")
    kept = {k: v for k, v in results.items() if k not in TIMINGS and k != "data"}
    print(f"train {name} results {json.dumps(kept, sort_keys=True)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["record", "train"], help="one half only")
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        teachers = []
        for i, seed in enumerate((0, 1)):
            out = tmp / f"teacher{i}"
            cfg = load_config(None, BASE + [f"out={out}", "model.name=student_s",
                                            f"train.seed={seed}"])
            results = train.run(cfg)
            if i == 0:
                print(f"teacher results test_oa {results['test_oa']!r} val_oa "
                      f"{results['val_oa']!r}")
            teachers.append(out / "best.pt")
        if args.only != "train":
            recordings(tmp, teachers)
        if args.only != "record":
            fill = {"teacher": teachers[0], "records": tmp / "rec-int8",
                    "pool": tmp / "rec-pool-votes"}
            if args.only == "train":
                record.run(RecordConfig(teachers=[str(teachers[0])], data=DATA,
                                    out=str(fill["records"]), k=3, seed=5, batch_size=32,
                                    device="cpu", progress=False))
                record.run(RecordConfig(teachers=[str(teachers[0])], data=POOL,
                                    out=str(fill["pool"]), k=3, seed=5, batch_size=32,
                                    device="cpu", progress=False, votes=2, unlabelled=True))
            for name, model, extra in RUNS:
                training(name, model, extra, tmp, fill)


if __name__ == "__main__":
    main()
