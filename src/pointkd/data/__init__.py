"""Datasets: every source yields a `PointCloudSet` — float32 (N, P, 3) clouds, int64 labels,
class names, unit-sphere normalised by default, and a content fingerprint that record
manifests use to refuse records made for other data.

Sources (`load_split(path, split)`):

- a ModelNet40-style HDF5 folder (`<split>.h5` or shards `*<split>*.h5`) or one `.h5` file
  (`hdf5.py`; `pointkd data convert` writes this layout from any other);
- a class-folder dataset `root/<class>/<split>/*.{npy,xyz,txt,pcd,ply,off}`, e.g. the
  ModelNet40/ModelNet10 mesh archives (`folder.py`; large ones cached, `cache.py`);
- PointNet++'s `modelnet40_normal_resampled` (`normal_resampled.py`);
- ScanObjectNN's `training_objectdataset*.h5` / `test_objectdataset*.h5` (`scanobjectnn.py`);
- the built-in `synthetic` dataset (`synthetic:seed=1,train_per_class=40`, see `synthetic`);
- shapes without labels, a pool for `pointkd record`: a folder of point files without class
  folders (`unlabelled.py`), or HDF5 without a `label` dataset (every label `UNLABELLED`).

Every problem with the input is a one-line `DataError` naming the file or dataset.

This package only re-exports: the shared types and helpers live in `_core.py`, `load_split`
in `_load.py`, so the source modules import those and never this `__init__`.
"""

from pointkd.data._core import (
    DEGENERATE_RADIUS,
    UNLABELLED,
    MissingSplitError,
    PointCloudSet,
    normalize_unit_sphere,
    stratified_split,
    validate_set,
)
from pointkd.data._load import load_split
from pointkd.data.readers import read_cloud
from pointkd.data.report import describe, save_preview

__all__ = ["PointCloudSet", "MissingSplitError", "load_split", "stratified_split",
           "normalize_unit_sphere", "read_cloud", "describe", "save_preview", "validate_set",
           "DEGENERATE_RADIUS", "UNLABELLED"]
