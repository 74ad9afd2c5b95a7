"""GRPO baseline for the reasoning scorer (https://arxiv.org/abs/2402.03300; Z-Reward's baseline, arXiv 2606.09076).

The same RL loop as `gdso` (`zreward.trainers.rl`: batch, rollout, micro-batches, PPO epochs, update; only the
objective differs): the policy is rewarded only through a **scalar reward on one score level** and there are no
direct distribution or pairwise terms. Per optimizer step:

1. **batch**: `prompts_per_batch` prompt groups (prompt *instances*, `data.group_batch`), the run's dims (or a seeded random subset of
   `dims_per_step` per step).
2. **rollout**: G = `group_size` chains per (image, dim), plain temperature sampling, one batched KV-cached
   `generate` call.
3. **scoring**: one teacher-forced forward (`Scorer.chain_forward`) gives the chain-token log-probs and the level
   logits after each chain.
4. **reward** (`losses.sampled_level_rewards`, a pure function): the policy's score token ℓ_i is drawn from the level distribution
   after chain i (softmax restricted to the level tokens; `level_choice=argmax` takes its mode instead), and
   r_i = −|ℓ_i − MOS| (`reward=neg_abs`) or r_i = 1[|ℓ_i − MOS| ≤ `exact_tol`] (`reward=exact`; with the default
   tol 0.25 this is "the nearest level to the MOS").
5. **advantages**: `losses.masked_advantages` over the G chains of each (image, dim), the same function and
   settings as GDSO ((r − mean)/max(std + 1e-4, `adv_std_floor`), or Dr. GRPO's r − mean with `adv_scale=none`);
   unlabelled (image, dim) groups get advantage 0.
6. **update**: `losses.clipped_pg_loss` over the chain tokens **and the chosen score token** — GRPO treats the
   score token as part of the policy's output: its log-prob log p(ℓ_i | chain) under the restricted level softmax is
   appended as one more token of sequence i (`rollout.with_score_token`), so a sequence has |chain| + 1 tokens
   (`aggregation` as TRL's loss types; `fixed_norm` divides by max_new_tokens + 1). Optional k3 KL (`kl_coef`) to
   the frozen initial model over the same tokens (LoRA: adapters disabled; else a frozen copy of the weights, one
   no-grad forward per rollout). `ppo_epochs` > 1 re-uses the rollout with frozen rewards, chosen levels,
   old and reference log-probs. With `engine=vllm` the chain tokens' surrogates are weighted by the truncated
   importance weights min(exp(old − engine log-prob), `tis_cap`) (`rl.engine_correction`; the score token, chosen
   by the trainer, weight 1; the hf engine needs none).

Choices where the paper is silent: the level is chosen with the restricted (level-token) softmax rather than the
full vocabulary, so the score "token" is always a level; the reward uses the MOS of the (image, dim), not a single
rater. The saved scorer samples chains at `eval_temperature`, as GDSO's, for a matched comparison.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from zreward.losses import clipped_pg_loss, masked_advantages, sampled_level_rewards
from zreward.losses.rewards import LEVEL_REWARDS
from zreward.models.level_readout import expectation
from zreward.trainers import rollout as R
from zreward.trainers.common import TrainConfig
from zreward.trainers.config import parse_cli
from zreward.trainers.rl import MicroBatch, RLConfig, RolloutState, engine_correction, train_rl


@dataclass
class GRPOConfig(RLConfig):
    """The GRPO section (`grpo.*`): the shared RL settings plus GRPO's objective."""

    level_choice: str = field(default="sample", metadata={"help": "score token: sample from the level distribution, or argmax"})
    reward: str = field(default="neg_abs", metadata={"help": "neg_abs −|level − MOS| or exact 1[|level − MOS| ≤ exact_tol]"})
    exact_tol: float = field(default=0.25, metadata={"help": "tolerance of the exact reward"})

    section = "grpo"

    def __post_init__(self) -> None:
        self.check({"reward": (self.reward, LEVEL_REWARDS), "level_choice": (self.level_choice, ("sample", "argmax"))})


@dataclass
class Config(TrainConfig):
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def grpo_losses(g: GRPOConfig, scorer, mb: MicroBatch, state: RolloutState | None,
                ref_model) -> tuple[torch.Tensor, dict, RolloutState]:
    """The GRPO objective on one micro-batch: (loss, stats, state); `state` freezes the first pass's chosen levels,
    rewards, advantages and old / reference log-probs."""
    ro, lab = mb.ro, mb.lab
    cf = R.score_chains(scorer, ro)
    mos_c, _, mask_c = lab.per_chain(ro.group_size)
    mask_c = mask_c.to(cf.level_logits.device)
    if state is None:  # first pass over this rollout: it is the sampling policy
        rewards, level = sampled_level_rewards(cf.level_logits, scorer.levels, mos_c, g.level_choice, g.reward,
                                               g.exact_tol)
        adv = masked_advantages(rewards, mask_c, ro.group_size, g.adv_scale, g.adv_std_floor)
    else:
        level = state.level
    logp, tok_mask = R.with_score_token(cf.token_logprobs, cf.token_mask, cf.level_logits, level)
    if state is None:
        ref = None
        if g.kl_coef:
            rf = R.reference_logprobs(scorer, ref_model, ro)
            ref = R.with_score_token(rf.token_logprobs, rf.token_mask, rf.level_logits, level)[0]
        w, w_stats = engine_correction(g, ro, logp.detach(), tok_mask.bool() & mask_c.unsqueeze(1))
        state = RolloutState(rewards, adv, logp.detach(), ref, level, is_weights=w, is_stats=w_stats)
    loss, st = clipped_pg_loss(logp, state.old_logp, state.advantages, tok_mask.bool() & mask_c.unsqueeze(1),
                               g.clip_eps_low, g.clip_eps_high, ref_logp=state.ref_logp, kl_coef=g.kl_coef,
                               aggregation=g.aggregation, max_len=g.max_new_tokens + 1, is_weights=state.is_weights)
    with torch.no_grad():
        r = state.rewards[mask_c]
        p = torch.softmax(cf.level_logits.float(), -1)
        mu = expectation(p, scorer.levels)
        stats = {"loss": loss.detach(), "pg_loss": loss.detach(), "reward_mean": r.mean() if r.numel() else torch.zeros(()),
                 "mu_abs_err": ((mu - mos_c.to(mu)).abs()[mask_c]).mean() if r.numel() else torch.zeros(()),
                 "kl": st["kl"], "clip_frac": st["clip_frac"], "ratio_mean": st["ratio_mean"],
                 "chain_len": cf.token_mask.float().sum(1).mean(), "in_level_mass": cf.in_level_mass.float().mean(),
                 **state.is_stats}
    return loss, stats, state


def train(cfg: Config) -> Path:
    """Run GRPO; returns the final scorer directory `run_dir/final`."""
    return train_rl(cfg, cfg.grpo, grpo_losses)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(Config, list(argv or []), prog="zreward train grpo",
                    description="GRPO baseline: reasoning + scalar PG reward on the score level only.")
    print(train(cfg))
    return 0
