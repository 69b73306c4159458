"""Point ops against brute-force references, including tiled (large-P) cases."""

from __future__ import annotations

import pytest
import torch
from _numerics import (
    assert_close_pair,
    assert_close_to_reference,
    float64_copy,
    n_eff,
)

from pointkd.models import layers, ops


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Small tensors: one thread is as fast, and immune to other processes on the CPU (two
    spinning OpenMP threads on a busy 2-core machine made these tests ~10× slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cloud(b: int, n: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, n, c, generator=g) * 2 - 1


def _ref_sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, :, None, :].double() - b[:, None, :, :].double()).pow(2).sum(-1)


def _ref_fps(xyz: torch.Tensor, m: int) -> torch.Tensor:
    """The textbook loop of the public PyTorch ports, started at index 0."""
    b, n, _ = xyz.shape
    idx = torch.zeros(b, m, dtype=torch.long)
    dist = torch.full((b, n), float("inf"))
    far = torch.zeros(b, dtype=torch.long)
    for i in range(m):
        idx[:, i] = far
        centroid = xyz[torch.arange(b), far].view(b, 1, 3)
        dist = torch.minimum(dist, ((xyz - centroid) ** 2).sum(-1))
        far = dist.argmax(-1)
    return idx


def _ref_ball_query(radius: float, nsample: int, xyz, new_xyz) -> torch.Tensor:
    """Sort-based reference (first nsample in-ball indices, padded with the first)."""
    b, n, _ = xyz.shape
    d = _ref_sqdist(new_xyz, xyz)
    g = torch.arange(n).expand(b, new_xyz.shape[1], n).clone()
    g[d > radius**2] = n
    g = torch.cat([g, torch.full_like(g[:, :, :1], n).expand(-1, -1, max(0, nsample - n))], -1)
    g = g.sort(-1).values[:, :, :nsample]
    nearest = d.argmin(-1, keepdim=True)
    first = torch.where(g[:, :, :1] == n, nearest, g[:, :, :1])
    return torch.where(g == n, first, g)


@pytest.fixture
def small_tiles(monkeypatch):
    """Force many tiles (both the multi-batch and the per-row branch) on small inputs."""
    monkeypatch.setattr(ops, "TILE_ELEMENTS", 200)


@pytest.mark.numerics
def test_square_distance():
    """|a|² + |b|² − 2 a·b: three sums of 5, cancelling; the summands' magnitude is at most
    2 (|a|² + |b|²)."""
    a, b = _cloud(2, 50, 5, 1), _cloud(2, 70, 5, 2)
    scale = 2 * float(a.square().sum(-1).max() + b.square().sum(-1).max())
    assert_close_to_reference(ops.square_distance(a, b), _ref_sqdist(a, b), n_eff(5, 5, 5, 3),
                              scale=scale)


@pytest.mark.numerics
@pytest.mark.parametrize("b,n,m", [(3, 300, 64), (1, 20, 20), (2, 1024, 512)])
def test_fps_matches_reference(b, n, m):
    xyz = _cloud(b, n, seed=n)
    idx = ops.farthest_point_sample(xyz, m)
    assert idx.dtype == torch.int64 and idx.shape == (b, m)
    assert torch.equal(idx, _ref_fps(xyz, m))
    assert all(len(set(row.tolist())) == m for row in idx)


def test_fps_start_and_errors():
    xyz = _cloud(4, 100)
    assert (ops.farthest_point_sample(xyz, 8, start=7)[:, 0] == 7).all()
    rnd = ops.farthest_point_sample(xyz, 8, start=None)
    assert rnd.min() >= 0 and rnd.max() < 100
    with pytest.raises(ValueError):
        ops.farthest_point_sample(xyz, 101)


def _check_knn(query, ref, k):
    idx = ops.knn(query, ref, k)
    expect = _ref_sqdist(query, ref).topk(k, -1, largest=False).indices
    assert idx.shape == expect.shape
    assert torch.equal(idx.sort(-1).values, expect.sort(-1).values)


