"""The level readout: the one implementation of "score distribution from next-token logits".

Implements the Q-Align / DeQA-Score readout (https://arxiv.org/abs/2312.17090): at the score position, the softmax
is **restricted to the level tokens** ("1.0" ... "5.0"), the score is the expectation over the level values, and the
spread is the standard deviation of that distribution. The in-level mass (probability of all level tokens under the
full-vocabulary softmax) is returned as a diagnostic: a well-trained scorer puts almost all mass on the levels.

Everything here is a pure function of tensors and is differentiable; trainers, evaluation and the `Scorer` use it.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LevelReadout:
    """Score distributions read out at the score position.

    Attributes:
        logits: (..., L) logits of the level tokens (a slice of the full next-token logits).
        probs: (..., L) softmax restricted to the level tokens.
        mean: (...,) expectation Σ p·level.
        std: (...,) standard deviation sqrt(Σ p·(level − mean)²).
        in_level_mass: (...,) probability of the level tokens under the full softmax (diagnostic), or None when
            only level logits were given.
    """

    logits: torch.Tensor
    probs: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    in_level_mass: torch.Tensor | None = None


def level_logits(full_logits: torch.Tensor, level_token_ids: torch.Tensor | list[int]) -> torch.Tensor:
    """Slice the level tokens out of full next-token logits.

    Args:
        full_logits: (..., V) next-token logits at the score position.
        level_token_ids: (L,) vocabulary ids of the level tokens, in level order.

    Returns:
        (..., L) level logits (a differentiable gather).
    """
    ids = torch.as_tensor(level_token_ids, device=full_logits.device, dtype=torch.long)
    return full_logits.index_select(-1, ids)


def expectation(probs: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Σ p·level over the last axis. probs: (..., L), levels: (L,) → (...,)."""
    return (probs * levels.to(probs)).sum(-1)


def std_of(probs: torch.Tensor, levels: torch.Tensor, mean: torch.Tensor | None = None,
           eps: float = 1e-12) -> torch.Tensor:
    """Standard deviation of the level distribution. probs: (..., L), levels: (L,) → (...,).

    The variance is clamped at 0 before the square root (float round-off can make it slightly negative), and `eps`
    keeps the gradient of sqrt finite for a one-hot distribution (0: the exact std, for labels that need no gradient).
    """
    lv = levels.to(probs)
    if mean is None:
        mean = expectation(probs, lv)
    var = (probs * (lv - mean.unsqueeze(-1)) ** 2).sum(-1)
    var = var.clamp_min(0.0)
    return (var + eps if eps else var).sqrt()


def readout_from_level_logits(logits: torch.Tensor, levels: torch.Tensor) -> LevelReadout:
    """Restricted softmax + moments from level logits.

    Args:
        logits: (..., L) level-token logits.
        levels: (L,) level values, e.g. 1.0, 1.5, ..., 5.0.

    Returns:
        LevelReadout with probs (..., L), mean (...,), std (...,) and in_level_mass None.
    """
    probs = torch.softmax(logits.float(), dim=-1)
    mean = expectation(probs, levels)
    return LevelReadout(logits=logits, probs=probs, mean=mean, std=std_of(probs, levels, mean))


def readout(full_logits: torch.Tensor, level_token_ids: torch.Tensor | list[int], levels: torch.Tensor) -> LevelReadout:
    """Full readout from next-token logits at the score position.

    Args:
        full_logits: (..., V) next-token logits.
        level_token_ids: (L,) level token ids.
        levels: (L,) level values.

    Returns:
        LevelReadout; `in_level_mass` (...,) = Σ_levels softmax(full_logits), computed in float32 with logsumexp.
    """
    lv_logits = level_logits(full_logits, level_token_ids)
    out = readout_from_level_logits(lv_logits, levels)
    out.in_level_mass = in_level_mass(lv_logits, torch.logsumexp(full_logits.float(), -1))
    return out


def mean_over_chains(probs: torch.Tensor, chain_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Average level distributions over M sampled reasoning chains: p̄ = (1/M') Σ_m p^(m) (the one chain average).

    Args:
        probs: (B, M, ..., L) per-chain level distributions (e.g. (B, M, L) or (B, M, D, L)).
        chain_mask: (B, M) bool, False for chains to skip (failed parse, truncated). None = all valid.

    Returns:
        (B, ..., L). A sample with no valid chain gets an all-zero row: mask it out in `zreward.losses.risd_kl`
        (mask = chain_mask.any(1)).
    """
    if probs.dim() < 3:
        raise ValueError(f"mean_over_chains: probs has shape {tuple(probs.shape)}, expected (B, M, ..., L)")
    if chain_mask is None:
        return probs.mean(dim=1)
    if tuple(chain_mask.shape) != tuple(probs.shape[:2]):
        raise ValueError(f"mean_over_chains: chain_mask has shape {tuple(chain_mask.shape)}, expected "
                         f"{tuple(probs.shape[:2])} (B, M)")
    w = chain_mask.to(probs.dtype).view(*chain_mask.shape, *([1] * (probs.dim() - 2)))
    # where, so that NaN in a skipped chain cannot leak into the average.
    summed = torch.where(w > 0, probs, torch.zeros_like(probs)).sum(dim=1)
    return summed / w.sum(dim=1).clamp(min=1)


def in_level_mass(level_logits: torch.Tensor, log_normaliser: torch.Tensor) -> torch.Tensor:
    """Probability of the level tokens under the full softmax: exp(logsumexp(level logits) − log Z).

    Args:
        level_logits: (..., L).  log_normaliser: (...,) logsumexp of the full-vocabulary logits (float32).
    """
    return torch.exp(torch.logsumexp(level_logits.float(), -1) - log_normaliser.float())


def overall(mean: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted average over dimensions. mean: (B, D), weights: (D,) (normalised here to sum 1) → (B,)."""
    w = weights.to(mean)
    return (mean * w).sum(-1) / w.sum()


def reward_from_readout(mean: torch.Tensor, std: torch.Tensor, weights: torch.Tensor,
                        uncertainty_lambda: float = 0.0) -> torch.Tensor:
    """Scalar reward per image: Σ_d w_d·(mean_d − λ·std_d) / Σ_d w_d.

    Args:
        mean: (B, D) expected score per dimension.
        std: (B, D) spread per dimension.
        weights: (D,) dimension weights.
        uncertainty_lambda: λ ≥ 0; 0 gives the plain expectation, λ > 0 the uncertainty-aware `mean − λ·std`.

    Returns:
        (B,) reward.
    """
    return overall(mean - uncertainty_lambda * std, weights)
