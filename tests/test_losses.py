"""Loss definitions: hand-worked values and gradients, reductions, NWSD equivalences, stability."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointkd.errors import ConfigError
from pointkd.losses import extrapolated_target, kd_loss, nwsd_kd_loss, total_loss


def grad_of(fn, z):
    z = z.clone().requires_grad_(True)
    fn(z).backward()
    return z.grad


def test_kd_value_and_gradient_hand_case():
    # p_t = [3/4, 1/4], q = [1/2, 1/2] at tau = 1
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert kd_loss(zs, zt, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # d/dz_s of tau^2 KL = tau (q - p_t)
    g = grad_of(lambda z: kd_loss(z, zt, 1.0), zs)
    assert torch.allclose(g, torch.tensor([[-0.25, 0.25]]), atol=1e-6)


def test_kd_temperature_scaling_hand_case():
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])
    tau = 2.0
    p = torch.softmax(zt / tau, -1)[0]
    expected = tau**2 * sum(float(pi) * math.log(float(pi) / 0.5) for pi in p)
    assert kd_loss(zs, zt, tau).item() == pytest.approx(expected, rel=1e-6)
    g = grad_of(lambda z: kd_loss(z, zt, tau), zs)
    assert torch.allclose(g, tau * (torch.tensor([[0.5, 0.5]]) - p), atol=1e-6)


def test_batchmean_sums_classes_and_averages_batch():
    torch.manual_seed(0)
    zs, zt = torch.randn(1, 5), torch.randn(1, 5)
    single = kd_loss(zs, zt, 3.0)
    doubled = kd_loss(zs.repeat(4, 1), zt.repeat(4, 1), 3.0)
    assert doubled.item() == pytest.approx(single.item(), rel=1e-6)
    p = torch.softmax(zt / 3, -1)
    manual = 9 * (p * (p.log() - torch.log_softmax(zs / 3, -1))).sum()
    assert single.item() == pytest.approx(manual.item(), rel=1e-5)


def test_teacher_gets_no_gradient():
    zs, zt = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(zs, zt, 2.0).backward()
    assert zt.grad is None and zs.grad is not None


def test_beta_zero_reduces_to_kd():
    torch.manual_seed(1)
    zs, zt, zself = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10)
    for tau in (1.0, 4.0):
        a = nwsd_kd_loss(zs, zt, zself, alpha=0.7, beta=0.0, tau=tau)
        assert a.item() == pytest.approx(0.7 * kd_loss(zs, zt, tau).item(), rel=1e-6)


def test_nwsd_gradient_equals_sum_of_terms_and_extrapolated_target():
    torch.manual_seed(2)
    zs, zt = torch.randn(5, 8), torch.randn(5, 8)
    zself = zt + 0.1 * torch.randn(5, 8)  # near the teacher: no clipping at beta = -0.1
    alpha, beta, tau = 1.0, -0.1, 4.0
    assert (extrapolated_target(zt, zself, alpha, beta, tau) > 0).all()
    g_nwsd = grad_of(lambda z: nwsd_kd_loss(z, zt, zself, alpha, beta, tau), zs)
    g_terms = grad_of(lambda z: alpha * kd_loss(z, zt, tau) + beta * kd_loss(z, zself, tau), zs)
    assert torch.allclose(g_nwsd, g_terms, atol=1e-6)
    # ... and equals distilling with weight (alpha+beta) towards (a p_t + b p_self)/(a+b)
    m = (alpha * torch.softmax(zt / tau, -1) + beta * torch.softmax(zself / tau, -1)) / (
        alpha + beta)
    q = torch.softmax(zs / tau, -1)
    assert torch.allclose(g_nwsd, (alpha + beta) * tau * (q - m) / len(zs), atol=1e-6)


def test_negative_beta_pushes_away_from_self():
    zt = torch.tensor([[2.0, 0.0, 0.0]])
    zself = torch.tensor([[0.0, 2.0, 0.0]])  # the past self liked class 1
    m = extrapolated_target(zt, zself, 1.0, -0.3, 1.0)
    assert m[0, 1] < torch.softmax(zt, -1)[0, 1]


def test_clipped_target_is_a_distribution():
    zt = torch.tensor([[5.0, 0.0, 0.0]])
    zself = torch.tensor([[0.0, 8.0, 0.0]])
    m = extrapolated_target(zt, zself, 1.0, -0.9, 1.0)  # raw target has a negative entry
    assert (m >= 0).all() and torch.allclose(m.sum(-1), torch.ones(1))
    assert m[0, 1] == 0


def test_alpha_plus_beta_must_be_positive():
    z = torch.zeros(1, 3)
    with pytest.raises(ConfigError):
        nwsd_kd_loss(z, z, z, alpha=0.5, beta=-0.5, tau=1.0)


def test_self_mask_uses_plain_kd_for_first_visits():
    torch.manual_seed(3)
    zs, zt, zself = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    none_seen = nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0, self_mask=torch.zeros(4, dtype=bool))
    assert none_seen.item() == pytest.approx(kd_loss(zs, zt, 2.0).item(), rel=1e-5)
    all_seen = nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0, self_mask=torch.ones(4, dtype=bool))
    assert all_seen.item() == pytest.approx(nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0).item(),
                                            rel=1e-5)


@settings(max_examples=40, deadline=None)
@given(scale=st.sampled_from([1.0, 1e2, 1e4]), tau=st.floats(1.0, 10.0),
       beta=st.sampled_from([0.0, -0.1, -0.5, -0.9]), seed=st.integers(0, 1000))
def test_no_nan_or_inf_with_extreme_logits(scale, tau, beta, seed):
    g = torch.Generator().manual_seed(seed)
    zs = (torch.rand(4, 40, generator=g) * 2 - 1) * scale
    zt = (torch.rand(4, 40, generator=g) * 2 - 1) * scale
    zself = (torch.rand(4, 40, generator=g) * 2 - 1) * scale
    y = torch.randint(0, 40, (4,), generator=g)
    zs.requires_grad_(True)
    loss, parts = total_loss(zs, y, zt, zself, alpha=1.0, beta=beta, tau=tau,
                             label_smoothing=0.1)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(zs.grad).all()
    assert all(math.isfinite(v) for v in parts.values())


def test_total_loss_plain_is_cross_entropy():
    zs, y = torch.randn(3, 5), torch.tensor([0, 2, 4])
    loss, parts = total_loss(zs, y)
    assert loss.item() == pytest.approx(torch.nn.functional.cross_entropy(zs, y).item())
    assert set(parts) == {"ce"}