@pytest.mark.numerics
@pytest.mark.parametrize("c", [3, 64])
def test_knn_matches_reference(c, small_tiles):
    x = _cloud(3, 120, c, seed=c)
    _check_knn(x, x, 20)  # self-query, as in DGCNN
    _check_knn(_cloud(3, 33, c, seed=9), x, 5)
    assert (ops.knn(x, x, 1)[..., 0] == torch.arange(120)).all()  # a point finds itself


@pytest.mark.numerics
def test_knn_large_p_is_tiled(monkeypatch):
    x = _cloud(1, 8192, seed=3)
    query = x[:, ::37]  # 222 x 8192 distances: 7 tiles of at most TILE_ELEMENTS
    products = []  # the distance tiles knn computes, one torch.bmm each
    real_bmm = torch.bmm

    def spy_bmm(a, b):
        out = real_bmm(a, b)
        products.append(out.numel())
        return out

    monkeypatch.setattr(torch, "bmm", spy_bmm)
    idx = ops.knn(query, x, 16)
    monkeypatch.undo()
    assert len(products) > 1 and max(products) <= ops.TILE_ELEMENTS
    assert sum(products) == query.shape[1] * x.shape[1]  # every distance once
    expect = _ref_sqdist(query, x).topk(16, -1, largest=False).indices
    assert torch.equal(idx.sort(-1).values, expect.sort(-1).values)


def test_tiles_cover_and_bounded():
    for b, m, n in [(4, 512, 1024), (16, 128, 512), (2, 7, 100000), (3, 1, 5)]:
        seen = torch.zeros(b, m, dtype=torch.int)
        for bs, ms in ops._tiles(b, m, n, torch.device("cpu")):
            seen[bs, ms] += 1
            rows = len(range(*bs.indices(b))) * len(range(*ms.indices(m)))
            assert rows * n <= max(ops.TILE_ELEMENTS, n)
        assert (seen == 1).all()


@pytest.mark.numerics
@pytest.mark.parametrize("radius,nsample", [(0.2, 32), (0.4, 64), (2.0, 8)])
def test_ball_query_matches_reference(radius, nsample, small_tiles):
    xyz = _cloud(2, 400, seed=5)
    new_xyz = xyz[:, ops.farthest_point_sample(xyz, 50)[0]]
    idx = ops.ball_query(radius, nsample, xyz, new_xyz)
    assert idx.shape == (2, 50, nsample) and idx.dtype == torch.int64
    assert torch.equal(idx, _ref_ball_query(radius, nsample, xyz, new_xyz))


@pytest.mark.numerics
def test_ball_query_empty_ball_and_large_p():
    xyz = _cloud(2, 6000, seed=6)
    new_xyz = torch.cat([xyz[:, :100], torch.full((2, 1, 3), 5.0)], 1)  # last: far outside
    idx = ops.ball_query(0.1, 16, xyz, new_xyz)
    assert torch.equal(idx, _ref_ball_query(0.1, 16, xyz, new_xyz))
    assert (idx[:, -1] == _ref_sqdist(new_xyz[:, -1:], xyz).argmin(-1)).all()


