"""Record store: fixed-width rows (NumPy structured dtype) in append-only shards, a JSON
manifest, a crash-safe shard writer and a memory-mapped reader. Format: docs/records.md.

Row order is (k, sample): global row r holds augmented copy k = r // N of training shape
sample = r % N, so neither index is stored. A shard holds a contiguous row range.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pointkd.augment import PARAM_DIM, AugmentSpec
from pointkd.errors import RecordError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
PROGRESS = "progress.json"
ENCODINGS = ("fp32", "fp16", "int8")


def row_dtype(num_classes: int, encoding: str, topk: int = 0, teachers: int = 1) -> np.dtype:
    """The row layout: params fp16[7], seed u8, then the logits fields of `encoding`."""
    fields: list[tuple] = [("params", "<f2", (PARAM_DIM,)), ("seed", "<u8")]
    shape = (teachers, num_classes)
    if topk:
        idx_type = "u1" if num_classes <= 256 else "<u2"
        fields += [("top_idx", idx_type, (teachers, topk)), ("top_val", "<f2", (teachers, topk)),
                   ("rest", "<f2", (teachers,))]
    elif encoding == "fp32":
        fields.append(("logits", "<f4", shape))
    elif encoding == "fp16":
        fields.append(("logits", "<f2", shape))
    elif encoding == "int8":
        fields += [("logits", "i1", shape), ("scale", "<f2", (teachers,))]
    else:
        raise RecordError(f"unknown logits encoding '{encoding}' (fp32, fp16, int8)")
    return np.dtype(fields)


def encode_logits(rows: np.ndarray, logits: np.ndarray, encoding: str, topk: int) -> None:
    """Write float32 logits (n, T, C) into `rows` in the given encoding."""
    if topk:
        order = np.argsort(-logits, axis=-1, kind="stable")
        top, rest_idx = order[..., :topk], order[..., topk:]
        rows["top_idx"] = top
        rows["top_val"] = np.take_along_axis(logits, top, -1)
        rest = np.take_along_axis(logits, rest_idx, -1).astype(np.float64)
        peak = rest.max(-1, keepdims=True)
        rows["rest"] = (peak[..., 0] + np.log(np.exp(rest - peak).sum(-1)))
    elif encoding == "int8":
        scale = (np.abs(logits).max(-1) / 127.0).astype(np.float16)
        scale[scale == 0] = 1.0
        rows["scale"] = scale
        q = np.rint(logits / scale.astype(np.float32)[..., None])
        rows["logits"] = np.clip(q, -127, 127)
    else:
        rows["logits"] = logits


def decode_logits(rows: np.ndarray, encoding: str, topk: int, num_classes: int) -> np.ndarray:
    """float32 logits (n, T, C) back from rows. Top-k: the other classes get
    rest − log(C − k), which keeps the top-k probabilities and the tail mass exact."""
    if topk:
        idx = rows["top_idx"].astype(np.int64)
        fill = rows["rest"].astype(np.float32) - np.float32(np.log(num_classes - topk))
        out = np.repeat(fill[..., None], num_classes, axis=-1)
        np.put_along_axis(out, idx, rows["top_val"].astype(np.float32), -1)
        return out
    if encoding == "int8":
        return rows["logits"].astype(np.float32) * rows["scale"].astype(np.float32)[..., None]
    return rows["logits"].astype(np.float32)


def write_json_atomic(path: Path, value: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_manifest(root: str | Path) -> dict:
    path = Path(root) / MANIFEST
    if not Path(root).is_dir():
        raise RecordError(f"record set not found: {root}")
    if not path.is_file():
        hint = " (recording incomplete: finish it with --resume)" if (
            Path(root) / PROGRESS).is_file() else ""
        raise RecordError(f"{root}: no {MANIFEST}{hint}")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise RecordError(f"{path}: not valid JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != "pointkd-records":
        raise RecordError(f"{path}: not a pointkd record manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise RecordError(f"{path}: format version {manifest.get('format_version')} is not "
                          f"supported (this pointkd reads version {FORMAT_VERSION})")
    return manifest


def manifest_dtype(manifest: dict) -> np.dtype:
    logits = manifest["logits"]
    return row_dtype(manifest["data"]["num_classes"], logits["encoding"], logits["topk"],
                     logits["stored_teachers"])


class ShardWriter:
    """Append whole batches of rows to `<name>.partial`; `finalize` fsyncs and renames.

    On resume the partial file is cut back to the last whole batch of the fixed batch grid,
    so the batches recomputed after a crash have the same composition as before (and
    therefore the same teacher output bytes)."""

    def __init__(self, path: Path, dtype: np.dtype, batch_size: int, resume: bool):
        self.path, self.dtype = path, dtype
        self.partial = path.with_name(path.name + ".partial")
        self.done = 0
        if resume and self.partial.is_file():
            whole = self.partial.stat().st_size // dtype.itemsize
            self.done = (whole // batch_size) * batch_size
            with open(self.partial, "r+b") as f:
                f.truncate(self.done * dtype.itemsize)
        self.file = open(self.partial, "ab" if self.done else "wb")

    def write(self, rows: np.ndarray) -> None:
        self.file.write(rows.tobytes())  # one write per batch: whole rows only
        self.file.flush()
        self.done += len(rows)

    def finalize(self) -> None:
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.partial, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@dataclass
class RecordBatch:
    sample: np.ndarray  # (n,) int64 training-shape indices
    k: np.ndarray  # (n,) int64 augmented-copy numbers
    params: torch.Tensor  # (n, 7) float32 (exactly the fp16 values the teacher saw)
    seeds: torch.Tensor  # (n,) int64 point-level seeds
    logits: torch.Tensor  # (n, C) float32 teacher logits (mean over stored teachers)
    teacher_logits: torch.Tensor | None  # (n, T, C) when each teacher is stored


class RecordSet:
    """Memory-mapped, random-access view of a complete record set.

    Memory maps open lazily and reopen after a fork, so the object is safe to hand to
    DataLoader worker processes."""

    def __init__(self, root: str | Path, manifest: dict):
        self.root, self.manifest = Path(root), manifest
        self.dtype = manifest_dtype(manifest)
        self.k = int(manifest["k"])
        self.num_shapes = int(manifest["data"]["num_shapes"])
        self.num_classes = int(manifest["data"]["num_classes"])
        self.spec = AugmentSpec.from_dict(manifest["augment"])
        self.encoding = manifest["logits"]["encoding"]
        self.topk = int(manifest["logits"]["topk"])
        self.shards = manifest["shards"]
        self.starts = np.array([s["row_start"] for s in self.shards], dtype=np.int64)
        self._maps: list[np.ndarray] | None = None
        self._pid = -1

    def __len__(self) -> int:
        return int(self.manifest["total_rows"])

    def _memmaps(self) -> list[np.ndarray]:
        if self._maps is None or self._pid != os.getpid():
            self._maps = [np.memmap(self.root / s["file"], self.dtype, "r", shape=(s["rows"],))
                          for s in self.shards]
            self._pid = os.getpid()
        return self._maps

    def row_index(self, sample, k) -> np.ndarray:
        return np.asarray(k, np.int64) * self.num_shapes + np.asarray(sample, np.int64)

    def raw_rows(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise RecordError(f"row index out of range (0..{len(self) - 1})")
        maps = self._memmaps()
        if len(maps) == 1:
            return maps[0][idx]
        shard = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty(len(idx), self.dtype)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = maps[s][idx[sel] - self.starts[s]]
        return out

    def rows(self, idx: np.ndarray) -> RecordBatch:
        idx = np.asarray(idx, np.int64)
        raw = self.raw_rows(idx)
        logits = decode_logits(raw, self.encoding, self.topk, self.num_classes)
        each = self.manifest["logits"]["combine"] == "each" and logits.shape[1] > 1
        return RecordBatch(
            sample=idx % self.num_shapes, k=idx // self.num_shapes,
            params=torch.from_numpy(raw["params"].astype(np.float32)),
            seeds=torch.from_numpy(raw["seed"].view(np.int64).copy()),
            logits=torch.from_numpy(logits.mean(axis=1)),
            teacher_logits=torch.from_numpy(logits) if each else None)


def open_records(root: str | Path, data=None) -> RecordSet:
    """Open a complete record set; with `data` (a PointCloudSet), refuse records that were
    made for other data. Shard sizes are checked here; checksums only by `verify`."""
    manifest = read_manifest(root)
    if not manifest.get("complete"):
        raise RecordError(f"{root}: record set is incomplete (finish it with --resume)")
    rs = RecordSet(root, manifest)
    for s in manifest["shards"]:
        path = Path(root) / s["file"]
        if not path.is_file():
            raise RecordError(f"{root}: shard {s['file']} is missing")
        expected = s["rows"] * rs.dtype.itemsize
        if path.stat().st_size != expected:
            raise RecordError(f"{root}: shard {s['file']} has {path.stat().st_size} bytes, "
                              f"expected {expected} (truncated or padded)")
    if data is not None and data.fingerprint() != manifest["data"]["fingerprint"]:
        raise RecordError(f"{root}: records were made for another dataset "
                          f"({manifest['data']['name']}, {manifest['data']['fingerprint'][:19]}…)"
                          f", not {data.name} ({data.fingerprint()[:19]}…)")
    return rs
