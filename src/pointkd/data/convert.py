"""`pointkd data convert SRC DST`: any readable source -> pointkd HDF5 (`<split>.h5` +
`shape_names.txt`), the fastest layout to load and the one to share.

The clouds are written as read (the source's units, `num_points` each), so DST loads
exactly as SRC does: same points, labels, class names and fingerprint (which is returned
per split, as `record` manifests and `data info` show it).

DST is a new folder or an empty one, never inside SRC (paths resolved: writing into the
source would change the dataset being converted, e.g. add a class). The files are written
into a hidden staging folder and appear under DST only when all of them are whole: a new
DST is the staging folder renamed (`.<name>.pointkd-convert-*` beside it, atomic); into an
existing empty DST they are moved from a staging folder inside it, shape_names.txt first
(a split file never appears without its class names, which would load as invented
`class_<i>` names). A failed conversion removes its staging folder; a full or read-only disk
is a one-line error naming DST."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from pointkd import safe_io
from pointkd.data._core import MissingSplitError, PointCloudSet, normalize_unit_sphere
from pointkd.data._load import load_split
from pointkd.errors import DataError

STAGING = "pointkd-convert-"


def convert(src: str, dst: str, splits: tuple[str, ...] | list[str] = ("train", "test"),
            num_points: int | None = None) -> dict[str, dict]:
    """Convert the `splits` of `src` that exist into the empty or new folder `dst`; returns
    {split: {"file", "shapes", "points", "fingerprint"}}. A missing split is skipped; none at
    all is a DataError."""
    out = Path(dst)
    check_destination(src, out)
    sets: dict[str, PointCloudSet] = {}
    missing = []
    for split in dict.fromkeys(splits):
        try:
            sets[split] = load_split(src, split, num_points=num_points, normalize=False)
        except MissingSplitError as exc:
            missing.append(str(exc))
    if not sets:
        raise DataError(f"nothing to convert: {missing[0] if missing else 'no splits given'}")
    write_complete(out, sets)
    report = {}
    for split, ds in sets.items():
        normalised = PointCloudSet(normalize_unit_sphere(ds.points), ds.labels,
                                   ds.class_names, ds.name)
        report[split] = {"file": str(out / f"{split}.h5"), "shapes": len(ds),
                         "points": int(ds.points.shape[1]),
                         "fingerprint": normalised.fingerprint()}
    return report


def check_destination(src: str, out: Path) -> None:
    """DST must be a new or empty folder outside the source (both paths resolved, so a
    symlink or `..` cannot hide that one is inside the other)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not an empty folder (never overwritten)")
    if src == "synthetic" or src.startswith("synthetic:"):
        return
    source, target = Path(src).resolve(), out.resolve()
    if target == source or target.is_relative_to(source):
        raise DataError(f"{out} is inside the source {src}: the conversion would write into "
                        "the dataset it reads (choose a destination outside it)")


def write_complete(out: Path, sets: dict[str, PointCloudSet]) -> None:
    """Write `sets` as pointkd HDF5 so that `out` holds them only once all are whole (module
    docstring); an OSError (full disk, read-only file system) is a one-line DataError."""
    from pointkd.data.hdf5 import write_pointkd_hdf5

    existing = out.is_dir()
    stage = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = _staging_folder(out, existing)
        write_pointkd_hdf5(stage, sets)
        if existing:
            _move_into(stage, out, [*(f"{split}.h5" for split in sets)])
        else:
            os.rename(stage, out)  # fails, never merges, if someone created `out` meanwhile
            stage = None
        safe_io.fsync_dir(out.parent)
    except OSError as exc:
        raise DataError(f"cannot write {out}: {safe_io.reason(exc)}") from None
    finally:
        if stage is not None:  # only the staging folder this call created
            shutil.rmtree(stage, ignore_errors=True)


def _staging_folder(out: Path, existing: bool) -> Path:
    """A new hidden folder: inside an existing (empty) `out`, else beside it. Readable as
    the umask says (mkdtemp makes it 0700, which the renamed dataset would keep)."""
    if existing:
        stage = Path(tempfile.mkdtemp(prefix=f".{STAGING}", dir=out))
    else:
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.{STAGING}", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    stage.chmod(0o777 & ~umask)
    return stage


def _move_into(stage: Path, out: Path, split_files: list[str]) -> None:
    """Move the finished files from `stage` into `out`: the class names first."""
    for name in ("shape_names.txt", *split_files):
        os.replace(stage / name, out / name)
    with contextlib.suppress(OSError):
        stage.rmdir()
