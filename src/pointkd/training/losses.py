"""Losses: cross-entropy, knowledge distillation (KD) and negative-weight self-distillation
(NWSD). Definitions and reasoning: docs/method.md.

    L = CE(y, z_s) + α·τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)) + β·τ²·KL(σ(z_self/τ) ‖ σ(z_s/τ)),   β ≤ 0

For α + β > 0 the two distillation terms have, with respect to z_s, exactly the gradient of
one KD term of weight (α+β) towards the *extrapolated* target

    m = (α·p_t + β·p_self) / (α + β)

which overshoots the teacher away from where the student already was. `m` can leave the
simplex when β < 0 (an entry < 0 makes the loss unbounded below), so we clip it at 0 and
renormalise — the stability guard. Where no entry is clipped the gradient is exact.
All KL terms use `batchmean` (sum over classes, mean over the batch).

Unlabelled clouds (label `UNLABELLED` = -1: rows of a record set made with `--unlabelled`)
take part in the distillation terms only: CE is the mean over the batch's labelled clouds
(0 when it has none), so a labelled cloud's CE weight does not shrink as unlabelled rows are
added, and the KD terms average over every cloud.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from pointkd.data._core import UNLABELLED
from pointkd.errors import ConfigError


def soft_kl(target: Tensor, student_logits: Tensor, tau: float) -> Tensor:
    """τ²·KL(target ‖ σ(z_s/τ)), batchmean; `target` is a probability vector per row.

    Zero target entries contribute 0 (xlogy), so clipped targets are safe."""
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    kl = torch.special.xlogy(target, target) - target * log_q
    return kl.sum(dim=-1).mean() * tau * tau


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, tau: float) -> Tensor:
    """Hinton KD: τ²·KL(σ(z_t/τ) ‖ σ(z_s/τ)), batchmean. The teacher side gets no gradient."""
    log_p = F.log_softmax(teacher_logits.detach().float() / tau, dim=-1)
    log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
    kl = F.kl_div(log_q, log_p, reduction="batchmean", log_target=True)
    return kl * tau * tau


def extrapolated_target(
    teacher_logits: Tensor, self_logits: Tensor, alpha: float, beta: float, tau: float
) -> Tensor:
    """(α·p_t + β·p_self)/(α+β), clipped at 0 and renormalised (see module docstring)."""
    if alpha + beta <= 0:
        raise ConfigError(f"NWSD needs alpha + beta > 0 (got alpha={alpha}, beta={beta})")
    p_t = F.softmax(teacher_logits.detach().float() / tau, dim=-1)
    p_self = F.softmax(self_logits.detach().float() / tau, dim=-1)
    target = ((alpha * p_t + beta * p_self) / (alpha + beta)).clamp_min(0.0)
    return target / target.sum(dim=-1, keepdim=True)


def nwsd_kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    self_logits: Tensor | None,
    alpha: float,
    beta: float,
    tau: float,
    self_mask: Tensor | None = None,
) -> Tensor:
    """α·KD + β·NWSD as one stable term: (α+β)·τ²·KL(m ‖ σ(z_s/τ)).

    `self_mask` (bool, per row) marks rows that have a self target; the others (first
    visits) get plain α·KD. With β = 0 or no self logits this is exactly α·KD."""
    if beta == 0.0 or self_logits is None:
        return alpha * kd_loss(student_logits, teacher_logits, tau)
    target = extrapolated_target(teacher_logits, self_logits, alpha, beta, tau)
    if self_mask is not None and not bool(self_mask.all()):
        # rows without a past self: weight α towards p_t; with one: weight α+β towards m
        p_t = F.softmax(teacher_logits.detach().float() / tau, dim=-1)
        mask = self_mask.unsqueeze(-1)
        target = torch.where(mask, target, p_t)
        weight = torch.where(self_mask, alpha + beta, alpha).float()
        log_q = F.log_softmax(student_logits.float() / tau, dim=-1)
        kl = (torch.special.xlogy(target, target) - target * log_q).sum(dim=-1)
        return (weight * kl).mean() * tau * tau
    return (alpha + beta) * soft_kl(target, student_logits, tau)


# UNLABELLED (-1), the label of a cloud whose class is not known: distillation only


def classification_loss(logits: Tensor, labels: Tensor, label_smoothing: float = 0.0,
                        mixed: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """Cross-entropy over the labelled clouds (mean), 0 for a batch without any.

    `mixed` = (the partners' labels, the share w of each cloud they replaced): a mixed view's
    CE is (1 − w)·CE(y) + w·CE(y_partner) (PointCutMix's mixed label); a cloud with an
    unlabelled partner is left out of CE (unless w = 0)."""
    if mixed is not None:
        return _mixed_classification_loss(logits, labels, label_smoothing, *mixed)
    labelled = labels != UNLABELLED
    if bool(labelled.all()):
        return F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    if not bool(labelled.any()):
        return logits.float().sum() * 0.0  # keeps the graph (and the dtype) of a real loss
    return F.cross_entropy(logits[labelled].float(), labels[labelled],
                           label_smoothing=label_smoothing)


def _mixed_classification_loss(logits: Tensor, labels: Tensor, label_smoothing: float,
                               partner_labels: Tensor, share: Tensor) -> Tensor:
    labelled = (labels != UNLABELLED) & ((share == 0) | (partner_labels != UNLABELLED))
    if not bool(labelled.any()):
        return logits.float().sum() * 0.0
    z, w = logits[labelled].float(), share[labelled]
    ce = F.cross_entropy(z, labels[labelled], reduction="none", label_smoothing=label_smoothing)
    ce_partner = F.cross_entropy(z, partner_labels[labelled].clamp(min=0), reduction="none",
                                 label_smoothing=label_smoothing)
    return ((1 - w) * ce + w * ce_partner).mean()


def total_loss(
    student_logits: Tensor,
    labels: Tensor,
    teacher_logits: Tensor | None = None,
    self_logits: Tensor | None = None,
    *,
    alpha: float = 0.0,
    beta: float = 0.0,
    tau: float = 4.0,
    label_smoothing: float = 0.0,
    self_mask: Tensor | None = None,
    mixed: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """CE + α·KD + β·NWSD; returns (loss, {"ce": .., "kd": ..}) for logging."""
    ce = classification_loss(student_logits, labels, label_smoothing, mixed)
    parts = {"ce": float(ce.detach())}
    if teacher_logits is None or alpha == 0.0:
        return ce, parts
    kd = nwsd_kd_loss(student_logits, teacher_logits, self_logits, alpha, beta, tau, self_mask)
    parts["kd"] = float(kd.detach())
    return ce + kd, parts
