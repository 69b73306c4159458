"""ModelNet40-style HDF5: datasets `data` (N, P, 3), `label` (N, 1) or (N,), optional
`shape_id`; a split is `<split>.h5` or several shards `*<split>*.h5` (e.g.
`ply_data_train0.h5`, `ply_data_train1.h5`), concatenated in sorted name order; class names
from `shape_names.txt` beside them (else `class_0`.. up to the largest label). A path to one
`.h5` file loads that file whatever `split` says. Each dataset is read whole in one h5py call
(ModelNet40 train, 121 MB, loads in well under a second)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from pointkd.data._core import UNLABELLED, MissingSplitError, PointCloudSet
from pointkd.errors import DataError

SUFFIXES = (".h5", ".hdf5")


def split_files(root: Path, split: str) -> list[Path]:
    if root.is_file():
        return [root]
    exact = [root / f"{split}{s}" for s in SUFFIXES if (root / f"{split}{s}").is_file()]
    if exact:
        return exact[:1]
    shards = sorted(p for p in root.iterdir()
                    if p.is_file() and p.suffix.lower() in SUFFIXES and split in p.stem)
    if not shards:
        raise MissingSplitError(f"{root}: no HDF5 file for split '{split}' "
                                f"(expected {split}.h5 or *{split}*.h5)")
    return shards


def _read_one(path: Path, require_label: bool = False
              ) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    """One file's points (float32), labels (int64; `UNLABELLED` without a `label` dataset,
    unless `require_label`) and shape ids, checked file by file so that every error names
    the offending file."""
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        with h5py.File(path, "r") as f:
            for key in ("data", "label") if require_label else ("data",):
                if not isinstance(f.get(key), h5py.Dataset):
                    raise DataError(f"{path}: missing HDF5 dataset '{key}'")
            points = np.asarray(f["data"][()], dtype=np.float32)
            # no `label`: shapes without labels (a pool to record; training refuses it)
            labels = (np.asarray(f["label"][()]) if isinstance(f.get("label"), h5py.Dataset)
                      else np.full(len(points), UNLABELLED, np.int64))
            ids = None
            if isinstance(f.get("shape_id"), h5py.Dataset):
                ids = [s.decode() if isinstance(s, bytes) else str(s)
                       for s in np.ravel(f["shape_id"][()])]
    except DataError:
        raise
    # h5py reports truncated / non-HDF5 / corrupt files as OSError, odd dtypes as
    # TypeError/ValueError: all are bad input, never a traceback
    except (OSError, TypeError, ValueError, KeyError, RuntimeError) as exc:
        reason = " ".join(str(exc).split("(")[0].split()) or type(exc).__name__
        raise DataError(f"{path}: cannot read HDF5 - truncated, corrupt or not HDF5 "
                        f"({reason})") from None
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: labels must have shape (N,) or (N, 1), got {labels.shape}")
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == np.bool_):
        if not (np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))):
            raise DataError(f"{path}: labels must be integers, got {labels.dtype}")
    if points.ndim != 3 or points.shape[-1] != 3:
        raise DataError(f"{path}: data must have shape (N, P, 3), got {points.shape}")
    if len(labels) != len(points):
        raise DataError(f"{path}: {len(labels)} labels for {len(points)} shapes")
    if ids is not None and len(ids) != len(points):
        raise DataError(f"{path}: {len(ids)} shape ids for {len(points)} shapes")
    finite = np.isfinite(points).all(axis=(1, 2))
    if not finite.all():
        raise DataError(f"{path}: shape {int(np.flatnonzero(~finite)[0])} has NaN/Inf "
                        f"coordinates")
    return points, labels.astype(np.int64), ids


def read_class_names(root: Path, num_labels: int) -> list[str]:
    names_file = (root.parent if root.is_file() else root) / "shape_names.txt"
    if not names_file.is_file():
        if num_labels > 100_000:  # garbage labels would otherwise allocate millions of names
            raise DataError(f"{root}: labels go up to {num_labels - 1} and there is no "
                            f"shape_names.txt")
        return [f"class_{i}" for i in range(num_labels)]
    try:
        lines = names_file.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{names_file}: unreadable ({type(exc).__name__})") from None
    names = [line.strip() for line in lines if line.strip()]
    if not names:
        raise DataError(f"{names_file}: no class names")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DataError(f"{names_file}: class name {twice[0]!r} is listed more than once")
    return names


def load_hdf5(root: Path, split: str, num_points: int | None) -> PointCloudSet:
    files = split_files(root, split)
    parts = [_read_one(p) for p in files]
    widths = {p[0].shape[1] for p in parts}
    if len(widths) > 1:
        raise DataError(f"{root}: shards of split '{split}' differ in points per shape "
                        f"{sorted(widths)}")
    points = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
    labels = np.concatenate([p[1] for p in parts])
    ids = None if any(p[2] is None for p in parts) else [i for p in parts for i in p[2]]
    unlabelled = [bool((p[1] == UNLABELLED).all()) and len(p[1]) > 0 for p in parts]
    if any(unlabelled):
        if not all(unlabelled):
            raise DataError(f"{files[unlabelled.index(False)]}: has labels, "
                            f"{files[unlabelled.index(True)]} has none (one split is either)")
        return _finish(root, split, files, points, labels, [], ids, num_points)
    names = read_class_names(root, int(labels.max()) + 1 if len(labels) else 0)
    for path, (_, lab, _) in zip(files, parts, strict=True):  # name the offending file
        if len(lab) and lab.min() < 0:
            raise DataError(f"{path}: negative label {int(lab.min())}")
        if len(lab) and lab.max() >= len(names):
            raise DataError(f"{path}: label {int(lab.max())} out of range: shape_names.txt "
                            f"lists {len(names)} classes (0..{len(names) - 1})")
    return _finish(root, split, files, points, labels, names, ids, num_points)


def _finish(root: Path, split: str, files: list[Path], points: np.ndarray, labels: np.ndarray,
            names: list[str], ids: list[str] | None, num_points: int | None) -> PointCloudSet:
    if num_points is not None:
        if num_points > points.shape[1]:
            raise DataError(f"{files[0]}: {num_points} points requested, shapes have "
                            f"{points.shape[1]}")
        # ModelNet HDF5 points are stored in random order: the first P are a uniform
        # subsample, and taking them (not a fresh random draw) keeps loading deterministic
        points = points[:, :num_points]
    name = f"{root.parent.name}/{root.stem}" if root.is_file() else f"{root.name}/{split}"
    return PointCloudSet(np.ascontiguousarray(points), labels, names, name, ids)


def write_pointkd_hdf5(folder: Path, splits: dict[str, PointCloudSet]) -> None:
    """Write `<split>.h5` per split (`data` float32 (N, P, 3), `label` int64 (N,), `shape_id`
    when known) and `shape_names.txt` into `folder`: the layout `load_hdf5` reads. Each file
    is written under a temporary name, fsynced and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    names = None
    for split, ds in splits.items():
        if names is not None and list(ds.class_names) != names:
            raise DataError(f"split '{split}' has other class names than the others")
        names = list(ds.class_names)
        path = folder / f"{split}.h5"
        tmp = path.with_name(path.name + ".tmp")
        with h5py.File(tmp, "w") as f:
            f.create_dataset("data", data=np.ascontiguousarray(ds.points, dtype=np.float32))
            f.create_dataset("label", data=np.asarray(ds.labels, dtype=np.int64))
            if ds.shape_ids is not None:
                f.create_dataset("shape_id", data=np.array(ds.shape_ids, dtype=object),
                                 dtype=h5py.string_dtype())
        _fsync_replace(tmp, path)
    tmp = folder / "shape_names.txt.tmp"
    tmp.write_text("".join(f"{n}\n" for n in names or []))
    _fsync_replace(tmp, folder / "shape_names.txt")


def _fsync_replace(tmp: Path, path: Path) -> None:
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
