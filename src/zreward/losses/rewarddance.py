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
`yes_probability` reads out P(yes) with the same two options (the reward at inference).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from zreward.losses.distribution import check_mask, masked_reduce

__all__ = ["yes_no_ce", "yes_probability"]

_NORMALIZE = ("full", "restricted")


def _yes_no_logprobs(logits: torch.Tensor, yes_id: int | None, no_id: int | None, normalize: str,
                     what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (log P(yes), log P(no)), each (B,)."""
    if normalize not in _NORMALIZE:
        raise ValueError(f"{what}: normalize={normalize!r}, expected one of {_NORMALIZE}")
    if logits.dim() != 2:
        raise ValueError(f"{what}: logits has shape {tuple(logits.shape)}, expected (B, V) full-vocabulary logits "
                         f"at the answer position, or (B, 2) logits ordered (yes, no)")
    if (yes_id is None) != (no_id is None):
        raise ValueError(f"{what}: give both yes_id and no_id (full-vocabulary logits) or neither ((B, 2) logits)")
    if yes_id is None:
        if logits.shape[1] != 2:
            raise ValueError(f"{what}: without yes_id/no_id, logits must be (B, 2) ordered (yes, no), got "
                             f"{tuple(logits.shape)}")
        if normalize == "full":
            raise ValueError(f"{what}: normalize='full' needs full-vocabulary logits and yes_id/no_id; "
                             f"(B, 2) logits only allow normalize='restricted'")
        yes_id, no_id = 0, 1
    V = logits.shape[1]
    if not (0 <= yes_id < V and 0 <= no_id < V) or yes_id == no_id:
        raise ValueError(f"{what}: yes_id={yes_id}, no_id={no_id}, expected two different ids in [0, {V})")
    if normalize == "full":
        logp = F.log_softmax(logits, dim=-1)
        return logp[:, yes_id], logp[:, no_id]
    # restricted: log σ(d) and log σ(−d), d = l_yes − l_no, so only the two logits matter.
    d = logits[:, yes_id] - logits[:, no_id]
    return F.logsigmoid(d), F.logsigmoid(-d)


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
    log_yes, log_no = _yes_no_logprobs(logits, yes_id, no_id, normalize, "yes_no_ce")
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


def yes_probability(logits: torch.Tensor, yes_id: int | None = None, no_id: int | None = None,
                    normalize: str = "restricted") -> torch.Tensor:
    """P("yes") — the RewardDance reward — from answer-position logits.

    Args:
        logits: (B, V) with yes_id/no_id, or (B, 2) ordered (yes, no).
        normalize: "restricted" (default; P(yes) / (P(yes) + P(no)), insensitive to other tokens) or "full".

    Returns:
        (B,) probabilities, differentiable.
    """
    log_yes, _ = _yes_no_logprobs(logits, yes_id, no_id, normalize, "yes_probability")
    return log_yes.exp()
