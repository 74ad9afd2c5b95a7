"""Distillation losses: generalized JSD (GKD / on-policy distillation) and RISD's chain-averaged KL.

Implemented:
- `generalized_jsd`: the generalized Jensen–Shannon divergence of GKD (Agarwal et al., Eq. 1,
  https://arxiv.org/abs/2306.13649) with the semantics of TRL v1.16 `GKDTrainer.generalized_jsd_loss`
  (own implementation, checked numerically against TRL in tests/losses/test_losses_distill.py):
  logits divided by `temperature`; mixture M = (1 − β)·p_S + β·p_T; loss per token per vocab entry
  β·KL(p_T ‖ M) + (1 − β)·KL(p_S ‖ M); β = 0 → KL(p_T ‖ p_S) (forward), β = 1 → KL(p_S ‖ p_T) (reverse,
  OPD with lmbda = 1); positions with labels == −100 dropped; reduction "batchmean" = sum / number of unmasked
  positions (or / B without labels), "sum", "mean" (over all remaining token·vocab entries), "none" (the
  elementwise (N, V) or (B, T, V) tensor). Deviation: with every position masked, "mean" returns 0 (TRL: NaN).
- `risd_kl`: RISD (Z-Reward) — KL(p̄_T ‖ p_S) between the teacher's reasoning-conditioned level distribution,
  averaged over M sampled teacher chains, and the student's direct (no-reasoning) level distribution.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zreward.losses.distribution import _kl_levels

__all__ = ["generalized_jsd", "risd_kl"]

_GKD_REDUCTIONS = ("batchmean", "sum", "mean", "none")


def _kl_elementwise(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Elementwise p·(log p − log q) from log-probabilities (the summand of KL(p ‖ q)); same as
    F.kl_div(log_q, log_p, reduction="none", log_target=True)."""
    return log_p.exp() * (log_p - log_q)


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5,
                    temperature: float = 1.0, reduction: str = "batchmean", labels: torch.Tensor | None = None,
                    num_items_in_batch: int | torch.Tensor | None = None) -> torch.Tensor:
    """Generalized JSD between student and teacher next-token distributions (TRL GKD semantics).

    Args:
        student_logits: (B, T, V) student logits (any (..., V) works; `labels` then has shape (...)).
        teacher_logits: same shape as student_logits.
        beta: interpolation β in [0, 1]; 0 = KL(teacher ‖ student), 1 = KL(student ‖ teacher).
        temperature: both logit sets are divided by it before the softmax (> 0).
        reduction: "batchmean", "sum", "mean" or "none" (see module docstring).
        labels: (B, T) token ids with −100 at positions to ignore, or None.
        num_items_in_batch: if given, the result is sum / num_items_in_batch whatever `reduction` is (TRL's
            gradient-accumulation normaliser).

    Returns:
        Scalar, or the elementwise tensor for reduction="none": (N, V) with labels (N unmasked positions),
        else (B, T, V).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"generalized_jsd: student_logits {tuple(student_logits.shape)} and teacher_logits "
                         f"{tuple(teacher_logits.shape)} must have the same shape (B, T, V)")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"generalized_jsd: beta={beta}, expected 0 <= beta <= 1")
    if temperature <= 0:
        raise ValueError(f"generalized_jsd: temperature={temperature}, expected > 0")
    if reduction not in _GKD_REDUCTIONS:
        raise ValueError(f"generalized_jsd: reduction={reduction!r}, expected one of {_GKD_REDUCTIONS}")
    if labels is not None and labels.shape != student_logits.shape[:-1]:
        raise ValueError(f"generalized_jsd: labels has shape {tuple(labels.shape)}, expected "
                         f"{tuple(student_logits.shape[:-1])}")

    log_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    if beta == 0:
        jsd = _kl_elementwise(log_t, log_s)
    elif beta == 1:
        jsd = _kl_elementwise(log_s, log_t)
    else:
        # log M = logsumexp(log p_S + log(1 − β), log p_T + log β), stable for tiny probabilities.
        log_mix = torch.logsumexp(torch.stack([log_s + math.log1p(-beta), log_t + math.log(beta)]), dim=0)
        jsd = beta * _kl_elementwise(log_t, log_mix) + (1 - beta) * _kl_elementwise(log_s, log_mix)

    mask = None
    if labels is not None:
        mask = labels != -100
        jsd = jsd[mask]  # (N, V)

    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(jsd.device)
        return jsd.sum() / num_items_in_batch
    if reduction == "batchmean":
        denom = mask.sum().clamp(min=1) if mask is not None else max(jsd.size(0), 1)
        return jsd.sum() / denom
    if reduction == "sum":
        return jsd.sum()
    if reduction == "mean":
        return jsd.sum() * 0.0 if jsd.numel() == 0 else jsd.mean()
    return jsd


def risd_kl(teacher_probs: torch.Tensor, student_logits: torch.Tensor, mask: torch.Tensor | None = None,
            reduction: str = "mean") -> torch.Tensor:
    """RISD distillation loss KL(p̄_T ‖ p_S), p_S = softmax(student_logits) over the levels.

    Args:
        teacher_probs: (B, L) or (B, D, L) teacher distribution already averaged over chains
            (`zreward.models.level_readout.mean_over_chains`);
            treated as a constant (detached).
        student_logits: same shape, the student's level logits from a direct (no-reasoning) forward.
        mask: (B,) or (B, D) bool, False = no teacher target for that row.
        reduction: "mean" over unmasked rows, "sum" or "none".

    Returns:
        Scalar, or (B,[D]) for reduction="none".
    """
    return _kl_levels(student_logits, teacher_probs.detach(), mask, reduction, "risd_kl")
