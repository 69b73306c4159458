"""Data layer: synthetic, HDF5 (single and sharded), class folders with every file type,
readers, normalisation, stratified split, describe/preview, the real ModelNet40."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest
import torch
import trimesh
from _numerics import assert_close_pair, assert_close_to_reference, tolerance
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from pointkd.data import (
    PointCloudSet,
    describe,
    load_split,
    normalize_unit_sphere,
    read_cloud,
    stratified_split,
)
from pointkd.data.synthetic import CLASSES
from pointkd.errors import DataError

SMALL = "synthetic:train_per_class=5,test_per_class=3"


def assert_unit_radius(points: np.ndarray, msg: str = "") -> None:
    """Every float32 cloud's farthest point at radius 1: normalised in float64, then each
    coordinate rounded once to float32, so the radius (taken here in float64) is 1 within
    one rounding."""
    radius = np.atleast_1d(np.linalg.norm(points.astype(np.float64), axis=-1).max(axis=-1))
    assert_close_to_reference(radius, np.ones_like(radius), 1, dtype=torch.float32, msg=msg)


def write_h5(path, points, labels, ids=None):
    with h5py.File(path, "w") as f:
        f["data"] = points
        f["label"] = labels.reshape(-1, 1).astype(np.uint8)
        if ids is not None:
            f["shape_id"] = np.array(ids, dtype=object)


def test_synthetic_is_deterministic_and_splits_differ():
    a = load_split(SMALL, "train", num_points=64)
    b = load_split(SMALL, "train", num_points=64)
    t = load_split(SMALL, "test", num_points=64)
    assert a.fingerprint() == b.fingerprint() != t.fingerprint()
    assert len(CLASSES) >= 10 and a.num_classes == len(CLASSES)
    assert a.points.shape == (5 * len(CLASSES), 64, 3) and a.points.dtype == np.float32
    assert a.points.flags.c_contiguous and a.name == f"{SMALL}/train"
    assert a.labels.dtype == np.int64 and np.bincount(t.labels).tolist() == [3] * len(CLASSES)
    # no test shape equals a train shape; another seed gives other shapes
    assert not (np.abs(a.points[:, None] - t.points[None]).max(axis=(2, 3)) < 1e-6).any()
    other = load_split("synthetic:train_per_class=5,seed=1", "train", num_points=64)
    assert other.fingerprint() != a.fingerprint()
    # a smaller per-class count is a per-class prefix of a larger one
    big = load_split("synthetic:train_per_class=7", "train", num_points=64)
    assert np.array_equal(big.points[big.labels == 3][:5], a.points[a.labels == 3])


@pytest.mark.numerics
def test_synthetic_defaults_and_bad_options():
    ds = load_split("synthetic", "test", num_points=128)
    assert ds.points.shape == (60 * len(CLASSES), 128, 3) and ds.name == "synthetic/test"
    assert len(CLASSES) == 20 and len(ds) >= 1000  # 1 point of test OA >= 10 shapes
    assert_unit_radius(ds.points)
    for bad in ("synthetic:colour=3", "synthetic:seed=x", "synthetic:train_per_class=0",
                "synthetic:version=3"):
        with pytest.raises(DataError, match="synthetic"):
            load_split(bad, "train", num_points=16)


def test_synthetic_version_1_is_the_earlier_set_unchanged():
    """Version 1 stays reachable byte for byte (results and record sets made on it)."""
    from pointkd.data import synthetic_v1

    v1 = load_split("synthetic:version=1,train_per_class=2,test_per_class=1", "train",
                    num_points=32)
    assert v1.class_names == list(synthetic_v1.CLASSES) and len(v1.class_names) == 12
    # the fingerprint `synthetic:train_per_class=2,test_per_class=1` had before version 2
    assert v1.fingerprint() == ("sha256:77b7d4ad0ad2786f808bdd88c327c3e9a4dcf32f841d7edb43a4"
                                "85ee762fb88a")


def test_fingerprint_and_subset():
    rng = np.random.default_rng(0)
    pts = rng.normal(size=(6, 8, 3)).astype(np.float32)
    ds = PointCloudSet(pts, np.arange(6, dtype=np.int64) % 2, ["a", "b"], "t",
                       [f"s{i}" for i in range(6)])
    expected = hashlib.sha256(pts.tobytes() + ds.labels.astype("<i8").tobytes()).hexdigest()
    assert ds.fingerprint() == "sha256:" + expected and len(ds) == 6 and ds.num_classes == 2
    sub = ds.subset(np.array([4, 1]))
    assert np.array_equal(sub.points, pts[[4, 1]]) and sub.shape_ids == ["s4", "s1"]
    assert sub.points.flags.c_contiguous and sub.fingerprint() != ds.fingerprint()
    mask = ds.subset(ds.labels == 1)
    assert mask.labels.tolist() == [1, 1, 1] and mask.shape_ids == ["s1", "s3", "s5"]


@pytest.mark.numerics
def test_normalisation_handles_large_units_and_degenerate_clouds():
    x = np.random.default_rng(0).normal(size=(3, 100, 3)) * 1e5 + 4e5
    y = normalize_unit_sphere(x)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert_unit_radius(y)
    # centred: the mean of the float32 coordinates is 0 within their rounding (|y| <= 1)
    assert_close_to_reference(y.astype(np.float64).mean(1), np.zeros((3, 3)), 1, scale=1.0,
                              dtype=torch.float32)
    single = normalize_unit_sphere(x[1])
    assert single.shape == (100, 3)
    assert_close_pair(single, y[1], 1, msg="one cloud vs in a batch")
    flat = normalize_unit_sphere(np.ones((10, 3)) * 7)
    assert np.isfinite(flat).all() and np.allclose(flat, 0)


@pytest.mark.numerics
def test_normalisation_at_the_ends_of_float64():
    """Extents below DEGENERATE_RADIUS are points (their squared radius would underflow);
    clouds too large to square are still scaled to radius 1."""
    tiny = normalize_unit_sphere(np.array([[3.7e-161, 0, 0], [0, 0, 0]]))
    assert np.array_equal(tiny, np.zeros((2, 3), np.float32))
    huge = normalize_unit_sphere(np.array([[1e200, 0, 0], [-1e200, 0, 0], [0, 1e200, 0]]))
    assert_unit_radius(huge)


@pytest.mark.numerics
@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 20), st.just(3)),
              elements=st.floats(-1e5, 1e5)))
@example(np.array([[[3.7e-161, 0.0, 0.0], [0.0, 0.0, 0.0]]]))  # radius² underflowed: 1.003
def test_normalisation_property(x):
    y = normalize_unit_sphere(x)
    radius = np.linalg.norm(y.astype(np.float64), axis=-1).max(axis=-1)
    assert np.isfinite(y).all() and (radius <= 1 + tolerance(1, 1.0)).all()
    spread = np.ptp(x, axis=1).max(axis=-1)
    assert_unit_radius(y[spread > 1e-3])  # non-degenerate: radius 1


def test_hdf5_single_file_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    pts, lab = rng.normal(size=(20, 32, 3)).astype(np.float32), np.arange(20) % 4
    (tmp_path / "shape_names.txt").write_text("a\nb\nc\nd\n")
    write_h5(tmp_path / "ply_data_train0.h5", pts[:12], lab[:12], [f"s{i}" for i in range(12)])
    write_h5(tmp_path / "ply_data_train1.h5", pts[12:], lab[12:], [f"s{i}" for i in range(12, 20)])
    ds = load_split(tmp_path, "train", normalize=False)
    assert len(ds) == 20 and ds.class_names == ["a", "b", "c", "d"]
    assert np.array_equal(ds.points, pts) and ds.shape_ids[12] == "s12"
    assert ds.labels.dtype == np.int64 and np.array_equal(ds.labels, lab)
    single = load_split(tmp_path / "ply_data_train1.h5", "train", num_points=16, normalize=False)
    assert single.points.shape == (8, 16, 3) and np.array_equal(single.points, pts[12:, :16])
    with pytest.raises(DataError, match="64 points requested"):
        load_split(tmp_path, "train", num_points=64)


@pytest.mark.numerics
def test_hdf5_exact_split_file_without_shape_names(tmp_path):
    rng = np.random.default_rng(1)
    with h5py.File(tmp_path / "test.h5", "w") as f:
        f["data"] = rng.normal(size=(5, 10, 3)) * 1e5  # float64, large units
        f["label"] = np.array([0, 2, 1, 2, 0], dtype=np.int64)  # (N,), not (N, 1)
    ds = load_split(tmp_path, "test")
    assert ds.class_names == ["class_0", "class_1", "class_2"] and ds.points.dtype == np.float32
    assert_unit_radius(ds.points)


def test_stratified_split_properties():
    labels = np.repeat(np.arange(5), [10, 20, 2, 1, 7])
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    assert np.all(np.diff(tr) > 0) and np.all(np.diff(va) > 0) and tr.dtype == np.int64
    for c in range(5):
        n = (labels == c).sum()
        in_val = (labels[va] == c).sum()
        assert in_val < n and (in_val >= 1 or n < 2)
    assert (labels[va] == 1).sum() == 4  # round(0.2 * 20)
    assert np.array_equal(stratified_split(labels, 0.2, 0)[1], va)
    assert not np.array_equal(stratified_split(labels, 0.2, 1)[1], va)
    tr0, va0 = stratified_split(labels, 0.0, seed=0)
    assert len(tr0) == len(labels) and len(va0) == 0
    with pytest.raises(DataError):
        stratified_split(labels, 1.0, seed=0)


PCD_HEADER = ("# .PCD v0.7\nVERSION .7\nFIELDS {fields}\nSIZE {size}\nTYPE {type}\nCOUNT {count}\n"
              "WIDTH {n}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {mode}\n")


def _write_files(root):
    """One file of every supported type under root/<class>/<split>/."""
    rng = np.random.default_rng(0)
    cube = trimesh.creation.box(extents=(1, 1, 1))
    pts = rng.normal(size=(300, 3))
    d = root / "alpha" / "train"
    d.mkdir(parents=True)
    np.save(d / "a.npy", pts)
    np.savetxt(d / "b.xyz", pts)
    np.savetxt(d / "c.txt", np.hstack([pts, pts]), delimiter=",")  # with "normals"
    with open(d / "d.pcd", "w") as f:
        f.write(PCD_HEADER.format(fields="x y z", size="4 4 4", type="F F F", count="1 1 1",
                                  n=300, mode="ascii"))
        np.savetxt(f, pts)
    # binary, fields in another order plus an rgb field and a 3-wide normal field
    rec = np.zeros(300, dtype=[("rgb", "<u4"), ("z", "<f4"), ("n", "<f4", (3,)),
                               ("x", "<f4"), ("y", "<f8")])
    rec["x"], rec["y"], rec["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    with open(d / "e.pcd", "wb") as f:
        f.write(PCD_HEADER.format(fields="rgb z normal x y", size="4 4 4 4 8",
                                  type="U F F F F", count="1 1 3 1 1", n=300,
                                  mode="binary").encode())
        f.write(rec.tobytes())
    e = root / "beta" / "train"
    e.mkdir(parents=True)
    cube.export(e / "f.ply")
    cube.export(e / "g.off")
    trimesh.PointCloud(pts).export(e / "h.ply")
    (root / "gamma" / "test").mkdir(parents=True)  # no train files: keeps its label
    np.save(root / "gamma" / "test" / "t.npy", pts)
    return pts, cube


@pytest.mark.numerics
def test_folder_dataset_with_every_file_type(tmp_path):
    pts, _ = _write_files(tmp_path)
    ds = load_split(tmp_path, "train", num_points=128, normalize=False)
    assert ds.class_names == ["alpha", "beta", "gamma"] and len(ds) == 8
    assert np.bincount(ds.labels).tolist() == [5, 3]
    assert ds.shape_ids[0] == "alpha/train/a.npy" and ds.points.shape == (8, 128, 3)
    for i in list(range(5)) + [7]:  # the point files hold subsets of the original points
        dist = np.linalg.norm(ds.points[i][:, None] - pts[None], axis=-1).min(axis=1)
        # float32 copies: each coordinate rounded once, |error| <= u sqrt(3) max |pts|
        assert dist.max() <= tolerance(1, np.sqrt(3) * np.abs(pts).max()), ds.shape_ids[i]
    again = load_split(tmp_path, "train", num_points=128, normalize=False)
    assert again.fingerprint() == ds.fingerprint()
    normed = load_split(tmp_path, "train", num_points=128)
    assert_unit_radius(normed.points)


@pytest.mark.numerics
def test_mesh_sampling_lies_on_the_surface(tmp_path):
    _write_files(tmp_path)
    for name in ("f.ply", "g.off"):
        p = read_cloud(tmp_path / "beta" / "train" / name, 500, seed=1)
        assert p.shape == (500, 3) and p.dtype == np.float32
        on_face = np.abs(p.astype(np.float64)).max(axis=1)  # every point on a face
        assert_close_to_reference(on_face, np.full(len(p), 0.5), 1, dtype=torch.float32)
        assert (np.abs(p) < 0.45).any()  # and not only on the edges/corners
    a = read_cloud(tmp_path / "beta" / "train" / "g.off", 200, seed=3)
    assert np.array_equal(a, read_cloud(tmp_path / "beta" / "train" / "g.off", 200, seed=3))
    assert not np.array_equal(a, read_cloud(tmp_path / "beta" / "train" / "g.off", 200, seed=4))


def test_read_cloud_is_deterministic(tmp_path):
    np.save(tmp_path / "p.npy", np.random.default_rng(0).normal(size=(1000, 3)))
    a = read_cloud(tmp_path / "p.npy", 100, seed=5)
    assert np.array_equal(a, read_cloud(tmp_path / "p.npy", 100, seed=5))
    assert not np.array_equal(a, read_cloud(tmp_path / "p.npy", 100, seed=6))
    assert len(np.unique(a, axis=0)) == 100  # subsampled without replacement


def test_read_cloud_missing_file_and_hidden_files(tmp_path):
    with pytest.raises(DataError, match="nope.npy: file not found"):
        read_cloud(tmp_path / "nope.npy")
    d = tmp_path / "k" / "test"
    d.mkdir(parents=True)
    np.save(d / "a.npy", np.eye(3))
    (d / ".DS_Store").write_bytes(b"\0junk")  # hidden files are skipped, not errors
    assert len(load_split(tmp_path, "test", num_points=3)) == 1


def test_small_point_files_are_resampled_with_replacement(tmp_path):
    few = np.random.default_rng(0).normal(size=(20, 3))
    np.save(tmp_path / "few.npy", few)
    p = read_cloud(tmp_path / "few.npy", 64)
    assert p.shape == (64, 3)
    assert {tuple(r) for r in p} == {tuple(r) for r in few.astype(np.float32)}
    np.save(tmp_path / "three.npy", np.eye(3))  # below MIN_POINTS: no shape to resample
    with pytest.raises(DataError, match="3 point.*minimum 16"):
        read_cloud(tmp_path / "three.npy", 64)
    assert read_cloud(tmp_path / "three.npy", 64, min_points=3).shape == (64, 3)


def test_text_file_with_header_line(tmp_path):
    (tmp_path / "h.txt").write_text("x y z nx ny nz\n1 2 3 0 0 1\n4, 5, 6, 0, 0, 1\n")
    p = read_cloud(tmp_path / "h.txt", 2)
    assert sorted(map(tuple, p.tolist())) == [(1, 2, 3), (4, 5, 6)]


def test_describe_text(tmp_path):
    text = describe(SMALL, splits=["train", "val", "test"], num_points=32)
    assert f"{len(CLASSES)} classes" in text and "helix_ccw" in text
    assert "train: 100 shapes x 32 points per shape" in text and "test: 60 shapes" in text
    assert text.count("fingerprint sha256:") == 2 and "raw bounds x[" in text
    assert "no 'val' split" in text
    fp = load_split(SMALL, "train", num_points=32).fingerprint()
    assert fp in text  # the fingerprint training will see
    with pytest.raises(DataError, match="none of the splits"):
        describe(SMALL, splits=["val"])


def test_data_info_synthetic(cli):
    code, out, _ = cli("data", "info", SMALL, "--num-points", "64")
    assert code == 0 and "fingerprint sha256:" in out and "helix_ccw" in out


def test_data_preview_png(cli, tmp_path):
    code, out, _ = cli("data", "preview", "synthetic:train_per_class=2", "--num-points", "64",
                       "--out", tmp_path / "sub" / "p.png", "--per-class", "1")
    png = tmp_path / "sub" / "p.png"
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_real_modelnet40(modelnet_path, cli):
    train = load_split(modelnet_path, "train")
    assert train.points.shape == (9843, 1024, 3) and train.num_classes == 40
    assert train.points.dtype == np.float32 and train.labels.dtype == np.int64
    assert train.shape_ids[0].startswith(train.class_names[train.labels[0]])
    assert train.name == "modelnet40_1024/train"
    del train
    code, out, _ = cli("data", "info", modelnet_path)
    assert code == 0 and "9843 shapes" in out and "2468 shapes" in out and "40 classes" in out
    assert out.count("fingerprint sha256:") == 2


def test_data_submodules_never_import_the_package_init():
    # The sources take the shared types from data/_core.py (and load_split from _load.py), so
    # none of them needs a half-initialised `pointkd.data`: no import cycle with __init__.
    import ast
    from pathlib import Path

    import pointkd.data

    package = Path(pointkd.data.__file__).parent
    submodules = {p.stem for p in package.glob("*.py")}
    for path in sorted(package.glob("*.py")):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "pointkd.data":
                names = {a.name for a in node.names} - submodules
                assert not names, f"{path.name} imports {sorted(names)} from pointkd.data"
            if isinstance(node, ast.Import):
                assert "pointkd.data" not in {a.name for a in node.names}, path.name


def test_public_data_names_stay_importable_from_the_package():
    import pointkd.data

    public = {"PointCloudSet", "MissingSplitError", "load_split", "stratified_split",
              "normalize_unit_sphere", "read_cloud", "describe", "save_preview", "validate_set"}
    assert public <= set(pointkd.data.__all__)
    for name in (*public, "DEGENERATE_RADIUS"):
        assert hasattr(pointkd.data, name), name
    assert issubclass(pointkd.data.MissingSplitError, DataError)
