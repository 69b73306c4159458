"""`load_split`: find which layout lies at a path and load one split from it.

Private: import `load_split` from `pointkd.data` (its docstring lists the sources).
"""

from __future__ import annotations

from pathlib import Path

from pointkd.data._core import PointCloudSet, normalize_unit_sphere, validate_set
from pointkd.errors import DataError


def load_split(path: str | Path, split: str = "train", num_points: int | None = None,
               normalize: bool = True) -> PointCloudSet:
    """Load one split of a dataset (sources: see the module docstring).

    `num_points`: HDF5 keeps the first `num_points` of each cloud (default: all); folder and
    synthetic datasets sample that many (default 1024)."""
    if num_points is not None and num_points < 1:
        raise DataError(f"num_points must be >= 1, got {num_points}")
    text = str(path)
    if text == "synthetic" or text.startswith("synthetic:"):
        from pointkd.data.synthetic import load_synthetic

        ds = load_synthetic(text, split, num_points or 1024)
        source = text
    else:
        p = Path(path)
        source = str(p)
        if not p.exists():
            raise DataError(f"{p}: dataset not found")
        ds = _load_path(p, split, num_points)
    validate_set(ds, f"{source} ({split})")
    if normalize:
        ds.points = normalize_unit_sphere(ds.points)
    return ds


def _load_path(p: Path, split: str, num_points: int | None) -> PointCloudSet:
    """Dispatch on the layout found at `p` (one small module per layout)."""
    from pointkd.data import normal_resampled, scanobjectnn
    from pointkd.data.hdf5 import SUFFIXES, load_hdf5

    if p.is_file():
        if scanobjectnn.is_scanobjectnn_file(p):
            return scanobjectnn.load_scanobjectnn(p, split, num_points)
        if p.suffix.lower() not in SUFFIXES:
            raise DataError(f"{p}: not a dataset (expected an .h5 file, a folder, or "
                            f"'synthetic'; single clouds go through `pointkd predict`)")
        return load_hdf5(p, split, num_points)
    if prefix := normal_resampled.layout_prefix(p):
        return normal_resampled.load_normal_resampled(p, split, num_points or 1024, prefix)
    if scanobjectnn.variants(p):
        return scanobjectnn.load_scanobjectnn(p, split, num_points)
    if any(f.suffix.lower() in SUFFIXES for f in p.iterdir() if f.is_file()):
        return load_hdf5(p, split, num_points)
    from pointkd.data.unlabelled import is_point_folder, load_point_folder

    if is_point_folder(p):
        return load_point_folder(p, split, num_points or 1024)
    from pointkd.data.folder import load_folder

    return load_folder(p, split, num_points or 1024)
