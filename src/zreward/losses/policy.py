"""Policy-gradient pieces for GRPO-style training (https://arxiv.org/abs/2402.03300), following TRL v1.16 GRPO.

Implemented:
- `group_relative_advantages`: A_i = (r_i − mean_group) / max(std + eps, std_floor), std Bessel-corrected, per
  group ("group", TRL default), over the whole batch ("batch", as in TRL `scale_rewards="batch"`, still
  subtracting the *group* mean), or no division ("none", Dr. GRPO https://arxiv.org/abs/2503.20783). A group
  whose rewards are all equal (including a group of 1) gets advantage exactly 0. `std_floor` (0: TRL's formula)
  keeps advantages proportional to the real reward differences in near-flat groups: without it a group whose
  rewards differ by 1e-3 gets unit-size advantages, like a group that differs by a whole level. Deviation from
  TRL: TRL gives tiny non-zero values for flat groups when r − mean is not exactly 0 in floating point; NaN
  rewards are rejected rather than treated as "unscorable".
- `masked_advantages`: the same with unlabelled groups forced to reward 0 and advantage 0 — the one advantage
  function of both RL trainers (`gdso`, `grpo`), so that their comparison stays matched.
- `clipped_pg_loss`: PPO clipped surrogate −min(ρA, clip(ρ, 1 − ε_low, 1 + ε_high)A) per token, ρ =
  exp(logp − old_logp) (token-level importance sampling), plus optional kl_coef · k3 KL to a reference policy,
  k3 = exp(ref − logp) − (ref − logp) − 1 (http://joschu.net/blog/kl-approx.html). Token aggregation
  (TRL `loss_type`):
    "seq_mean"   = grpo:    mean over sequences of (masked token mean within the sequence)
    "token_mean" = bnpo / dapo: masked token sum / number of unmasked tokens in the batch (dapo in TRL divides by
                   the token count of the whole generation batch across processes and accumulation steps; on one
                   process without accumulation the two coincide)
    "fixed_norm" = dr_grpo: masked token sum / (B · max_len)
  Not implemented: sequence-level importance sampling (GSPO), two-sided `delta` clipping, entropy masks,
  gradient-accumulation rescaling (the caller divides).
- `truncated_is_weights`: truncated importance sampling (TIS) for a rollout engine whose sampling log-probs differ
  from the trainer's (vLLM): w = min(exp(old_logp − engine_logp), cap) per token, TRL 1.16's
  `vllm_importance_sampling_mode="token_truncate"` with `vllm_importance_sampling_clip_max` = cap (TRL's default
  cap is 3.0; its default mode is `sequence_mask`, not implemented here). `clipped_pg_loss(is_weights=w)`
  multiplies the per-token surrogate by w (not the KL term), as TRL does. Engine log-probs that are NaN (not
  returned) get weight 1.
"""
from __future__ import annotations

import torch

from zreward.losses.distribution import check_mask

__all__ = ["group_relative_advantages", "masked_advantages", "clipped_pg_loss", "k3_kl", "truncated_is_weights",
           "ADV_SCALES"]

ADV_SCALES = ("group", "batch", "none")
_AGGREGATIONS = ("seq_mean", "token_mean", "fixed_norm")


def group_relative_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group",
                              eps: float = 1e-4, std_floor: float = 0.0) -> torch.Tensor:
    """GRPO group-relative advantages.

    Args:
        rewards: (N,) rewards, N = num_groups · group_size, each group contiguous (TRL's order: the G completions
            of one prompt are adjacent).
        group_size: G ≥ 1.
        scale: "group" (divide by the group's std), "batch" (divide by the std of all N rewards) or "none".
        eps: added to the std before dividing (TRL: 1e-4).
        std_floor: the divisor is at least this (in reward units; 0: TRL's std + eps). Ignored for "none".

    Returns:
        (N,) advantages, same dtype as `rewards` (differentiable, though rewards normally carry no grad).
    """
    if rewards.dim() != 1:
        raise ValueError(f"group_relative_advantages: rewards has shape {tuple(rewards.shape)}, expected (N,)")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"group_relative_advantages: {rewards.numel()} rewards cannot be split into groups of "
                         f"group_size={group_size} (expected N divisible by group_size >= 1)")
    if scale not in ADV_SCALES:
        raise ValueError(f"group_relative_advantages: scale={scale!r}, expected one of {ADV_SCALES}")
    if not std_floor >= 0:
        raise ValueError(f"group_relative_advantages: std_floor={std_floor}, expected >= 0")
    if not torch.isfinite(rewards).all():
        i = int((~torch.isfinite(rewards)).nonzero()[0])
        raise ValueError(f"group_relative_advantages: rewards[{i}] = {float(rewards[i])}, expected a finite value")
    if rewards.numel() == 0:
        return rewards.clone()
    r = rewards.view(-1, group_size)  # (P, G)
    centred = r - r.mean(dim=1, keepdim=True)
    # Zero spread -> exactly 0 (also covers G = 1, where the Bessel std is undefined).
    flat = (r.amax(dim=1, keepdim=True) == r.amin(dim=1, keepdim=True))
    if scale == "group":
        std = r.std(dim=1, keepdim=True, correction=1) if group_size > 1 else torch.zeros_like(r[:, :1])
        adv = centred / ((std + eps).clamp(min=std_floor) if std_floor else std + eps)
    elif scale == "batch":
        # numel 1: no spread to measure; the group is flat anyway, so the value is irrelevant.
        std = rewards.std(correction=1) if rewards.numel() > 1 else rewards.new_zeros(())
        adv = centred / ((std + eps).clamp(min=std_floor) if std_floor else std + eps)
    else:
        adv = centred
    adv = torch.where(flat, torch.zeros_like(adv), adv)
    return adv.reshape(-1)


def masked_advantages(rewards: torch.Tensor, labelled: torch.Tensor, group_size: int, scale: str = "group",
                      std_floor: float = 0.0) -> torch.Tensor:
    """`group_relative_advantages` where chains of unlabelled groups get reward 0 and advantage 0.

    Args:
        rewards: (N,) per chain, groups of G contiguous.  labelled: (N,) bool, constant within a group.
        scale, std_floor: as in `group_relative_advantages`.
    """
    r = torch.where(labelled, rewards, torch.zeros_like(rewards))
    adv = group_relative_advantages(r, group_size, scale=scale, std_floor=std_floor)
    return torch.where(labelled, adv, torch.zeros_like(adv))


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(π ‖ π_ref) on tokens sampled from π: exp(ref − logp) − (ref − logp) − 1 ≥ 0.

    Args:
        logp, ref_logp: (B, T) log-probabilities of the sampled tokens under the policy and the reference.

    Returns:
        (B, T).
    """
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def truncated_is_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                         cap: float = 3.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token truncated importance weights correcting an engine/trainer log-prob mismatch (TIS, TRL's
    `token_truncate`; https://fengyao.notion.site/off-policy-rl).

    The chains were sampled by an engine whose log-probs (`engine_logp`) differ from the trainer's log-probs of the
    same tokens under the same weights (`old_logp`); the PG estimator needs samples from the trainer's policy, so
    each token's surrogate is weighted by min(π_trainer/π_engine, cap).

    Args:
        old_logp: (B, T) trainer log-probs of the sampled tokens at rollout time (no grad).
        engine_logp: (B, T) the engine's sampling log-probs of the same tokens; NaN where unknown (weight 1).
        mask: (B, T) bool or 0/1, True for tokens that count.
        cap: C > 0, the truncation.

    Returns:
        weights: (B, T) detached, 1 where masked.
        stats: "tis_weight_mean" (masked mean of the truncated weights), "tis_capped_frac" (fraction of masked
            tokens whose ratio exceeded C), "tis_logp_diff_abs" (masked mean |old − engine|, NaN tokens excluded).
    """
    if old_logp.shape != engine_logp.shape or old_logp.dim() != 2:
        raise ValueError(f"truncated_is_weights: old_logp {tuple(old_logp.shape)} and engine_logp "
                         f"{tuple(engine_logp.shape)} must both be (B, T)")
    if not cap > 0:
        raise ValueError(f"truncated_is_weights: cap={cap}, expected > 0")
    mb = check_mask(mask, old_logp.shape, "truncated_is_weights", old_logp)
    with torch.no_grad():
        known = mb & ~torch.isnan(engine_logp)
        diff = torch.where(known, old_logp - engine_logp.to(old_logp.dtype), torch.zeros_like(old_logp))
        ratio = torch.exp(diff)
        w = torch.clamp(ratio, max=cap)
        n = mb.sum().clamp(min=1)
        stats = {"tis_weight_mean": torch.where(mb, w, torch.zeros_like(w)).sum() / n,
                 "tis_capped_frac": (mb & (ratio > cap)).sum() / n,
                 "tis_logp_diff_abs": diff.abs().sum() / known.sum().clamp(min=1)}
        return torch.where(mb, w, torch.ones_like(w)), stats


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                    eps_low: float = 0.2, eps_high: float = 0.2, ref_logp: torch.Tensor | None = None,
                    kl_coef: float = 0.0, aggregation: str = "seq_mean", max_len: int | None = None,
                    is_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped policy-gradient loss with optional k3 KL penalty, aggregated like TRL's GRPO loss types.

    Args:
        logp: (B, T) log-probabilities of the sampled tokens under the current policy (with grad).
        old_logp: (B, T) the same under the sampling policy (no grad; pass logp.detach() for on-policy).
        advantages: (B,) per-sequence or (B, T) per-token advantages.
        mask: (B, T) bool or 0/1, True for completion tokens that count.
        eps_low, eps_high: ratio clipped to [1 − eps_low, 1 + eps_high] (DAPO's clip-higher uses eps_high > eps_low).
        ref_logp: (B, T) reference-policy log-probabilities; required when kl_coef != 0.
        kl_coef: weight β of the k3 KL term added to every token loss.
        aggregation: "seq_mean" (TRL grpo), "token_mean" (TRL bnpo/dapo) or "fixed_norm" (TRL dr_grpo).
        max_len: normaliser for "fixed_norm" (TRL's max_completion_length); defaults to T.
        is_weights: (B, T) engine-mismatch weights (`truncated_is_weights`) multiplying each token's clipped
            surrogate (not the KL term), or None.

    Returns:
        loss: scalar. An all-masked batch gives 0 (with a graph). Under "seq_mean" an all-masked row adds 0 but
            still counts in the mean over B, as in TRL.
        stats: detached scalars — "kl" (masked token mean of k3, 0 without ref), "ratio_mean",
            "clip_low_frac" / "clip_high_frac" (fraction of tokens where the clipped side is the active minimum:
            ρ < 1 − eps_low with A < 0, ρ > 1 + eps_high with A > 0), "clip_frac" (their sum).
    """
    if logp.dim() != 2:
        raise ValueError(f"clipped_pg_loss: logp has shape {tuple(logp.shape)}, expected (B, T)")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("is_weights", is_weights)):
        if t is not None and t.shape != logp.shape:
            raise ValueError(f"clipped_pg_loss: {name} has shape {tuple(t.shape)}, expected {tuple(logp.shape)}")
    if aggregation not in _AGGREGATIONS:
        raise ValueError(f"clipped_pg_loss: aggregation={aggregation!r}, expected one of {_AGGREGATIONS}")
    if kl_coef != 0.0 and ref_logp is None:
        raise ValueError("clipped_pg_loss: kl_coef != 0 needs ref_logp (B, T)")
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"clipped_pg_loss: eps_low={eps_low}, eps_high={eps_high}, expected >= 0")
    B, T = logp.shape
    mb = check_mask(mask, logp.shape, "clipped_pg_loss", logp)
    m = mb.to(logp.dtype)
    if advantages.dim() == 1 and advantages.shape[0] == B:
        adv = advantages.unsqueeze(1)
    elif advantages.shape == logp.shape:
        adv = advantages
    else:
        raise ValueError(f"clipped_pg_loss: advantages has shape {tuple(advantages.shape)}, expected ({B},) or "
                         f"({B}, {T})")
    adv = adv.to(logp.dtype).detach()

    # Padding positions may hold -inf/NaN log-probs; zero them before exp so neither the value nor the
    # gradient (0 · NaN) is poisoned. Masked positions then get exactly zero gradient.
    zero = torch.zeros_like(logp)
    logp = torch.where(mb, logp, zero)
    old_logp = torch.where(mb, old_logp.detach().to(logp.dtype), zero)
    if ref_logp is not None:
        ref_logp = torch.where(mb, ref_logp.detach().to(logp.dtype), zero)
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if is_weights is not None:
        per_token = per_token * torch.where(mb, is_weights.detach().to(logp.dtype), zero)
    kl = None
    if ref_logp is not None:
        kl = k3_kl(logp, ref_logp)
        if kl_coef != 0.0:
            per_token = per_token + kl_coef * kl

    masked = torch.where(mb, per_token, zero)
    if aggregation == "seq_mean":
        loss = (masked.sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif aggregation == "token_mean":
        loss = masked.sum() / m.sum().clamp(min=1.0)
    else:
        norm = T if max_len is None else max_len
        if norm < 1:
            raise ValueError(f"clipped_pg_loss: max_len={max_len}, expected >= 1")
        loss = masked.sum() / (B * norm)

    with torch.no_grad():
        n_tok = m.sum().clamp(min=1.0)
        low = ((ratio < 1 - eps_low) & (adv < 0)).to(m.dtype)
        high = ((ratio > 1 + eps_high) & (adv > 0)).to(m.dtype)
        stats = {
            "kl": torch.where(mb, kl, zero).sum() / n_tok if kl is not None else logp.new_zeros(()),
            "ratio_mean": torch.where(mb, ratio, zero).sum() / n_tok,
            "clip_low_frac": (low * m).sum() / n_tok,
            "clip_high_frac": (high * m).sum() / n_tok,
        }
        stats["clip_frac"] = stats["clip_low_frac"] + stats["clip_high_frac"]
    return loss, stats
