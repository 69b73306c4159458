"""Teacher inference, the stage shared by `pointkd record` and online KD.

`pointkd.teacher` loads teachers of any kind (checkpoint, ONNX, `module:factory`); this module
fits them to a dataset and runs them:

- `fit_to_data`        class matching (outputs reordered to the data's classes) and, for
                       teachers fed the data's own units, every shape's normalisation frame;
- `teacher_logits`     (B, T, C) logits of T teachers on one augmented batch (online KD runs
                       it on every training batch, recording on every batch of rows),
                       optionally voted: averaged over the cloud and `votes` rescaled views;
- `logits_over_rows`   a plan of record rows -> (fp16 params, seeds, logits) per batch: the
                       augmentation of row (sample, k) derives from (seed, sample, k) alone,
                       so any row is recomputed identically (exact resume; the record writer
                       stores what this yields).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from pointkd import augment
from pointkd.data import PointCloudSet, load_split
from pointkd.device import autocast
from pointkd.errors import ModelError, PointKDError
from pointkd.teachers.load import Teacher, attach_frames, match_classes


def fit_to_data(teachers: list[Teacher], data: PointCloudSet, data_path: str,
                num_points: int | None, normalized: bool = True,
                error: type[PointKDError] = ModelError) -> None:
    """Check the teachers against `data` (the train split at `num_points`, loaded from
    `data_path`; `normalized`: with pointkd's unit-sphere normalisation) and set each one's
    class reordering and input frames. A mismatch is a one-line `error`."""
    match_classes(teachers, data.class_names, data_path, error=error)
    if any(t.normalization == "none" for t in teachers):  # they take the data's own units
        raw = load_split(data_path, "train", num_points=num_points,
                         normalize=False).points if normalized else None
        attach_frames(teachers, raw)


def teacher_logits(teachers: list[Teacher], x: Tensor, samples: Tensor,
                   seeds: Tensor | None = None, votes: int = 0, check: bool = True) -> Tensor:
    """(B, T, C) float32 logits of every teacher on augmented clouds `x` of shapes `samples`.

    Each teacher call gets its own copy of the clouds (`Teacher.__call__`), so one that
    modifies its input cannot change what the next one sees. `check`: non-finite logits are
    a one-line error naming the teacher (False: the caller checks `finite_by_teacher` later,
    as `logits_over_rows` does so as not to wait for the device on every batch).

    `votes` > 0: each teacher's mean logits over `x` itself and `votes` views of it, each
    scaled per axis by `augment.vote_scales(seeds, votes)` (seeds: the clouds' point-level
    seeds, on any device: only the scales move to `x`'s). The views are of exactly the cloud
    the student gets, and derive from its seed, so recorded and online targets agree and a
    record row's target is reproducible."""
    z = torch.stack([t(x, samples) for t in teachers], dim=1)
    if votes > 0:
        if seeds is None:
            raise ValueError("teacher votes need the clouds' seeds")
        scales = augment.vote_scales(seeds, votes).to(x.device, x.dtype)
        for v in range(votes):
            view = x * scales[:, None, v]
            z = z + torch.stack([t(view, samples) for t in teachers], dim=1)
        z = z / (votes + 1)
    if check:
        check_finite(teachers, finite_by_teacher(z))
    return z


def finite_by_teacher(z: Tensor) -> Tensor:
    """(T,) bool on z's device: whether teacher t's logits in (B, T, C) `z` are all finite."""
    return torch.isfinite(z).all(dim=2).all(dim=0)


def check_finite(teachers: list[Teacher], finite: Tensor) -> None:
    """A one-line error naming the first teacher whose logits were NaN/Inf (the record
    writer's own check could not say which of several teachers it was)."""
    bad = torch.nonzero(~finite.cpu()).flatten()
    if len(bad):
        t = teachers[int(bad[0])]
        raise ModelError(f"teacher {t.source} produced non-finite logits (NaN/Inf) on a batch "
                         "of clouds: its weights or its arithmetic overflow")


class RowBatch(NamedTuple):
    """A batch of record rows as `logits_over_rows` yields them."""

    params16: Tensor  # (n, 7) float16, as stored and as applied
    seeds: Tensor  # (n,) int64 point-level seeds
    logits: np.ndarray  # (n, T, C) float32
    mix_shapes: Tensor | None = None  # (n,) int64 partner shapes (-1: unmixed), mixed views
    mix_lams: Tensor | None = None  # (n,) float32 shares replaced (float16-exact)


def logits_over_rows(teachers: list[Teacher], points: Tensor, spec: augment.AugmentSpec,
                     seed: int, rows: range, batch_size: int, combine: str,
                     device: torch.device, votes: int = 0) -> Iterator[RowBatch]:
    """A `RowBatch` for each batch of `batch_size` consecutive rows of `rows`. Row r is copy
    k = r // N of shape r % N (N = len(points)); with mixed views (`spec.mix`) its partner
    and share derive from the same key (`augment.keyed_mix`). `combine="mean"` averages the
    teachers (T = 1); `votes`: see `teacher_logits`. On CUDA the logits of batch i are
    copied back while batch i + 1 runs (one batch in flight)."""
    n, pending = len(points), None
    for lo in range(rows.start, rows.stop, batch_size):
        ids = torch.arange(lo, min(lo + batch_size, rows.stop))
        samples, ks = ids % n, ids // n
        keys = augment.row_keys(seed, samples, ks)
        params, seeds = augment.keyed_params(keys, spec)
        params16 = params.half()  # stored precision == applied precision: exact replay
        clouds, mixing = points[samples.to(device)], None
        if spec.mix != "none":
            mixing = augment.keyed_mix(keys, spec, samples, n)
            partners = points[mixing[0].clamp(min=0).to(device)]
            clouds = augment.mix(clouds, partners, mixing[1].to(device), seeds.to(device),
                                 spec)
        x = augment.apply(clouds, params16.float().to(device), seeds.to(device), spec)
        with autocast(device):
            z = teacher_logits(teachers, x, samples, seeds, votes, check=False)
        finite = finite_by_teacher(z)  # before the mean: a NaN is then still someone's
        if combine == "mean":
            z = z.mean(dim=1, keepdim=True)
        event = None
        if device.type == "cuda":
            z, finite = z.to("cpu", non_blocking=True), finite.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        if pending is not None:
            yield _ready(teachers, *pending)
        pending = (params16, seeds, z, finite, event, mixing)
    if pending is not None:
        yield _ready(teachers, *pending)


def _ready(teachers: list[Teacher], params16: Tensor, seeds: Tensor, z: Tensor,
           finite: Tensor, event, mixing: tuple[Tensor, Tensor] | None) -> RowBatch:
    if event is not None:
        event.synchronize()
    check_finite(teachers, finite)
    return RowBatch(params16, seeds, z.numpy(), *(mixing or (None, None)))


@contextlib.contextmanager
def deterministic(device: torch.device):
    """cuDNN's autotuner may pick other kernels after a restart; pin them while recording."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved
