"""Pairwise losses on two items a, b (one pair per row).

Implemented:
- `thurstone_fidelity`: Thurstone Case V probability P̂ = Φ((μa − μb)/√(σa² + σb²)) compared with the target
  P(a ≻ b) through the fidelity loss 1 − √(P̂·P) − √((1 − P̂)(1 − P)) (Tsai et al. 2007,
  https://dl.acm.org/doi/10.1145/1277741.1277808; used for IQA by UNIQUE https://arxiv.org/abs/2004.12458 and
  LIQE https://arxiv.org/abs/2303.14968). μ, σ are the mean and std of each predicted score distribution.
- `bradley_terry`: −[P·log σ(sa − sb − m) + (1 − P)·log σ(sb − sa − m)] (Bradley & Terry 1952; margin as in
  Llama 2 reward modelling, https://arxiv.org/abs/2307.09288, applied in both directions so a tie P = 0.5 is
  minimised at sa = sb).
- `score_gap_huber`: Huber loss between a predicted and a target score gap (Z-Reward's pairwise supervision on
  score gaps; RISD's score-gap distillation).

Targets: P = 1 means a is preferred, 0 means b, 0.5 a tie. Two label-derived targets P(a ≻ b), which differ and
so have different names (`pair_loss=fidelity` of a trainer says which one it uses):
- `pair_target_win_prob(p_a, p_b)`: P(a ≻ b) + ½·P(tie) of two independent label distributions (exact
  for the discrete histograms).
- `pair_target_thurstone(mos_a, std_a, mos_b, std_b)`: Φ((MOS_a − MOS_b)/√(std_a² + std_b²)), the Thurstone
  Case V probability of the label moments (the same model as the prediction side of `thurstone_fidelity`).
 Shapes (B,) throughout (any equal shape works);
mask (B,) bool, masked pairs contribute nothing.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zreward.losses.distribution import check_mask, masked_reduce

__all__ = ["thurstone_fidelity", "bradley_terry", "score_gap_huber", "pair_target_win_prob", "pair_target_thurstone"]


def _same_shape(what: str, **tensors: torch.Tensor) -> torch.Size:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    first = next(iter(shapes.values()))
    if any(s != first for s in shapes.values()):
        raise ValueError(f"{what}: inputs must share one shape (one value per pair), got {shapes}")
    return next(iter(tensors.values())).shape


def _check_prob(p: torch.Tensor, what: str, field: str, mask: torch.Tensor) -> None:
    with torch.no_grad():
        bad = (~torch.isfinite(p) | (p < 0) | (p > 1)) & mask
        if bad.any():
            i = tuple(int(v) for v in bad.nonzero()[0].tolist())
            raise ValueError(f"{what}: {field}[{i}] = {float(p[i])}, expected a probability in [0, 1] "
                             f"(1 = a preferred, 0 = b preferred, 0.5 = tie)")


def _safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """√x with gradient 0 at x == 0 (e.g. (1 − P̂)·(1 − P) with P = 1), where plain sqrt gives inf·0 = NaN."""
    pos = x > 0
    return torch.where(pos, torch.where(pos, x, torch.ones_like(x)).sqrt(), torch.zeros_like(x))


def pair_target_win_prob(p_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
    """P(a ≻ b) + ½·P(tie) for independent level distributions (a target for the pairwise losses).

    Args:
        p_a, p_b: (..., L) label distributions over the same ascending levels.

    Returns:
        (...,) probabilities in [0, 1].

    >>> pair_target_win_prob(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.5])).item()
    0.75
    """
    joint = p_a.unsqueeze(-1) * p_b.unsqueeze(-2)  # (..., L_a, L_b)
    n = p_a.shape[-1]
    above = torch.tril(torch.ones(n, n, dtype=p_a.dtype, device=p_a.device), diagonal=-1)  # level_a > level_b
    weight = above + 0.5 * torch.eye(n, dtype=p_a.dtype, device=p_a.device)
    # label distributions sum to 1 only up to float round-off (e.g. 7-rater histograms / 7 in float32): keep the
    # result a probability, as the pairwise losses require
    return (joint * weight).sum((-1, -2)).clamp(0.0, 1.0)


def pair_target_thurstone(mos_a: torch.Tensor, std_a: torch.Tensor, mos_b: torch.Tensor, std_b: torch.Tensor,
                          var_eps: float = 1e-6) -> torch.Tensor:
    """Thurstone Case V target Φ((MOS_a − MOS_b)/√(std_a² + std_b² + var_eps)) from the label moments.

    Args:
        mos_a, std_a, mos_b, std_b: (B,) label mean scores and spreads.
        var_eps: keeps two point-mass labels (std 0) finite: equal MOS → 0.5, else → 0 or 1.

    Returns:
        (B,) probabilities in [0, 1].

    >>> pair_target_thurstone(torch.tensor([3.0]), torch.tensor([0.5]), torch.tensor([3.0]), torch.tensor([0.5])).item()
    0.5
    """
    return torch.special.ndtr((mos_a - mos_b) / (std_a.pow(2) + std_b.pow(2) + var_eps).sqrt())


def thurstone_fidelity(mu_a: torch.Tensor, sigma_a: torch.Tensor, mu_b: torch.Tensor, sigma_b: torch.Tensor,
                       p_target: torch.Tensor, mask: torch.Tensor | None = None, var_eps: float = 1e-6,
                       reduction: str = "mean") -> torch.Tensor:
    """Fidelity loss between the Thurstone probability Φ(Δμ/√(σa² + σb²)) and the target preference P(a ≻ b).

    Args:
        mu_a, mu_b: (B,) predicted mean scores.
        sigma_a, sigma_b: (B,) predicted score std (≥ 0).
        p_target: (B,) target P(a ≻ b) in [0, 1]; 0.5 = tie.
        mask: (B,) bool or None.
        var_eps: added to σa² + σb² so two point masses (σ = 0) do not divide by zero.
        reduction: "mean", "sum" or "none".

    Returns:
        Scalar, or (B,) for reduction="none". 0 when P̂ == P; at most 1.
    """
    shape = _same_shape("thurstone_fidelity", mu_a=mu_a, sigma_a=sigma_a, mu_b=mu_b, sigma_b=sigma_b,
                        p_target=p_target)
    m = check_mask(mask, shape, "thurstone_fidelity", mu_a)
    p = p_target.to(mu_a.dtype)
    _check_prob(p, "thurstone_fidelity", "p_target", m)
    p = torch.where(m, p, torch.full_like(p, 0.5))
    z = (mu_a - mu_b) / torch.sqrt(sigma_a.pow(2) + sigma_b.pow(2) + var_eps)
    p_hat = torch.special.ndtr(z)
    per_pair = 1 - _safe_sqrt(p_hat * p) - _safe_sqrt((1 - p_hat) * (1 - p))
    return masked_reduce(per_pair, m, reduction, "thurstone_fidelity")


def bradley_terry(score_a: torch.Tensor, score_b: torch.Tensor, target: torch.Tensor,
                  margin: float | torch.Tensor = 0.0, mask: torch.Tensor | None = None,
                  reduction: str = "mean") -> torch.Tensor:
    """Bradley–Terry logistic loss with an optional margin.

    Args:
        score_a, score_b: (B,) scalar scores (e.g. expected scores).
        target: (B,) hard label (bool / 0 / 1: True = a preferred) or soft P(a ≻ b) in [0, 1] (0.5 = tie).
        margin: float or (B,) margin m ≥ 0; the preferred side must win by m to reach low loss.
        mask: (B,) bool or None.
        reduction: "mean", "sum" or "none".

    Returns:
        Scalar, or (B,). With margin 0 and a hard label: −log σ(s_win − s_lose).
    """
    shape = _same_shape("bradley_terry", score_a=score_a, score_b=score_b, target=target)
    m = check_mask(mask, shape, "bradley_terry", score_a)
    p = target.to(score_a.dtype)
    _check_prob(p, "bradley_terry", "target", m)
    p = torch.where(m, p, torch.full_like(p, 0.5))
    margin = torch.as_tensor(margin, dtype=score_a.dtype, device=score_a.device)
    if margin.dim() > 0 and tuple(margin.shape) != tuple(shape):
        raise ValueError(f"bradley_terry: margin has shape {tuple(margin.shape)}, expected a float or {tuple(shape)}")
    d = score_a - score_b
    per_pair = -(p * F.logsigmoid(d - margin) + (1 - p) * F.logsigmoid(-d - margin))
    return masked_reduce(per_pair, m, reduction, "bradley_terry")


def score_gap_huber(pred_gap: torch.Tensor, target_gap: torch.Tensor, delta: float = 1.0,
                    mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Huber loss on score gaps (pred_gap = s_a − s_b from the model, target_gap from labels or a teacher).

    Uses torch's Huber: ½x² if |x| < delta else delta·(|x| − ½delta), x = pred_gap − target_gap.

    Args:
        pred_gap: (B,) predicted gaps.
        target_gap: (B,) target gaps (a tie is gap 0).
        delta: Huber threshold (> 0).
        mask: (B,) bool or None.
        reduction: "mean", "sum" or "none".

    Returns:
        Scalar, or (B,).
    """
    shape = _same_shape("score_gap_huber", pred_gap=pred_gap, target_gap=target_gap)
    if delta <= 0:
        raise ValueError(f"score_gap_huber: delta={delta}, expected > 0")
    m = check_mask(mask, shape, "score_gap_huber", pred_gap)
    y = torch.where(m, target_gap.to(pred_gap.dtype), pred_gap.detach())  # masked targets may be NaN
    per_pair = F.huber_loss(pred_gap, y, reduction="none", delta=delta)
    return masked_reduce(per_pair, m, reduction, "score_gap_huber")
