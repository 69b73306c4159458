"""Loss definitions: hand-worked values and gradients, reductions, NWSD equivalences, stability.

The losses compute in float32; every value and gradient is checked against the formula in
float64 within the derived bound (`_numerics`): a KL over C classes sums C exponentials
(log-softmax) and C terms, then averages B rows; scaled by the magnitude of its terms (the
KL itself can cancel to ~0), a gradient tau (q - m) / B by tau / B (probabilities <= 1)."""

import math

import pytest
import torch
import torch.nn.functional as F
from _numerics import assert_close_pair, assert_close_to_reference, n_eff
from hypothesis import given, settings
from hypothesis import strategies as st

from pointkd.errors import ConfigError
from pointkd.training.losses import extrapolated_target, kd_loss, nwsd_kd_loss, total_loss


def grad_of(fn, z):
    z = z.clone().requires_grad_(True)
    fn(z).backward()
    return z.grad


def kl64(target, zs, tau, weight=None):
    """tau² · mean_rows weight · KL(target || softmax(zs / tau)) in float64, and the scale of
    its terms (|target log target| + |target log q|, the same reduction)."""
    target = target.double()
    log_q = F.log_softmax(zs.double() / tau, dim=-1)
    w = torch.ones(len(zs), dtype=torch.float64) if weight is None else weight.double()
    value = (w * (torch.special.xlogy(target, target) - target * log_q).sum(-1)).mean()
    terms = (w.abs() * (torch.special.xlogy(target, target).abs()
                        + (target * log_q).abs()).sum(-1)).mean()
    return value * tau * tau, float(terms) * tau * tau


def kd64(zs, zt, tau):
    return kl64(F.softmax(zt.double() / tau, dim=-1), zs, tau)


def target64(zt, zself, alpha, beta, tau):
    m = (alpha * F.softmax(zt.double() / tau, -1) + beta * F.softmax(zself.double() / tau, -1))
    m = (m / (alpha + beta)).clamp_min(0.0)
    return m / m.sum(-1, keepdim=True)


def assert_loss(actual, ref, classes: int, rows: int, msg: str = ""):
    """A float32 loss against kl64's (value, scale)."""
    value, scale = ref
    assert_close_to_reference(actual, value, n_eff(classes, classes, rows, 1), scale=scale,
                              msg=msg)


def assert_grad(actual, ref64, tau: float, rows: int, msg: str = ""):
    """A float32 gradient tau (q - m) / rows against its float64 formula."""
    classes = actual.shape[-1]
    assert_close_to_reference(actual, ref64, n_eff(classes, classes, 1), scale=tau / rows,
                              msg=msg)


@pytest.mark.numerics
def test_kd_value_and_gradient_hand_case():
    # p_t = [3/4, 1/4], q = [1/2, 1/2] at tau = 1
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert_loss(kd_loss(zs, zt, 1.0), (torch.tensor(expected, dtype=torch.float64),
                                       0.75 * math.log(4 / 3) + 0.25 * math.log(4) + math.log(2)),
                2, 1)
    # d/dz_s of tau^2 KL = tau (q - p_t)
    g = grad_of(lambda z: kd_loss(z, zt, 1.0), zs)
    assert_grad(g, torch.tensor([[-0.25, 0.25]], dtype=torch.float64), 1.0, 1)


@pytest.mark.numerics
def test_kd_temperature_scaling_hand_case():
    zs = torch.tensor([[0.0, 0.0]])
    zt = torch.tensor([[math.log(3.0), 0.0]])
    tau = 2.0
    p = torch.softmax(zt.double() / tau, -1)[0]
    expected = tau**2 * sum(float(pi) * math.log(float(pi) / 0.5) for pi in p)
    ref = kd64(zs, zt, tau)
    # the float64 formula itself: two float64 computations of it
    assert_close_pair(ref[0], torch.tensor(expected, dtype=torch.float64), n_eff(2, 2, 1),
                      scale=ref[1])
    assert_loss(kd_loss(zs, zt, tau), ref, 2, 1)
    g = grad_of(lambda z: kd_loss(z, zt, tau), zs)
    assert_grad(g, tau * (torch.tensor([[0.5, 0.5]], dtype=torch.float64) - p), tau, 1)


@pytest.mark.numerics
def test_batchmean_sums_classes_and_averages_batch():
    torch.manual_seed(0)
    zs, zt = torch.randn(1, 5), torch.randn(1, 5)
    single = kd_loss(zs, zt, 3.0)
    doubled = kd_loss(zs.repeat(4, 1), zt.repeat(4, 1), 3.0)
    p = torch.softmax(zt.double() / 3, -1)
    manual = 9 * (p * (p.log() - torch.log_softmax(zs.double() / 3, -1))).sum()
    ref = kd64(zs, zt, 3.0)
    assert_close_pair(ref[0], manual, n_eff(5, 5, 1), scale=ref[1])  # it sums the classes
    assert_loss(single, ref, 5, 1, "one row")
    assert_loss(doubled, ref, 5, 4, "four equal rows: their mean")


def test_teacher_gets_no_gradient():
    zs, zt = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    kd_loss(zs, zt, 2.0).backward()
    assert zt.grad is None and zs.grad is not None


