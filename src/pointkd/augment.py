"""Replayable augmentation: the one implementation used by training, recording and replay.

A sample's augmentation is fully described by
- shape-level parameters `params` (n, 7) = scale_xyz, shift_xyz, rotation about the up axis,
  which records store, and
- a 64-bit `seed` from which every point-level operation (subsample, shuffle, dropout,
  jitter) is derived through a counter-based hash — so they cost no bytes in a record.

`apply(points, params, seeds, spec)` is a pure, batched torch function: the same inputs give
the same bytes on CPU and CUDA, in a batch or one cloud at a time. Recording derives the
parameters themselves from (run seed, sample, k) via `row_keys` + `keyed_params`, so any row
can be recomputed alone (crash-safe resume).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import torch
from torch import Tensor

from pointkd.errors import RecordError

PARAM_NAMES = ("scale_x", "scale_y", "scale_z", "shift_x", "shift_y", "shift_z", "rotation")
PARAM_DIM = len(PARAM_NAMES)


@dataclass(frozen=True)
class AugmentSpec:
    """What `apply` does. Defaults follow PointMLP: scale U(2/3, 3/2) per axis, shift
    U(-0.2, 0.2); plus jitter N(0, 0.01²) clipped at ±0.05 and a point shuffle."""

    scale_low: float = 2.0 / 3.0
    scale_high: float = 1.5
    shift: float = 0.2
    rotate: bool = False  # random rotation about the up axis
    up_axis: int = 1  # ModelNet40 HDF5 clouds are y-up
    jitter_sigma: float = 0.01
    jitter_clip: float = 0.05
    subsample: int = 0  # keep P' random points (0 = all)
    shuffle: bool = True
    dropout: float = 0.0  # max fraction of points replaced by the first point
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict:
        return {"version": self.VERSION, **asdict(self)}

    @classmethod
    def from_dict(cls, values: dict) -> AugmentSpec:
        values = dict(values)
        version = values.pop("version", None)
        if version != cls.VERSION:
            raise RecordError(f"augmentation spec version {version} is not supported "
                              f"(this pointkd writes version {cls.VERSION})")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise RecordError(f"unknown augmentation spec keys: {', '.join(unknown)}")
        return cls(**values)

    @classmethod
    def from_config(cls, cfg) -> AugmentSpec:
        """From a `pointkd.config.AugmentConfig` (same field names)."""
        return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls) if hasattr(cfg, f.name)})


# ---- counter-based hashing in int64 torch ops (wrapping multiply; logical shifts emulated) --

def _i64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _i64(0x9E3779B97F4A7C15)
_M1 = _i64(0xBF58476D1CE4E5B9)
_M2 = _i64(0x94D049BB133111EB)
STREAM_PARAMS, STREAM_SEED, STREAM_ORDER, STREAM_DROP, STREAM_JITTER = 1, 2, 3, 4, 5


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64 finaliser: a bijective, well-mixing 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def hash_bits(keys: Tensor, stream: int, count: int) -> Tensor:
    """(n,) int64 keys -> (n, count) int64 hashes of (key, stream, counter)."""
    counters = torch.arange(count, device=keys.device, dtype=torch.int64)
    base = _mix(keys.to(torch.int64) ^ _mix(torch.tensor(stream, device=keys.device)))
    return _mix(base.unsqueeze(1) + counters * _GOLDEN)


def uniform(keys: Tensor, stream: int, count: int) -> Tensor:
    """Floats in [0, 1) with 24 random bits each, shape (n, count)."""
    return _shr(hash_bits(keys, stream, count), 40).float() * (1.0 / (1 << 24))


def row_keys(run_seed: int, samples: Tensor, k: int | Tensor) -> Tensor:
    """The key of record row (sample, k) in a recording with `run_seed`."""
    samples = torch.as_tensor(samples, dtype=torch.int64)
    k = torch.as_tensor(k, dtype=torch.int64, device=samples.device)
    return _mix(_mix(_mix(torch.tensor(run_seed, dtype=torch.int64)) + k) + samples)


def keyed_params(keys: Tensor, spec: AugmentSpec) -> tuple[Tensor, Tensor]:
    """(params (n, 7) float32, seeds (n,) int64): a pure function of the keys."""
    u = uniform(keys, STREAM_PARAMS, PARAM_DIM)
    scale = spec.scale_low + (spec.scale_high - spec.scale_low) * u[:, 0:3]
    shift = spec.shift * (2 * u[:, 3:6] - 1)
    rotation = (2 * math.pi * u[:, 6:7]) if spec.rotate else torch.zeros_like(u[:, 6:7])
    seeds = hash_bits(keys, STREAM_SEED, 1)[:, 0]
    return torch.cat([scale, shift, rotation], dim=1), seeds


def sample_params(n: int, generator: torch.Generator | None, spec: AugmentSpec
                  ) -> tuple[Tensor, Tensor]:
    """Fresh parameters for n samples: keys drawn from `generator`, then `keyed_params`."""
    keys = torch.randint(-(1 << 62), 1 << 62, (n,), generator=generator, dtype=torch.int64)
    return keyed_params(keys, spec)


def identity_params(n: int) -> Tensor:
    params = torch.zeros(n, PARAM_DIM)
    params[:, 0:3] = 1.0
    return params


def apply(points: Tensor, params: Tensor, seeds: Tensor, spec: AugmentSpec) -> Tensor:
    """Augment clouds (B, P, 3) -> (B, P', 3); pure function of its arguments.

    Order: choose/shuffle points, dropout, anisotropic scale, rotation, shift, jitter."""
    b, p, _ = points.shape
    params = params.to(points.device, torch.float32)
    seeds = seeds.to(points.device, torch.int64)
    keep = spec.subsample if 0 < spec.subsample < p else p
    x = points
    if spec.shuffle or keep < p:
        # a random permutation per cloud: sort by hashed per-point keys (ties: by index)
        order = torch.argsort(hash_bits(seeds, STREAM_ORDER, p), dim=1, stable=True)[:, :keep]
        if not spec.shuffle:
            order = order.sort(dim=1).values
        x = torch.gather(x, 1, order.unsqueeze(-1).expand(b, keep, 3))
    if spec.dropout > 0:
        u = uniform(seeds, STREAM_DROP, keep + 1)
        drop = u[:, 1:] < spec.dropout * u[:, :1]  # per-cloud ratio in [0, dropout)
        x = torch.where(drop.unsqueeze(-1), x[:, :1].expand_as(x), x)
    x = x * params[:, None, 0:3]
    if spec.rotate:
        x = _rotate_up(x, params[:, 6], spec.up_axis)
    x = x + params[:, None, 3:6]
    if spec.jitter_sigma > 0:
        x = x + _jitter(seeds, keep, spec).to(x.dtype)
    return x


def _rotate_up(x: Tensor, angle: Tensor, up: int) -> Tensor:
    a, c = [axis for axis in range(3) if axis != up]
    cos, sin = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
    out = x.clone()
    out[..., a] = cos * x[..., a] - sin * x[..., c]
    out[..., c] = sin * x[..., a] + cos * x[..., c]
    return out


def _jitter(seeds: Tensor, n: int, spec: AugmentSpec) -> Tensor:
    """Clipped Gaussian noise (B, n, 3) via Box-Muller from the seed's jitter stream."""
    u = uniform(seeds, STREAM_JITTER, 6 * n).view(-1, n, 3, 2)
    u1 = 1.0 - u[..., 0]  # (0, 1]: log is finite
    normal = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2 * math.pi * u[..., 1])
    return (spec.jitter_sigma * normal).clamp(-spec.jitter_clip, spec.jitter_clip)
