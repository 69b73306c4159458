"""`pointkd data convert SRC DST`: any readable source -> pointkd HDF5 (`<split>.h5` +
`shape_names.txt`), the fastest layout to load and the one to share.

The clouds are written as read (the source's units, `num_points` each), so DST loads
exactly as SRC does: same points, labels, class names and fingerprint (which is returned
per split, as `record` manifests and `data info` show it)."""

from __future__ import annotations

from pathlib import Path

from pointkd.data._core import MissingSplitError, PointCloudSet, normalize_unit_sphere
from pointkd.data._load import load_split
from pointkd.errors import DataError


def convert(src: str, dst: str, splits: tuple[str, ...] | list[str] = ("train", "test"),
            num_points: int | None = None) -> dict[str, dict]:
    """Convert the `splits` of `src` that exist into the empty or new folder `dst`; returns
    {split: {"file", "shapes", "points", "fingerprint"}}. A missing split is skipped; none at
    all is a DataError."""
    from pointkd.data.hdf5 import write_pointkd_hdf5

    out = Path(dst)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder (never overwritten)")
    sets: dict[str, PointCloudSet] = {}
    missing = []
    for split in dict.fromkeys(splits):
        try:
            sets[split] = load_split(src, split, num_points=num_points, normalize=False)
        except MissingSplitError as exc:
            missing.append(str(exc))
    if not sets:
        raise DataError(f"nothing to convert: {missing[0] if missing else 'no splits given'}")
    write_pointkd_hdf5(out, sets)
    report = {}
    for split, ds in sets.items():
        normalised = PointCloudSet(normalize_unit_sphere(ds.points), ds.labels,
                                   ds.class_names, ds.name)
        report[split] = {"file": str(out / f"{split}.h5"), "shapes": len(ds),
                         "points": int(ds.points.shape[1]),
                         "fingerprint": normalised.fingerprint()}
    return report
