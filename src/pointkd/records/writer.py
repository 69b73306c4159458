"""`pointkd record`: run the teacher(s) once over K augmented copies of every training shape.

Crash safety: rows go to `shard-00000.bin.partial` one whole batch per write; batches lie on
a fixed grid of `batch_size` rows from the shard's first row; all randomness derives from
(run seed, sample, k); the stored fp16 parameters are exactly the ones applied. So `--resume`
cuts the partial shard back to its last whole batch, recomputes identical batches, and the
result is byte-identical to an uninterrupted run.

Under torchrun each rank records one contiguous, batch-aligned range of rows into its own shard
(`shard-<rank>.bin`); rank 0 writes the manifest before any row and completes it once every
shard is final. The ranges lie on the single-process batch grid, so the shards, concatenated in
row order, are the very bytes a single process writes.
"""

from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np

from pointkd import safe_io
from pointkd.errors import RecordError
from pointkd.records.manifest import (
    shard_name,
)

SUMS = ".sums"  # beside `<shard>.partial`: one sha256 per batch written there
DIGEST = hashlib.sha256().digest_size


def sums_path(shard: Path) -> Path:
    """The checksum file of `shard`'s partial file."""
    return shard.with_name(shard.name + ".partial" + SUMS)


def batch_sums(data: bytes, batch_bytes: int) -> bytes:
    """The `.sums` content for whole batches `data` (the sha256 of each, concatenated)."""
    return b"".join(hashlib.sha256(data[i:i + batch_bytes]).digest()
                    for i in range(0, len(data), batch_bytes))


class ShardWriter:
    """Appends whole batches of rows to `<shard>.partial`; `finalize` fsyncs and renames it.

    After each batch its sha256 is appended to `<shard>.partial.sums` (data first, so a kill
    leaves at most a batch without its checksum, never a checksum without its batch). `done`
    is the number of rows already in place: on resume, the partial file is cut back to the
    last whole batch whose bytes still match its checksum; a batch that does not is an
    error (the file changed after pointkd wrote it), never silently built upon. Neither file
    is ever written through a link."""

    def __init__(self, path: Path, dtype: np.dtype, rows: int, batch_size: int, resume: bool):
        self.path, self.dtype, self.rows, self.batch_size = path, dtype, rows, batch_size
        self.partial = path.with_name(path.name + ".partial")
        self.sums = sums_path(path)
        self.done, self.fd, self.sums_fd = 0, None, None
        for p in (path, self.partial, self.sums):
            safe_io.refuse_link(p)  # a link, FIFO or hard link there: one-line error
        if resume and path.is_file() and path.stat().st_size == rows * dtype.itemsize:
            # killed after the rename, before the manifest: check it, nothing more to write
            self._check_final()
            self.done = rows
            return
        had_sums = self.sums.is_file()
        self.sums_fd = _open(self.sums)
        self.fd = _open(self.partial)
        if resume:
            self.done = self._verified_rows(had_sums)
        os.ftruncate(self.fd, self.done * dtype.itemsize)
        os.ftruncate(self.sums_fd, self._batches(self.done) * DIGEST)

    def _batches(self, rows: int) -> int:
        return math.ceil(rows / self.batch_size)

    def _verified_rows(self, had_sums: bool) -> int:
        """Rows at the start of the partial file whose batches match their checksums."""
        size = os.fstat(self.fd).st_size
        bpr = self.dtype.itemsize
        if not had_sums:
            if size >= min(self.batch_size, self.rows) * bpr:
                raise RecordError(f"{self.partial}: no {self.sums.name} beside it, so its rows "
                                  "cannot be checked (written by an older pointkd?); record "
                                  "again with --overwrite")
            return 0
        sums = os.pread(self.sums_fd, self._batches(self.rows) * DIGEST + 1, 0)
        if len(sums) > self._batches(self.rows) * DIGEST:
            raise RecordError(f"{self.sums}: more checksums than the shard has batches; "
                              "record again with --overwrite")
        done = 0
        for i in range(len(sums) // DIGEST):  # a torn last checksum is dropped
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.rows)
            if hi * bpr > size:
                break  # checksum written, batch cut short (a machine crash): recompute it
            data = os.pread(self.fd, (hi - lo) * bpr, lo * bpr)
            if hashlib.sha256(data).digest() != sums[i * DIGEST:(i + 1) * DIGEST]:
                raise _changed(self.partial, lo, hi)
            done = hi
        return done

    def _check_final(self) -> None:
        """A shard renamed into place before its manifest: its batches against `.sums` (a
        set from before checksums has none; its manifest's sha256 then comes from the file)."""
        if not self.sums.is_file():
            return
        sums = self.sums.read_bytes()
        bpr = self.dtype.itemsize
        with open(self.path, "rb") as f:
            for i in range(self._batches(self.rows)):
                lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, self.rows)
                digest = hashlib.sha256(f.read((hi - lo) * bpr)).digest()
                if digest != sums[i * DIGEST:(i + 1) * DIGEST]:
                    raise _changed(self.path, lo, hi)

    def write(self, rows: np.ndarray) -> None:
        """One whole batch of the grid (or the shard's last, shorter one), then its sum."""
        data = rows.tobytes()
        safe_io.write_all(self.fd, data, self.partial)  # a full disk: one line, resumable
        safe_io.write_all(self.sums_fd, hashlib.sha256(data).digest(), self.sums)
        self.done += len(rows)

    def finalize(self) -> None:
        if self.fd is None:
            return
        if self.done != self.rows:
            raise RecordError(f"{self.partial}: {self.done} rows written, expected {self.rows}")
        try:
            os.fsync(self.fd)
            os.fsync(self.sums_fd)  # kept until the manifest is complete: resume checks it
            os.replace(self.partial, self.path)
        except OSError as exc:
            raise safe_io.write_error(self.path, exc) from None
        finally:
            os.close(self.fd)
            os.close(self.sums_fd)
            self.fd = self.sums_fd = None
        safe_io.fsync_dir(self.path.parent)


def _open(path: Path) -> int:
    """Read/write, appending; created if missing, never through a link."""
    return safe_io.open_file(path, read=True, append=True)


def _changed(path: Path, lo: int, hi: int) -> RecordError:
    return RecordError(f"{path}: rows {lo:,}-{hi - 1:,} do not match the checksums written with "
                       "them (the file changed after pointkd wrote it); nothing appended; "
                       "record again with --overwrite")


def remove_sums(root: Path, shards: list[dict]) -> None:
    """Once the manifest is complete (with every shard's sha256): the batch checksums of the
    partial files are no longer needed."""
    for shard in shards:
        sums = sums_path(root / shard["file"])
        if sums.is_file() and not sums.is_symlink():
            sums.unlink()


def plan_shards(total: int, batch_size: int, world: int) -> list[dict]:
    """One contiguous row range per process, cut on the batch grid; empty ranges dropped."""
    batches = math.ceil(total / batch_size)
    per = math.ceil(batches / world) * batch_size
    return [{"file": shard_name(r), "row_start": r * per,
             "rows": min(total, (r + 1) * per) - r * per, "sha256": None}
            for r in range(world) if r * per < total]
