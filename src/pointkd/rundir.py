"""Output directories: where `train`/`distill` (kind "run"), `record` ("records") and
`eval --out` ("eval") write, and the three promises that protect them.

1. Marker. A directory pointkd creates gets `.pointkd` (JSON naming its kind) before any other
   file, so pointkd can later prove the directory is its own and of which kind.
2. Safe delete. `--overwrite` removes only the files pointkd writes for that kind (`FILES`)
   from a directory whose marker names that kind; every other file stays. A directory made
   before markers existed (no `.pointkd`) is adopted only when every file in it is one
   pointkd writes for that kind and its defining file is there (`config.yaml` for a run,
   `manifest.json` for a record set); anything else is refused, nothing touched.
3. Lock. The writing process holds an exclusive `flock` on `.pointkd.lock` inside the
   directory from before its first check until it ends; a second writer stops with an error
   naming the holder's PID. The OS drops the lock when the holder exits or is killed (even
   SIGKILL), so `--resume` after a crash never finds a stale lock. A lock file that is a
   symbolic link or not a regular file is an error: pointkd never writes through a link.

Files written inside these directories go through `pointkd.safe_io` (no symlinks followed,
atomic replacement via `<name>.tmp`, one-line errors for a full or read-only disk); those temp
names are pointkd's files of the kind too.

Single output files (`export --onnx`, `data preview --out`) go through `check_output_file`:
an existing file is replaced only with `--overwrite`, and never a directory or an input.

Paths are refused before anything happens when they are empty, `/`, the home directory, the
current directory or one of its parents, a regular file, or overlap an input of the command.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pointkd import safe_io
from pointkd._version import __version__
from pointkd.errors import OutputError

MARKER = ".pointkd"
LOCK = ".pointkd.lock"
KINDS = {"run": "a training run", "records": "a record set", "eval": "an evaluation"}
# every file pointkd writes into a directory of each kind (fnmatch patterns); nothing else is
# ever deleted by --overwrite
_WRITTEN = {
    "run": ("config.yaml", "last.pt", "best.pt", "metrics.json", "metrics.csv", "curves.png",
            "results.json", "self_table.npy", "eval_*.json", "confusion_*.png"),
    # the .sums file: checksums of a partial shard's batches (records/writer.py)
    "records": ("manifest.json", "shard-*.bin", "shard-*.bin.partial",
                "shard-*.bin.partial.sums"),
    "eval": ("eval_*.json", "confusion_*.png"),
}
# ... and the temp file each is written through (`safe_io.replace_files`: `<name>.tmp`)
FILES = {kind: (*names, *(name + ".tmp" for name in names)) for kind, names in _WRITTEN.items()}
DEFINING = {"run": "config.yaml", "records": "manifest.json", "eval": "eval_*.json"}

_HELD: dict[Path, int] = {}  # directory -> open lock fd, for this process


def check_output_path(out: str | Path, inputs: Iterable[str | Path | None] = (),
                      option: str = "--out") -> Path:
    """Refuse an output path that could only be a mistake; returns it as a Path."""
    text = str(out).strip()
    if not text:
        raise OutputError(f"{option} is empty: name the directory to write")
    path = Path(text)
    full = path.resolve()
    cwd = Path.cwd().resolve()
    if full == Path(full.anchor) or full == Path.home().resolve():
        raise OutputError(f"{option} {text}: refusing to write into {full}")
    if full == cwd or full in cwd.parents:
        raise OutputError(f"{option} {text} is the current directory or one of its parents; "
                          "name a new sub-directory instead")
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {text} exists and is not a directory")
    for item in inputs:
        if not item or str(item).startswith("synthetic"):
            continue
        source = Path(str(item)).resolve()
        if source == full or full in source.parents or source in full.parents:
            raise OutputError(f"{option} {text} overlaps the input {item}: an output can "
                              "never be an input")
    return path


def check_output_file(out: str | Path, overwrite: bool = False,
                      inputs: Iterable[str | Path | None] = (), option: str = "--out") -> Path:
    """A single output file (`export --onnx`, `data preview --out`): an existing file is
    replaced only with `--overwrite`, never a directory or an input; returns it as a Path."""
    text = str(out).strip()
    if not text:
        raise OutputError(f"{option} is empty: name the file to write")
    path = Path(text)
    if path.is_dir():
        raise OutputError(f"{option} {text} is a directory; name a file")
    for item in inputs:
        if item and Path(str(item)).exists() and Path(str(item)).resolve() == path.resolve():
            raise OutputError(f"{option} {text} is the input {item}: an output can never be "
                              "an input")
    if path.exists() and not overwrite:
        raise OutputError(f"{option} {text} exists; pass --overwrite to replace it")
    return path


def open_output(out: str | Path, kind: str, *, resume: bool = False, overwrite: bool = False,
                inputs: Iterable[str | Path | None] = (), resume_needs: str = "") -> Path:
    """Create or reopen output directory `out` of `kind`, locked for this process.

    New or empty: created and marked. Existing with content: `resume` reopens it (it must be
    pointkd's, of this kind, and hold the file `resume_needs`), `overwrite` clears pointkd's
    files from it (see the module docstring), else an error."""
    if kind not in KINDS:
        raise ValueError(f"unknown output kind {kind!r}")
    if resume and overwrite:
        raise OutputError("choose either --resume or --overwrite")
    path = check_output_path(out, inputs)
    if overwrite and len(path.resolve().parts) <= 2:
        raise OutputError(f"refusing to --overwrite top-level directory {path.resolve()}")
    with _created_or_removed(path):
        _open_checked(path, kind, resume, overwrite)
        if resume and resume_needs and not (path / resume_needs).is_file():
            raise OutputError(f"--resume: nothing to resume in {path} (no {resume_needs})")
    return path


def _open_checked(path: Path, kind: str, resume: bool, overwrite: bool) -> None:
    lock(path)
    found = read_marker(path)
    if found is not None and found != kind:
        raise OutputError(f"{path} is {KINDS.get(found, found)}, not {KINDS[kind]}: refusing "
                          "to write there")
    entries = contents(path)
    if entries and resume:
        if found is None:
            _check_legacy(path, kind, entries, "--resume")
    elif entries:
        if not overwrite:
            raise OutputError(f"{path} is not empty (use --resume to continue there, or "
                              "--overwrite to replace it)")
        clear(path, kind)
    if found is None:
        write_marker(path, kind)


def open_eval_output(out: str | Path, inputs: Iterable[str | Path | None] = ()) -> Path:
    """`eval --out`: a new directory, an eval directory, or a run directory (reports go beside
    the checkpoints); never a directory of unrelated files. Locked like the others."""
    path = check_output_path(out, inputs)
    with _created_or_removed(path):
        _open_eval_checked(path)
    return path


def _open_eval_checked(path: Path) -> None:
    lock(path)
    found = read_marker(path)
    entries = contents(path)
    if found is None and entries:
        kinds = [k for k in ("eval", "run") if _is_legacy(entries, k)]
        if not kinds:
            raise OutputError(f"{path} is not empty and not a pointkd run or evaluation "
                              f"directory (it has {sorted(entries)[0]}); choose another --out")
        write_marker(path, kinds[0])
    elif found is None:
        write_marker(path, "eval")
    elif found not in ("eval", "run"):
        raise OutputError(f"{path} is {KINDS.get(found, found)}: write the evaluation "
                          "elsewhere")


@contextlib.contextmanager
def _created_or_removed(path: Path) -> Iterator[None]:
    """mkdir -p `path`; if the checks inside then fail, remove what this call created (a
    refused directory keeps no trace of pointkd, not even its lock file)."""
    created = [p for p in (path, *path.parents) if not p.exists()]
    new_lock = not (path / LOCK).exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {safe_io.reason(exc)}") from None
    try:
        yield
    except BaseException:
        if path.resolve() in _HELD:  # never unlink another process's lock
            if created:
                (path / MARKER).unlink(missing_ok=True)
            if new_lock:  # unlinked while still held, then released
                (path / LOCK).unlink(missing_ok=True)
            release(path)
        for p in created:  # innermost first; only if still empty
            with contextlib.suppress(OSError):
                p.rmdir()
        raise


def clear(path: Path, kind: str) -> list[str]:
    """Delete the files pointkd writes for `kind` from `path` (pointkd's own, proven by the
    marker or the legacy file set); returns the names removed. Other entries stay."""
    entries = contents(path)
    found = read_marker(path)
    if found is None:
        _check_legacy(path, kind, entries, "--overwrite")
    elif found != kind:
        raise OutputError(f"{path} is {KINDS.get(found, found)}, not {KINDS[kind]}")
    removed = []
    for name in sorted(entries):
        target = path / name
        if _known(name, kind) and (target.is_symlink() or target.is_file()):
            target.unlink()
            removed.append(name)
    return removed


def contents(path: Path) -> list[str]:
    """Names in `path` other than pointkd's marker and lock."""
    return [p.name for p in path.iterdir() if p.name not in (MARKER, LOCK)]


def read_marker(path: Path) -> str | None:
    """The kind named by `path`'s marker, or None without one."""
    marker = path / MARKER
    if marker.is_symlink():  # a marker is only ever written by pointkd, never a link
        raise OutputError(f"{marker} is a symbolic link, not a pointkd marker; refusing to "
                          "write there")
    if not marker.is_file():
        return None
    try:
        kind = json.loads(marker.read_text()).get("kind")
    except (OSError, ValueError, AttributeError):
        kind = None
    if kind not in KINDS:
        raise OutputError(f"{marker}: unreadable pointkd marker; remove the directory by hand "
                          "if it is no longer needed")
    return kind


def write_marker(path: Path, kind: str) -> None:
    safe_io.write_text(path / MARKER, json.dumps({
        "kind": kind, "pointkd_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")


def lock(path: Path) -> None:
    """Take `path`'s exclusive lock for this process (kept until `release` or exit)."""
    key = path.resolve()
    if key in _HELD:
        return
    # never through a link: the PID below would land in whatever it points to
    fd = safe_io.open_file(key / LOCK, read=True)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise OutputError(f"{path} is in use by another pointkd process (PID {holder}); wait "
                          "for it to finish, or stop it first") from None
    except OSError as exc:  # e.g. a file system without locks
        os.close(fd)
        raise OutputError(f"cannot lock {path}: {safe_io.reason(exc)}") from None
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:  # a full disk: better now than after minutes of work
        os.close(fd)
        raise OutputError(f"cannot lock {path}: {safe_io.reason(exc)}") from None
    _HELD[key] = fd


def release(path: Path) -> None:
    fd = _HELD.pop(Path(path).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the only descriptor drops the flock


T = TypeVar("T")


def releases_locks(fn: Callable[..., T]) -> Callable[..., T]:
    """Release, when `fn` returns or raises, the directory locks it took (a CLI process would
    drop them at exit anyway; library callers such as the demo or tests live on)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        before = set(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            for key in set(_HELD) - before:
                release(key)

    return wrapper


def _known(name: str, kind: str) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in FILES[kind])


def _is_legacy(entries: list[str], kind: str) -> bool:
    return (all(_known(name, kind) for name in entries)
            and any(fnmatch.fnmatchcase(name, DEFINING[kind]) for name in entries))


def _check_legacy(path: Path, kind: str, entries: list[str], flag: str) -> None:
    """A directory without a marker is pointkd's only if it holds nothing but its files."""
    if _is_legacy(entries, kind):
        return
    stray = sorted(name for name in entries if not _known(name, kind))
    what = (f"it has {stray[0]}, which pointkd does not write there" if stray
            else f"it lacks {DEFINING[kind]}")
    raise OutputError(f"refusing {flag} on {path}: it is not {KINDS[kind]} made by pointkd "
                      f"({what}); nothing was touched")
