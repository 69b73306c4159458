"""Class-folder datasets: `root/<class>/<split>/*.{npy,xyz,txt,pcd,ply,off}`.

Class names are the sorted sub-folder names (a class with no files in one split keeps its
label, so train and test agree). Each file goes through `read_cloud` with a stable per-file
seed (crc32 of its path relative to `root`), so loading the same folder twice — or on another
machine — gives identical clouds. Hidden files are skipped; any other file with an unknown
extension is an error rather than silently left out."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data import MissingSplitError, PointCloudSet
from pointkd.data.readers import POINT_SUFFIXES, file_seed, read_cloud
from pointkd.errors import DataError


def load_folder(root: Path, split: str, num_points: int) -> PointCloudSet:
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root}: neither HDF5 files nor class folders found")
    points, labels, ids = [], [], []
    for label, name in enumerate(classes):
        folder = root / name / split
        if not folder.is_dir():
            continue
        for f in sorted(folder.iterdir()):
            if f.name.startswith(".") or f.is_dir():
                continue
            if f.suffix.lower() not in POINT_SUFFIXES:
                raise DataError(f"{f}: unknown point-cloud format '{f.suffix}' "
                                f"(known: {' '.join(POINT_SUFFIXES)})")
            rel = f.relative_to(root).as_posix()  # '/' on every OS: same seed everywhere
            points.append(read_cloud(f, num_points, seed=file_seed(rel)))
            labels.append(label)
            ids.append(rel)
    if not points:
        raise MissingSplitError(f"{root}: no files for split '{split}' "
                                f"(expected {root}/<class>/{split}/*.npy|xyz|txt|pcd|ply|off)")
    return PointCloudSet(np.stack(points), np.array(labels, np.int64), classes,
                         f"{root.name}/{split}", ids)
