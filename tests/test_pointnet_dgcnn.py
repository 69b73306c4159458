"""PointNet, PointNet++ SSG and DGCNN: shapes, training, determinism, parameter counts, and
equivalence with plain reference implementations (naive grouping / edge features, unfused
BatchNorm) in training and eval mode."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_close_pair, module_n_eff

from pointkd.errors import ModelError
from pointkd.models import count_parameters, create_model, ops
from pointkd.models.layers import SharedMLP
from pointkd.models.ops import ball_query, farthest_point_sample, gather_points, knn

MODELS = ["pointnet", "pointnet_tnet", "pointnet2_ssg", "dgcnn"]
# Published sizes at 40 classes (PointNet vanilla: our count of the authors' basic network).
PUBLISHED = {"pointnet": 0.82e6, "pointnet_tnet": 3.5e6, "pointnet2_ssg": 1.48e6, "dgcnn": 1.8e6}
EXACT = {"pointnet": 819_624, "pointnet_tnet": 3_480_049, "pointnet2_ssg": 1_475_688,
         "dgcnn": 1_809_576}


# small tensors: one thread is as fast, and immune to other processes on the CPU (two
# spinning OpenMP threads on a busy 2-core machine made these tests ~10× slower)
pytestmark = pytest.mark.usefixtures("one_thread")


def _clouds(b: int, p: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, p, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True) * torch.rand(b, p, 1, generator=g).pow(1 / 3)


# --- plain references built from the same parameters ------------------------------------

def _mlp(layer: SharedMLP, x: torch.Tensor) -> torch.Tensor:
    y = layer.fc(x)
    y = layer.bn(y.reshape(-1, y.shape[-1])).view(y.shape)
    return F.leaky_relu(y, layer.slope)


def _head(seq, x):
    for m in seq:
        x = _mlp(m, x) if isinstance(m, SharedMLP) else m(x)
    return x


def _ref_pointnet(model, x):
    def encode(mlp, h):
        for layer in mlp:
            h = _mlp(layer, h)
        return h.amax(1)

    def tnet(t, h):
        return t.out(_head(t.fc, encode(t.mlp, h))).view(-1, t.k, t.k)

    if model.input_tnet is not None:
        x = x @ tnet(model.input_tnet, x)
    for layer in model.mlp1:
        x = _mlp(layer, x)
    if model.feature_tnet is not None:
        x = x @ tnet(model.feature_tnet, x)
    return _head(model.head, encode(model.mlp2, x))


def _ref_pointnet2(model, x):
    xyz, feats = x, None
    for sa in model.sa:
        if sa.npoint is None:
            h = torch.cat([xyz, feats], -1)
            for layer in sa.mlp:
                h = _mlp(layer, h)
            feats = h.amax(1)
            continue
        centres = gather_points(xyz, farthest_point_sample(xyz, min(sa.npoint, xyz.shape[1])))
        idx = ball_query(sa.radius, sa.nsample, xyz, centres)
        h = gather_points(xyz, idx) - centres.unsqueeze(2)
        if feats is not None:
            h = torch.cat([h, gather_points(feats, idx)], -1)
        for layer in sa.mlp:
            h = _mlp(layer, h)
        xyz, feats = centres, h.amax(2)
    return _head(model.head, feats)


def _ref_dgcnn(model, x):
    feats = []
    for conv in model.edge_convs:
        nbr = gather_points(x, knn(x, x, conv.k))
        ctr = x.unsqueeze(2).expand_as(nbr)
        x = _mlp(conv.mlp, torch.cat([nbr - ctr, ctr], -1)).amax(2)
        feats.append(x)
    e = _mlp(model.embed, torch.cat(feats, -1))
    return _head(model.head, torch.cat([e.amax(1), e.mean(1)], -1))


REFERENCE = {"pointnet": _ref_pointnet, "pointnet_tnet": _ref_pointnet,
             "pointnet2_ssg": _ref_pointnet2, "dgcnn": _ref_dgcnn}


# --- tests -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_parameter_count_matches_published(name):
    n = count_parameters(create_model(name, 40))
    assert n == EXACT[name]
    assert abs(n - PUBLISHED[name]) / PUBLISHED[name] < 0.03


@pytest.mark.numerics
@pytest.mark.parametrize("name", MODELS)
def test_forward_shape_and_eval_determinism(name):
    torch.manual_seed(0)
    model = create_model(name, 40)
    x = _clouds(2, 1024)
    out = model(x)
    assert out.shape == (2, 40) and out.dtype == torch.float32 and out.isfinite().all()
    model.eval()
    with torch.inference_mode():
        a, b = model(x), model(x)
        single = model(x[1:])
    assert torch.equal(a, b)
    # batch-independent: one cloud's logits as in the batch (other GEMM blocking, so float
    # rounding apart; eval mode: BatchNorm folded, kNN and ball-query distances only select)
    assert_close_pair(single, a[1:], module_n_eff(model, extra=_extra_sums(name, 1024)))


def _extra_sums(name: str, points: int) -> tuple[int, ...]:
    """Sums outside the Linears and BatchNorms: the T-Nets' x @ T (3, 64), DGCNN's mean over
    the points."""
    return {"pointnet_tnet": (3, 64), "dgcnn": (points,)}.get(name, ())


# The most rows a BatchNorm normalises in training at (3 clouds, 160 points): B * P * k.
BN_ROWS = {"pointnet": 3 * 160, "pointnet_tnet": 3 * 160, "pointnet2_ssg": 3 * 128 * 64,
           "dgcnn": 3 * 160 * 20}


@pytest.mark.numerics
@pytest.mark.parametrize("name", MODELS)
def test_matches_plain_reference(name, monkeypatch):
    """Same function as the textbook formulation: logits, gradients and BN running stats in
    training mode, logits in eval mode (also with tiny tiles, so every chunked path runs).
    Both in float64 (float32 rounding differences are amplified by random BN gains on a tiny
    batch, for the reference as much as for us, and can flip a neighbour selection), so
    within twice the float64 bound of each other (`_numerics`)."""
    torch.manual_seed(0)
    model = create_model(name, 10, dropout=0.0).double()
    with torch.no_grad():  # non-trivial BN affine params, some negative
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm1d):
                mod.weight.copy_(torch.randn_like(mod.weight))
                mod.bias.copy_(torch.randn_like(mod.bias) * 0.1)
    ref = copy.deepcopy(model)
    # BN on 3 clouds with random gains: an ill-conditioned chain, so the worst-case lengths
    n = module_n_eff(model, BN_ROWS[name], _extra_sums(name, 160), worst_case=True)
    x = _clouds(3, 160, seed=1).double()
    out, expect = model(x), REFERENCE[name](ref, x)
    assert_close_pair(out, expect, n, msg="logits")
    w = torch.randn_like(out)
    (out * w).sum().backward()
    (expect * w).sum().backward()
    grads = dict(ref.named_parameters())
    for pname, p in model.named_parameters():
        # a Linear's bias before a training-mode BN has gradient 0 (BN removes the mean):
        # both are rounding noise, on the scale of the per-row gradients the weight's sums
        layer = pname.rsplit(".", 1)[0]
        scale = max(float(q.grad.abs().max()) for k, q in grads.items()
                    if k.rsplit(".", 1)[0] == layer)
        assert_close_pair(p.grad, grads[pname].grad, n, scale=scale, msg=pname)
    ref_buffers = dict(ref.named_buffers())
    for pname, buf in model.named_buffers():
        if buf.is_floating_point():
            assert_close_pair(buf, ref_buffers[pname], n, msg=pname)
        else:  # num_batches_tracked: a count
            assert torch.equal(buf, ref_buffers[pname]), pname
    model.eval()
    ref.eval()
    n = module_n_eff(model, extra=_extra_sums(name, 160), worst_case=True)
    with torch.no_grad():
        expect = REFERENCE[name](ref, x)
        assert_close_pair(model(x), expect, n, msg="eval logits")
        monkeypatch.setattr(ops, "TILE_ELEMENTS", 300)
        assert_close_pair(model(x), expect, n, msg="eval logits, small tiles")


@pytest.mark.parametrize("name", MODELS)
def test_training_steps_reduce_loss(name):
    torch.manual_seed(0)
    model = create_model(name, 40, dropout=0.0)
    x, y = _clouds(8, 256, seed=2), torch.arange(8) % 4
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        assert all(p.grad.isfinite().all() for p in model.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("points", [100, 20])
def test_pointnet2_accepts_fewer_points_than_centres(points):
    model = create_model("pointnet2_ssg", 5)
    out = model(_clouds(2, points))
    assert out.shape == (2, 5) and out.isfinite().all()


def test_pointnet_tnet_aux_loss():
    model = create_model("pointnet_tnet", 40)
    model(_clouds(2, 64))
    aux = model.aux_loss()
    assert aux.isfinite() and aux.item() == pytest.approx(0.0, abs=1e-6)  # T-Net starts at I
    assert create_model("pointnet", 40).aux_loss().item() == 0.0


@pytest.mark.numerics
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("name", MODELS)
def test_traced_model_keeps_batch_axis_dynamic(name):
    """What ONNX export relies on: a graph traced at batch 2 is right for batch 3."""
    torch.manual_seed(0)
    model = create_model(name, 7).eval()
    with torch.no_grad():
        traced = torch.jit.trace(model, _clouds(2, 64), check_trace=False)
        x = _clouds(3, 64, seed=4)
        # the traced graph's whole-tensor ops vs eager's tiled ones: float rounding apart
        assert_close_pair(traced(x), model(x), module_n_eff(model, extra=_extra_sums(name, 64)))


@pytest.mark.parametrize("name", MODELS)
def test_bad_input_is_a_model_error(name):
    model = create_model(name, 4)
    for bad in (torch.rand(2, 50, 4), torch.rand(50, 3), torch.zeros(2, 50, 3, dtype=torch.long)):
        with pytest.raises(ModelError, match=r"\(B, P, 3\)"):
            model(bad)


def test_a_family_that_fails_to_import_is_an_error(monkeypatch):
    # Every family exists, so a missing one (e.g. a typo in the list) must not pass as
    # "not written yet" and silently leave its models unregistered.
    import pointkd.models as models

    monkeypatch.setattr(models, "_FAMILIES", (*models._FAMILIES, "pointnet_typo"))
    with pytest.raises(ModuleNotFoundError, match="pointnet_typo"):
        models.list_models()
