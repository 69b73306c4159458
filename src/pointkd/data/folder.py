"""Class-folder datasets: `root/<class>/<split>/*.{npy,xyz,txt,pcd,ply,off}`.

Class names are the sorted sub-folder names; each file goes through `read_cloud` with a
stable per-file seed, so loading the same folder twice gives identical clouds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data import PointCloudSet
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
            if f.suffix.lower() not in POINT_SUFFIXES:
                continue
            rel = f.relative_to(root)
            points.append(read_cloud(f, num_points, seed=file_seed(rel)))
            labels.append(label)
            ids.append(str(rel))
    if not points:
        raise DataError(f"{root}: no files for split '{split}' "
                        f"(expected {root}/<class>/{split}/*.npy|xyz|txt|pcd|ply|off)")
    return PointCloudSet(np.stack(points), np.array(labels, np.int64), classes,
                         f"{root.name}/{split}", ids)
