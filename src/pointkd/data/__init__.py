"""Datasets: every source yields a `PointCloudSet` — float32 (N, P, 3) clouds, int64 labels,
class names, unit-sphere normalised by default, and a content fingerprint that record
manifests use to refuse records made for other data.

Sources (`load_split(path, split)`): a ModelNet40-style HDF5 folder or file, a class-folder
dataset of point/mesh files, or the built-in `synthetic` dataset.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pointkd.errors import DataError


@dataclass
class PointCloudSet:
    points: np.ndarray  # (N, P, 3) float32, C-contiguous
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    name: str
    shape_ids: list[str] | None = None
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """sha256 of the points' and labels' bytes: identical data <=> identical fingerprint."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(np.ascontiguousarray(self.points, dtype="<f4").tobytes())
            h.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
            self._fingerprint = "sha256:" + h.hexdigest()
        return self._fingerprint

    def subset(self, idx: np.ndarray) -> PointCloudSet:
        ids = None if self.shape_ids is None else [self.shape_ids[i] for i in idx]
        return PointCloudSet(np.ascontiguousarray(self.points[idx]), self.labels[idx],
                             list(self.class_names), f"{self.name}[subset]", ids)


def validate_set(ds: PointCloudSet, source: str) -> PointCloudSet:
    """Boundary checks shared by every source; one-line DataErrors naming `source`."""
    pts, labels = ds.points, ds.labels
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise DataError(f"{source}: points must have shape (N, P, 3), got {pts.shape}")
    if len(pts) == 0 or pts.shape[1] == 0:
        raise DataError(f"{source}: no shapes or no points")
    if len(labels) != len(pts):
        raise DataError(f"{source}: {len(labels)} labels for {len(pts)} shapes")
    if not np.isfinite(pts).all():
        bad = int(np.flatnonzero(~np.isfinite(pts).all(axis=(1, 2)))[0])
        raise DataError(f"{source}: shape {bad} has NaN/Inf coordinates")
    bad_labels = labels[(labels < 0) | (labels >= ds.num_classes)]
    if len(bad_labels):
        raise DataError(f"{source}: label {int(bad_labels[0])} out of range for "
                        f"{ds.num_classes} classes")
    return ds


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre each cloud at its centroid and scale its farthest point to radius 1.

    Works on (P, 3) or (N, P, 3); computed in float64 so inputs in any units (1e5) are exact
    enough; a degenerate cloud (all points equal) is centred and left unscaled."""
    x = np.asarray(points, dtype=np.float64)
    x = x - x.mean(axis=-2, keepdims=True)
    radius = np.sqrt((x**2).sum(axis=-1)).max(axis=-1)[..., None, None]
    x = x / np.where(radius > 0, radius, 1.0)
    return np.ascontiguousarray(x, dtype=np.float32)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), sorted: about `val_fraction` of every class goes to validation;
    a class with at least 2 shapes keeps at least one in each part."""
    labels = np.asarray(labels)
    if val_fraction <= 0:
        return np.arange(len(labels)), np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n_val = int(round(val_fraction * len(idx)))
        n_val = min(max(n_val, 1 if len(idx) >= 2 else 0), len(idx) - 1)
        val.append(rng.permutation(idx)[:n_val])
    val_idx = np.sort(np.concatenate(val)).astype(np.int64)
    train_idx = np.setdiff1d(np.arange(len(labels)), val_idx).astype(np.int64)
    return train_idx, val_idx


def load_split(path: str | Path, split: str = "train", num_points: int | None = None,
               normalize: bool = True) -> PointCloudSet:
    """Load one split of a dataset (see module docstring for the sources)."""
    text = str(path)
    if text == "synthetic" or text.startswith("synthetic:"):
        from pointkd.data.synthetic import load_synthetic

        ds = load_synthetic(text, split, num_points or 1024)
    else:
        p = Path(path)
        if not p.exists():
            raise DataError(f"dataset not found: {p}")
        if p.is_file() or list(p.glob("*.h5")) or list(p.glob("*.hdf5")):
            from pointkd.data.hdf5 import load_hdf5

            ds = load_hdf5(p, split, num_points)
        else:
            from pointkd.data.folder import load_folder

            ds = load_folder(p, split, num_points or 1024)
    validate_set(ds, ds.name)
    if normalize:
        ds.points = normalize_unit_sphere(ds.points)
    return ds


from pointkd.data.readers import read_cloud  # noqa: E402  (re-exported public API)
from pointkd.data.report import describe, save_preview  # noqa: E402

__all__ = ["PointCloudSet", "load_split", "stratified_split", "normalize_unit_sphere",
           "read_cloud", "describe", "save_preview", "validate_set"]
