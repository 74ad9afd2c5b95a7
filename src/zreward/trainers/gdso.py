"""GDSO — group-wise distribution-supervised optimisation of the reasoning teacher (Z-Reward, arXiv 2606.09076).

The paper's method section is not public in full; this file implements the following variant, as an objective
of the RL loop it shares with GRPO (`zreward.trainers.rl`: batch, rollout, micro-batches, PPO epochs, update).

Per optimizer step (one rollout; stages named as in verl):

1. **batch**: `prompts_per_batch` prompt groups (prompt *instances*, `data.group_batch`), so that pairs of
   images of the same prompt exist; the D rubric dimensions of the run (optionally a seeded random subset of
   `dims_per_step` of them per step, the same for the whole batch).
2. **rollout**: G = `group_size` chains per (image, dim), sampled with plain temperature sampling (no top-k/p) in one
   batched, KV-cached `generate` call (`rollout.rollout`), N = B·D·G chains — the PG chains, at `temperature`.
   Unless `eval_temperature` is null, a second rollout of `dist_samples` chains per (image, dim) at
   `eval_temperature` (0: one greedy chain) — the chains the model reads at evaluation — for the distribution and
   pair terms. Computing those terms on T = 1.0 chains, whose content does not predict the label, taught the head
   to ignore the chain (issue 12: the score spread after the true rationale collapsed).
3. **scoring**: one teacher-forced forward over prompt + chain + `reasoning_close` (`Scorer.chain_forward`) per
   rollout: per-token log-probs of the chain tokens and the level logits at the score position after each chain.
4. **reward** (`losses.distribution_rewards`, a pure function): from the distribution p_i read after PG chain i,
   by default r_i = −|E_{p_i}[level] − MOS| (`reward=neg_sq` −(μ − MOS)², `neg_kl` −KL(target ‖ p_i)), plus
   `pair_reward_weight` × `losses.pair_outcome_rewards` (the fraction of the image's within-prompt partners that
   μ_i orders like the labels — what the evaluation measures; off by default). Read from the same forward as the
   log-probs (the current policy = the sampling policy at the first update).
5. **advantages**: `losses.masked_advantages` over the G chains of each (image, dim) — the same function and
   settings as GRPO: (r − mean)/max(std + 1e-4, `adv_std_floor`) (`adv_scale=group`), or r − mean
   (`adv_scale=none`, Dr. GRPO). The floor keeps near-flat groups (issue 12: 38–75 % of groups had a reward spread
   < 0.05) from being blown up to unit-size advantages. Unlabelled (image, dim) groups get advantage 0 and no loss.
6. **update**: L = pg_weight·L_PG + dist_weight·L_dist + pair_weight·L_pair, with
   - L_PG = `losses.clipped_pg_loss` on the chain tokens (not the score token: the score distribution is trained
     directly by L_dist; the PG term shapes the chain, the "E-step"), `aggregation` as TRL's loss types, optional
     k3 KL (`kl_coef`) to the frozen initial model (LoRA: adapters disabled; else a frozen copy, one more copy of
     the weights in memory and one no-grad forward per rollout);
   - L_dist = `losses.kl_div_levels`(level logits after each evaluation-temperature chain, the (image, dim) label
     distribution), mean over labelled chains — the pointwise distribution loss teacher-forced after each chain
     (the "M-step": the chain is treated as a latent variable sampled from the current policy);
   - L_pair = `losses.score_gap_huber`(μ̄_a − μ̄_b, MOS_a − MOS_b) over all pairs of images of the same prompt and
     every dim labelled for both, μ̄ = mean over the evaluation-temperature chains of the expectation
     (differentiable); or
     `pair_loss=fidelity`: `losses.thurstone_fidelity` on (μ̄, σ̄) with target Φ(ΔMOS/√(std_a² + std_b²)) from
     the label distributions.
   `ppo_epochs` > 1 re-uses the rollout (rewards, advantages, old log-probs and reference log-probs frozen from
   the first pass); every epoch is one optimizer/scheduler step, the distribution and pair terms are applied
   every epoch. With a rollout engine that returns its own sampling log-probs (`engine=vllm`) each PG token's
   surrogate is weighted by the truncated importance weight min(exp(old − engine log-prob), `tis_cap`)
   (`rl.engine_correction`; the hf engine needs none: its log-probs are the trainer's). With `groups_per_micro` the batch is split into micro-batches of whole prompt groups whose
   gradients are accumulated (each micro-batch's loss weighted by its share of the batch images: exact for the
   pair and PG terms' per-image means only up to the masking; identical to one micro-batch when none is masked).

Choices where the paper is silent: the reward form and the three weights (default 1/1/1); `eval_temperature` 0.3
and `adv_std_floor` 0.1 (defaults not yet measured on the real data); the PG term excludes the score token;
L_dist is KL to the label distribution (DeQA-style soft labels from `zreward.data.labels`); per-dimension score
gaps (not the weighted overall); dims subset per step for cost; no entropy bonus.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from zreward.losses import (
    clipped_pg_loss,
    distribution_rewards,
    kl_div_levels,
    masked_advantages,
    pair_outcome_rewards,
    pair_target_thurstone,
    score_gap_huber,
    thurstone_fidelity,
)
from zreward.losses.rewards import DIST_REWARDS
from zreward.models.level_readout import expectation
from zreward.trainers import rollout as R
from zreward.trainers.common import TrainConfig
from zreward.trainers.config import parse_cli
from zreward.trainers.data import within_group_pairs
from zreward.trainers.rl import MicroBatch, RLConfig, RolloutState, engine_correction, train_rl


@dataclass
class GDSOConfig(RLConfig):
    """The GDSO section (`gdso.*`): the shared RL settings plus GDSO's objective."""

    dist_samples: int = field(default=1, metadata={"help": "chains per (image, dim) at eval_temperature for the distribution and pair terms (greedy: 1)"})
    reward: str = field(default="neg_abs", metadata={"help": "neg_abs −|μ−MOS|, neg_sq −(μ−MOS)², neg_kl −KL(target‖p)"})
    pair_reward_weight: float = field(default=0.0, metadata={"help": "weight of the within-prompt pair-outcome reward added to the distribution reward (0: off)"})
    pg_weight: float = field(default=1.0, metadata={"help": "weight of the clipped policy-gradient term"})
    dist_weight: float = field(default=1.0, metadata={"help": "weight of the pointwise KL after each chain"})
    pair_weight: float = field(default=1.0, metadata={"help": "weight of the within-prompt pairwise term"})
    pair_loss: str = field(default="huber", metadata={"help": "huber (score-gap Huber) or fidelity (Thurstone)"})
    huber_delta: float = field(default=1.0, metadata={"help": "Huber threshold of the score-gap loss"})

    section = "gdso"

    def __post_init__(self) -> None:
        self.check({"reward": (self.reward, DIST_REWARDS), "pair_loss": (self.pair_loss, ("huber", "fidelity"))},
                   positive=("dist_samples",))


