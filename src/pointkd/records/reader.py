"""Memory-mapped, random-access reading of a complete record set.

Usage (distillation): `rs = open_records(dir, data=train_set)`, then
`rs.rows(rs.row_index(samples, ks))` -> `RecordBatch`; replay the teacher's input with
`augment.apply(points[batch.sample], batch.params, batch.seeds, rs.spec)`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointkd.config.types import AugmentSpec
from pointkd.errors import RecordError
from pointkd.records.format import decode_logits
from pointkd.records.manifest import check_shard_ranges, manifest_dtype, read_manifest


@dataclass
class RecordBatch:
    sample: np.ndarray  # (n,) int64 indices into the training split
    k: np.ndarray  # (n,) int64 augmented-copy numbers
    params: torch.Tensor  # (n, 7) float32: exactly the (fp16) parameters the teacher saw
    seeds: torch.Tensor  # (n,) int64 point-level seeds
    logits: torch.Tensor  # (n, C) float32 teacher logits (the mean, if several teachers)
    per_teacher: torch.Tensor | None = None  # (n, T, C) each teacher's, with `--combine each`
    # mixed views: the partner shape (-1: unmixed) and the share of points it replaced
    mix_shapes: torch.Tensor | None = None  # (n,) int64
    mix_lams: torch.Tensor | None = None  # (n,) float32 (exactly the stored float16)

    def __len__(self) -> int:
        return len(self.sample)


class RecordSet:
    """Rows of a record set. Global row r holds copy k = r // N of training shape r % N.

    Shards are memory-mapped lazily and re-mapped in a new process (after fork or unpickling),
    so a RecordSet can be handed to DataLoader workers."""

    def __init__(self, root: str | Path, manifest: dict):
        self.root, self.manifest = Path(root), manifest
        self.dtype = manifest_dtype(manifest)
        self.k = int(manifest["k"])
        self.num_shapes = int(manifest["data"]["num_shapes"])
        self.num_classes = int(manifest["data"]["num_classes"])
        self.spec = AugmentSpec.from_dict(manifest["augment"])
        lg = manifest["logits"]
        self.encoding, self.topk = lg["encoding"], int(lg["topk"])
        self.each_teacher = lg["combine"] == "each"
        self.shards = sorted(manifest["shards"], key=lambda s: s["row_start"])
        self._starts = np.array([s["row_start"] for s in self.shards], dtype=np.int64)
        self._maps: list[np.memmap] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return self.k * self.num_shapes

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None, "_pid": -1}  # never pickle mapped data

    def _memmaps(self) -> list[np.memmap]:
        if self._maps is None or self._pid != os.getpid():
            self._maps = [np.memmap(self.root / s["file"], self.dtype, "r", shape=(s["rows"],))
                          for s in self.shards]
            self._pid = os.getpid()
        return self._maps

    def row_index(self, sample: np.ndarray, k: np.ndarray) -> np.ndarray:
        """Global row ids of (sample, k) pairs (broadcast)."""
        sample, k = np.asarray(sample, np.int64), np.asarray(k, np.int64)
        if sample.size and (sample.min() < 0 or sample.max() >= self.num_shapes):
            raise RecordError(f"sample index out of range (0..{self.num_shapes - 1})")
        if k.size and (k.min() < 0 or k.max() >= self.k):
            raise RecordError(f"k out of range (0..{self.k - 1})")
        return k * self.num_shapes + sample

    def raw_rows(self, idx: np.ndarray) -> np.ndarray:
        """The stored structured rows (a copy), in the order of `idx`."""
        idx = np.asarray(idx, np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise RecordError(f"row index out of range (0..{len(self) - 1})")
        maps = self._memmaps()
        if len(maps) == 1:
            return maps[0][idx]
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        out = np.empty(idx.shape, self.dtype)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = maps[s][idx[sel] - self._starts[s]]
        return out

    def rows(self, idx: np.ndarray) -> RecordBatch:
        """Decoded rows for any global row ids: O(1) per row."""
        idx = np.asarray(idx, np.int64)
        raw = self.raw_rows(idx)
        logits = torch.from_numpy(decode_logits(raw, self.encoding, self.topk,
                                                self.num_classes))
        return RecordBatch(
            sample=idx % self.num_shapes, k=idx // self.num_shapes,
            params=torch.from_numpy(raw["params"].astype(np.float32)),
            seeds=torch.from_numpy(np.array(raw["seed"], np.uint64).view(np.int64)),
            logits=logits[:, 0] if logits.shape[1] == 1 else logits.mean(dim=1),
            per_teacher=logits if self.each_teacher else None,
            **_mix_fields(raw))


def _mix_fields(raw: np.ndarray) -> dict:
    if "mix_shape" not in (raw.dtype.names or ()):
        return {}
    return {"mix_shapes": torch.from_numpy(raw["mix_shape"].astype(np.int64)),
            "mix_lams": torch.from_numpy(raw["mix_lam"].astype(np.float32))}


def check_shard_files(rs: RecordSet) -> None:
    for s in rs.shards:
        path = rs.root / s["file"]
        if path.is_symlink():  # it could lead anywhere: a shard is a file of the set itself
            raise RecordError(f"{rs.root}: shard {s['file']} is a symbolic link, not a file "
                              "of the record set")
        if not path.is_file():
            raise RecordError(f"{rs.root}: shard {s['file']} is missing")
        size, expected = path.stat().st_size, s["rows"] * rs.dtype.itemsize
        if size != expected:
            raise RecordError(f"{rs.root}: shard {s['file']} has {size} bytes, expected "
                              f"{expected} = {s['rows']} rows x {rs.dtype.itemsize} B "
                              f"({'truncated' if size < expected else 'extra bytes'})")


def open_records(root: str | Path, data=None) -> RecordSet:
    """Open a complete record set for reading.

    Checks the manifest, completeness, shard ranges and shard sizes (cheap; checksums are
    `verify`'s job). With `data` (a PointCloudSet: the training split), records made for
    other data are refused."""
    m = read_manifest(root)
    if not m["complete"]:
        raise RecordError(f"{root}: record set is incomplete (finish it with `pointkd record "
                          "... --resume`)")
    check_shard_ranges(m, root)
    rs = RecordSet(root, m)
    check_shard_files(rs)
    if data is not None:
        check_made_for(rs, data, root)
    return rs


def check_made_for(rs: RecordSet, data, root: str | Path | None = None) -> None:
    """Refuse records made for other data than `data` (a PointCloudSet: the training split);
    `root`: the record set as the user named it (default: its directory)."""
    root, m = rs.root if root is None else root, rs.manifest
    if data.fingerprint() != m["data"]["fingerprint"]:
        raise RecordError(f"{root}: records were made for another dataset "
                          f"({m['data']['name']}, {m['data']['fingerprint'][:19]}…), "
                          f"not {data.name} ({data.fingerprint()[:19]}…)")
    # shapes without labels have no classes of their own (the record set took the teachers')
    classes = data.num_classes if data.labelled else rs.num_classes
    if (rs.num_shapes, rs.num_classes) != (len(data), classes):
        raise RecordError(f"{root}: manifest says {rs.num_shapes} shapes of "
                          f"{rs.num_classes} classes, the data has {len(data)} of "
                          f"{data.num_classes}")
