"""Replayable augmentation: one implementation for plain training, recording and replay.

A sample's augmentation is fully described by
- shape-level parameters `params` (n, 7) = scale xyz, shift xyz, rotation about the up axis
  (see `PARAM_NAMES`), which records store, and
- a 64-bit `seed` from which every point-level operation (subsample, shuffle, dropout,
  jitter) is derived with a counter-based hash, so these cost no bytes in a record.

`apply(points, params, seeds, spec)` is a pure, batched torch function. It uses only integer
ops, table look-ups and IEEE-exact float ops (+ − × and comparisons, each its own kernel, so
nothing is fused): the same inputs give the same bytes in a batch or one cloud at a time, on
CPU and CUDA. Hence no torch.log/cos/sin (their last bit differs between CPU and CUDA):
normals come from an inverse-CDF table, cos/sin from a float64 polynomial.

Recording derives parameters from (run seed, sample, k) via `row_keys` + `keyed_params`, so
any row can be recomputed alone (exact resume); plain training uses `sample_params`.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import torch
from torch import Tensor

from pointkd.config.types import PARAM_DIM, PARAM_NAMES, AugmentSpec

__all__ = ["AugmentSpec", "PARAM_NAMES", "PARAM_DIM", "row_keys", "keyed_params",
           "sample_params", "sample_keys", "keyed_mix", "mix", "mixed_count", "identity_params",
           "apply"]


# ---- counter-based hashing with int64 torch ops (multiply wraps; logical shift emulated) ----

_U64 = (1 << 64) - 1


def _signed(c: int) -> int:
    c &= _U64
    return c - (1 << 64) if c >> 63 else c


_GOLDEN, _M1, _M2 = (_signed(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9,
                                          0x94D049BB133111EB))


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift: torch's >> on int64 is arithmetic, so mask the sign copies."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix(x: Tensor) -> Tensor:
    """splitmix64: a bijective, avalanching 64-bit hash."""
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _M1
    z = (z ^ _shr(z, 27)) * _M2
    return z ^ _shr(z, 31)


def _mix_int(x: int) -> int:
    """`_mix` on a Python int (for constants)."""
    z = (x + 0x9E3779B97F4A7C15) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return _signed(z ^ (z >> 31))


# independent streams of one key; values are part of the replay format (spec VERSION)
STREAM_PARAMS, STREAM_SEED, STREAM_ORDER, STREAM_DROP, STREAM_JITTER = 1, 2, 3, 4, 5
STREAM_VOTE = 6  # the teacher's extra views (`vote_scales`), never the student's cloud
STREAM_MIX, STREAM_MIX_ORDER = 7, 8  # mixed views: partner, share, which points (`mix`)
_SALT = {s: _mix_int(s * 0x632BE59BD9B4E019) for s in range(1, 9)}


def hash_bits(keys: Tensor, stream: int, count: int) -> Tensor:
    """(n,) int64 keys -> (n, count) int64 hashes of (key, stream, counter)."""
    counters = torch.arange(count, device=keys.device, dtype=torch.int64) * _GOLDEN
    return _mix(_mix(keys.to(torch.int64) ^ _SALT[stream]).unsqueeze(1) + counters)


def _unit(bits: Tensor) -> Tensor:
    """Top 24 bits -> float32 in [0, 1), exactly representable."""
    return _shr(bits, 40).to(torch.float32) * (1.0 / (1 << 24))


def row_keys(run_seed: int, samples: Tensor, k: int | Tensor) -> Tensor:
    """The int64 key of record row (sample, k) in a recording with `run_seed`."""
    samples = torch.as_tensor(samples, dtype=torch.int64)
    k = torch.as_tensor(k, dtype=torch.int64, device=samples.device)
    return _mix(_mix(k + _mix_int(run_seed)) + samples)


def keyed_params(keys: Tensor, spec: AugmentSpec) -> tuple[Tensor, Tensor]:
    """(params (n, 7) float32, seeds (n,) int64): a pure function of the keys."""
    u = _unit(hash_bits(keys, STREAM_PARAMS, PARAM_DIM))
    scale = spec.scale_low + (spec.scale_high - spec.scale_low) * u[:, 0:3]
    shift = spec.shift * (2 * u[:, 3:6] - 1)
    rotation = 2 * math.pi * u[:, 6:7] if spec.rotate else torch.zeros_like(u[:, 6:7])
    seeds = hash_bits(keys, STREAM_SEED, 1)[:, 0]
    return torch.cat([scale, shift, rotation], dim=1), seeds


def sample_keys(n: int, generator: torch.Generator | None) -> Tensor:
    """n fresh int64 keys drawn from `generator` (plain training's per-epoch draw)."""
    return torch.randint(-(1 << 63), (1 << 63) - 1, (n,), generator=generator,
                         dtype=torch.int64)


def sample_params(n: int, generator: torch.Generator | None, spec: AugmentSpec
                  ) -> tuple[Tensor, Tensor]:
    """Fresh parameters for n samples: n keys drawn from `generator`, then `keyed_params`."""
    return keyed_params(sample_keys(n, generator), spec)


def keyed_mix(keys: Tensor, spec: AugmentSpec, selves: Tensor, n: int
              ) -> tuple[Tensor, Tensor]:
    """Mixed views as a pure function of the keys: (partners (m,) int64 in [0, n), another
    item than `selves`, or -1 for a cloud left unmixed; lams (m,) float32, the share of
    points to replace, rounded to float16 as records store it, 0 when unmixed)."""
    bits = hash_bits(keys, STREAM_MIX, 3)
    mixed = (_unit(bits[:, 0]) < spec.mix_prob) & (spec.mix != "none") & (n > 1)
    offset = _shr(bits[:, 1], 1) % max(n - 1, 1)  # 0..n-2: any other item, uniformly
    partners = torch.where(mixed, (selves.to(torch.int64) + 1 + offset) % n, -1)
    lams = (spec.mix_max * _unit(bits[:, 2])).half().float()
    return partners, torch.where(mixed, lams, torch.zeros_like(lams))


# multi-view voting: each extra view scales x, y, z by independent factors from this range
VOTE_SCALE = (0.8, 1.25)


def vote_scales(seeds: Tensor, votes: int) -> Tensor:
    """(n, votes, 3) anisotropic scale factors in `VOTE_SCALE` for a teacher's extra views of
    clouds with point-level `seeds`: a pure function of (seed, vote), so a recording's
    voted logits are recomputed exactly from the stored rows."""
    low, high = VOTE_SCALE
    u = _unit(hash_bits(seeds, STREAM_VOTE, 3 * votes)).view(-1, votes, 3)
    return low + (high - low) * u


def identity_params(n: int) -> Tensor:
    params = torch.zeros(n, PARAM_DIM)
    params[:, 0:3] = 1.0
    return params


def mixed_count(lams: Tensor, p: int) -> Tensor:
    """(B,) int64: how many of a cloud's p points a share `lam` replaces (round half up)."""
    return torch.floor(lams.float() * p + 0.5).to(torch.int64)


def mix(points: Tensor, partners: Tensor, lams: Tensor, seeds: Tensor, spec: AugmentSpec
        ) -> Tensor:
    """Clouds (B, P, 3) with `mixed_count(lams)` of their points replaced by the `partners`'
    clouds' (B, P, 3) points, before `apply` augments them: a pure function, as `apply`.

    "points": the replaced points and the partner's points that replace them are random
    subsets (PointCutMix-R); "ball": the points nearest a random point of the cloud, and the
    partner's points nearest the same place (PointCutMix-K-like, a part of one shape put
    into the other). Distances are (dx²+dy²)+dz², each op its own kernel, sorted stably: the
    same bytes on every device."""
    b, p, _ = points.shape
    seeds = seeds.to(points.device, torch.int64)
    n = mixed_count(lams.to(points.device), p)
    if spec.mix == "ball":
        centre_at = _shr(hash_bits(seeds, STREAM_MIX, 1)[:, 0], 1) % p
        centre = torch.gather(points, 1, centre_at.view(b, 1, 1).expand(-1, 1, 3))
        order_a = torch.sort(_distance2(points, centre), dim=1, stable=True).indices
        order_b = torch.sort(_distance2(partners, centre), dim=1, stable=True).indices
    else:
        # streams of their own: `apply`'s shuffle must not know which points were replaced
        order_a = _order(seeds, p, p, True, STREAM_MIX_ORDER)
        order_b = _order(seeds ^ _SALT[STREAM_MIX], p, p, True, STREAM_MIX_ORDER)
    rank_a = torch.argsort(order_a, dim=1)  # where each of the cloud's points comes in order_a
    incoming = torch.gather(partners, 1, order_b.unsqueeze(-1).expand(-1, -1, 3))
    replacement = torch.gather(incoming, 1, rank_a.unsqueeze(-1).expand(-1, -1, 3))
    replaced = (rank_a < n.unsqueeze(1)).unsqueeze(-1)
    return torch.where(replaced, replacement, points)


def _distance2(points: Tensor, centre: Tensor) -> Tensor:
    d = points - centre
    return (d[..., 0] * d[..., 0] + d[..., 1] * d[..., 1]) + d[..., 2] * d[..., 2]


def apply(points: Tensor, params: Tensor, seeds: Tensor, spec: AugmentSpec) -> Tensor:
    """Augment clouds (B, P, 3) -> (B, P', 3); a pure function of its arguments.

    Order: choose + shuffle points, dropout, anisotropic scale, rotation, shift, jitter."""
    b, p, _ = points.shape
    params = params.to(points.device, points.dtype)
    seeds = seeds.to(points.device, torch.int64)
    keep = spec.subsample if 0 < spec.subsample < p else p
    x = points
    if spec.shuffle or keep < p:
        x = torch.gather(x, 1, _order(seeds, p, keep, spec.shuffle).unsqueeze(-1).expand(-1, -1, 3))
    if spec.dropout > 0:
        u = _unit(hash_bits(seeds, STREAM_DROP, keep + 1))
        drop = u[:, 1:] < spec.dropout * u[:, :1]  # per-cloud ratio U(0, dropout)
        x = torch.where(drop.unsqueeze(-1), x[:, :1], x)
    x = x * params[:, None, 0:3]
    if spec.rotate:
        x = _rotate(x, params[:, 6], spec.up_axis)
    x = x + params[:, None, 3:6]
    if spec.jitter_sigma > 0:
        x = x + _jitter(seeds, keep, spec, x.dtype)
    return x


def _order(seeds: Tensor, p: int, keep: int, shuffle: bool, stream: int = STREAM_ORDER
           ) -> Tensor:
    """(B, keep) point indices: a random permutation per cloud (sort of hashed keys whose low
    bits are the point index, so keys are unique and any sort gives the same order)."""
    bits = max(1, (p - 1).bit_length())
    idx = torch.arange(p, device=seeds.device, dtype=torch.int64)
    keys = (hash_bits(seeds, stream, p) & ~((1 << bits) - 1)) | idx
    order = torch.argsort(keys, dim=1)[:, :keep]
    return order if shuffle else order.sort(dim=1).values


_NORMAL_BITS = 16
_normal_tables: dict[tuple[torch.device, torch.dtype], Tensor] = {}


def _normal_table(device: torch.device, dtype: torch.dtype) -> Tensor:
    """Standard-normal quantiles at the 2^16 cell midpoints: |z| <= 4.32."""
    key = (device, dtype)
    if key not in _normal_tables:
        n, nd = 1 << _NORMAL_BITS, NormalDist()
        values = [nd.inv_cdf((i + 0.5) / n) for i in range(n)]
        _normal_tables[key] = torch.tensor(values, dtype=torch.float32).to(device, dtype)
    return _normal_tables[key]


def _jitter(seeds: Tensor, n: int, spec: AugmentSpec, dtype: torch.dtype) -> Tensor:
    """Clipped Gaussian noise (B, n, 3): one hash per point, 16 bits per coordinate."""
    h = hash_bits(seeds, STREAM_JITTER, n)
    cells = torch.stack([_shr(h, s) & 0xFFFF for s in (48, 32, 16)], dim=-1)
    normal = _normal_table(seeds.device, dtype)[cells]
    return (normal * spec.jitter_sigma).clamp(-spec.jitter_clip, spec.jitter_clip)


def _cos_sin(angle: Tensor) -> tuple[Tensor, Tensor]:
    """cos, sin in float64 from + − × only (device-exact), then rounded once to float32."""
    x = angle.to(torch.float64)
    q = torch.round(x * (2 / math.pi))
    r = x - q * (math.pi / 2)  # |r| <= π/4: Taylor to r^14/r^15 is exact to ~1e-14
    r2 = r * r
    s, c = torch.ones_like(r), torch.ones_like(r)
    for i in range(7, 0, -1):  # Horner on the nested Taylor forms
        s = 1 - r2 * (1.0 / ((2 * i) * (2 * i + 1))) * s
        c = 1 - r2 * (1.0 / ((2 * i - 1) * (2 * i))) * c
    s = r * s
    quadrant = torch.remainder(q, 4)
    cos = torch.where(quadrant == 0, c, torch.where(quadrant == 1, -s,
                                                    torch.where(quadrant == 2, -c, s)))
    sin = torch.where(quadrant == 0, s, torch.where(quadrant == 1, c,
                                                    torch.where(quadrant == 2, -s, -c)))
    return cos.to(torch.float32), sin.to(torch.float32)


def _rotate(x: Tensor, angle: Tensor, up: int) -> Tensor:
    """Counter-clockwise rotation by `angle` in the plane of the two non-up axes (a, c)."""
    a, c = [axis for axis in range(3) if axis != up]
    cos, sin = (t.to(x.dtype)[:, None] for t in _cos_sin(angle))
    xa, xc = x[..., a], x[..., c]
    cols = [x[..., up]] * 3
    cols[a] = cos * xa - sin * xc
    cols[c] = sin * xa + cos * xc
    return torch.stack(cols, dim=-1)
