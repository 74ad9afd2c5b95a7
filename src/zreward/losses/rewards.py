"""Reward functions of the reasoning-mode RL trainers (`gdso`, `grpo`): pure torch functions, no model, no gradient.

In verl's `core_algos` style: tensors of one rollout in, (N,) rewards out; the trainers only call them.

- `distribution_rewards` (GDSO): from the level distribution p_i read after chain i vs the label of its
  (image, dim): `neg_abs` −|μ_i − MOS|, `neg_sq` −(μ_i − MOS)², `neg_kl` −KL(target ‖ p_i), μ_i = Σ p_i·level.
- `sampled_level_rewards` (GRPO): one level ℓ_i per chain, drawn from p_i (or its argmax), rewarded
  `neg_abs` −|ℓ_i − MOS| or `exact` 1[|ℓ_i − MOS| ≤ tol].
- `pair_outcome_rewards` (GDSO, optional): the within-prompt pair outcome the evaluation measures — for chain i of
  image a, the fraction of a's labelled partners b (other images of the same prompt group, MOS_a ≠ MOS_b) that
  μ_i orders like the labels: 1[sign(μ_i − μ̄_b) = sign(MOS_a − MOS_b)], ½ for μ_i = μ̄_b, μ̄_b the mean over b's
  chains. An (image, dim) without such a partner gets 0 (a constant within its group: no advantage).
"""
from __future__ import annotations

import numpy as np
import torch

from zreward.losses.distribution import kl_rows
from zreward.models.level_readout import expectation

__all__ = ["DIST_REWARDS", "LEVEL_REWARDS", "distribution_rewards", "sampled_level_rewards", "pair_outcome_rewards"]

DIST_REWARDS = ("neg_abs", "neg_sq", "neg_kl")
LEVEL_REWARDS = ("neg_abs", "exact")


def distribution_rewards(level_logits: torch.Tensor, levels: torch.Tensor, mos: torch.Tensor,
                         target: torch.Tensor | None = None, kind: str = "neg_abs") -> torch.Tensor:
    """GDSO reward of each chain from the score distribution read after it (no gradient).

    Args:
        level_logits: (N, L) level logits after each chain.
        levels: (L,) level values.
        mos: (N,) label mean of the chain's (image, dim).
        target: (N, L) label distributions (needed for kind="neg_kl").
        kind: "neg_abs" −|μ − MOS|, "neg_sq" −(μ − MOS)², "neg_kl" −KL(target ‖ p).

    Returns:
        (N,) float32 rewards.

    >>> lg = torch.log(torch.tensor([[0.5, 0.5], [1.0, 1e-9]])); lv = torch.tensor([1.0, 2.0])
    >>> distribution_rewards(lg, lv, torch.tensor([2.0, 1.0])).tolist()
    [-0.5, -0.0]
    """
    if kind not in DIST_REWARDS:
        raise ValueError(f"reward kind {kind!r}: expected one of {DIST_REWARDS}")
    with torch.no_grad():
        logp = torch.log_softmax(level_logits.detach().float(), -1)
        mu = expectation(logp.exp(), levels.to(logp.device))
        mos = mos.to(mu)
        if kind == "neg_abs":
            return -(mu - mos).abs()
        if kind == "neg_sq":
            return -(mu - mos) ** 2
        if target is None:
            raise ValueError("distribution_rewards: kind='neg_kl' needs the target distributions (N, L)")
        t = target.to(logp)
        return -kl_rows(t, logp)


def sampled_level_rewards(level_logits: torch.Tensor, levels: torch.Tensor, mos: torch.Tensor,
                          mode: str = "sample", kind: str = "neg_abs", tol: float = 0.25,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """GRPO scalar reward on one level per chain.

    Args:
        level_logits: (N, L) level logits after each chain.  levels: (L,).  mos: (N,) label means.
        mode: "sample" (draw from the restricted level softmax) or "argmax".
        kind: "neg_abs" −|level − MOS| or "exact" 1[|level − MOS| ≤ tol].
        generator: torch RNG for the draw (None: the global one).

    Returns:
        rewards (N,) float32, level index (N,) long of the chosen level.
    """
    if mode not in ("sample", "argmax"):
        raise ValueError(f"level choice mode {mode!r}: expected 'sample' or 'argmax'")
    if kind not in LEVEL_REWARDS:
        raise ValueError(f"reward kind {kind!r}: expected one of {LEVEL_REWARDS}")
    with torch.no_grad():
        p = torch.softmax(level_logits.detach().float(), -1)
        if mode == "sample":
            idx = torch.multinomial(p.cpu(), 1, generator=generator).squeeze(1).to(p.device)
        else:
            idx = p.argmax(-1)
        err = (levels.to(p.device)[idx] - mos.to(p)).abs()
        r = -err if kind == "neg_abs" else (err <= tol + 1e-6).float()
    return r, idx


def pair_outcome_rewards(mu: torch.Tensor, mos: torch.Tensor, labelled: torch.Tensor,
                         group_ids: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Within-prompt pair-outcome reward of each chain (see module docstring; no gradient).

    Args:
        mu: (B, D, G) expectation read after each of the G chains of each (image, dim).
        mos: (B, D) label means.  labelled: (B, D) bool.
        group_ids: (B,) prompt-group id of each image; partners are the other images with the same id.

    Returns:
        (B, D, G) rewards in [0, 1]; 0 where the (image, dim) has no labelled partner with a different MOS.

    >>> mu = torch.tensor([[[3.0, 1.0]], [[2.0, 2.0]]])  # image 0: two chains; image 1: mean 2
    >>> pair_outcome_rewards(mu, torch.tensor([[4.0], [2.0]]), torch.ones(2, 1, dtype=torch.bool), [0, 0])[0]
    tensor([[1., 0.]])
    """
    if mu.dim() != 3 or mos.shape != mu.shape[:2] or labelled.shape != mu.shape[:2]:
        raise ValueError(f"pair_outcome_rewards: mu {tuple(mu.shape)} must be (B, D, G) with mos and labelled (B, D), "
                         f"got {tuple(mos.shape)} and {tuple(labelled.shape)}")
    with torch.no_grad():
        mu = mu.detach().float()
        g = torch.as_tensor(np.asarray(group_ids), device=mu.device)
        if g.shape != mu.shape[:1]:
            raise ValueError(f"pair_outcome_rewards: group_ids has shape {tuple(g.shape)}, expected ({mu.shape[0]},)")
        m = labelled.to(mu.device).bool()
        y = mos.to(mu)
        same = (g[:, None] == g[None, :]) & ~torch.eye(len(g), dtype=torch.bool, device=mu.device)  # (A, B)
        label_sign = torch.sign(y[:, None, :] - y[None, :, :])  # (A, B, D)
        valid = same[:, :, None] & m[:, None, :] & m[None, :, :] & (label_sign != 0)  # (A, B, D)
        ref = mu.mean(-1)  # (B, D) partner reference: mean over its chains
        pred_sign = torch.sign(mu[:, None, :, :] - ref[None, :, :, None])  # (A, B, D, G)
        hit = (pred_sign * label_sign[..., None] + 1) / 2  # 1 agree, 0 disagree, ½ tie
        w = valid[..., None].to(mu)
        n = w.sum(1)  # (A, D, 1)
        return torch.where(n > 0, (hit * w).sum(1) / n.clamp(min=1), torch.zeros_like(mu))
