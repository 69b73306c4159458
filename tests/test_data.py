"""Data layer: synthetic, HDF5 (single and sharded), class folders with every file type,
readers, normalisation, stratified split, `data info` on the real ModelNet40."""

from __future__ import annotations

import h5py
import numpy as np
import trimesh

from pointkd.data import load_split, normalize_unit_sphere, read_cloud, stratified_split
from pointkd.data.synthetic import CLASSES


def write_h5(path, points, labels, ids=None):
    with h5py.File(path, "w") as f:
        f["data"] = points
        f["label"] = labels.reshape(-1, 1).astype(np.uint8)
        if ids is not None:
            f["shape_id"] = np.array(ids, dtype=object)


def test_synthetic_is_deterministic_and_splits_differ():
    a = load_split("synthetic:train_per_class=5,test_per_class=3", "train", num_points=64)
    b = load_split("synthetic:train_per_class=5,test_per_class=3", "train", num_points=64)
    t = load_split("synthetic:train_per_class=5,test_per_class=3", "test", num_points=64)
    assert a.fingerprint() == b.fingerprint() != t.fingerprint()
    assert len(CLASSES) >= 10 and a.num_classes == len(CLASSES)
    assert a.points.shape == (5 * len(CLASSES), 64, 3) and a.points.dtype == np.float32
    assert a.labels.dtype == np.int64 and np.bincount(t.labels).tolist() == [3] * len(CLASSES)
    other = load_split("synthetic:train_per_class=5,seed=1", "train", num_points=64)
    assert other.fingerprint() != a.fingerprint()


def test_normalisation_handles_large_units_and_degenerate_clouds():
    x = np.random.default_rng(0).normal(size=(3, 100, 3)) * 1e5 + 4e5
    y = normalize_unit_sphere(x)
    r = np.linalg.norm(y, axis=-1).max(-1)
    assert np.allclose(r, 1.0, atol=1e-5) and np.allclose(y.mean(1), 0, atol=1e-5)
    flat = normalize_unit_sphere(np.ones((10, 3)) * 7)
    assert np.isfinite(flat).all() and np.allclose(flat, 0)


def test_hdf5_single_file_and_shards(tmp_path):
    rng = np.random.default_rng(0)
    pts, lab = rng.normal(size=(20, 32, 3)).astype(np.float32), np.arange(20) % 4
    (tmp_path / "shape_names.txt").write_text("a\nb\nc\nd\n")
    write_h5(tmp_path / "ply_data_train0.h5", pts[:12], lab[:12], [f"s{i}" for i in range(12)])
    write_h5(tmp_path / "ply_data_train1.h5", pts[12:], lab[12:], [f"s{i}" for i in range(12, 20)])
    ds = load_split(tmp_path, "train", normalize=False)
    assert len(ds) == 20 and ds.class_names == ["a", "b", "c", "d"]
    assert np.array_equal(ds.points, pts) and ds.shape_ids[12] == "s12"
    single = load_split(tmp_path / "ply_data_train1.h5", "train", num_points=16)
    assert single.points.shape == (8, 16, 3)


def test_stratified_split_properties():
    labels = np.repeat(np.arange(5), [10, 20, 2, 1, 7])
    tr, va = stratified_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(labels)
    for c in range(5):
        n = (labels == c).sum()
        in_val = (labels[va] == c).sum()
        assert in_val < n and (in_val >= 1 or n < 2)
    assert np.array_equal(stratified_split(labels, 0.2, 0)[1], va)
    assert not np.array_equal(stratified_split(labels, 0.2, 1)[1], va)


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
    header = ("VERSION .7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\nWIDTH {n}\n"
              "HEIGHT 1\nPOINTS {n}\nDATA {mode}\n")
    with open(d / "d.pcd", "w") as f:
        f.write(header.format(n=300, mode="ascii"))
        np.savetxt(f, pts)
    with open(d / "e.pcd", "wb") as f:
        f.write(header.format(n=300, mode="binary").encode())
        f.write(pts.astype("<f4").tobytes())
    e = root / "beta" / "train"
    e.mkdir(parents=True)
    cube.export(e / "f.ply")
    cube.export(e / "g.off")
    trimesh.PointCloud(pts).export(e / "h.ply")
    return pts, cube


def test_folder_dataset_with_every_file_type(tmp_path):
    pts, _ = _write_files(tmp_path)
    ds = load_split(tmp_path, "train", num_points=128, normalize=False)
    assert ds.class_names == ["alpha", "beta"] and len(ds) == 8
    assert np.bincount(ds.labels).tolist() == [5, 3]
    for i in range(5):  # the point files hold subsets of the original points
        dist = np.linalg.norm(ds.points[i][:, None] - pts[None], axis=-1).min(axis=1)
        assert dist.max() < 1e-5
    again = load_split(tmp_path, "train", num_points=128, normalize=False)
    assert again.fingerprint() == ds.fingerprint()


def test_mesh_sampling_lies_on_the_surface(tmp_path):
    _, cube = _write_files(tmp_path)
    for name in ("f.ply", "g.off"):
        p = read_cloud(tmp_path / "beta" / "train" / name, 500, seed=1)
        assert p.shape == (500, 3)
        assert np.allclose(np.abs(p).max(axis=1), 0.5, atol=1e-5)  # every point on a face
    a = read_cloud(tmp_path / "beta" / "train" / "g.off", 200, seed=3)
    assert np.array_equal(a, read_cloud(tmp_path / "beta" / "train" / "g.off", 200, seed=3))


def test_small_point_files_are_resampled_with_replacement(tmp_path):
    np.save(tmp_path / "few.npy", np.eye(3))
    p = read_cloud(tmp_path / "few.npy", 10)
    assert p.shape == (10, 3) and {tuple(r) for r in p} == {tuple(r) for r in np.eye(3)}


def test_data_info_synthetic(cli):
    code, out, _ = cli("data", "info", "synthetic:train_per_class=4,test_per_class=2",
                       "--num-points", "64")
    assert code == 0 and "fingerprint sha256:" in out and "helix" in out


def test_data_preview_png(cli, tmp_path):
    code, out, _ = cli("data", "preview", "synthetic:train_per_class=2", "--num-points", "64",
                       "--out", tmp_path / "p.png", "--per-class", "2")
    assert code == 0 and (tmp_path / "p.png").stat().st_size > 1000


def test_real_modelnet40(modelnet_path, cli):
    train = load_split(modelnet_path, "train")
    assert train.points.shape == (9843, 1024, 3) and train.num_classes == 40
    assert train.shape_ids[0].startswith(train.class_names[train.labels[0]])
    code, out, _ = cli("data", "info", modelnet_path)
    assert code == 0 and "9843" in out and "2468" in out and "40 classes" in out