@pytest.mark.numerics
@pytest.mark.parametrize("shape", [(2, 30), (2, 30, 7)])
def test_gather_points_values_and_grad(shape):
    x = torch.randn(2, 50, 6, requires_grad=True)
    idx = torch.randint(0, 50, shape)
    out = ops.gather_points(x, idx)
    batch = torch.arange(2).view(2, *[1] * (len(shape) - 1))
    assert torch.equal(out, x[batch, idx])
    w = torch.randn_like(out)
    (g,) = torch.autograd.grad((out * w).sum(), x)
    x64 = x.detach().double().requires_grad_()
    (g_ref,) = torch.autograd.grad((x64[batch, idx] * w.double()).sum(), x64)
    # a row's gradient sums the picks of it: at most idx.numel() / 2 per cloud
    assert_close_to_reference(g, g_ref, n_eff(idx.numel() // 2))


@pytest.mark.numerics
def test_gather_max(small_tiles):
    x = torch.randn(3, 40, 8)
    idx = torch.randint(0, 40, (3, 25, 6))
    assert torch.equal(ops.gather_max(x, idx), ops.gather_points(x, idx).amax(2))


def _reference_mlp(mlp: layers.SharedMLP, x: torch.Tensor) -> torch.Tensor:
    """Linear → BatchNorm1d → activation the plain way (also updates running stats)."""
    y = mlp.bn(mlp.fc(x).reshape(-1, mlp.fc.out_features)).view(*x.shape[:-1], -1)
    return torch.nn.functional.leaky_relu(y, mlp.slope)


@pytest.mark.numerics
def test_shared_mlp_eval_folding_is_exact():
    """Folded (W·γ/σ, one matmul) against Linear then BatchNorm in float64: the same function
    up to float rounding (a dot product of 5, the folding's few roundings)."""
    torch.manual_seed(0)
    for bias, slope in [(True, 0.0), (False, 0.2)]:
        mlp = layers.SharedMLP(5, 7, bias=bias, slope=slope)
        x = torch.randn(4, 9, 5)
        for _ in range(3):  # give BN running stats non-trivial values
            mlp(x * 3 + 1)
        with torch.no_grad():
            mlp.bn.weight.copy_(torch.randn(7))  # negative gammas too
        mlp.eval()
        ref = _reference_mlp(float64_copy(mlp), x.double())
        n = n_eff(5, 1, 1, 1)  # the dot product; σ, γ/σ, the bias
        assert_close_to_reference(mlp(x), ref, n, msg=f"bias={bias}")
        assert_close_to_reference(mlp.forward_max(x), ref.amax(-2), n, msg=f"bias={bias} max")


@pytest.mark.numerics
@pytest.mark.parametrize("linear", [True, False])
@pytest.mark.parametrize("slope,shape", [(0.0, (3, 40, 6)), (0.2, (2, 5, 16, 6))])
def test_fused_bn_act_max_matches_reference(slope, shape, linear, small_tiles):
    """Training-mode pooling, with the Linear recomputed chunk-wise (`forward_max`) or given
    its output (`pool`): outputs, all gradients and running stats as BN → act → amax, in
    float64. The Linear is exact in float32 (weights on a 2^-6 grid, inputs on 2^-4: every
    product and sum representable), so the tied rows stay exact ties whatever the GEMM's
    row blocking (identical rows in different blocks can round differently: a broken tie
    moves half a gradient, not a rounding error)."""
    torch.manual_seed(1)
    fused = layers.SharedMLP(6, 9, slope=slope)
    with torch.no_grad():
        fused.bn.weight.copy_(torch.randn(9))  # some negative gains: min is selected
        fused.bn.bias.copy_(torch.randn(9))
        fused.fc.weight.copy_((fused.fc.weight * 64).round() / 64)
        fused.fc.bias.copy_((fused.fc.bias * 64).round() / 64)
    plain = float64_copy(fused)  # the plain ops in float64
    x = ((torch.randn(*shape) * 2 + 3) * 16).round() / 16
    x[..., 1, :] = x[..., 0, :]  # exact ties, as ball-query padding produces
    xf, xp = x.clone().requires_grad_(), x.double().requires_grad_()
    out_f = fused.forward_max(xf) if linear else fused.pool(fused.fc(xf))
    z = plain.fc(xp)
    z.retain_grad()
    y = plain.bn(z.reshape(-1, 9)).view(z.shape)
    out_p = torch.nn.functional.leaky_relu(y, slope).amax(-2)
    rows = x.numel() // x.shape[-1]
    n = n_eff(6, rows)  # the Linear, the BatchNorm statistics (and their gradient sums)
    assert_close_to_reference(out_f, out_p, n, msg="output")
    w = torch.randn_like(out_f)
    (out_f * w).sum().backward()
    (out_p * w.double()).sum().backward()
    assert_close_to_reference(xf.grad, xp.grad, n, msg="input gradient")
    # the Linear's bias gradient is 0 (BatchNorm removes the mean): rounding noise, on the
    # scale of its summands, the per-row gradients
    bias_scale = float(z.grad.abs().reshape(-1, 9).sum(0).max())
    for (name, a), b in zip(fused.named_parameters(), plain.parameters(), strict=True):
        assert_close_to_reference(a.grad, b.grad, n, msg=name,
                                  scale=bias_scale if name == "fc.bias" else None)
    for name in ("running_mean", "running_var"):
        assert_close_to_reference(getattr(fused.bn, name), getattr(plain.bn, name), n, msg=name)
    assert torch.equal(fused.bn.num_batches_tracked, plain.bn.num_batches_tracked)


@pytest.mark.numerics
def test_pool_gathered_matches_reference(small_tiles):
    """EdgeConv's fused path: act(BN(table[index] + centre)).amax over neighbours."""
    torch.manual_seed(2)
    fused = layers.SharedMLP(4, 5, bias=False, slope=0.2)
    with torch.no_grad():
        fused.bn.weight.copy_(torch.randn(5))
    plain = float64_copy(fused)  # the plain ops in float64
    table, centre = torch.randn(30, 5), torch.randn(12, 5)
    index = torch.randint(0, 30, (12, 6))
    index[:, 1] = index[:, 0]  # repeated neighbours: ties
    tf, cf = table.clone().requires_grad_(), centre.clone().requires_grad_()
    tp, cp = table.double().requires_grad_(), centre.double().requires_grad_()
    out_f = fused.pool_gathered(tf, index, cf)
    z = tp[index] + cp.unsqueeze(1)
    out_p = torch.nn.functional.leaky_relu(plain.bn(z.reshape(-1, 5)), 0.2).view(12, 6, 5)
    out_p = out_p.amax(1)
    n = n_eff(12 * 6, 1)  # BatchNorm statistics over 72 rows (and their gradient sums); z
    assert_close_to_reference(out_f, out_p, n, msg="output")
    w = torch.randn_like(out_f)
    (out_f * w).sum().backward()
    (out_p * w.double()).sum().backward()
    pairs = {"table gradient": (tf.grad, tp.grad), "centre gradient": (cf.grad, cp.grad),
             "gain gradient": (fused.bn.weight.grad, plain.bn.weight.grad),
             "running_var": (fused.bn.running_var, plain.bn.running_var)}
    for name, (a, b) in pairs.items():
        assert_close_to_reference(a, b, n, msg=name)


@pytest.mark.numerics
@pytest.mark.parametrize("ties", [False, True])
def test_pool_gathered_backward_without_remaking_z(ties, small_tiles):
    """The gathered backward (winners kept by forward, ties made again) against autograd
    through the unfused ops: mixed-sign gains, rows used by many groups, some tied groups."""
    torch.manual_seed(5)
    c = 7
    fused = layers.SharedMLP(4, c, bias=False)
    with torch.no_grad():
        fused.bn.weight.copy_(torch.randn(c))
        fused.bn.bias.copy_(torch.randn(c))
    plain = float64_copy(fused)  # the plain ops in float64
    table, centre = torch.randn(50, c), torch.randn(40, c)
    index = torch.randint(0, 50, (40, 9))
    if ties:
        index[::3, 4] = index[::3, 2]  # a third of the groups repeat a neighbour
        table[7] = table[3]  # two rows with equal values
    tf, cf = table.clone().requires_grad_(), centre.clone().requires_grad_()
    tp, cp = table.double().requires_grad_(), centre.double().requires_grad_()
    out_f = fused.pool_gathered(tf, index, cf)
    z = tp[index] + cp.unsqueeze(1)
    out_p = torch.relu(plain.bn(z.reshape(-1, c))).view(40, 9, c).amax(1)
    n = n_eff(40 * 9, 1)  # BatchNorm statistics over 360 rows (and their gradient sums); z
    assert_close_to_reference(out_f, out_p, n, msg="output")
    w = torch.randn_like(out_f)
    (out_f * w).sum().backward()
    (out_p * w.double()).sum().backward()
    assert_close_to_reference(tf.grad, tp.grad, n, msg="table gradient")
    assert_close_to_reference(cf.grad, cp.grad, n, msg="centre gradient")
    assert_close_to_reference(fused.bn.weight.grad, plain.bn.weight.grad, n, msg="gain gradient")
    assert_close_to_reference(fused.bn.bias.grad, plain.bn.bias.grad, n, msg="bias gradient")


def test_op_timing_only_when_active():
    xyz = _cloud(2, 200)
    ops.farthest_point_sample(xyz, 10)
    with ops.op_timing() as t:
        idx = ops.farthest_point_sample(xyz, 10)
        ops.gather_points(xyz, ops.ball_query(0.3, 8, xyz, ops.gather_points(xyz, idx)))
    assert set(t) == {"farthest_point_sample", "ball_query", "gather_points"}
    assert all(v > 0 for v in t.values())
    assert ops._timings is None


@pytest.mark.numerics
def test_export_forms_match(monkeypatch):
    """The whole-tensor forms used while tracing/exporting give the same results."""
    xyz = _cloud(2, 300, seed=8)
    new_xyz = torch.cat([xyz[:, :40], torch.full((2, 1, 3), 5.0)], 1)
    feats = torch.randn(2, 300, 16)
    idx = torch.randint(0, 300, (2, 41, 6))

    def run():
        return (ops.farthest_point_sample(xyz, 32), ops.ball_query(0.3, 16, xyz, new_xyz),
                ops.ball_query(0.5, 400, xyz, new_xyz),  # nsample > N
                ops.knn(new_xyz, xyz, 7).sort(-1).values, ops.gather_max(feats, idx))

    eager = run()
    assert torch.equal(eager[2], _ref_ball_query(0.5, 400, xyz, new_xyz))
    monkeypatch.setattr(ops, "_tracing", lambda: True)
    for a, b in zip(eager, run(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.slow
@pytest.mark.numerics
def test_native_fps_knn_matches_the_torch_ops(monkeypatch):
    """The optional C++ kernel (POINTKD_NATIVE_OPS=1; compiled once, then cached) gives the
    same samples and distance rows bit for bit, and the same neighbour sets and distances."""
    from pointkd.models.kernels import native

    monkeypatch.setenv("POINTKD_NATIVE_OPS", "1")
    if not native.available():
        pytest.skip("the C++ kernel could not be built here (see the warning)")
    xyz = _cloud(3, 500, seed=4)
    xyz[1, 10] = xyz[1, 20]  # a duplicate point: distance ties
    idx, table = ops.fps_with_distances(xyz, 64)
    nbr, sq = ops.nearest(table, 12)
    n_idx, n_nbr, n_sq, n_table = native.fps_knn(xyz, 64, 12, 16)
    assert torch.equal(n_idx, idx)
    assert torch.equal(n_table, table[:, :16])
    assert torch.equal(n_sq.sort(-1).values, sq.sort(-1).values)
    assert torch.equal(n_sq, table.gather(2, n_nbr))  # the neighbours have those distances


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("n, dups", [(1024, 0), (40, 0), (300, 120)])
def test_native_neighbours_are_the_stable_sort_prefix(monkeypatch, n, dups):
    """The C++ selection (a bound from 64 strided groups, candidates below it; all points
    below 64; a sort when ties leave more than 64 candidates) returns exactly the first k
    of a stable sort of each distance row: ascending, ties to the lowest index."""
    native = _native(monkeypatch)
    xyz = _cloud(2, n, seed=7)
    xyz[:, 1:dups + 1] = xyz[:, :1]  # `dups` copies of point 0: many distances tie
    m, k = min(64, n), 16
    idx, nbr, sq, table = native.fps_knn(xyz, m, k, m)
    order = table.argsort(dim=-1, stable=True)[..., :k]
    assert torch.equal(nbr, order)
    assert torch.equal(sq, table.gather(2, order))
    refs = min(48, m)
    sub = table[:, :16].gather(2, idx[:, None, :refs].expand(-1, 16, -1))
    p_nbr, p_sq = native.prefix_knn(xyz, idx, 16, refs, k)
    assert torch.equal(p_nbr, sub.argsort(dim=-1, stable=True)[..., :k])
    assert torch.equal(p_sq, sub.gather(2, p_nbr))


def _native(monkeypatch):
    """The optional C++ kernels, or a skip where they cannot be built."""
    from pointkd.models.kernels import native

    monkeypatch.setenv("POINTKD_NATIVE_OPS", "1")
    if not native.available():
        pytest.skip("the C++ kernels could not be built here (see the warning)")
    return native


@pytest.mark.slow
@pytest.mark.numerics
def test_native_prefix_knn_matches_the_table_selection(monkeypatch):
    """Later stages' neighbours from the coordinates: the same distances as the FPS table's
    entries, bit for bit, and the same neighbour sets (ties aside)."""
    native = _native(monkeypatch)
    xyz = _cloud(3, 400, seed=5)
    xyz[2, 30] = xyz[2, 31]  # duplicate points: distance ties
    idx, table = ops.fps_with_distances(xyz, 96)
    for m, refs, k in ((32, 96, 10), (8, 32, 8), (5, 5, 5)):
        cols = idx[:, None, :refs].expand(-1, m, -1)
        sub = table[:, :m].gather(2, cols)  # anchors × the first `refs` samples
        nbr, sq = ops.nearest(sub, k)
        n_nbr, n_sq = native.prefix_knn(xyz, idx, m, refs, k)
        assert torch.equal(n_sq.sort(-1).values, sq.sort(-1).values)
        assert torch.equal(n_sq, sub.gather(2, n_nbr))  # the neighbours have those distances
        assert int(n_nbr.max()) < refs and len(set(n_nbr[0, 0].tolist())) == k


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("slope", [0.0, 0.2])
def test_native_inference_pool_equals_the_torch_ops(monkeypatch, slope):
    native = _native(monkeypatch)
    g = torch.Generator().manual_seed(6)
    table = torch.randn(2, 50, 37, generator=g)  # 37 channels: the vector loop and its tail
    nbr = torch.randint(0, 50, (2, 20, 7), generator=g)
    centre = torch.randn(2, 20, 37, generator=g)
    expected = torch.nn.functional.leaky_relu(ops.gather_max(table, nbr) + centre, slope)
    assert torch.equal(native.gather_max(table, nbr, centre, slope), expected)
    with pytest.raises(RuntimeError, match="out of range"):
        native.gather_max(table, nbr.clamp_max(0) + 50, centre, slope)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("negative_gain", [False, True])
def test_native_gathered_pool_forward_and_gradients_match_the_torch_ops(monkeypatch,
                                                                        negative_gain):
    """Training-mode pool over gathered rows (`SharedMLP.pool_gathered`), forward and every
    gradient, with and without the C++ kernels; rows with tied maxima included."""
    g = torch.Generator().manual_seed(7)
    table = torch.randn(60, 37, generator=g)
    index = torch.randint(0, 60, (24, 9), generator=g)
    index[0, :3] = 4  # a row picked three times in one group: tied maxima
    centre = torch.randn(24, 37, generator=g)
    weights = torch.randn(24, 37, generator=g)

    def run(flag: str):
        monkeypatch.setenv("POINTKD_NATIVE_OPS", flag)
        torch.manual_seed(0)
        mlp = layers.SharedMLP(5, 37)
        if negative_gain:
            with torch.no_grad():
                mlp.bn.weight[::3] *= -1
        t, c = table.clone().requires_grad_(), centre.clone().requires_grad_()
        out = mlp.pool_gathered(t, index, c)
        (out * weights).sum().backward()
        return out.detach(), t.grad, c.grad, mlp.bn.weight.grad, mlp.bn.bias.grad, \
            mlp.bn.running_mean.clone(), mlp.bn.running_var.clone()

    _native(monkeypatch)
    names = ("output", "table gradient", "centre gradient", "gain gradient", "bias gradient",
             "running_mean", "running_var")
    n = n_eff(24 * 9, 1)  # BatchNorm statistics over 216 rows (and their gradient sums); z
    for name, a, b in zip(names, run("1"), run("0"), strict=True):
        assert_close_pair(a, b, n, msg=name)  # two float32 computations, other sum orders


@pytest.mark.numerics
def test_cat_linear_equals_linear_forward_and_backward():
    """`cat_linear` (no input gradient for the pieces that need none) against autograd's
    Linear on the concatenation: the same output, and the same gradients."""
    g = torch.Generator().manual_seed(8)
    coords = torch.randn(4, 30, 3, generator=g)  # no gradient, as a cloud's coordinates
    feats = torch.randn(4, 30, 16, generator=g, requires_grad=True)
    weight = torch.randn(24, 19, generator=g, requires_grad=True)
    bias = torch.randn(24, generator=g, requires_grad=True)
    up = torch.randn(4, 30, 24, generator=g)
    grads = []
    for fn in (lambda: layers.cat_linear([coords, feats], weight, bias),
               lambda: torch.nn.functional.linear(torch.cat([coords, feats], -1), weight, bias)):
        out = fn()
        grads.append((out.detach(), *torch.autograd.grad((out * up).sum(),
                                                         [feats, weight, bias])))
    # both in float32 against the float64 Linear: the output sums 19 products, the weight
    # and bias gradients 4 × 30 rows, the feature gradient 24 outputs
    with torch.no_grad():
        ref = torch.nn.functional.linear(torch.cat([coords, feats], -1).double(),
                                         weight.double(), bias.double())
    f64, w64, b64 = (t.detach().double().requires_grad_() for t in (feats, weight, bias))
    out64 = torch.nn.functional.linear(torch.cat([coords.double(), f64], -1), w64, b64)
    refs = (ref, *torch.autograd.grad((out64 * up.double()).sum(), [f64, w64, b64]))
    names, lengths = ("output", "feature gradient", "weight gradient", "bias gradient"), \
        (19, 24, 120, 120)
    for name, a, b, r, n in zip(names, *grads, refs, lengths, strict=True):
        assert_close_to_reference(a, r, n_eff(n), msg=f"cat_linear {name}")
        assert_close_to_reference(b, r, n_eff(n), msg=f"F.linear {name}")
    with torch.no_grad():  # no autograd: the plain ops
        assert torch.equal(layers.cat_linear([coords, feats], weight, bias), grads[1][0])


@pytest.mark.numerics
def test_max_k_and_cloud_std_match_the_torch_ops():
    """PointMLP's neighbour max and per-cloud std with cheaper CPU paths: amax's values and
    gradient exactly (ties split evenly), torch.std's within float rounding."""
    g = torch.Generator().manual_seed(9)
    x = torch.randn(3, 5, 6, 4, generator=g).relu()  # zeros: many tied maxima
    x[0, 0, 1] = x[0, 0, 2]  # tied positive maxima
    up = torch.randn(3, 5, 4, generator=g)
    results = []
    for fn in (layers.max_k, lambda t: t.amax(-2)):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        out.backward(up)
        results.append((out.detach(), leaf.grad))
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)
    y = torch.randn(4, 500, generator=g) * 0.1 + 0.3
    up = torch.randn(4, generator=g)
    results = []
    for fn, dtype in ((layers.cloud_std, torch.float32), (lambda t: t.std(dim=-1), torch.float32),
                      (lambda t: t.std(dim=-1), torch.float64)):
        leaf = y.detach().to(dtype).requires_grad_()
        out = fn(leaf)
        out.backward(up.to(dtype))
        results.append((out.detach(), leaf.grad))
    n = n_eff(500, 500)  # the mean, then the squared deviations
    for name, ours, torchs, ref in zip(("std", "std gradient"), *results, strict=True):
        assert_close_to_reference(ours, ref, n, msg=f"cloud_std {name}")
        assert_close_to_reference(torchs, ref, n, msg=f"torch.std {name}")


def test_training_on_cpu_keeps_freed_memory_unless_opted_out(monkeypatch):
    """train/distill on CPU switch glibc to reusing freed heap memory (exact, faster);
    POINTKD_KEEP_FREED_MEMORY=0 opts out."""
    import pointkd.cpu
    from pointkd import cli

    calls = []
    monkeypatch.setattr(pointkd.cpu, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.delenv("POINTKD_KEEP_FREED_MEMORY", raising=False)
    cli._keep_freed_memory_on_cpu("cpu")
    assert calls == [1]
    monkeypatch.setenv("POINTKD_KEEP_FREED_MEMORY", "0")
    cli._keep_freed_memory_on_cpu("cpu")
    assert calls == [1]


def test_keep_freed_memory_is_set_on_glibc():
    import platform

    from pointkd.cpu import keep_freed_memory

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    assert keep_freed_memory() is True
