"""Replayable augmentation: determinism, identity, batch == one-by-one (bytes), ranges,
shapes, seeds, and a pinned golden output (records replay through this code)."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from _numerics import assert_close_to_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from pointkd import augment as A
from pointkd.errors import ConfigError, RecordError

specs = st.builds(
    A.AugmentSpec, rotate=st.booleans(), up_axis=st.sampled_from([1, 2]),
    subsample=st.sampled_from([0, 16, 40]), shuffle=st.booleans(),
    dropout=st.sampled_from([0.0, 0.5]), jitter_sigma=st.sampled_from([0.0, 0.01, 0.1]))
SETTINGS = settings(max_examples=30, deadline=None)


def clouds(seed: int, b: int = 4, p: int = 64, dtype=torch.float32) -> torch.Tensor:
    x = torch.rand(b, p, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x.to(dtype)


def raw(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


@pytest.mark.numerics
@SETTINGS
@given(spec=specs, seed=st.integers(0, 2**31))
def test_deterministic_and_batch_equals_one_by_one_bytewise(spec, seed):
    x = clouds(seed)
    params, seeds = A.sample_params(len(x), torch.Generator().manual_seed(seed), spec)
    a = A.apply(x, params, seeds, spec)
    b = A.apply(x.clone(), params.clone(), seeds.clone(), spec)
    one = torch.cat([A.apply(x[i: i + 1], params[i: i + 1], seeds[i: i + 1], spec)
                     for i in range(len(x))])
    assert raw(a) == raw(b) == raw(one)
    # a sample's output does not depend on its neighbours in the batch
    perm = torch.tensor([2, 0, 3, 1])
    assert raw(A.apply(x[perm], params[perm], seeds[perm], spec)) == raw(a[perm])


@SETTINGS
@given(spec=specs, seed=st.integers(0, 2**31), dtype=st.sampled_from([torch.float32,
                                                                      torch.float64]))
def test_shapes_and_dtypes_preserved(spec, seed, dtype):
    x = clouds(seed, dtype=dtype)
    params, seeds = A.sample_params(len(x), torch.Generator().manual_seed(seed), spec)
    assert params.shape == (4, 7) and params.dtype == torch.float32
    assert seeds.shape == (4,) and seeds.dtype == torch.int64
    y = A.apply(x, params, seeds, spec)
    keep = spec.subsample if 0 < spec.subsample < x.shape[1] else x.shape[1]
    assert y.shape == (len(x), keep, 3) and y.dtype == dtype and torch.isfinite(y).all()


@SETTINGS
@given(seed=st.integers(0, 2**31), rotate=st.booleans())
def test_identity_params_give_identity_exactly(seed, rotate):
    spec = A.AugmentSpec(jitter_sigma=0.0, shuffle=False, rotate=rotate)
    x = clouds(seed)
    y = A.apply(x, A.identity_params(len(x)), torch.arange(len(x)) * 977 + seed, spec)
    assert torch.equal(y, x)


@SETTINGS
@given(rotate=st.booleans(), run_seed=st.integers(0, 2**62), k=st.integers(0, 50))
def test_keyed_params_pure_in_range_and_distinct(rotate, run_seed, k):
    spec = A.AugmentSpec(rotate=rotate, scale_low=0.8, scale_high=1.25, shift=0.1)
    keys = A.row_keys(run_seed, torch.arange(300), k)
    p1, s1 = A.keyed_params(keys, spec)
    p2, s2 = A.keyed_params(keys.clone(), spec)
    assert raw(p1) == raw(p2) and torch.equal(s1, s2)
    assert (p1[:, :3] >= 0.8).all() and (p1[:, :3] <= 1.25).all()
    assert (p1[:, 3:6].abs() <= 0.1).all()
    assert (p1[:, 6] >= 0).all() and (p1[:, 6] < 2 * math.pi).all()
    if not rotate:
        assert (p1[:, 6] == 0).all()
    assert len(torch.unique(keys)) == 300 and len(torch.unique(s1)) == 300
    assert len(torch.unique(p1[:, 0])) > 290  # 24-bit uniforms: collisions are rare


def test_row_keys_differ_by_seed_sample_and_k():
    spec = A.AugmentSpec()
    rows = [A.row_keys(s, torch.arange(100), k) for s, k in [(0, 0), (0, 1), (1, 0)]]
    assert len(torch.unique(torch.cat(rows))) == 300
    a, b = (A.keyed_params(r, spec)[0] for r in rows[:2])
    assert not torch.equal(a, b)
    # k given as a tensor (one per row) means the same as a scalar k
    assert torch.equal(A.row_keys(0, torch.arange(5), torch.full((5,), 3)),
                       A.row_keys(0, torch.arange(5), 3))


def test_sample_params_reproduce_from_the_generator():
    spec = A.AugmentSpec(rotate=True)
    a = A.sample_params(64, torch.Generator().manual_seed(5), spec)
    b = A.sample_params(64, torch.Generator().manual_seed(5), spec)
    c = A.sample_params(64, torch.Generator().manual_seed(6), spec)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0]) and not torch.equal(a[1], c[1])


@SETTINGS
@given(seed=st.integers(0, 2**31), clip=st.sampled_from([0.005, 0.02, 1.0]))
def test_jitter_is_bounded_by_clip(seed, clip):
    spec = A.AugmentSpec(jitter_sigma=0.05, jitter_clip=clip, shuffle=False)
    x = clouds(seed)
    y = A.apply(x, A.identity_params(len(x)), torch.arange(len(x)) + seed, spec)
    assert (y - x).abs().max() <= clip + 1e-6  # (x + noise) - x rounds
    noise = A._jitter(torch.arange(4) + seed, 64, spec, torch.float32)
    assert noise.abs().max() <= clip
    assert (y != x).float().mean() > 0.9  # and it does move (almost) every coordinate


def test_jitter_is_gaussian_with_sigma():
    spec = A.AugmentSpec(jitter_sigma=0.01, jitter_clip=1.0, shuffle=False)
    x = torch.zeros(64, 512, 3, dtype=torch.float64)
    noise = A.apply(x, A.identity_params(64), torch.arange(64), spec)
    assert abs(noise.mean().item()) < 2e-4 and abs(noise.std().item() - 0.01) < 2e-4
    assert abs((noise.abs() < 0.01).double().mean().item() - 0.6827) < 0.01


@SETTINGS
@given(seed=st.integers(0, 2**31), keep=st.sampled_from([1, 20, 63, 64]),
       shuffle=st.booleans())
def test_subsample_returns_distinct_points_of_the_input(seed, keep, shuffle):
    x = clouds(seed)
    spec = A.AugmentSpec(jitter_sigma=0.0, subsample=keep, shuffle=shuffle)
    y = A.apply(x, A.identity_params(len(x)), torch.arange(len(x)) + seed, spec)
    assert y.shape == (len(x), keep, 3)
    for i in range(len(x)):
        # exact equality finds each output point's source index
        src = (y[i].unsqueeze(1) == x[i].unsqueeze(0)).all(-1).float().argmax(1)
        assert torch.equal(x[i][src], y[i]) and len(torch.unique(src)) == keep
        if not shuffle:
            assert (src.diff() > 0).all()  # subsampling alone keeps the input order


@pytest.mark.numerics
def test_point_level_ops_depend_only_on_the_seed():
    spec = A.AugmentSpec(dropout=0.5, subsample=32)
    x = clouds(0, b=1).expand(3, -1, -1)
    params = A.identity_params(3)
    y = A.apply(x, params, torch.tensor([7, 7, 8]), spec)
    assert torch.equal(y[0], y[1]) and not torch.equal(y[0], y[2])
    # shape-level params change, point-level choice stays: same points, scaled
    scaled = A.apply(x[:1], params[:1] * torch.tensor([2.0, 2, 2, 0, 0, 0, 0]),
                     torch.tensor([7]), A.AugmentSpec(dropout=0.5, subsample=32,
                                                      jitter_sigma=0.0))
    plain = A.apply(x[:1], params[:1], torch.tensor([7]),
                    A.AugmentSpec(dropout=0.5, subsample=32, jitter_sigma=0.0))
    assert torch.equal(scaled, plain * 2)


def test_dropout_replaces_points_by_the_first_point():
    spec = A.AugmentSpec(dropout=0.9, jitter_sigma=0.0)
    x = clouds(1, b=32, p=256)
    y = A.apply(x, A.identity_params(32), torch.arange(32), spec)
    dropped = (y == y[:, :1]).all(-1).float().mean(1)  # includes the first point itself
    assert dropped.max() <= 0.9 + 0.1 and dropped.min() < 0.1 and dropped.max() > 0.4


@pytest.mark.numerics
def test_rotation_about_the_up_axis():
    x = clouds(2, b=8)
    angles = torch.linspace(0, 2 * math.pi, 8)
    params = A.identity_params(8)
    params[:, 6] = angles
    for up in (0, 1, 2):
        spec = A.AugmentSpec(rotate=True, up_axis=up, jitter_sigma=0.0, shuffle=False)
        y = A.apply(x, params, torch.zeros(8, dtype=torch.int64), spec)
        assert torch.equal(y[..., up], x[..., up])
        a, c = [i for i in range(3) if i != up]
        x64, angles64 = x.double(), angles.double()
        cos, sin = torch.cos(angles64)[:, None], torch.sin(angles64)[:, None]
        expected_a = cos * x64[..., a] - sin * x64[..., c]
        # cos and sin rounded to float32, two products, their difference: each term <= |x|
        assert_close_to_reference(y[..., a], expected_a, 3, scale=2 * float(x.abs().max()))
    # float64 from + - × only, rounded once to float32: one rounding of the exact value
    angles = torch.linspace(-20, 20, 10001)
    cos, sin = A._cos_sin(angles)
    assert cos.dtype == sin.dtype == torch.float32
    assert_close_to_reference(cos, torch.cos(angles.double()), 1, scale=1.0)
    assert_close_to_reference(sin, torch.sin(angles.double()), 1, scale=1.0)


GOLDEN = "7a257ba34a19ecf2"  # sha256 prefix of params, seeds and apply output below


@pytest.mark.numerics
def test_golden_output_is_pinned():
    """Record sets replay through this code: any change to the bytes it produces needs a new
    AugmentSpec.VERSION. (Pure integer/IEEE arithmetic: platform-independent.)"""
    spec = A.AugmentSpec(rotate=True, dropout=0.3, subsample=48)
    params, seeds = A.keyed_params(A.row_keys(1234, torch.arange(6), 2), spec)
    x = ((torch.arange(6 * 64 * 3) % 97 - 48) / 64.0).reshape(6, 64, 3)  # exact inputs
    y = A.apply(x, params.half().float(), seeds, spec)
    digest = hashlib.sha256(raw(params) + raw(seeds) + raw(y)).hexdigest()
    assert digest[:16] == GOLDEN, digest



@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_gives_the_same_bytes_as_cpu():
    spec = A.AugmentSpec(rotate=True, dropout=0.3, subsample=500)
    x = clouds(3, b=16, p=1024)
    params, seeds = A.sample_params(16, torch.Generator().manual_seed(3), spec)
    cpu = A.apply(x, params, seeds, spec)
    gpu = A.apply(x.cuda(), params.cuda(), seeds.cuda(), spec).cpu()
    assert raw(cpu) == raw(gpu)
    keys = A.row_keys(9, torch.arange(100), 1)
    assert torch.equal(A.keyed_params(keys.cuda(), spec)[0].cpu(), A.keyed_params(keys, spec)[0])


def test_spec_roundtrip_and_rejects_unknown_or_bad():
    spec = A.AugmentSpec(rotate=True, subsample=512)
    assert A.AugmentSpec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["version"] == A.AugmentSpec.VERSION
    with pytest.raises(RecordError, match="version"):
        A.AugmentSpec.from_dict({**spec.to_dict(), "version": 99})
    with pytest.raises(RecordError, match="unknown"):
        A.AugmentSpec.from_dict({**spec.to_dict(), "warp": 1})
    with pytest.raises(RecordError, match="dropout"):
        A.AugmentSpec.from_dict({**spec.to_dict(), "dropout": 1.5})
    with pytest.raises(ConfigError, match="scale"):
        A.AugmentSpec(scale_low=2.0, scale_high=1.0)


def test_the_config_augment_section_is_the_spec():
    from pointkd.config.merge import to_dict
    from pointkd.config.run import load_config

    cfg = load_config(None, ["augment.rotate=true", "augment.subsample=256",
                             "augment.dropout=0.2", "data.path=synthetic"])
    spec = cfg.augment
    assert isinstance(spec, A.AugmentSpec)  # one declaration of the fields, not a mirror
    assert spec.rotate and spec.subsample == 256 and spec.dropout == 0.2
    # the manifest form leaves the mix settings out when nothing is mixed (old manifests
    # stay byte-identical); the config keeps every field
    manifest_form = {k: v for k, v in spec.to_dict().items() if k != "version"}
    assert to_dict(cfg)["augment"] == {**manifest_form, "mix": "none", "mix_prob": 0.5,
                                       "mix_max": 0.5}
    with pytest.raises(ConfigError, match="'augment.dropout' must be < 1.0, got 1.5"):
        load_config(None, ["augment.dropout=1.5"])
    with pytest.raises(ConfigError, match="need 0 < scale_low <= scale_high"):
        load_config(None, ["augment.scale_low=2.0"])
    # overrides are checked together, once all are in (not one by one)
    wide = load_config(None, ["augment.scale_low=2.0", "augment.scale_high=3.0"]).augment
    assert (wide.scale_low, wide.scale_high) == (2.0, 3.0)
