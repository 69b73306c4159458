"""A converted-once cache for datasets read file by file (class folders of meshes such as the
ModelNet40 archive, PointNet++'s `modelnet40_normal_resampled`).

Sampling 12,311 ModelNet40 meshes takes minutes; the cache keeps the result as pointkd HDF5
(`<split>.h5` + `shape_names.txt`, the very layout `pointkd data convert` writes) and later
loads read that in seconds. It holds the clouds as read (raw units, `num_points` each), so a
cached load is bit-for-bit the uncached one and has the same fingerprint.

- Where: `$POINTKD_CACHE` if set, else `$XDG_CACHE_HOME/pointkd`, else `~/.cache/pointkd`;
  one folder per source split: `datasets/<dataset>-<split>-<num_points>p-<key>/`. The
  dataset itself may be read-only. `POINTKD_CACHE=off` disables the cache.
- Key: sha256 of the reader's name and version, `num_points`, the class names and every
  source file's relative path, size, modification time and a content digest: sha256 of its
  first and last `SAMPLE_BYTES` (1 MiB; the whole file when it is at most 2 MiB, as every
  normal_resampled file is). The digest catches a file rewritten with its size and mtime
  put back (`touch -r`, a copy tool preserving times), which stat alone cannot see. It
  costs one read of at most 2 MiB per file: measured from the page cache ~0.8 ms for a
  550 KB normal_resampled file, so ~8 s for ModelNet40's 9,843 train files, against
  minutes to parse them. A same-size edit confined to the middle of a file over 2 MiB, with
  its mtime restored, is still not seen: set `POINTKD_CACHE=off` or delete the entry after
  such surgery.
  Editing, adding, removing or renaming a file gives a new key (a new conversion); the old
  folder stays until deleted (`rm -r ~/.cache/pointkd/datasets`).
- Used when a split has at least `MIN_FILES` files; smaller ones load directly.
- Writes are atomic (temp folder, rename); an unwritable cache location only costs the reuse.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pointkd.data._core import PointCloudSet
from pointkd.errors import DataError

MIN_FILES = 500  # below this a split loads in seconds: not worth a cache entry
VERSION = 1  # bump when a reader's output for the same files changes
SAMPLE_BYTES = 1 << 20  # the content digest reads this much from each end of a file


def cache_root() -> Path | None:
    """The cache folder, or None when disabled (`POINTKD_CACHE=off`)."""
    env = os.environ.get("POINTKD_CACHE")
    if env:
        return None if env.lower() in ("off", "0", "none") else Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pointkd"


def source_key(reader: str, root: Path, files: list[Path], class_names: list[str],
               num_points: int) -> str:
    """The fingerprint of a source split as the cache sees it (see the module docstring)."""
    h = hashlib.sha256(f"{reader} v{VERSION} {num_points}\n".encode())
    h.update(("\n".join(class_names) + "\n\n").encode())
    for f in files:
        st = f.stat()
        h.update(f"{f.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}\t"
                 f"{content_digest(f, st.st_size)}\n".encode())
    return h.hexdigest()


def content_digest(path: Path, size: int) -> str:
    """sha256 of the first and last `SAMPLE_BYTES` of `path` (all of it up to twice that):
    cheap, and it changes with any rewrite that keeps size and mtime but not both ends."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            h.update(f.read(SAMPLE_BYTES if size > 2 * SAMPLE_BYTES else size))
            if size > 2 * SAMPLE_BYTES:
                f.seek(size - SAMPLE_BYTES)
                h.update(f.read(SAMPLE_BYTES))
    except OSError as exc:
        raise DataError(f"{path}: unreadable ({type(exc).__name__})") from None
    return h.hexdigest()


def cached_split(reader: str, root: Path, split: str, files: list[Path],
                 class_names: list[str], num_points: int,
                 load: Callable[[], PointCloudSet]) -> PointCloudSet:
    """`load()` the split, or read it from the cache; store it there after a first load."""
    base = cache_root()
    if base is None or len(files) < MIN_FILES:
        return load()
    from pointkd.data.hdf5 import load_hdf5, write_pointkd_hdf5

    key = source_key(reader, root, files, class_names, num_points)
    folder = base / "datasets" / f"{_safe(root.name)}-{split}-{num_points}p-{key[:16]}"
    if (folder / f"{split}.h5").is_file():
        try:
            ds = load_hdf5(folder, split, None)
            ds.name = f"{root.name}/{split}"
            return ds
        except DataError:  # a damaged cache entry is rebuilt, never trusted
            shutil.rmtree(folder, ignore_errors=True)
    ds = load()
    tmp = None
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 would hide a shared cache from others
        write_pointkd_hdf5(tmp, {split: ds})
        os.replace(tmp, folder)
    except OSError:  # read-only home, full disk, a concurrent writer won: we still have `ds`
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return ds


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "dataset"
