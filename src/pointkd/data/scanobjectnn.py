"""ScanObjectNN's HDF5 files, as in the official release (`h5_files/main_split/`, or
`main_split_nobg/`):

    training_objectdataset<variant>.h5 / test_objectdataset<variant>.h5
    datasets: data (N, 2048, 3) float32, label (N,) or (N, 1), mask (N, 2048) (optional)

`<variant>` is empty for OBJ_BG / OBJ_ONLY, `_augmentedrot_scale75` for the hardest PB_T50_RS
split (`_augmented25_norot`, `_augmented25rot`, `_augmentedrot` for the others). A folder
holding one variant is read as is; with several, name the variant by its training file
(`--data .../main_split/training_objectdataset_augmentedrot_scale75.h5`): its `test` split is
the matching `test_objectdataset<variant>.h5` beside it. The release has no class-name file:
the 15 names are the official order below. Clouds are the first `num_points` points of each
shape (default: all 2048); the background mask is checked but not used."""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np

from pointkd.data._core import MissingSplitError, PointCloudSet
from pointkd.errors import DataError

CLASS_NAMES = ["bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf",
               "table", "bed", "pillow", "sink", "sofa", "toilet"]
PATTERN = re.compile(r"^(training|test)_objectdataset(.*)\.h5$")
SPLIT_PREFIX = {"train": "training", "test": "test"}


def is_scanobjectnn_file(path: Path) -> bool:
    return PATTERN.match(path.name) is not None


def variants(folder: Path) -> list[str]:
    """The variants (file-name suffixes) present in a folder, '' for the plain one."""
    return sorted({m.group(2) for p in folder.iterdir()
                   if p.is_file() and (m := PATTERN.match(p.name))})


def load_scanobjectnn(path: Path, split: str, num_points: int | None) -> PointCloudSet:
    if path.is_file():
        folder, variant = path.parent, PATTERN.match(path.name).group(2)
        if split == path.stem:  # `data info` on one file: that file
            split = "train" if path.name.startswith("training") else "test"
    else:
        folder, found = path, variants(path)
        if len(found) > 1:
            example = folder / f"training_objectdataset{found[-1]}.h5"
            raise DataError(f"{folder}: holds several ScanObjectNN variants "
                            f"({', '.join(v or '(plain)' for v in found)}); pass the training "
                            f"file of one, e.g. {example}")
        variant = found[0]
    if split not in SPLIT_PREFIX:
        raise MissingSplitError(f"{folder}: ScanObjectNN has splits train and test, not "
                                f"'{split}'")
    file = folder / f"{SPLIT_PREFIX[split]}_objectdataset{variant}.h5"
    if not file.is_file():
        raise MissingSplitError(f"{file}: missing (the {split} split of this ScanObjectNN "
                                "variant)")
    from pointkd.data.hdf5 import _read_one

    points, labels, ids = _read_one(file, require_label=True)
    _check_mask(file, points.shape[:2])
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASS_NAMES)):
        bad = int(labels.min() if labels.min() < 0 else labels.max())
        raise DataError(f"{file}: label {bad} out of range for ScanObjectNN's 15 classes")
    if num_points is not None:
        if num_points > points.shape[1]:
            raise DataError(f"{file}: {num_points} points requested, shapes have "
                            f"{points.shape[1]}")
        points = points[:, :num_points]
    name = f"scanobjectnn{variant}/{split}"
    return PointCloudSet(np.ascontiguousarray(points), labels, list(CLASS_NAMES), name, ids)


def _check_mask(file: Path, shape: tuple[int, int]) -> None:
    try:
        with h5py.File(file, "r") as f:
            mask = f.get("mask")
            if mask is not None and tuple(getattr(mask, "shape", ())) != tuple(shape):
                raise DataError(f"{file}: mask has shape {getattr(mask, 'shape', None)}, "
                                f"expected {tuple(shape)} (one flag per point)")
    except OSError:
        raise DataError(f"{file}: cannot read HDF5 (truncated or corrupt)") from None
