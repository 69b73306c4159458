"""A folder of point-cloud files without classes: `root/*.{npy,xyz,txt,pcd,ply,off}` (no
sub-folders), e.g. a user's unlabelled scans. It is one split, `train`: a pool of shapes a
teacher's records can cover (`pointkd record`), whose rows get the KD terms only.

Files are read in name order, each with its stable per-file seed (as class folders are);
large pools are cached as HDF5 like class folders. Every label is `UNLABELLED`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data._core import UNLABELLED, MissingSplitError, PointCloudSet
from pointkd.data.cache import cached_split
from pointkd.data.readers import POINT_SUFFIXES, file_seed, read_cloud
from pointkd.errors import DataError
from pointkd.progress import track


def is_point_folder(root: Path) -> bool:
    """Whether `root` holds point files directly and no sub-folders (hidden ones aside)."""
    entries = [p for p in root.iterdir() if not p.name.startswith((".", "__"))]
    return (any(p.is_file() and p.suffix.lower() in POINT_SUFFIXES for p in entries)
            and not any(p.is_dir() for p in entries))


def load_point_folder(root: Path, split: str, num_points: int) -> PointCloudSet:
    if split != "train":
        raise MissingSplitError(f"{root}: a folder of unlabelled point files is one split, "
                                f"'train' (asked for '{split}')")
    files = sorted(p for p in root.iterdir() if not p.name.startswith((".", "__")))
    other = [p for p in files if p.suffix.lower() not in POINT_SUFFIXES]
    if other:
        raise DataError(f"{other[0]}: not a point file ({', '.join(POINT_SUFFIXES)})")

    def load() -> PointCloudSet:
        clouds = [read_cloud(p, num_points, seed=file_seed(p.relative_to(root)))
                  for p in track(files, len(files), f"read {root.name}", unit="file")]
        return PointCloudSet(np.stack(clouds).astype(np.float32),
                             np.full(len(files), UNLABELLED, np.int64), [],
                             f"{root.name}/train", [p.name for p in files])

    return cached_split("unlabelled", root, split, files, [], num_points, load)
