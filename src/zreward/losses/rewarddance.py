"""RewardDance generative reward loss (https://arxiv.org/abs/2509.08826): cross-entropy on the "yes" token.

The reward model answers "yes"/"no" to "is this image good (better)?"; the reward is P("yes"). Training is
next-token cross-entropy at the answer position with a (possibly soft) target t = P(yes):
    loss = −[t · log P(yes) + (1 − t) · log P(no)].

Two ways to define P, chosen with `normalize`:
- "full" (default): P from the softmax over the whole vocabulary — exactly next-token CE on the "yes"/"no" token
  (t ∈ {0, 1}), i.e. what training a generative reward model with the LM head does. It also pushes down all
  other tokens, so P(yes) + P(no) → 1.
- "restricted": P from the softmax over just {yes, no} (logit difference l_yes − l_no), i.e. binary CE on
  σ(l_yes − l_no). Invariant to the rest of the vocabulary; the natural choice when the input is already the
  two logits.
`zreward.models.yesno.yes_probability` reads out P(yes) with the same two options (the reward at inference).
"""
from __future__ import annotations

import torch

from zreward.losses.distribution import check_mask, masked_reduce
from zreward.models.yesno import yes_no_logprobs, yes_probability

__all__ = ["yes_no_ce", "yes_probability"]

def yes_no_ce(logits: torch.Tensor, target: torch.Tensor, yes_id: int | None = None, no_id: int | None = None,
              normalize: str = "full", mask: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy on P("yes") at the answer position.

    Args:
        logits: (B, V) full-vocabulary logits with `yes_id`/`no_id`, or (B, 2) logits ordered (yes, no).
        target: (B,) target P(yes) in [0, 1] (1 = "yes", 0 = "no", soft values allowed).
        yes_id, no_id: token ids of the single "yes" and "no" tokens (None for (B, 2) logits).
        normalize: "full" (softmax over the vocabulary; next-token CE) or "restricted" (softmax over {yes, no}).
        mask: (B,) bool or None.
        reduction: "mean", "sum" or "none".

    Returns:
        Scalar, or (B,) for reduction="none".
    """
    log_yes, log_no = yes_no_logprobs(logits, yes_id, no_id, normalize, "yes_no_ce")
    if target.shape != log_yes.shape:
        raise ValueError(f"yes_no_ce: target has shape {tuple(target.shape)}, expected ({logits.shape[0]},)")
    m = check_mask(mask, log_yes.shape, "yes_no_ce", logits)
    t = target.to(log_yes.dtype)
    with torch.no_grad():
        bad = (~torch.isfinite(t) | (t < 0) | (t > 1)) & m
        if bad.any():
            i = int(bad.nonzero()[0])
            raise ValueError(f"yes_no_ce: target[{i}] = {float(t[i])}, expected P(yes) in [0, 1]")
    t = torch.where(m, t, torch.zeros_like(t))
    per_row = -(t * log_yes + (1 - t) * log_no)
    return masked_reduce(per_row, m, reduction, "yes_no_ce")

