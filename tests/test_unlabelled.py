"""Distilling from shapes without labels: `record --unlabelled`, `distill --records A
--records B` (labelled rows get CE + KD, unlabelled rows KD only), and what is refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import pointkd.stages.train
import pointkd.training.loop
import pointkd.training.sources
from pointkd.config.run import load_config
from pointkd.config.stages import RecordConfig
from pointkd.data import load_split
from pointkd.errors import ConfigError
from pointkd.records import open_records
from pointkd.records.verify import info
from pointkd.stages import record, train
from pointkd.training.losses import UNLABELLED, classification_loss
from pointkd.training.sources import training_source

LABELLED = "synthetic:version=1,train_per_class=6,test_per_class=3"
POOL = "synthetic:version=1,seed=7,train_per_class=5"  # other shapes of the same classes
TINY = ["data.num_points=128", "train.epochs=1", "train.batch_size=16",
        "train.progress=false", "train.device=cpu", "train.eval_batch_size=128",
        "model.name=student_xs"]


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """A teacher, a labelled record set (the student's data) and an unlabelled pool's."""
    root = tmp_path_factory.mktemp("unlabelled")
    train.run(load_config(None, TINY + [f"data.path={LABELLED}", f"out={root / 't'}",
                                           "train.max_steps_per_epoch=2"]))
    teacher = str(root / "t" / "best.pt")
    common = {"teachers": [teacher], "k": 2, "batch_size": 32, "device": "cpu",
              "progress": False}
    record.run(RecordConfig(data=LABELLED, out=str(root / "lab"), **common))
    record.run(RecordConfig(data=POOL, out=str(root / "pool"), unlabelled=True, **common))
    return root


def _cfg(out, *extra):
    return load_config(None, TINY + [f"out={out}", *extra])


def test_cross_entropy_skips_unlabelled_clouds():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 5, generator=g, requires_grad=True)
    labels = torch.tensor([1, UNLABELLED, 3, UNLABELLED, 0, 2])
    keep = labels != UNLABELLED
    ce = classification_loss(logits, labels, 0.1)
    assert torch.allclose(ce, F.cross_entropy(logits[keep], labels[keep], label_smoothing=0.1))
    none = classification_loss(logits, torch.full((6,), UNLABELLED))
    assert float(none.detach()) == 0.0 and none.requires_grad  # a batch of pool rows only: KD alone
    none.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_unlabelled_manifest_and_info(sets):
    m = json.loads((sets / "pool" / "manifest.json").read_text())
    assert m["data"]["labels"] is False
    assert "labels" not in json.loads((sets / "lab" / "manifest.json").read_text())["data"]
    assert "withheld" in info(sets / "pool") and "withheld" not in info(sets / "lab")


def test_pool_shapes_train_without_labels(sets):
    cfg = _cfg(sets / "s", f"distill.records={sets / 'lab'}",
               f"distill.extra_records=[{sets / 'pool'}]")
    pointkd.stages.train.check(cfg)  # the data: the one the first record set names
    data, val_idx, source, pool = training_source(cfg, pointkd.training.sources.SINGLE,
                                                  torch.device("cpu"))
    extra = load_split(POOL, "train", num_points=128)
    n = len(data)
    assert len(pool.points) == n + len(extra)
    assert torch.equal(pool.labels[:n], torch.from_numpy(data.labels))
    assert bool((pool.labels[n:] == UNLABELLED).all())
    assert torch.equal(pool.points[n:], torch.from_numpy(extra.points))
    # one epoch: each training shape of the labelled set and each pool shape exactly once,
    # the labelled set's validation shapes never
    shapes = torch.cat([b.shapes for b in source.batches(0, 16)]).numpy()
    train = np.setdiff1d(np.arange(n), val_idx)
    assert sorted(shapes[shapes < n]) == sorted(train)
    assert sorted(shapes[shapes >= n]) == list(range(n, n + len(extra)))
    keys = torch.cat([b.rows for b in source.batches(0, 16)]).numpy()
    assert len(set(keys)) == len(keys) and keys.max() < source.num_rows


def test_pool_rows_replay_the_pool_clouds_with_the_recorded_logits(sets):
    """The replayed logits of a pooled batch are the rows' own (part by part), and the shape
    indices point at the clouds they were recorded for."""
    cfg = _cfg(sets / "s", f"distill.records={sets / 'lab'}",
               f"distill.extra_records=[{sets / 'pool'}]")
    pointkd.stages.train.check(cfg)
    data, _, source, pool = training_source(cfg, pointkd.training.sources.SINGLE,
                                            torch.device("cpu"))
    recs = [open_records(sets / "lab"), open_records(sets / "pool")]
    n = len(data)
    for batch in source.batches(1, 16):
        for i, (shape, key) in enumerate(zip(batch.shapes.tolist(), batch.rows.tolist(),
                                             strict=True)):
            part, row = (0, key) if key < len(recs[0]) else (1, key - len(recs[0]))
            rb = recs[part].rows(np.array([row]))
            assert int(rb.sample[0]) + (n if part else 0) == shape
            assert torch.equal(batch.teacher_logits[i], rb.logits[0])


def test_distill_from_two_sets_end_to_end(sets, cli):
    code, out, err = cli("distill", "--records", sets / "lab", "--records", sets / "pool",
                         "--out", sets / "cli", *TINY, "train.max_steps_per_epoch=3")
    assert code == 0, err
    cfg = json.loads(json.dumps(__import__("yaml").safe_load(
        (sets / "cli" / "config.yaml").read_text())))
    assert cfg["distill"]["extra_records"] == [str(sets / "pool")]


def test_refused_combinations(sets):
    with pytest.raises(ConfigError, match="give --records first"):
        train.run(_cfg(sets / "x1", f"data.path={LABELLED}",
                          f"distill.extra_records=[{sets / 'pool'}]"))
    with pytest.raises(ConfigError, match="same shapes"):
        train.run(_cfg(sets / "x2", f"distill.records={sets / 'lab'}",
                          f"distill.extra_records=[{sets / 'lab'}]"))


def test_extra_set_with_other_classes_is_refused(sets, tmp_path, cli):
    """A pool whose class names differ (here: one renamed) cannot share the student's head."""
    code, _, err = cli("data", "convert", POOL, tmp_path / "h5", "--split", "train",
                       "--num-points", "128")
    assert code == 0, err
    names = (tmp_path / "h5" / "shape_names.txt").read_text().splitlines()
    (tmp_path / "h5" / "shape_names.txt").write_text("\n".join(["renamed", *names[1:]]) + "\n")
    train.run(load_config(None, TINY + [f"data.path={tmp_path / 'h5'}",
                                           f"out={tmp_path / 't'}",
                                           "train.max_steps_per_epoch=1"]))
    record.run(RecordConfig(teachers=[str(tmp_path / "t" / "best.pt")], data=str(tmp_path / "h5"),
                        out=str(tmp_path / "p"), k=1, device="cpu", progress=False,
                        unlabelled=True))
    with pytest.raises(ConfigError, match="classes differ"):
        train.run(_cfg(tmp_path / "s", f"distill.records={sets / 'lab'}",
                          f"distill.extra_records=[{tmp_path / 'p'}]"))
