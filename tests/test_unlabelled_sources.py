"""Pools of shapes without labels from the user's own files: an HDF5 without `label`, a
folder of point files without class folders. `record` covers them with the teacher's
classes (labels withheld: KD only), `distill` adds them beside labelled records."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from pointkd.config.run import load_config
from pointkd.data import UNLABELLED, load_split
from pointkd.errors import DataError
from pointkd.records import read_manifest
from pointkd.stages import train

DATA = "synthetic:version=1,train_per_class=10,test_per_class=3"
TINY = ["data.num_points=96", "train.epochs=1", "train.max_steps_per_epoch=3",
        "train.batch_size=16", "train.progress=false", "train.device=cpu", "train.threads=1"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A tiny teacher, its labelled record set, and two pools of another draw's clouds."""
    root = tmp_path_factory.mktemp("pools")
    train.run(load_config(None, [f"data.path={DATA}", *TINY, "model.name=student_xs",
                                 f"out={root / 't'}"]))
    clouds = load_split("synthetic:version=1,seed=4,train_per_class=2", "train",
                        num_points=200, normalize=False).points
    (root / "h5").mkdir()
    with h5py.File(root / "h5" / "train.h5", "w") as f:
        f["data"] = clouds
    (root / "scans").mkdir()
    for i, c in enumerate(clouds):
        np.save(root / "scans" / f"scan{i:03d}.npy", c)
    return root, len(clouds)


@pytest.mark.parametrize("pool", ["h5", "scans"])
def test_a_pool_without_labels_is_recorded_and_distilled_beside_labelled_records(
        setup, pool, cli):
    root, n = setup
    ds = load_split(root / pool, "train", num_points=96)
    assert not ds.labelled and ds.class_names == [] and bool((ds.labels == UNLABELLED).all())
    code, out, err = cli("data", "info", root / pool, "--split", "train")
    assert code == 0 and "shapes without labels" in out, err

    teacher = root / "t" / "best.pt"
    code, _, err = cli("record", "--teacher", teacher, "--data", root / pool, "--k", 2,
                       "--out", root / f"rec_{pool}", "--no-progress")
    assert code == 0, err
    m = read_manifest(root / f"rec_{pool}")
    teacher_names = load_split(DATA, "train", num_points=96).class_names
    assert m["data"]["labels"] is False and m["data"]["num_shapes"] == n
    assert m["data"]["class_names"] == teacher_names  # the teacher's classes
    code, out, err = cli("records", "verify", root / f"rec_{pool}", "--data", root / pool,
                         "--teacher", teacher)
    assert code == 0 and out.startswith("OK"), err
    code, out, err = cli("records", "stats", root / f"rec_{pool}", "--json")
    assert code == 0 and json.loads(out)["teacher_accuracy"] is None, err

    if not (root / "rec_lab").exists():
        assert cli("record", "--teacher", teacher, "--data", DATA, "--k", 2, "--out",
                   root / "rec_lab", "--no-progress")[0] == 0
    code, out, err = cli("distill", "--records", root / "rec_lab", "--records",
                         root / f"rec_{pool}", "--student", "student_xs", "--out",
                         root / f"s_{pool}", *TINY)
    assert code == 0, err
    history = json.loads((root / f"s_{pool}" / "metrics.json").read_text())
    assert all(np.isfinite(h["train_kd"]) for h in history)


def test_training_on_shapes_without_labels_is_one_line(setup, cli):
    root, _ = setup
    code, _, err = cli("train", "--model", "student_xs", "--data", root / "scans", "--out",
                       root / "x", *TINY)
    assert code == 2 and "shapes without labels cannot be a run's training set" in err
    assert len(err.strip().splitlines()) == 1


def test_labelled_and_unlabelled_shards_of_one_split_are_refused(tmp_path):
    with h5py.File(tmp_path / "a_train.h5", "w") as f:
        f["data"] = np.random.default_rng(0).random((4, 32, 3), dtype=np.float32)
    with h5py.File(tmp_path / "b_train.h5", "w") as f:
        f["data"] = np.random.default_rng(1).random((4, 32, 3), dtype=np.float32)
        f["label"] = np.zeros(4, np.int64)
    (tmp_path / "shape_names.txt").write_text("a\n")
    with pytest.raises(DataError, match="one split is either"):
        load_split(tmp_path, "train")


def test_a_point_folder_is_one_split(setup):
    root, _ = setup
    with pytest.raises(DataError, match="one split, 'train'"):
        load_split(root / "scans", "test")
