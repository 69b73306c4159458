"""Replayable augmentation: determinism, identity, batch == one-by-one, ranges, shapes."""

from __future__ import annotations

import math

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointkd import augment as A

specs = st.builds(
    A.AugmentSpec, rotate=st.booleans(), subsample=st.sampled_from([0, 16, 40]),
    shuffle=st.booleans(), dropout=st.sampled_from([0.0, 0.5]),
    jitter_sigma=st.sampled_from([0.0, 0.01]))
SETTINGS = settings(max_examples=30, deadline=None)


def clouds(seed: int, b: int = 4, p: int = 64) -> torch.Tensor:
    return torch.rand(b, p, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@SETTINGS
@given(spec=specs, seed=st.integers(0, 2**31))
def test_apply_is_deterministic_and_batch_equals_one_by_one(spec, seed):
    x = clouds(seed)
    params, seeds = A.sample_params(len(x), torch.Generator().manual_seed(seed), spec)
    a = A.apply(x, params, seeds, spec)
    b = A.apply(x.clone(), params.clone(), seeds.clone(), spec)
    one = torch.cat([A.apply(x[i : i + 1], params[i : i + 1], seeds[i : i + 1], spec)
                     for i in range(len(x))])
    assert torch.equal(a, b) and torch.equal(a, one)


@SETTINGS
@given(spec=specs, seed=st.integers(0, 2**31))
def test_shapes_and_dtypes_preserved(spec, seed):
    x = clouds(seed)
    params, seeds = A.sample_params(len(x), torch.Generator().manual_seed(seed), spec)
    assert params.dtype == torch.float32 and seeds.dtype == torch.int64
    y = A.apply(x, params, seeds, spec)
    keep = spec.subsample if 0 < spec.subsample < x.shape[1] else x.shape[1]
    assert y.shape == (len(x), keep, 3) and y.dtype == x.dtype


@SETTINGS
@given(seed=st.integers(0, 2**31))
def test_identity_params_give_identity(seed):
    spec = A.AugmentSpec(jitter_sigma=0.0, shuffle=False)
    x = clouds(seed)
    assert torch.equal(A.apply(x, A.identity_params(len(x)), torch.zeros(len(x), dtype=torch.int64),
                               spec), x)
    rot = A.AugmentSpec(jitter_sigma=0.0, shuffle=False, rotate=True)
    assert torch.allclose(A.apply(x, A.identity_params(len(x)), torch.zeros(len(x),
                                  dtype=torch.int64), rot), x)


@SETTINGS
@given(rotate=st.booleans(), run_seed=st.integers(0, 2**40), k=st.integers(0, 50))
def test_keyed_params_are_pure_and_in_range(rotate, run_seed, k):
    spec = A.AugmentSpec(rotate=rotate)
    keys = A.row_keys(run_seed, torch.arange(200), k)
    p1, s1 = A.keyed_params(keys, spec)
    p2, s2 = A.keyed_params(keys.clone(), spec)
    assert torch.equal(p1, p2) and torch.equal(s1, s2)
    assert (p1[:, :3] >= spec.scale_low).all() and (p1[:, :3] <= spec.scale_high).all()
    assert (p1[:, 3:6].abs() <= spec.shift).all()
    assert (p1[:, 6] >= 0).all() and (p1[:, 6] < 2 * math.pi + 1e-6).all()
    if not rotate:
        assert (p1[:, 6] == 0).all()
    assert len(torch.unique(keys)) == 200 and len(torch.unique(s1)) == 200


def test_different_rows_get_different_augmentations():
    spec = A.AugmentSpec()
    a, _ = A.keyed_params(A.row_keys(0, torch.arange(10), 0), spec)
    b, _ = A.keyed_params(A.row_keys(0, torch.arange(10), 1), spec)
    c, _ = A.keyed_params(A.row_keys(1, torch.arange(10), 0), spec)
    assert not torch.equal(a, b) and not torch.equal(a, c)


@SETTINGS
@given(seed=st.integers(0, 2**31))
def test_jitter_is_bounded_and_subsample_picks_distinct_input_points(seed):
    spec = A.AugmentSpec(jitter_sigma=0.05, jitter_clip=0.02, shuffle=True)
    x = clouds(seed)
    y = A.apply(x, A.identity_params(len(x)), torch.arange(len(x)), spec)
    matched = (y.unsqueeze(2) - x.unsqueeze(1)).abs().amax(-1).amin(-1)
    assert (matched <= 0.02 + 1e-6).all()
    sub = A.apply(x, A.identity_params(len(x)), torch.arange(len(x)),
                  A.AugmentSpec(jitter_sigma=0.0, subsample=20))
    for i in range(len(x)):
        rows = {tuple(r) for r in sub[i].tolist()}
        assert len(rows) == 20 and rows <= {tuple(r) for r in x[i].tolist()}


def test_point_level_ops_depend_only_on_the_seed():
    spec = A.AugmentSpec(dropout=0.5, subsample=32)
    x = clouds(0, b=2)
    params = A.identity_params(2)
    same = A.apply(x, params, torch.tensor([7, 7]), spec)
    assert torch.equal(same[0] - x[0][0] * 0, A.apply(x[:1], params[:1], torch.tensor([7]),
                                                      spec)[0])
    other = A.apply(x, params, torch.tensor([7, 8]), spec)
    assert not torch.equal(same[1], other[1])


def test_spec_roundtrip_and_rejects_unknown():
    import pytest

    from pointkd.errors import RecordError

    spec = A.AugmentSpec(rotate=True, subsample=512)
    assert A.AugmentSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(RecordError, match="version"):
        A.AugmentSpec.from_dict({**spec.to_dict(), "version": 2})
    with pytest.raises(RecordError, match="unknown"):
        A.AugmentSpec.from_dict({**spec.to_dict(), "warp": 1})
