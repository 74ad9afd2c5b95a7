"""Pointwise losses between predicted level logits and a target distribution over the score levels.

Implemented (all take *logits* for the prediction and a *probability distribution* for the target):
- `kl_div_levels`: KL(target ‖ softmax(logits)) — the DeQA-Score / Q-Align soft-label loss
  (https://arxiv.org/abs/2501.11561), computed with `log_softmax` (DeQA's `log(softmax)` can give -inf).
- `cross_entropy_levels`: −Σ target · log_softmax(logits) (= KL + entropy(target); same gradient as KL).
- `emd_levels`: NIMA earth mover's distance (https://arxiv.org/abs/1709.05424), per sample
  (mean_k |CDF_p − CDF_t|^r)^(1/r) over all L CDF entries, then the mean over samples (not the other way round).
- `js_levels`: Jensen–Shannon divergence ½KL(p‖m) + ½KL(t‖m), m = (p + t)/2, natural log (≤ log 2).
- `expected_score_loss`: MSE or Huber between Σ softmax(logits)·levels and a target mean score.

Shapes: logits (..., L), e.g. (B, L) or (B, D, L); target (..., L) with rows summing to 1 (histogram counts must be
normalised by the caller, see `zreward.data.labels`); mask (...) bool or 0/1, False = no label for that row. Masked
rows contribute nothing; with every row masked the loss is 0 and still part of the graph (never NaN).

`masked_reduce` and `check_mask` are shared with the other loss families.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from zreward.models.level_readout import expectation

__all__ = [
    "masked_reduce",
    "check_mask",
    "kl_div_levels",
    "cross_entropy_levels",
    "emd_levels",
    "js_levels",
    "expected_score_loss",
    "kl_rows",
]

_REDUCTIONS = ("mean", "sum", "none")


def check_mask(mask: torch.Tensor | None, shape: torch.Size, what: str, ref: torch.Tensor) -> torch.Tensor:
    """Returns `mask` as a bool tensor of `shape` (all True when None); raises naming `what` on a shape mismatch."""
    if mask is None:
        return torch.ones(shape, dtype=torch.bool, device=ref.device)
    if tuple(mask.shape) != tuple(shape):
        raise ValueError(f"{what}: mask has shape {tuple(mask.shape)}, expected {tuple(shape)}")
    return mask.to(device=ref.device).bool()


def masked_reduce(per_item: torch.Tensor, mask: torch.Tensor, reduction: str, what: str = "loss") -> torch.Tensor:
    """Reduces per-item losses over the items where `mask` is True.

    Args:
        per_item: (...) loss per item; may hold garbage (even NaN) where `mask` is False.
        mask: (...) bool, same shape.
        reduction: "mean" (over unmasked items; 0 when none), "sum", or "none" (masked items set to 0).
        what: name used in error messages.

    Returns:
        Scalar for "mean"/"sum", else a tensor shaped like `per_item`.
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{what}: reduction={reduction!r}, expected one of {_REDUCTIONS}")
    # torch.where (not multiplication) so NaN in masked items cannot leak into the value.
    zeroed = torch.where(mask, per_item, torch.zeros_like(per_item))
    if reduction == "none":
        return zeroed
    total = zeroed.sum()
    if reduction == "sum":
        return total
    # clamp(min=1): all-masked -> 0/1 = 0 with a graph, not 0/0.
    return total / mask.sum().clamp(min=1).to(total.dtype)


def _check_pair(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, what: str,
                atol: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """Validates (logits, target, mask); returns (bool mask, target with masked rows replaced by uniform)."""
    if logits.dim() < 1 or logits.shape[-1] < 2:
        raise ValueError(f"{what}: logits must have shape (..., L) with L >= 2 levels, got {tuple(logits.shape)}")
    if target.shape != logits.shape:
        raise ValueError(f"{what}: target has shape {tuple(target.shape)}, expected the logits shape "
                         f"{tuple(logits.shape)} (a distribution over the L levels per row)")
    m = check_mask(mask, logits.shape[:-1], what, logits)
    target = target.to(logits.dtype)
    # Masked rows may be NaN/zeros ("no label"); give them a harmless value so nothing NaN enters the graph.
    safe = torch.where(m.unsqueeze(-1), target, torch.full_like(target, 1.0 / target.shape[-1]))
    with torch.no_grad():
        bad_neg = (safe < -atol).any(-1) | ~torch.isfinite(safe).all(-1)
        bad_sum = (safe.sum(-1) - 1).abs() > atol
        bad = (bad_neg | bad_sum) & m
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0].tolist())
            raise ValueError(f"{what}: target row {idx} = {safe[idx].tolist()} is not a probability distribution "
                             f"(expected finite, non-negative entries summing to 1; normalise histogram counts "
                             f"first)")
    return m, safe.clamp(min=0)


