"""Class-folder datasets: `root/<class>/<split>/*.{npy,xyz,txt,pcd,ply,off}`.

Class names are the sorted sub-folder names (a class with no files in one split keeps its
label, so train and test agree). Each file goes through `read_cloud` with a stable per-file
seed (crc32 of its path relative to `root`), so loading the same folder twice — or on another
machine — gives identical clouds. Hidden files and folders (and `__MACOSX`) are skipped; any
other file with an unknown extension is an error rather than silently left out.

This reads the official ModelNet40 / ModelNet10 archives as unpacked
(`ModelNet40/<class>/{train,test}/*.off`); large splits are converted once into an HDF5 cache
(`pointkd.data.cache`) and read from there afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data import MissingSplitError, PointCloudSet
from pointkd.data.cache import MIN_FILES, cached_split
from pointkd.data.readers import POINT_SUFFIXES, file_seed, read_cloud
from pointkd.errors import DataError


def load_folder(root: Path, split: str, num_points: int) -> PointCloudSet:
    # "__MACOSX" (in the ModelNet10 zip) and hidden folders are no classes
    classes = sorted(p.name for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith((".", "__")))
    if not classes:
        raise DataError(f"{root}: neither HDF5 files nor class folders found")
    files, labels = _split_files(root, classes, split)
    if not files:
        raise MissingSplitError(f"{root}: no files for split '{split}' "
                                f"(expected {root}/<class>/{split}/*.npy|xyz|txt|pcd|ply|off)")
    return cached_split("folder", root, split, files, classes, num_points,
                        lambda: _read_all(root, split, files, labels, classes, num_points))


def _split_files(root: Path, classes: list[str], split: str) -> tuple[list[Path], list[int]]:
    files, labels = [], []
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
            files.append(f)
            labels.append(label)
    return files, labels


def _read_all(root: Path, split: str, files: list[Path], labels: list[int],
              classes: list[str], num_points: int) -> PointCloudSet:
    from tqdm import tqdm

    points, ids = [], []
    # a first read of the ModelNet40 archive takes minutes: show it (then it is cached)
    for f in tqdm(files, desc=f"reading {root.name}/{split} (cached afterwards)", unit="file",
                  disable=len(files) < MIN_FILES, dynamic_ncols=True):
        rel = f.relative_to(root).as_posix()  # '/' on every OS: same seed everywhere
        points.append(read_cloud(f, num_points, seed=file_seed(rel)))
        ids.append(rel)
    return PointCloudSet(np.stack(points), np.array(labels, np.int64), classes,
                         f"{root.name}/{split}", ids)