@dataclass
class Config(TrainConfig):
    gdso: GDSOConfig = field(default_factory=GDSOConfig)


def pg_state(g: GDSOConfig, scorer, mb: MicroBatch, cf, ref_model) -> RolloutState:
    """Rewards, advantages, old and reference log-probs of the PG chains (first pass over a rollout)."""
    ro, lab, levels = mb.ro, mb.lab, scorer.levels
    mos_c, target_c, mask_c = lab.per_chain(ro.group_size)
    rewards = distribution_rewards(cf.level_logits, levels, mos_c, target_c, g.reward)
    if g.pair_reward_weight:
        mu_c = expectation(torch.softmax(cf.level_logits.detach().float(), -1), levels.to(cf.level_logits.device))
        pr = pair_outcome_rewards(mu_c.view(ro.n_images, ro.n_dims, ro.group_size), lab.mos, lab.mask, mb.group_ids)
        rewards = rewards + g.pair_reward_weight * pr.reshape(-1)
    adv = masked_advantages(rewards, mask_c.to(rewards.device), ro.group_size, g.adv_scale, g.adv_std_floor)
    ref = R.reference_logprobs(scorer, ref_model, ro).token_logprobs if g.kl_coef else None
    old = cf.token_logprobs.detach()
    w, w_stats = engine_correction(g, ro, old, cf.token_mask.bool() & mask_c.to(old.device).unsqueeze(1))
    return RolloutState(rewards, adv, old, ref, is_weights=w, is_stats=w_stats)


