"""Data layouts people already have, each on a tiny fixture written here in that exact
layout: the ModelNet40/10 mesh archive (with its HDF5 cache), PointNet++'s
modelnet40_normal_resampled, ScanObjectNN's h5 files; `pointkd data convert`; one-line errors
naming the file for bad or partial copies."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import pointkd.data.cache
import pointkd.data.folder
from pointkd.data import load_split
from pointkd.data.scanobjectnn import CLASS_NAMES
from pointkd.errors import DataError


def one_line_error(cli, *args) -> str:
    code, _, err = cli(*args)
    assert code == 2 and err.startswith("pointkd: error:"), err
    assert len(err.strip().splitlines()) == 1, err
    return err


# --- ModelNet40 / ModelNet10 mesh archive ----------------------------------------------------

def write_off(path, size: float, header_glued: bool = False) -> None:
    """A box mesh as an .off file; `header_glued` writes the archive's known quirk, the
    counts on the OFF line itself ("OFF8 12 0")."""
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 2)], float) * size
    f = [[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
         [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]]
    head = "OFF8 12 0\n" if header_glued else "OFF\n8 12 0\n"
    path.write_text(head + "".join(f"{a} {b} {c}\n" for a, b, c in v)
                    + "".join(f"3 {a} {b} {c}\n" for a, b, c in f))


@pytest.fixture
def modelnet_archive(tmp_path):
    """ModelNet10-style archive: <class>/{train,test}/<class>_NNNN.off, plus what the zip
    carries besides (README.txt, __MACOSX/, .DS_Store)."""
    root = tmp_path / "ModelNet10"
    for c, name in enumerate(["bathtub", "night_stand", "toilet"]):
        for split, count in (("train", 3), ("test", 1)):
            folder = root / name / split
            folder.mkdir(parents=True)
            for i in range(count):
                write_off(folder / f"{name}_{i + 1:04d}.off", 1 + c + i / 10,
                          header_glued=i == 1)
    (root / "README.txt").write_text("ModelNet10\n")
    (root / "__MACOSX" / "bathtub").mkdir(parents=True)
    (root / "__MACOSX" / "bathtub" / "._x.off").write_bytes(b"\0\5\26\7")
    (root / ".DS_Store").write_bytes(b"\0")
    return root


def test_modelnet_mesh_archive(modelnet_archive):
    train = load_split(modelnet_archive, "train", num_points=256)
    test = load_split(modelnet_archive, "test", num_points=256)
    assert train.class_names == test.class_names == ["bathtub", "night_stand", "toilet"]
    assert len(train) == 9 and len(test) == 3 and train.points.shape == (9, 256, 3)
    assert list(train.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert train.shape_ids[4] == "night_stand/train/night_stand_0002.off"  # glued header read


def test_modelnet_cache_converts_once_and_is_keyed_by_the_source(modelnet_archive, tmp_path,
                                                                  monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("POINTKD_CACHE", str(cache))
    monkeypatch.setattr(pointkd.data.cache, "MIN_FILES", 5)  # the real threshold is 500
    first = load_split(modelnet_archive, "train", num_points=128)
    assert len(load_split(modelnet_archive, "test", num_points=128)) == 3  # 3 files: direct
    entries = list((cache / "datasets").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("ModelNet10-train-128p-")
    assert sorted(p.name for p in entries[0].iterdir()) == ["shape_names.txt", "train.h5"]

    def no_reading(*a, **kw):
        raise AssertionError("a cached split was read from the meshes again")

    monkeypatch.setattr(pointkd.data.folder, "read_cloud", no_reading)
    again = load_split(modelnet_archive, "train", num_points=128)
    assert again.fingerprint() == first.fingerprint() and again.shape_ids == first.shape_ids
    assert again.name == first.name and again.class_names == first.class_names

    monkeypatch.undo()
    monkeypatch.setenv("POINTKD_CACHE", str(cache))
    monkeypatch.setattr(pointkd.data.cache, "MIN_FILES", 5)
    edited = modelnet_archive / "toilet" / "train" / "toilet_0001.off"
    write_off(edited, 7.0)
    os.utime(edited, ns=(1, 1))  # another size and time: a new key, converted again
    changed = load_split(modelnet_archive, "train", num_points=128)
    assert changed.fingerprint() != first.fingerprint()
    assert len(list((cache / "datasets").iterdir())) == 2

    monkeypatch.setenv("POINTKD_CACHE", "off")
    fresh = load_split(modelnet_archive, "train", num_points=128)
    assert fresh.fingerprint() == changed.fingerprint()


def test_modelnet_bad_copies_name_the_file(cli, modelnet_archive):
    bad = modelnet_archive / "toilet" / "train" / "toilet_0002.off"
    bad.write_text("OFF\n8 12 0\n0 0 0\n1 0 0\n")  # cut off in the vertex list
    err = one_line_error(cli, "data", "info", modelnet_archive)
    assert str(bad) in err
    bad.write_text("")
    assert f"{bad}: empty file" in one_line_error(cli, "data", "info", modelnet_archive)


# --- modelnet40_normal_resampled --------------------------------------------------------------

NORMAL_CLASSES = ["airplane", "night_stand", "vase"]


@pytest.fixture
def normal_resampled(tmp_path):
    root = tmp_path / "modelnet40_normal_resampled"
    root.mkdir()
    (root / "modelnet40_shape_names.txt").write_text("\n".join(NORMAL_CLASSES) + "\n")
    rng = np.random.default_rng(0)
    ids = {"train": [], "test": []}
    for name in NORMAL_CLASSES:
        (root / name).mkdir()
        for i in range(1, 4):
            shape_id = f"{name}_{i:04d}"
            rows = np.hstack([rng.normal(size=(10_000, 3)), rng.normal(size=(10_000, 3))])
            np.savetxt(root / name / f"{shape_id}.txt", rows, fmt="%.6f", delimiter=",")
            ids["train" if i < 3 else "test"].append(shape_id)
    for split, names in ids.items():
        (root / f"modelnet40_{split}.txt").write_text("\n".join(names) + "\n")
    (root / "filelist.txt").write_text("")  # in the archive too; not needed
    return root


def test_normal_resampled(normal_resampled):
    train = load_split(normal_resampled, "train", num_points=512, normalize=False)
    test = load_split(normal_resampled, "test", num_points=512)
    assert train.class_names == NORMAL_CLASSES and len(train) == 6 and len(test) == 3
    assert list(train.labels) == [0, 0, 1, 1, 2, 2]
    assert train.shape_ids[2] == "night_stand_0001"
    rows = np.loadtxt(normal_resampled / "night_stand" / "night_stand_0001.txt", delimiter=",")
    assert np.array_equal(train.points[2], rows[:512, :3].astype(np.float32))  # first rows, xyz
    assert load_split(normal_resampled, "train").points.shape == (6, 1024, 3)  # default


def test_normal_resampled_modelnet10_subset(normal_resampled):
    (normal_resampled / "modelnet10_shape_names.txt").write_text("night_stand\nvase\n")
    (normal_resampled / "modelnet10_train.txt").write_text("vase_0001\nnight_stand_0002\n")
    # with both lists present, ModelNet40 is read
    assert load_split(normal_resampled, "train", num_points=64).num_classes == 3
    for f in normal_resampled.glob("modelnet40_*.txt"):
        f.unlink()
    ds = load_split(normal_resampled, "train", num_points=64)
    assert ds.class_names == ["night_stand", "vase"] and list(ds.labels) == [1, 0]


@pytest.mark.parametrize("damage, message", [
    ("missing", "missing (listed in modelnet40_train.txt"),
    ("truncated", "100 points, 1024 needed"),
    ("garbage", "not comma-separated"),
    ("class", "class 'chair' of 'chair_0001' is not in modelnet40_shape_names.txt"),
])
def test_normal_resampled_bad_copies_name_the_file(cli, normal_resampled, damage, message):
    victim = normal_resampled / "vase" / "vase_0001.txt"
    if damage == "missing":
        victim.unlink()
    elif damage == "truncated":
        victim.write_text("\n".join(victim.read_text().splitlines()[:100]))
    elif damage == "garbage":
        victim.write_text("0.1,0.2,0.3,0,0,1\nnot,a,row\n")
    else:
        victim = normal_resampled / "modelnet40_train.txt"
        victim.write_text(victim.read_text() + "chair_0001\n")
    err = one_line_error(cli, "data", "info", normal_resampled)
    assert str(victim) in err and message in err


# --- ScanObjectNN -----------------------------------------------------------------------------

def write_scanobjectnn(path, n: int, seed: int, label_shape=(None,), mask=True) -> None:
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=rng.normal(size=(n, 2048, 3)).astype(np.float32))
        labels = (np.arange(n) % 15).astype(np.int8)
        f.create_dataset("label", data=labels if label_shape == (None,) else labels[:, None])
        if mask:
            f.create_dataset("mask", data=rng.integers(-1, 2, size=(n, 2048)).astype(np.int8))


@pytest.fixture
def scanobjectnn(tmp_path):
    """h5_files/main_split with two variants: OBJ_BG (plain) and PB_T50_RS."""
    root = tmp_path / "h5_files" / "main_split"
    root.mkdir(parents=True)
    write_scanobjectnn(root / "training_objectdataset_augmentedrot_scale75.h5", 30, 0)
    write_scanobjectnn(root / "test_objectdataset_augmentedrot_scale75.h5", 15, 1,
                       label_shape=(None, 1))
    write_scanobjectnn(root / "training_objectdataset.h5", 16, 2, mask=False)
    write_scanobjectnn(root / "test_objectdataset.h5", 15, 3, mask=False)
    return root


def test_scanobjectnn_pb_t50_rs(scanobjectnn):
    train_file = scanobjectnn / "training_objectdataset_augmentedrot_scale75.h5"
    train = load_split(train_file, "train", num_points=1024, normalize=False)
    test = load_split(train_file, "test")
    assert train.class_names == CLASS_NAMES and len(CLASS_NAMES) == 15
    assert CLASS_NAMES[:3] == ["bag", "bin", "box"] and CLASS_NAMES[-1] == "toilet"
    assert len(train) == 30 and len(test) == 15 and test.points.shape == (15, 2048, 3)
    with h5py.File(train_file) as f:
        assert np.array_equal(train.points, f["data"][:, :1024])
        assert np.array_equal(train.labels, f["label"][()])
    assert train.name == "scanobjectnn_augmentedrot_scale75/train"


def test_scanobjectnn_folder_with_one_or_several_variants(cli, scanobjectnn):
    err = one_line_error(cli, "data", "info", scanobjectnn)
    assert "several ScanObjectNN variants" in err and "_augmentedrot_scale75.h5" in err
    for f in scanobjectnn.glob("*_augmentedrot_scale75.h5"):
        f.unlink()
    ds = load_split(scanobjectnn, "train")
    assert len(ds) == 16 and ds.name == "scanobjectnn/train"
    code, out, err = cli("data", "info", scanobjectnn)
    assert code == 0 and "train: 16 shapes" in out and "test: 15 shapes" in out, err


@pytest.mark.parametrize("damage, message", [
    ("truncated", "cannot read HDF5"),
    ("no_label", "missing HDF5 dataset 'label'"),
    ("mask", "mask has shape"),
    ("label", "label 15 out of range for ScanObjectNN's 15 classes"),
])
def test_scanobjectnn_bad_copies_name_the_file(cli, scanobjectnn, damage, message):
    victim = scanobjectnn / "test_objectdataset_augmentedrot_scale75.h5"
    if damage == "truncated":
        data = victim.read_bytes()
        victim.write_bytes(data[: len(data) // 2])
    else:
        with h5py.File(victim, "a") as f:
            if damage == "no_label":
                del f["label"]
            elif damage == "mask":
                del f["mask"]
                f.create_dataset("mask", data=np.zeros((15, 100), np.int8))
            else:
                f["label"][3] = 15
    err = one_line_error(cli, "data", "info",
                         scanobjectnn / "training_objectdataset_augmentedrot_scale75.h5",
                         "--split", "train", "test")
    assert str(victim) in err and message in err


def test_scanobjectnn_missing_test_file(scanobjectnn):
    (scanobjectnn / "test_objectdataset.h5").unlink()
    with pytest.raises(DataError, match="test_objectdataset.h5: missing"):
        load_split(scanobjectnn / "training_objectdataset.h5", "test")


# --- pointkd data convert ---------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["modelnet", "normal", "scanobjectnn"])
def test_convert_writes_pointkd_hdf5_with_the_same_fingerprint(cli, tmp_path, layout,
                                                               request):
    src = {"modelnet": lambda: request.getfixturevalue("modelnet_archive"),
           "normal": lambda: request.getfixturevalue("normal_resampled"),
           "scanobjectnn": lambda: request.getfixturevalue("scanobjectnn")
           / "training_objectdataset_augmentedrot_scale75.h5"}[layout]()
    dst = tmp_path / "converted"
    code, out, err = cli("data", "convert", src, dst, "--num-points", "512")
    assert code == 0, err
    assert sorted(p.name for p in dst.iterdir()) == ["shape_names.txt", "test.h5", "train.h5"]
    for split in ("train", "test"):
        a = load_split(src, split, num_points=512)
        b = load_split(dst, split)
        assert b.fingerprint() == a.fingerprint() and f"fingerprint {a.fingerprint()}" in out
        assert b.class_names == a.class_names and b.shape_ids == a.shape_ids
    err = one_line_error(cli, "data", "convert", src, dst)
    assert "not an empty folder" in err


def test_record_straight_from_scanobjectnn(cli, scanobjectnn, tmp_path):
    """A teacher recorded from the file users download, no conversion step."""
    import torch

    from pointkd.checkpoint import save_checkpoint
    from pointkd.models import create_model

    data = scanobjectnn / "training_objectdataset_augmentedrot_scale75.h5"
    save_checkpoint({"model": "student_xs", "model_kwargs": {}, "num_classes": 15,
                     "class_names": CLASS_NAMES, "num_points": 256,
                     "state_dict": create_model("student_xs", 15).state_dict()},
                    tmp_path / "t.pt")
    torch.manual_seed(0)
    code, _, err = cli("record", "--teacher", tmp_path / "t.pt", "--data", data, "--out",
                       tmp_path / "rec", "--k", "1", "--device", "cpu", "--no-progress")
    assert code == 0, err
    code, text, err = cli("records", "verify", tmp_path / "rec", "--data", data)
    assert code == 0 and "30 rows" in text, err
