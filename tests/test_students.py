"""The compact student family: sizes, forward/backward, small inputs, determinism."""

from __future__ import annotations

import pytest
import torch

from pointkd.models import count_parameters, create_model, list_models

NOMINAL = {"student_xs": 0.1e6, "student_s": 0.3e6, "student_m": 0.5e6, "student_l": 1.0e6}


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


@pytest.mark.parametrize("train", [True, False])
def test_fps_table_neighbourhoods_match_a_knn_per_stage(train):
    """The student takes every stage's neighbours and σ from the FPS distance table; the same
    model running a separate kNN per stage (the reference ops) gives the same logits and
    gradients."""
    from pointkd.models.student import fps_first

    torch.manual_seed(3)
    model = create_model("student_xs", 6, anchors=(64, 16), k=8)
    x = torch.rand(3, 200, 3) * 2 - 1
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
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for a, b in zip(*grads, strict=True):  # float32 sums through BatchNorm over 3 clouds
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-4 * float(b.abs().max()))


def test_nearest_agrees_with_knn_and_brute_force():
    from pointkd.models import ops

    g = torch.Generator().manual_seed(1)
    pts = torch.rand(2, 300, 3, generator=g)
    idx, table = ops.fps_with_distances(pts, 40)
    assert torch.equal(idx, ops.farthest_point_sample(pts, 40))
    anchors = ops.gather_points(pts, idx)
    exact = (anchors[:, :, None].double() - pts[:, None].double()).square().sum(-1)
    torch.testing.assert_close(table.double(), exact, rtol=1e-6, atol=1e-7)
    nbr, sq = ops.nearest(table, 10)
    torch.testing.assert_close(sq.double(), exact.gather(2, nbr), rtol=1e-6, atol=1e-7)
    # the k smallest distances, as a sorted kNN by brute force has them
    torch.testing.assert_close(sq.sort(-1).values.double(), exact.sort(-1).values[..., :10],
                               rtol=1e-6, atol=1e-7)
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
@pytest.mark.parametrize("train", [True, False])
def test_native_kernels_match_the_torch_ops_in_a_student(train, monkeypatch):
    """The whole student with and without the optional C++ kernels (sampling, every stage's
    neighbours, the gathered pool forward and backward, the inference pool): the same logits
    and gradients within float rounding."""
    from pointkd.models import native

    monkeypatch.setenv("POINTKD_NATIVE_OPS", "1")
    if not native.available():
        pytest.skip("the C++ kernels could not be built here (see the warning)")
    x = torch.rand(3, 300, 3) * 2 - 1
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
    torch.testing.assert_close(out_n, out_t, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(infer_n, infer_t, rtol=1e-5, atol=1e-6)
    for a, b in zip(grads_n, grads_t, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=2e-4 * float(b.abs().max()))


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
