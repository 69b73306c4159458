"""PointNet++'s `modelnet40_normal_resampled` (and its ModelNet10 subset), read as unpacked:

    modelnet40_shape_names.txt      class names, one a line: the label order
    modelnet40_train.txt            shape ids of the split, one a line (`airplane_0001`)
    modelnet40_test.txt
    <class>/<id>.txt                10,000 rows `x,y,z,nx,ny,nz` (normals are not used)

(`modelnet10_*.txt` lists select the ModelNet10 subset of the same folders.) The class of id
`night_stand_0001` is `night_stand` (the id without its last `_` part). A class name or a
shape id listed twice is an error (a repeated name would leave a class without shapes). A
cloud is the file's first `num_points` rows, as PointNet++'s own loader takes them
(`point_set[0:npoints]`).
Whole splits are cached as HDF5 (`pointkd.data.cache`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data._core import MissingSplitError, PointCloudSet
from pointkd.data.cache import MIN_FILES, cached_split
from pointkd.errors import DataError


def layout_prefix(root: Path) -> str | None:
    """`modelnet40` / `modelnet10` when `root` is this layout (a `<prefix>_shape_names.txt`
    beside a `<prefix>_train.txt` or `<prefix>_test.txt`), else None. With both, 40 wins."""
    for names in sorted(root.glob("*_shape_names.txt"), reverse=True):
        prefix = names.name[: -len("_shape_names.txt")]
        if any((root / f"{prefix}_{s}.txt").is_file() for s in ("train", "test")):
            return prefix
    return None


def load_normal_resampled(root: Path, split: str, num_points: int,
                          prefix: str) -> PointCloudSet:
    # a name listed twice would be two classes, only the last with shapes (the first a
    # phantom), an id listed twice the same shape twice: both are refused
    names = _unique(_read_lines(root / f"{prefix}_shape_names.txt"),
                    root / f"{prefix}_shape_names.txt", "class name")
    list_file = root / f"{prefix}_{split}.txt"
    if not list_file.is_file():
        raise MissingSplitError(f"{root}: no {list_file.name} (the id list of split '{split}')")
    ids = _unique(_read_lines(list_file), list_file, "shape id")
    index = {n: i for i, n in enumerate(names)}
    files, labels = [], []
    for line, shape_id in enumerate(ids, start=1):
        cls = shape_id.rpartition("_")[0]
        if cls not in index:
            raise DataError(f"{list_file}: line {line}: class '{cls}' of '{shape_id}' is not "
                            f"in {prefix}_shape_names.txt")
        f = root / cls / f"{shape_id}.txt"
        if not f.is_file():
            raise DataError(f"{f}: missing (listed in {list_file.name}; a partial copy?)")
        files.append(f)
        labels.append(index[cls])
    return cached_split(f"normal_resampled:{prefix}", root, split, files, names, num_points,
                        lambda: _read_all(root, split, files, ids, labels, names, num_points))


def _read_all(root: Path, split: str, files: list[Path], ids: list[str], labels: list[int],
              names: list[str], num_points: int) -> PointCloudSet:
    from pointkd.progress import track

    points = np.empty((len(files), num_points, 3), np.float32)
    # a first read takes minutes: shown on a terminal (then cached); never a bar in a log
    for i, f in enumerate(track(files, len(files), f"reading {root.name}/{split} (cached "
                                "afterwards)", unit="file", enabled=len(files) >= MIN_FILES,
                                leave=True)):
        points[i] = read_rows(f, num_points)
    return PointCloudSet(points, np.array(labels, np.int64), names, f"{root.name}/{split}",
                         list(ids))


def read_rows(path: Path, num_points: int) -> np.ndarray:
    """The first `num_points` rows' x, y, z of one `x,y,z,nx,ny,nz` file."""
    try:
        with open(path) as f:
            table = np.loadtxt(f, delimiter=",", max_rows=num_points, dtype=np.float64, ndmin=2)
    except (ValueError, UnicodeDecodeError, OSError) as exc:
        reason = " ".join(str(exc).split())[:80]
        raise DataError(f"{path}: not comma-separated x,y,z,nx,ny,nz rows ({reason})") from None
    if table.shape[0] < num_points:
        raise DataError(f"{path}: {table.shape[0]} points, {num_points} needed (truncated "
                        "copy?)")
    if table.shape[1] < 3:
        raise DataError(f"{path}: rows need at least x,y,z, got {table.shape[1]} columns")
    if not np.isfinite(table[:, :3]).all():
        raise DataError(f"{path}: NaN/Inf coordinates")
    return table[:, :3]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"{path}: missing")
    try:
        lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__})") from None
    if not lines:
        raise DataError(f"{path}: empty")
    return lines


def _unique(lines: list[str], path: Path, what: str) -> list[str]:
    """`lines`, or a DataError naming the first one that repeats."""
    seen: set[str] = set()
    for line in lines:
        if line in seen:
            raise DataError(f"{path}: {what} {line!r} is listed more than once")
        seen.add(line)
    return lines
