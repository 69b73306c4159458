"""The types and helpers every data source shares: `PointCloudSet`, `MissingSplitError`, the
boundary checks (`validate_set`), unit-sphere normalisation and the stratified split.

Private: import these from `pointkd.data`. The source modules (hdf5.py, folder.py, ...)
import them from here, so none of them imports the package `__init__`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from pointkd.errors import DataError


class MissingSplitError(DataError):
    """The dataset exists but has no such split (`describe` skips these with a note)."""


# The label of a shape whose class is not known: a pool of unlabelled shapes (an HDF5 without
# `label`, a folder of point files) or a record set made with `--unlabelled`
UNLABELLED = -1


@dataclass
class PointCloudSet:
    points: np.ndarray  # (N, P, 3) float32, C-contiguous
    labels: np.ndarray  # (N,) int64
    class_names: list[str]
    name: str  # e.g. "modelnet40_1024/train" or "synthetic/train"
    shape_ids: list[str] | None = None
    _fingerprint: str | None = field(default=None, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        """False for a set of shapes without labels (every label `UNLABELLED`): a pool for
        `pointkd record`, whose rows get the KD terms only."""
        return not (len(self.labels) and bool((self.labels == UNLABELLED).all()))

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """"sha256:" + sha256(points bytes + int64 little-endian label bytes), cached.

        Identical data <=> identical fingerprint. The cache assumes `points` and `labels` are
        not modified in place after the first call."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            h.update(np.ascontiguousarray(self.points, dtype="<f4").data)
            h.update(np.ascontiguousarray(self.labels, dtype="<i8").data)
            self._fingerprint = "sha256:" + h.hexdigest()
        return self._fingerprint

    def subset(self, idx: np.ndarray) -> PointCloudSet:
        """The shapes at integer indices (or a boolean mask) `idx`, in that order."""
        idx = np.arange(len(self))[np.asarray(idx)]
        ids = None if self.shape_ids is None else [self.shape_ids[i] for i in idx]
        return PointCloudSet(np.ascontiguousarray(self.points[idx]),
                             np.ascontiguousarray(self.labels[idx]),
                             list(self.class_names), f"{self.name}[subset]", ids)


def validate_set(ds: PointCloudSet, source: str) -> PointCloudSet:
    """Boundary checks shared by every source; one-line DataErrors naming `source`."""
    pts, labels = ds.points, ds.labels
    if pts.ndim != 3 or pts.shape[2] != 3:
        raise DataError(f"{source}: points must have shape (N, P, 3), got {pts.shape}")
    if len(pts) == 0 or pts.shape[1] == 0:
        raise DataError(f"{source}: no shapes or no points (shape {pts.shape})")
    if len(labels) != len(pts):
        raise DataError(f"{source}: {len(labels)} labels for {len(pts)} shapes")
    finite = np.isfinite(pts).all(axis=(1, 2))
    if not finite.all():
        raise DataError(f"{source}: shape {int(np.flatnonzero(~finite)[0])} has NaN/Inf "
                        f"coordinates")
    if not ds.labelled:  # shapes without labels: nothing to range-check
        return ds
    bad_labels = labels[(labels < 0) | (labels >= ds.num_classes)]
    if len(bad_labels):
        raise DataError(f"{source}: label {int(bad_labels[0])} out of range for "
                        f"{ds.num_classes} classes")
    return ds


DEGENERATE_RADIUS = 1e-30  # smaller clouds are points: float32 data cannot even hold them


def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre each cloud at its centroid (the mean, not the bounding-box centre) and scale so
    its farthest point lies at radius 1. Works on (P, 3) or (N, P, 3); returns float32.

    Computed in float64 (in blocks, to bound memory) so inputs in any units (1e5) stay
    accurate. A degenerate cloud, whose farthest point lies within `DEGENERATE_RADIUS` (1e-30)
    of its centroid (all points equal, or an extent no real unit has), is centred to zeros,
    never NaN: below ~1e-154 the squared radius would underflow float64 and the scale would be
    wrong. Clouds too large to square in float64 (|x| > ~1e154) are pre-scaled."""
    pts = np.asarray(points)
    if pts.ndim not in (2, 3) or pts.shape[-1] != 3:
        raise DataError(f"clouds must have shape (P, 3) or (N, P, 3), got {pts.shape}")
    batch = pts[None] if pts.ndim == 2 else pts
    out = np.empty(batch.shape, dtype=np.float32)
    for start in range(0, len(batch), 64):  # 64 clouds at a time stay in cache: ~5x faster
        x = batch[start:start + 64].astype(np.float64)
        x -= x.mean(axis=1, keepdims=True)
        radius = np.sqrt(np.einsum("npi,npi->np", x, x).max(axis=1, initial=0.0))
        huge = ~np.isfinite(radius)
        if huge.any():  # the squares overflowed: scale those clouds down first (exact: 2^k)
            x[huge] /= 2.0 ** 600
            radius[huge] = np.sqrt(np.einsum("npi,npi->np", x[huge], x[huge]).max(axis=1))
        x[radius < DEGENERATE_RADIUS] = 0.0
        x /= np.where(radius < DEGENERATE_RADIUS, 1.0, radius)[:, None, None]
        out[start:start + 64] = x
    return out[0] if pts.ndim == 2 else out


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """(train_idx, val_idx), both sorted int64: round(val_fraction * n_c) shapes of every
    class c go to validation, chosen by a permutation seeded with `seed` (deterministic).
    A class with >= 2 shapes keeps >= 1 in each part; a class with 1 shape stays in train."""
    labels = np.asarray(labels)
    if not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if val_fraction == 0 or len(labels) == 0:
        return np.arange(len(labels), dtype=np.int64), np.array([], dtype=np.int64)
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
