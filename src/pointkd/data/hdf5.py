"""ModelNet40-style HDF5: datasets `data` (N, P, 3), `label` (N, 1) or (N,), optional
`shape_id`; a split is `<split>.h5` or several shards `*<split>*.h5` (e.g.
`ply_data_train0.h5`, `ply_data_train1.h5`), concatenated in name order; class names from
`shape_names.txt` beside them. Each file is read whole in one call (fast)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from pointkd.data import PointCloudSet
from pointkd.errors import DataError

SUFFIXES = (".h5", ".hdf5")


def split_files(root: Path, split: str) -> list[Path]:
    if root.is_file():
        return [root]
    exact = [root / f"{split}{s}" for s in SUFFIXES if (root / f"{split}{s}").is_file()]
    if exact:
        return exact
    shards = sorted(p for p in root.iterdir() if p.suffix in SUFFIXES and split in p.stem)
    if not shards:
        raise DataError(f"{root}: no HDF5 file for split '{split}'")
    return shards


def _read_one(path: Path) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with h5py.File(path, "r") as f:
            for key in ("data", "label"):
                if key not in f:
                    raise DataError(f"{path}: missing HDF5 dataset '{key}'")
            points = np.asarray(f["data"][...], dtype=np.float32)
            labels = np.asarray(f["label"][...])
            ids = None
            if "shape_id" in f:
                ids = [s.decode() if isinstance(s, bytes) else str(s) for s in f["shape_id"][...]]
    except OSError as exc:  # truncated / not HDF5 / unreadable
        reason = str(exc).split("(")[0].strip() or type(exc).__name__
        raise DataError(f"{path}: cannot read HDF5 ({reason})") from None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: labels must have shape (N,) or (N, 1), got {labels.shape}")
    if points.ndim != 3 or points.shape[-1] != 3:
        raise DataError(f"{path}: data must have shape (N, P, 3), got {points.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    return points, labels.astype(np.int64), ids


def read_class_names(root: Path, num_labels: int) -> list[str]:
    names_file = (root.parent if root.is_file() else root) / "shape_names.txt"
    if not names_file.is_file():
        return [f"class_{i}" for i in range(num_labels)]
    names = [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    if not names:
        raise DataError(f"{names_file}: no class names")
    return names


def load_hdf5(root: Path, split: str, num_points: int | None) -> PointCloudSet:
    parts = [_read_one(p) for p in split_files(root, split)]
    widths = {p[0].shape[1] for p in parts}
    if len(widths) > 1:
        raise DataError(f"{root}: shards of split '{split}' differ in points per shape {widths}")
    points = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    ids = None if any(p[2] is None for p in parts) else sum((p[2] for p in parts), [])
    names = read_class_names(root, int(labels.max()) + 1 if len(labels) else 0)
    if len(labels) and labels.max() >= len(names):
        raise DataError(f"{root}: label {int(labels.max())} but shape_names.txt lists only "
                        f"{len(names)} classes")
    if num_points is not None:
        if num_points > points.shape[1]:
            raise DataError(f"{root}: {num_points} points requested, shapes have "
                            f"{points.shape[1]}")
        # ModelNet HDF5 points are stored in random order: the first P are a uniform subsample
        points = points[:, :num_points]
    name = f"{(root.parent if root.is_file() else root).name}/{split}"
    return PointCloudSet(np.ascontiguousarray(points), labels, names, name, ids)
