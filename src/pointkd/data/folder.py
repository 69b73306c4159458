"""Class-folder datasets: `root/<class>/<split>/*.{npy,xyz,txt,pcd,ply,off}`.

Class names are the sorted sub-folder names (a class without a `<split>` folder keeps its
label, so train and test agree). What would invent a class is an error, never skipped: an
empty class folder or one without split folders, an empty or non-folder `<split>`, a broken
symlink, a symlink loop (a class or split folder that leads back to the dataset or above it),
or two class names for one folder. Each file goes through `read_cloud` with a stable per-file
seed (crc32 of its path relative to `root`), so loading the same folder twice — or on another
machine — gives identical clouds. Hidden files and folders (and `__MACOSX`) are skipped; any
other file with an unknown extension is an error rather than silently left out.

This reads the official ModelNet40 / ModelNet10 archives as unpacked
(`ModelNet40/<class>/{train,test}/*.off`); large splits are converted once into an HDF5 cache
(`pointkd.data.cache`) and read from there afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pointkd.data._core import MissingSplitError, PointCloudSet
from pointkd.data.cache import MIN_FILES, cached_split
from pointkd.data.readers import POINT_SUFFIXES, file_seed, read_cloud
from pointkd.errors import DataError


def class_folders(root: Path) -> list[str]:
    """The sorted class-folder names. Hidden folders and `__MACOSX` (in the ModelNet10 zip)
    are no classes. Anything that would invent a class or renumber the others is an error: a
    symlink that leads nowhere or in a loop (back to the dataset or a folder above it), two
    names for the same folder, a class folder with nothing in it or without split folders."""
    classes: list[str] = []
    seen: dict[Path, Path] = {}  # resolved folder -> the class folder naming it first
    top = _resolved(root)
    for p in sorted(root.iterdir()):
        if p.name.startswith((".", "__")):
            continue
        target = _resolved(p)
        if not target.is_dir():
            continue
        _refuse_loop(p, target, top)
        if target in seen:
            raise DataError(f"{p} and {seen[target]} are the same folder (a symlink): its "
                            "shapes would count as two classes")
        seen[target] = p
        entries = [c for c in p.iterdir() if not c.name.startswith(".")]
        if not entries:
            raise DataError(f"{p}: empty class folder (expected {p}/<split>/ with files)")
        if not any(c.is_dir() for c in entries):
            raise DataError(f"{p}: no split folders in it (expected {p}/<split>/ with files)")
        classes.append(p.name)
    if not classes:
        raise DataError(f"{root}: neither HDF5 files nor class folders found")
    return classes


def _resolved(p: Path) -> Path:
    """`p` with every symlink followed; a broken or looping one is a DataError."""
    try:
        return p.resolve(strict=True)
    except (OSError, RuntimeError):
        raise DataError(f"{p}: broken symlink or symlink loop") from None


def _refuse_loop(p: Path, target: Path, container: Path) -> None:
    """A folder inside `container` (resolved) whose `target` is `container` itself or a
    folder above it is a loop: read as a class or a split, it would show the dataset's own
    folders as shapes, or none (a phantom class)."""
    if container == target or container.is_relative_to(target):
        raise DataError(f"{p}: symlink loop (it leads back to {target}, a folder that "
                        "holds the dataset)")


def load_folder(root: Path, split: str, num_points: int) -> PointCloudSet:
    classes = class_folders(root)
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
        if not folder.exists() and not folder.is_symlink():
            continue  # this class has no shapes in this split (it keeps its label)
        if not folder.is_dir():
            raise DataError(f"{folder}: expected a folder of point-cloud files")
        _refuse_loop(folder, _resolved(folder), _resolved(root / name))
        entries = [f for f in sorted(folder.iterdir()) if not f.name.startswith(".")]
        if not entries:
            raise DataError(f"{folder}: empty split folder")
        for f in entries:
            if f.is_dir():
                continue
            if f.suffix.lower() not in POINT_SUFFIXES:
                raise DataError(f"{f}: unknown point-cloud format '{f.suffix}' "
                                f"(known: {' '.join(POINT_SUFFIXES)})")
            files.append(f)
            labels.append(label)
    return files, labels


def _read_all(root: Path, split: str, files: list[Path], labels: list[int],
              classes: list[str], num_points: int) -> PointCloudSet:
    from pointkd.progress import track

    points, ids = [], []
    # a first read of the ModelNet40 archive takes minutes: show it on a terminal (then it
    # is cached); never a bar in a log
    for f in track(files, len(files), f"reading {root.name}/{split} (cached afterwards)",
                   unit="file", enabled=len(files) >= MIN_FILES, leave=True):
        rel = f.relative_to(root).as_posix()  # '/' on every OS: same seed everywhere
        points.append(read_cloud(f, num_points, seed=file_seed(rel)))
        ids.append(rel)
    return PointCloudSet(np.stack(points), np.array(labels, np.int64), classes,
                         f"{root.name}/{split}", ids)
