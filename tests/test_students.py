"""The compact student family: sizes, forward/backward, small inputs, determinism; the
decomposed/fused local stage against a plain reference, the FPS reordering and FPS-table
neighbourhoods, batch independence of every sampler, the optional C++ kernels in a student."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _numerics import (
    assert_close_pair,
    assert_close_to_reference,
    float64_copy,
    module_n_eff,
    n_eff,
    student_n_eff,
)
from conftest import random_clouds

from pointkd.models import count_parameters, create_model, list_models
from pointkd.models.ops import farthest_point_sample, gather_points, knn
from pointkd.models.student import LocalStage, fps_first

NOMINAL = {"student_xs": 0.1e6, "student_s": 0.3e6, "student_m": 0.5e6, "student_l": 1.0e6}


pytestmark = pytest.mark.usefixtures("one_thread")


_clouds = random_clouds


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_student_size_within_15_percent(name):
    n = count_parameters(create_model(name, 40))
    assert abs(n - NOMINAL[name]) / NOMINAL[name] < 0.15, n


def test_student_s_fits_the_cpu_protocol_budget():
    # the benchmark protocol's students must have at most 0.3M parameters at 40 classes
    assert count_parameters(create_model("student_s", 40)) <= 300_000


@pytest.mark.parametrize("name", sorted(NOMINAL))
def test_student_trains_and_is_deterministic_in_eval(name):
    torch.manual_seed(0)
    model = create_model(name, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.rand(8, 128, 3) * 2 - 1, torch.arange(8) % 10
    for _ in range(3):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.isfinite(loss)
    model.eval()
    with torch.inference_mode():
        out = model(torch.rand(2, 1024, 3))
        assert out.shape == (2, 10) and torch.isfinite(out).all()
        assert torch.equal(model(x[:2]), model(x[:2]))
        assert model(torch.rand(1, 20, 3)).shape == (1, 10)  # fewer points than anchors/k


def test_fps_sampler_option_and_bad_arguments():
    model = create_model("student_xs", 5, sampler="fps").eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 300, 3)).shape == (2, 5)
    from pointkd.errors import ModelError

    with pytest.raises(ModelError):
        create_model("student_xs", 5, sampler="magic")
    assert set(NOMINAL) <= set(list_models())


@pytest.mark.numerics
@pytest.mark.parametrize("train", [True, False])
def test_fps_table_neighbourhoods_match_a_knn_per_stage(train):
    """The student takes every stage's neighbours and σ from the FPS distance table; the same
    model running a separate kNN per stage (the reference ops) gives the same logits and
    gradients. 8 clouds: BatchNorm over 3 (the head's rows) is ill-conditioned (its backward
    projects 2 of 3 directions out of the gradient: errors of ~900 eps * scale, measured)."""
    from pointkd.models.student import fps_first

    torch.manual_seed(3)
    model = create_model("student_xs", 6, anchors=(64, 16), k=8)
    x = torch.rand(8, 200, 3) * 2 - 1
    model(x)  # non-trivial running statistics
    model.train(train)

    def reference(points):  # the model's forward with hood=None: kNN and σ per stage
        xyz = fps_first(points, 64)
        feats = model.embed(xyz)
        for stage in model.stages:
            xyz, feats = stage(xyz, feats)
        return model.head(torch.cat([feats.amax(1), feats.mean(1)], -1))

    outs, grads = [], []
    for fn in (model, reference):
        torch.manual_seed(0)  # same dropout mask
        model.zero_grad()
        out = fn(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    # two float32 computations (distances from the FPS loop vs bmm tiles; other blocking):
    # within twice the derived bound; BatchNorm rows at most 8 clouds × 64 anchors × k 8
    n = student_n_eff(model, 200, rows=8 * 64 * 8)
    assert_close_pair(outs[0], outs[1], n, msg="logits")
    for (name, _), a, b in zip(model.named_parameters(), *grads, strict=True):
        assert_close_pair(a, b, n, msg=name)


@pytest.mark.numerics
def test_nearest_agrees_with_knn_and_brute_force():
    from pointkd.models import ops

    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 300, 3, generator=g)
    idx, table = ops.fps_with_distances(pts, 40)
    assert torch.equal(idx, ops.farthest_point_sample(pts, 40))
    anchors = ops.gather_points(pts, idx)
    exact = (anchors[:, :, None].double() - pts[:, None].double()).square().sum(-1)
    # (x - y)² summed over 3 coordinates in float32: a sum of 3
    assert_close_to_reference(table, exact, n_eff(3), msg="distance table")
    nbr, sq = ops.nearest(table, 10)
    assert_close_to_reference(sq, exact.gather(2, nbr), n_eff(3), msg="neighbour distances")
    # the k smallest distances, as a sorted kNN by brute force has them
    assert_close_to_reference(sq.sort(-1).values, exact.sort(-1).values[..., :10], n_eff(3),
                              msg="sorted neighbour distances")
    assert torch.equal(nbr.sort(-1).values, ops.knn(anchors, pts, 10).sort(-1).values)


@pytest.mark.parametrize("native", ["0", "1"])
def test_student_trains_under_bf16_autocast(native, monkeypatch):
    """Mixed dtypes reach the fused gathered pool (bf16 table and centre under autocast):
    both the PyTorch path and the optional C++ one run it on float32 copies."""
    monkeypatch.setenv("POINTKD_NATIVE_OPS", native)
    torch.manual_seed(0)
    model = create_model("student_xs", 5)
    x, y = torch.rand(4, 128, 3) * 2 - 1, torch.arange(4) % 5
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    torch.nn.functional.cross_entropy(out.float(), y).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


@pytest.mark.slow
@pytest.mark.numerics
@pytest.mark.parametrize("train", [True, False])
def test_native_kernels_match_the_torch_ops_in_a_student(train, monkeypatch):
    """The whole student with and without the optional C++ kernels (sampling, every stage's
    neighbours, the gathered pool forward and backward, the inference pool): the same logits
    and gradients within float rounding."""
    from pointkd.models.kernels import native

    monkeypatch.setenv("POINTKD_NATIVE_OPS", "1")
    if not native.available():
        pytest.skip("the C++ kernels could not be built here (see the warning)")
    x = torch.rand(8, 300, 3) * 2 - 1  # 8 clouds: see test_fps_table_neighbourhoods_...
    x[0, 7] = x[0, 8]  # a duplicate point
    results = []
    for flag in ("1", "0"):
        monkeypatch.setenv("POINTKD_NATIVE_OPS", flag)
        torch.manual_seed(0)
        model = create_model("student_xs", 6, anchors=(64, 16), k=8)
        model(x)  # non-trivial running statistics
        model.train(train)
        torch.manual_seed(1)  # the same dropout mask
        out = model(x)
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        model.eval()
        with torch.inference_mode():  # no gradient: the C++ inference pool
            infer = model(x)
        results.append((out.detach(), [p.grad.clone() for p in model.parameters()], infer))
    (out_n, grads_n, infer_n), (out_t, grads_t, infer_t) = results
    # the neighbours are the same (bit for bit: test_ops); the pools sum in another order
    train_n = student_n_eff(model.train(), 300, rows=8 * 64 * 8)
    assert_close_pair(out_n, out_t, train_n, msg="logits")
    infer_n_eff = student_n_eff(model.eval(), 300)
    assert_close_pair(infer_n, infer_t, infer_n_eff, msg="inference logits")
    for (name, _), a, b in zip(model.named_parameters(), grads_n, grads_t, strict=True):
        assert_close_pair(a, b, train_n, msg=name)


def test_folded_weights_follow_parameter_and_statistics_changes():
    """Eval-mode BatchNorm folding is cached between inference calls: any change of a
    parameter or running statistic (optimizer step, load_state_dict, in-place edit) must
    show in the next output, exactly as a fresh copy of the model computes it."""
    import copy

    torch.manual_seed(0)
    model = create_model("student_xs", 5, anchors=(32, 8), k=4).eval()
    x = torch.rand(2, 100, 3) * 2 - 1

    def infer(m):
        with torch.inference_mode():
            return m(x)

    first = infer(model)
    assert torch.equal(infer(model), first)  # cached: the same result
    with torch.no_grad():
        model.stages[0].group.fc.weight.mul_(1.5)  # in place: a new version, same storage
        model.head[0].bn.running_var.add_(0.5)
    changed = infer(model)
    assert not torch.equal(changed, first)
    assert torch.equal(changed, infer(copy.deepcopy(model)))
    model.train()
    model(x)  # training updates the running statistics
    model.eval()
    assert torch.equal(infer(model), infer(copy.deepcopy(model)))
    state = copy.deepcopy(model.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    model.load_state_dict(state)
    assert torch.equal(infer(model), infer(copy.deepcopy(model)))


# --- the local stage against a plain reference, sampling order, batch independence ---------

def _mlp(layer, x):
    y = layer.fc(x)
    y = layer.bn(y.reshape(-1, y.shape[-1])).view(y.shape)
    return F.leaky_relu(y, layer.slope)


def _ref_local_stage(st: LocalStage, xyz, feats):
    bsz, n, _ = feats.shape
    m, k = min(st.num_anchors, n), min(st.k, n)
    ax, af = xyz[:, :m], feats[:, :m]
    nbr = knn(ax, xyz, k)
    rel = gather_points(xyz, nbr) - ax.unsqueeze(2)
    inv = rel.square().reshape(bsz, -1).mean(-1).clamp_min(1e-4).rsqrt().view(-1, 1, 1, 1)
    h = torch.cat([rel * inv, gather_points(feats, nbr),
                   ax.unsqueeze(2).expand(-1, -1, k, -1), af.unsqueeze(2).expand(-1, -1, k, -1)],
                  dim=-1)
    h = _mlp(st.group, h).amax(2)
    return ax, h + _mlp(st.post, h)


@pytest.mark.numerics
@pytest.mark.parametrize("train", [True, False])
def test_local_stage_matches_plain_reference(train):
    """The decomposed stage (per-point matmuls, fused/gathered pool) in float32 against the
    plain grouping in float64: output and gradients within the derived bound."""
    torch.manual_seed(0)
    stage = LocalStage(8, 16, num_anchors=30, k=5)
    xyz, feats = _clouds(3, 90), torch.randn(3, 90, 8)
    stage.train()
    stage(xyz, feats)  # non-trivial running statistics for eval mode
    ref = float64_copy(stage)
    stage.train(train)
    ref.train(train)
    # BatchNorm rows: 3 clouds × 30 anchors × 5; 1/σ: a mean over 30 × 5 sums of 3
    n = module_n_eff(stage, rows=3 * 30 * 5, extra=(30 * 5, 3))
    f1, f2 = feats.clone().requires_grad_(), feats.double().requires_grad_()
    _, out = stage(xyz, f1)
    _, ref_out = _ref_local_stage(ref, xyz.double(), f2)
    assert_close_to_reference(out, ref_out, n, msg="output")
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (ref_out * w.double()).sum().backward()
    assert_close_to_reference(f1.grad, f2.grad, n, msg="feature gradient")
    assert_close_to_reference(stage.group.fc.weight.grad, ref.group.fc.weight.grad, n,
                              msg="group weight gradient")


@pytest.mark.numerics
def test_fps_first_puts_the_fps_sample_first_and_keeps_every_point():
    x = _clouds(2, 50)
    out = fps_first(x, 12)
    assert torch.equal(out[:, :12], gather_points(x, farthest_point_sample(x, 12)))
    # greedy FPS: a prefix of the order is the FPS sample of that size (all stages use one loop)
    assert torch.equal(out[:, :5], gather_points(x, farthest_point_sample(x, 5)))
    assert torch.equal(out.sort(dim=1).values, x.sort(dim=1).values)


@pytest.mark.numerics
@pytest.mark.parametrize("sampler", ["fps", "fps_coarse", "first"])
def test_student_samplers_are_batch_independent_in_eval(sampler):
    torch.manual_seed(0)
    model = create_model("student_xs", 7, sampler=sampler)
    model(_clouds(4, 300))  # one training-mode pass for non-trivial statistics
    model.eval()
    x = _clouds(3, 300, seed=2)
    with torch.inference_mode():
        out = model(x)
        assert out.shape == (3, 7) and torch.isfinite(out).all()
        # up to float rounding (other GEMM blocking at batch 1)
        n = student_n_eff(model, 300)
        assert_close_pair(model(x[1:2]), out[1:2], n)
        assert torch.equal(model(x), out)
