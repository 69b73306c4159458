"""Row layout and logits codecs of record format v1 (docs/records.md).

A row is a little-endian NumPy structured record without padding: `params` float16[7],
`seed` uint64, for a set recorded with mixed views `mix_shape` int32 (the partner shape, -1
for a row left unmixed) and `mix_lam` float16 (the share of points replaced), then the
logits fields of the chosen encoding, each with a leading teacher axis T (1 unless every
teacher's logits are stored).
"""

from __future__ import annotations

import numpy as np

from pointkd.config.types import PARAM_DIM
from pointkd.errors import RecordError

FORMAT = "pointkd-records"
FORMAT_VERSION = 1
ENCODINGS = ("fp32", "fp16", "int8", "topk")
CLOUD_BYTES = 1024 * 3 * 4  # a stored 1,024-point float32 cloud, for comparison
# The largest |logit| stored as float16 (records, the NWSD self table): below the float16 max
# (65504) with room for the log-sum-exp.
HALF_SAFE = 60000.0


def row_dtype(num_classes: int, encoding: str, topk: int = 0, teachers: int = 1,
              mixed: bool = False) -> np.dtype:
    """The row layout. `encoding` is fp32 | fp16 | int8 | topk (topk > 0 implies topk);
    `mixed`: rows of mixed views carry their partner and share."""
    t = (teachers,)
    fields: list[tuple] = [("params", "<f2", (PARAM_DIM,)), ("seed", "<u8")]
    if mixed:
        fields += [("mix_shape", "<i4"), ("mix_lam", "<f2")]
    if topk or encoding == "topk":
        if not 0 < topk < num_classes:
            raise RecordError(f"top-k needs 0 < k < {num_classes} classes, got k = {topk}")
        index = "u1" if num_classes <= 256 else "<u2"
        fields += [("top_idx", index, t + (topk,)), ("top_val", "<f2", t + (topk,)),
                   ("rest_lse", "<f2", t)]
    elif encoding == "fp32":
        fields.append(("logits", "<f4", t + (num_classes,)))
    elif encoding == "fp16":
        fields.append(("logits", "<f2", t + (num_classes,)))
    elif encoding == "int8":
        fields += [("logits", "i1", t + (num_classes,)), ("scale", "<f2", t)]
    else:
        raise RecordError(f"unknown logits encoding '{encoding}' (fp32, fp16, int8, topk)")
    return np.dtype(fields)


def dtype_descr(dtype: np.dtype) -> list:
    """JSON form of `dtype.descr` (tuples become lists)."""
    return [[d[0], d[1], list(d[2])] if len(d) > 2 else list(d) for d in dtype.descr]


def encode_logits(rows: np.ndarray, logits: np.ndarray, encoding: str, topk: int = 0) -> None:
    """Store float32 logits (n, T, C) into the logits fields of `rows`."""
    if not np.isfinite(logits).all():
        raise RecordError("teacher produced non-finite logits (NaN/Inf); nothing more written")
    if encoding != "fp32" and np.abs(logits).max(initial=0) > HALF_SAFE:
        raise RecordError(f"teacher logits exceed ±{HALF_SAFE:g} (float16 range); use "
                          "--logits fp32")
    if topk or encoding == "topk":
        # the top k by value (ties: lower class first), the rest as one log-sum-exp
        order = np.argsort(-logits, axis=-1, kind="stable")
        top = order[..., :topk]
        rows["top_idx"] = top
        rows["top_val"] = np.take_along_axis(logits, top, -1)
        rest = np.take_along_axis(logits, order[..., topk:], -1).astype(np.float64)
        peak = rest.max(-1)
        rows["rest_lse"] = peak + np.log(np.exp(rest - peak[..., None]).sum(-1))
    elif encoding == "int8":
        # symmetric per-row quantisation; the fp16 scale is rounded first so that the
        # integers are computed against the scale a reader will actually use
        scale = (np.abs(logits).max(-1) / 127.0).astype(np.float16)
        scale[scale == 0] = 1.0  # all-zero (or sub-fp16) logits: any scale decodes to ~0
        rows["scale"] = scale
        q = np.rint(logits / scale.astype(np.float32)[..., None])
        rows["logits"] = np.clip(q, -127, 127)
    else:
        rows["logits"] = logits


def decode_logits(rows: np.ndarray, encoding: str, topk: int, num_classes: int) -> np.ndarray:
    """float32 logits (n, T, C) from rows. Top-k: every other class gets
    rest_lse − log(C − k), which keeps the top-k probabilities and the tail mass exact."""
    if topk or encoding == "topk":
        fill = rows["rest_lse"].astype(np.float32) - np.float32(np.log(num_classes - topk))
        out = np.repeat(fill[..., None], num_classes, axis=-1)
        np.put_along_axis(out, rows["top_idx"].astype(np.int64),
                          rows["top_val"].astype(np.float32), -1)
        return out
    if encoding == "int8":
        return rows["logits"].astype(np.float32) * rows["scale"].astype(np.float32)[..., None]
    return rows["logits"].astype(np.float32)