def pair_term(g: GDSOConfig, mu: torch.Tensor, sd: torch.Tensor, lab: R.Labels, group_ids) -> torch.Tensor:
    """L_pair over the within-prompt pairs of the micro-batch (see module docstring). mu, sd: (B, D)."""
    ia, ib = within_group_pairs(group_ids)
    if len(ia) == 0:
        return mu.sum() * 0.0
    lm = lab.mask.to(mu.device)
    pair_mask = lm[ia] & lm[ib]
    if g.pair_loss == "huber":
        return score_gap_huber(mu[ia] - mu[ib], (lab.mos[ia] - lab.mos[ib]).to(mu), g.huber_delta, mask=pair_mask)
    p_t = pair_target_thurstone(lab.mos[ia], lab.std[ia], lab.mos[ib], lab.std[ib]).to(mu)
    return thurstone_fidelity(mu[ia], sd[ia], mu[ib], sd[ib], p_t, mask=pair_mask)


def gdso_losses(g: GDSOConfig, scorer, mb: MicroBatch, state: RolloutState | None,
                ref_model) -> tuple[torch.Tensor, dict, RolloutState]:
    """The GDSO objective on one micro-batch: (loss, stats, state). The PG term reads the rollout chains `mb.ro`;
    the distribution and pair terms read `mb.ro_eval` (evaluation-temperature chains), or `mb.ro` when None."""
    ro, lab = mb.ro, mb.lab
    cf = R.score_chains(scorer, ro)
    mask_c = lab.per_chain(ro.group_size)[2].to(cf.level_logits.device)
    state = state or pg_state(g, scorer, mb, cf, ref_model)  # first pass: the sampling policy
    pg, st = clipped_pg_loss(cf.token_logprobs, state.old_logp, state.advantages,
                             cf.token_mask.bool() & mask_c.unsqueeze(1), g.clip_eps_low, g.clip_eps_high,
                             ref_logp=state.ref_logp, kl_coef=g.kl_coef, aggregation=g.aggregation,
                             max_len=g.max_new_tokens, is_weights=state.is_weights)
    ev = ro if mb.ro_eval is None else mb.ro_eval
    ce = cf if mb.ro_eval is None else R.score_chains(scorer, ev)
    _, target_e, mask_e = lab.per_chain(ev.group_size)
    dist = kl_div_levels(ce.level_logits.float(), target_e.to(ce.level_logits.device),
                         mask=mask_e.to(ce.level_logits.device))
    mu, sd = R.group_moments(ce.level_logits, scorer.levels, ev.n_images, ev.n_dims, ev.group_size)
    pair = pair_term(g, mu, sd, lab, mb.group_ids)
    loss = g.pg_weight * pg + g.dist_weight * dist + g.pair_weight * pair
    with torch.no_grad():
        r, a = state.rewards[mask_c], state.advantages[mask_c]
        spread = state.rewards.view(-1, ro.group_size).std(1, correction=0)[mask_c[::ro.group_size]]
        zero = torch.zeros(())
        stats = {"loss": loss.detach(), "pg_loss": pg.detach(), "dist_loss": dist.detach(), "pair_loss": pair.detach(),
                 "reward_mean": r.mean() if r.numel() else zero, "adv_abs_mean": a.abs().mean() if a.numel() else zero,
                 "flat_group_frac": (spread < 0.05).float().mean() if spread.numel() else zero,
                 "kl": st["kl"], "clip_frac": st["clip_frac"], "ratio_mean": st["ratio_mean"],
                 "chain_len": cf.token_mask.float().sum(1).mean(), "in_level_mass": cf.in_level_mass.float().mean(),
                 "eval_chain_len": ce.token_mask.float().sum(1).mean(), **state.is_stats}
    return loss, stats, state


def train(cfg: Config) -> Path:
    """Run GDSO; returns the final scorer directory `run_dir/final`."""
    return train_rl(cfg, cfg.gdso, gdso_losses, eval_samples_per_item=cfg.gdso.dist_samples)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(Config, list(argv or []), prog="zreward train gdso",
                    description="GDSO teacher: group-wise PG on distribution rewards + pointwise + pairwise terms.")
    print(train(cfg))
    return 0
