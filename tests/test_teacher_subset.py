"""A teacher that knows more classes than the data (a ModelNet40 teacher for a ModelNet10
student): its logits of the data's classes are kept, by name, in the data's order; the
manifest records the mapping (`class_map`), `records verify --teacher` re-derives it, and
online KD and `eval` map the same way. A data class the teacher lacks is still refused."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from pointkd import augment
from pointkd.checkpoint import load_model, save_checkpoint
from pointkd.data import load_split
from pointkd.models import create_model
from pointkd.records import open_records, read_manifest
from pointkd.teachers.inference import fit_to_data
from pointkd.teachers.load import load_teachers

DATA = "synthetic:version=1,train_per_class=4,test_per_class=1"  # 48 shapes, 12 classes
POINTS = 64
SUBSET = [7, 2, 5]  # teacher classes of the subset's classes 0, 1, 2: not in teacher order


@pytest.fixture(scope="module")
def full():
    return load_split(DATA, "train", num_points=POINTS)


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, full):
    """A 12-class pointkd checkpoint (random weights) that carries its class names."""
    torch.manual_seed(0)
    model = create_model("student_xs", full.num_classes).eval()
    path = tmp_path_factory.mktemp("teacher") / "best.pt"
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": full.num_classes,
                     "class_names": full.class_names, "num_points": POINTS,
                     "state_dict": model.state_dict()}, path)
    return path


def write_subset(root, classes: list[int], names: list[str] | None = None):
    """A ModelNet40-style HDF5 folder holding only `classes` of the synthetic set, relabelled
    0.. in that order, named as the synthetic set names them (or `names`)."""
    root.mkdir()
    for split in ("train", "test"):
        ds = load_split(DATA, split, num_points=POINTS, normalize=False)
        keep = np.isin(ds.labels, classes)
        labels = np.array([classes.index(int(c)) for c in ds.labels[keep]], np.int64)
        with h5py.File(root / f"{split}.h5", "w") as f:
            f["data"], f["label"] = ds.points[keep], labels
    full_names = load_split(DATA, "train", num_points=POINTS).class_names
    names = names or [full_names[c] for c in classes]
    (root / "shape_names.txt").write_text("\n".join(names) + "\n")
    return root


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    return write_subset(tmp_path_factory.mktemp("subset") / "h5", SUBSET)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory, teacher, subset):
    from pointkd.cli import main

    out = tmp_path_factory.mktemp("rec") / "rec"
    assert main(["record", "--data", str(subset), "--teacher", str(teacher), "--out", str(out),
                 "--k", "2", "--batch-size", "16", "--device", "cpu", "--logits", "fp32",
                 "--no-progress"]) == 0
    return out


def test_stored_logits_are_the_teachers_at_the_mapped_indices(recorded, teacher, subset):
    ds = load_split(subset, "train", num_points=POINTS)
    rs = open_records(recorded, data=ds)
    batch = rs.rows(np.arange(len(rs)))
    x = augment.apply(torch.from_numpy(ds.points)[batch.sample], batch.params, batch.seeds,
                      rs.spec)
    model, _ = load_model(teacher)
    with torch.no_grad():
        want = model(x)[:, SUBSET]
    assert batch.logits.shape == (len(rs), len(SUBSET))
    torch.testing.assert_close(batch.logits, want, rtol=1e-5, atol=1e-5)


def test_manifest_records_the_class_map_only_when_not_the_identity(cli, tmp_path, recorded,
                                                                   teacher):
    assert read_manifest(recorded)["teachers"][0]["class_map"] == SUBSET
    out = tmp_path / "same"
    code, _, err = cli("record", "--data", DATA, "--teacher", teacher, "--out", out, "--k", "1",
                       "--device", "cpu", "--no-progress")
    assert code == 0, err
    assert "class_map" not in read_manifest(out)["teachers"][0]  # older manifests unchanged


@pytest.mark.parametrize("class_map", [[2, 7, 5], None])
def test_verify_checks_the_mapping(cli, tmp_path, recorded, teacher, class_map):
    code, out, err = cli("records", "verify", recorded, "--teacher", teacher)
    assert code == 0 and "OK" in out, err
    copy = tmp_path / "rec"
    copy.mkdir()
    for f in recorded.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    m = json.loads((copy / "manifest.json").read_text())
    if class_map is None:
        del m["teachers"][0]["class_map"]  # as if recorded without the mapping
    else:
        m["teachers"][0]["class_map"] = class_map
    (copy / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli("records", "verify", copy, "--teacher", teacher)
    assert code == 2 and "maps its classes" in err and len(err.strip().splitlines()) == 1, err


def test_a_teacher_missing_a_data_class_is_refused(cli, tmp_path, full, teacher):
    names = [full.class_names[c] for c in SUBSET[:2]] + ["unicorn"]
    data = write_subset(tmp_path / "h5", SUBSET, names)
    out = tmp_path / "rec"
    code, _, err = cli("record", "--data", data, "--teacher", teacher, "--out", out, "--k", "1",
                       "--device", "cpu", "--no-progress")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "unicorn not among its 12 classes" in err and "Traceback" not in err
    assert not out.exists()


def test_online_teacher_maps_the_same_way(teacher, subset):
    ds = load_split(subset, "train", num_points=POINTS)
    t = load_teachers([str(teacher)])[0]
    fit_to_data([t], ds, str(subset), POINTS)
    model, _ = load_model(teacher)
    x = torch.from_numpy(ds.points[:5])
    with torch.no_grad():
        torch.testing.assert_close(t(x), model(x)[:, SUBSET], rtol=1e-5, atol=1e-5)


def test_online_kd_trains_on_the_subset(tmp_path, teacher, subset):
    from pointkd.config.run import load_config
    from pointkd.stages import train

    cfg = load_config(None, [f"data.path={subset}", f"data.num_points={POINTS}",
                             "train.epochs=1", "train.max_steps_per_epoch=1",
                             "train.batch_size=8", "train.progress=false", "train.device=cpu",
                             f"out={tmp_path / 's'}", "model.name=student_xs",
                             "distill.online=true", f"distill.teacher={teacher}"])
    assert train.run(cfg)["mode"] == "online-kd"


def test_eval_of_the_teacher_on_the_subset(cli, tmp_path, teacher, subset):
    code, _, err = cli("eval", teacher, "--data", subset, "--out", tmp_path / "ev",
                       "--no-latency")
    assert code == 0, err
    report = json.loads((tmp_path / "ev" / "eval_test.json").read_text())
    ds = load_split(subset, "test", num_points=POINTS)
    model, _ = load_model(teacher)
    with torch.no_grad():
        pred = model(torch.from_numpy(ds.points))[:, SUBSET].argmax(1).numpy()
    assert report["single_view"]["oa"] == pytest.approx(float((pred == ds.labels).mean()))