def kl_div_levels(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """KL(target ‖ softmax(logits)) per row, reduced over labelled rows.

    Args:
        logits: (..., L) level logits, e.g. (B, L) or (B, D, L).
        target: (..., L) target distribution (rows sum to 1; zeros allowed).
        mask: (...) bool, False = row has no label. None = all rows labelled.
        reduction: "mean" over labelled rows, "sum", or "none" (per row, masked rows 0).

    Returns:
        Scalar, or (...) for reduction="none". Natural-log units.
    """
    return _kl_levels(logits, target, mask, reduction, "kl_div_levels")


def _kl_levels(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, reduction: str,
               what: str) -> torch.Tensor:
    m, t = _check_pair(logits, target, mask, what)
    return masked_reduce(kl_rows(t, F.log_softmax(logits, dim=-1)), m, reduction, what)


def kl_rows(target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ q) per row, natural log: Σ_k t_k·(log t_k − log q_k); the one KL formula of the package.

    Args:
        target: (..., L) distribution (zeros allowed: 0·log 0 = 0 via xlogy).  log_q: (..., L) log-probabilities.

    Returns:
        (...) per-row KL, no validation (the public losses check their inputs first).

    >>> kl_rows(torch.tensor([0.5, 0.5]), torch.log(torch.tensor([0.5, 0.5]))).item()
    0.0
    """
    return (torch.xlogy(target, target) - target * log_q).sum(-1)


def cross_entropy_levels(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                         reduction: str = "mean") -> torch.Tensor:
    """Soft-label cross-entropy −Σ_k target_k · log_softmax(logits)_k per row.

    A one-hot target gives the usual SFT next-token CE on the score token. Shapes as in `kl_div_levels`.

    Returns:
        Scalar, or (...) for reduction="none".
    """
    m, t = _check_pair(logits, target, mask, "cross_entropy_levels")
    per_row = -(t * F.log_softmax(logits, dim=-1)).sum(-1)
    return masked_reduce(per_row, m, reduction, "cross_entropy_levels")


def _safe_root(x: torch.Tensor, r: float) -> torch.Tensor:
    """x^(1/r) for x >= 0 with gradient 0 (not inf·0 = NaN) at x == 0, which happens when pred == target."""
    if r == 1:
        return x
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)) ** (1.0 / r), torch.zeros_like(x))


def emd_levels(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, r: float = 2.0,
               reduction: str = "mean") -> torch.Tensor:
    """NIMA EMD between softmax(logits) and target: per row (mean_k |CDF_p,k − CDF_t,k|^r)^(1/r).

    The mean runs over all L CDF entries (the last difference is always 0), as in NIMA Eq. 1 with N = L.
    Levels are assumed equally spaced (true for the 1.0..5.0 half-point scale).

    Args:
        logits: (..., L) level logits.
        target: (..., L) target distribution.
        mask: (...) bool or None.
        r: the norm (NIMA uses r = 2).
        reduction: "mean" over labelled rows (the NIMA batch mean), "sum", or "none".

    Returns:
        Scalar, or (...) for reduction="none".
    """
    if r <= 0:
        raise ValueError(f"emd_levels: r={r}, expected r > 0")
    m, t = _check_pair(logits, target, mask, "emd_levels")
    cdf_diff = torch.cumsum(F.softmax(logits, dim=-1), -1) - torch.cumsum(t, -1)
    per_row = _safe_root(cdf_diff.abs().pow(r).mean(-1), r)
    return masked_reduce(per_row, m, reduction, "emd_levels")


def js_levels(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
              reduction: str = "mean") -> torch.Tensor:
    """Jensen–Shannon divergence between softmax(logits) and target, natural log (0 ≤ JS ≤ log 2).

    Shapes as in `kl_div_levels`. Computed in log space: log m = logsumexp(log p, log t) − log 2.

    Returns:
        Scalar, or (...) for reduction="none".
    """
    m, t = _check_pair(logits, target, mask, "js_levels")
    logp = F.log_softmax(logits, dim=-1)
    logt = torch.log(t)  # -inf where t == 0; only used inside logsumexp and xlogy-guarded terms
    log_mix = torch.logsumexp(torch.stack([logp, logt]), dim=0) - math.log(2.0)
    kl_p = (logp.exp() * (logp - log_mix)).sum(-1)
    kl_t = kl_rows(t, log_mix)
    per_row = 0.5 * (kl_p + kl_t)
    return masked_reduce(per_row, m, reduction, "js_levels")


def expected_score_loss(logits: torch.Tensor, target_mean: torch.Tensor, levels: torch.Tensor,
                        mask: torch.Tensor | None = None, kind: str = "mse", delta: float = 1.0,
                        reduction: str = "mean") -> torch.Tensor:
    """Regression of the expected score E[s] = Σ_k softmax(logits)_k · levels_k onto a target mean score.

    Args:
        logits: (..., L) level logits.
        target_mean: (...) target mean score (e.g. the MOS, or Σ target·levels).
        levels: (L,) score of each level, e.g. tensor([1.0, 1.5, ..., 5.0]).
        mask: (...) bool or None.
        kind: "mse" → (E − y)², or "huber" → torch Huber: ½x² if |x| < delta else delta·(|x| − ½delta).
        delta: Huber threshold.
        reduction: "mean", "sum" or "none".

    Returns:
        Scalar, or (...) for reduction="none".
    """
    if levels.dim() != 1 or levels.shape[0] != logits.shape[-1]:
        raise ValueError(f"expected_score_loss: levels has shape {tuple(levels.shape)}, expected "
                         f"({logits.shape[-1]},) to match the logits' last dimension")
    if target_mean.shape != logits.shape[:-1]:
        raise ValueError(f"expected_score_loss: target_mean has shape {tuple(target_mean.shape)}, expected "
                         f"{tuple(logits.shape[:-1])} (one mean score per logits row)")
    if kind not in ("mse", "huber"):
        raise ValueError(f"expected_score_loss: kind={kind!r}, expected 'mse' or 'huber'")
    m = check_mask(mask, logits.shape[:-1], "expected_score_loss", logits)
    pred = expectation(F.softmax(logits, dim=-1), levels)
    y = torch.where(m, target_mean.to(pred), pred.detach())  # masked targets may be NaN
    if kind == "mse":
        per_row = (pred - y).pow(2)
    else:
        per_row = F.huber_loss(pred, y, reduction="none", delta=delta)
    return masked_reduce(per_row, m, reduction, "expected_score_loss")
