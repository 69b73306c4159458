"""Writing files inside pointkd's output directories: never through a link, never half-done.

Every file pointkd creates, appends to or replaces in a run, record or evaluation directory
goes through this module:

- `open_file` opens with O_NOFOLLOW (a symbolic link planted under one of pointkd's names is
  refused, never followed), O_NONBLOCK for the open itself (a FIFO there cannot hang the
  command), and then refuses anything but a regular file with a single name (a hard link's
  other name is someone else's file). It never truncates at open: that would already have
  written through the link it is about to refuse.
- `replace_files` writes each file to `<name>.tmp`, fsyncs it, and only once every file of
  the group is whole moves them into place (os.replace) and fsyncs the directory: a reader
  sees the old version or the new one, never a torn one, and a full disk leaves no temp file.
- Any OSError becomes a one-line `OutputError` naming the path and why, in words a user can
  act on ("no space left on device", "read-only file system").
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from pointkd.errors import OutputError

Writer = Callable[[BinaryIO], None]  # writes one file's content into the open temp file

# the reasons users meet, in their words (strerror would also do, but not lower-case)
_REASONS = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
            errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file too large",
            errno.EACCES: "permission denied", errno.EPERM: "operation not permitted"}


def reason(exc: OSError) -> str:
    """Why an OS call failed, in a few words."""
    return _REASONS.get(exc.errno or 0) or (exc.strerror or str(exc)).lower()


def write_error(path: str | Path, exc: OSError, verb: str = "write") -> OutputError:
    """The one-line error for a failed write of `path`."""
    if exc.errno == errno.ELOOP:
        return OutputError(f"{path} is a symbolic link: pointkd never writes through a link "
                           "(remove it, or choose another --out)")
    if exc.errno == errno.ENXIO:  # O_NONBLOCK open of a FIFO without a reader
        return OutputError(f"{path} is not a regular file: pointkd writes only its own files")
    return OutputError(f"cannot {verb} {path}: {reason(exc)}")


def refuse_link(path: str | Path) -> None:
    """Refuse an existing `path` that is not a regular file (a symlink, FIFO, device,
    directory) or has other names: pointkd never writes, appends or resumes there."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise write_error(path, exc, "check") from None
    _check_own(st, path)


def _check_own(st: os.stat_result, path: str | Path) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise write_error(path, OSError(errno.ELOOP, "symbolic link"))
    if not stat.S_ISREG(st.st_mode):
        raise OutputError(f"{path} is not a regular file: pointkd writes only its own files")
    if st.st_nlink > 1:
        raise OutputError(f"{path} has {st.st_nlink} names (a hard link): pointkd never writes "
                          "a file shared with another name")


def open_file(path: str | Path, *, read: bool = False, append: bool = False) -> int:
    """A descriptor for writing (`read`: also reading) `path`, created (0644) if missing,
    never truncated here, never through a link; see the module docstring."""
    flags = ((os.O_RDWR if read else os.O_WRONLY) | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK
             | os.O_CLOEXEC | (os.O_APPEND if append else 0))
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        raise write_error(path, exc) from None
    try:
        _check_own(os.fstat(fd), path)
        # blocking again: O_NONBLOCK was only for the open (a FIFO without a reader)
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes | memoryview, path: str | Path) -> None:
    """Write every byte (a short write just continues); an OSError names `path`."""
    view = memoryview(data)
    try:
        while view:
            view = view[os.write(fd, view):]
    except OSError as exc:
        raise write_error(path, exc) from None


def fsync_dir(path: str | Path) -> None:
    """Make renames and creations in directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def replace_files(files: Mapping[str | Path, Writer]) -> None:
    """Write a group of files atomically: each to `<name>.tmp` (fsynced), then, only when all
    are whole, each moved into place. A target that is a link or not a regular file is
    refused before anything is written; on failure every temp file is removed again."""
    targets = {Path(p): write for p, write in files.items()}
    for path in targets:
        refuse_link(path)
    written: list[Path] = []
    try:
        for path, write in targets.items():
            tmp = temp_name(path)
            _write_temp(tmp, path, write)
            written.append(tmp)
        for path in targets:
            try:
                os.replace(temp_name(path), path)
            except OSError as exc:
                raise write_error(path, exc) from None
    finally:
        for tmp in written:  # the ones not moved into place (only pointkd's own temp files)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    for parent in {path.parent for path in targets}:
        fsync_dir(parent)


def _write_temp(tmp: Path, path: Path, write: Writer) -> None:
    """`write` into temp file `tmp` (a leftover of a crash is reused, never followed)."""
    fd = open_file(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            os.ftruncate(fd, 0)
            write(f)
            f.flush()
            os.fsync(fd)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (see `replace_files`)."""
    replace_files({path: lambda f: f.write(data)})


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def json_writer(value: Any) -> Writer:
    """A `replace_files` writer of `value` as indented JSON with a final newline."""
    return lambda f: f.write((json.dumps(value, indent=1) + "\n").encode())


def write_json(path: str | Path, value: Any) -> None:
    replace_files({path: json_writer(value)})


@contextlib.contextmanager
def replacing(path: str | Path) -> Iterator[BinaryIO]:
    """`with replacing(p) as f: torch.save(obj, f)` — for writers that want a file object:
    `p` is replaced atomically when the block ends without an error."""
    path = Path(path)
    refuse_link(path)
    tmp = temp_name(path)
    fd = open_file(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            os.ftruncate(fd, 0)
            yield f
            f.flush()
            os.fsync(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise write_error(path, exc) from None
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