@pytest.mark.numerics
def test_beta_zero_reduces_to_kd():
    torch.manual_seed(1)
    zs, zt, zself = torch.randn(6, 10), torch.randn(6, 10), torch.randn(6, 10)
    for tau in (1.0, 4.0):
        a = nwsd_kd_loss(zs, zt, zself, alpha=0.7, beta=0.0, tau=tau)
        value, scale = kd64(zs, zt, tau)
        assert_loss(a, (0.7 * value, 0.7 * scale), 10, 6, f"tau={tau}")


@pytest.mark.numerics
def test_nwsd_gradient_equals_sum_of_terms_and_extrapolated_target():
    torch.manual_seed(2)
    zs, zt = torch.randn(5, 8), torch.randn(5, 8)
    zself = zt + 0.1 * torch.randn(5, 8)  # near the teacher: no clipping at beta = -0.1
    alpha, beta, tau = 1.0, -0.1, 4.0
    assert (extrapolated_target(zt, zself, alpha, beta, tau) > 0).all()
    g_nwsd = grad_of(lambda z: nwsd_kd_loss(z, zt, zself, alpha, beta, tau), zs)
    g_terms = grad_of(lambda z: alpha * kd_loss(z, zt, tau) + beta * kd_loss(z, zself, tau), zs)
    # the sum of the terms' gradients, in float64
    p_t, p_self = torch.softmax(zt.double() / tau, -1), torch.softmax(zself.double() / tau, -1)
    q = torch.softmax(zs.double() / tau, -1)
    terms64 = tau * (alpha * (q - p_t) + beta * (q - p_self)) / len(zs)
    assert_grad(g_terms, terms64, tau, len(zs), "the terms")
    assert_grad(g_nwsd, terms64, tau, len(zs), "NWSD")
    # ... and equals distilling with weight (alpha+beta) towards (a p_t + b p_self)/(a+b)
    m = (alpha * p_t + beta * p_self) / (alpha + beta)
    assert_grad(g_nwsd, (alpha + beta) * tau * (q - m) / len(zs), tau, len(zs), "NWSD as KD")


def test_negative_beta_pushes_away_from_self():
    zt = torch.tensor([[2.0, 0.0, 0.0]])
    zself = torch.tensor([[0.0, 2.0, 0.0]])  # the past self liked class 1
    m = extrapolated_target(zt, zself, 1.0, -0.3, 1.0)
    assert m[0, 1] < torch.softmax(zt, -1)[0, 1]


@pytest.mark.numerics
def test_clipped_target_is_a_distribution():
    zt = torch.tensor([[5.0, 0.0, 0.0]])
    zself = torch.tensor([[0.0, 8.0, 0.0]])
    m = extrapolated_target(zt, zself, 1.0, -0.9, 1.0)  # raw target has a negative entry
    assert (m >= 0).all()
    # softmaxes (sums of 3), the combination, renormalised (a sum of 3), summed (3)
    assert_close_to_reference(m, target64(zt, zself, 1.0, -0.9, 1.0), n_eff(3, 3, 3, 1))
    assert_close_to_reference(m.sum(-1), torch.ones(1, dtype=torch.float64), n_eff(3, 3, 3, 3))
    assert m[0, 1] == 0


def test_alpha_plus_beta_must_be_positive():
    z = torch.zeros(1, 3)
    with pytest.raises(ConfigError):
        nwsd_kd_loss(z, z, z, alpha=0.5, beta=-0.5, tau=1.0)


@pytest.mark.numerics
def test_self_mask_uses_plain_kd_for_first_visits():
    torch.manual_seed(3)
    zs, zt, zself = torch.randn(4, 6), torch.randn(4, 6), torch.randn(4, 6)
    none_seen = nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0, self_mask=torch.zeros(4, dtype=bool))
    assert_loss(none_seen, kd64(zs, zt, 2.0), 6, 4, "no row seen: plain KD")
    all_seen = nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0, self_mask=torch.ones(4, dtype=bool))
    value, scale = kl64(target64(zt, zself, 1.0, -0.2, 2.0), zs, 2.0)
    assert_loss(all_seen, (0.8 * value, 0.8 * scale), 6, 4, "every row seen: NWSD")
    assert_loss(nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0), (0.8 * value, 0.8 * scale), 6, 4,
                "no mask: NWSD")
    some = torch.tensor([True, False, True, False])  # the masked branch: per-row targets
    mixed = torch.where(some[:, None], target64(zt, zself, 1.0, -0.2, 2.0),
                        F.softmax(zt.double() / 2.0, -1))
    assert_loss(nwsd_kd_loss(zs, zt, zself, 1.0, -0.2, 2.0, self_mask=some),
                kl64(mixed, zs, 2.0, weight=torch.where(some, 0.8, 1.0)), 6, 4, "mixed rows")


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


@pytest.mark.numerics
def test_total_loss_plain_is_cross_entropy():
    zs, y = torch.randn(3, 5), torch.tensor([0, 2, 4])
    loss, parts = total_loss(zs, y)
    log_q = F.log_softmax(zs.double(), -1)
    ref = F.nll_loss(log_q, y)
    # log-softmax (a sum of 5), the mean over 3 rows; scale: the terms |log q_y|
    assert_close_to_reference(loss, ref, n_eff(5, 3, 1),
                              scale=float(log_q.gather(1, y[:, None]).abs().mean()))
    assert set(parts) == {"ce"}
