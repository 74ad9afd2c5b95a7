"""GDSO — group-wise distribution-supervised optimisation of the reasoning teacher (Z-Reward, arXiv 2606.09076).

The paper's method section is not public in full (see NOTES.md); this file implements the following variant.

Per optimizer step (one rollout; stages named as in verl):

1. **batch**: `prompts_per_batch` prompt groups (all images of a prompt, `data.group_batch`), so that pairs of
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
   every epoch. With `groups_per_micro` the batch is split into micro-batches of whole prompt groups whose
   gradients are accumulated (each micro-batch's loss weighted by its share of the batch images: exact for the
   pair and PG terms' per-image means only up to the masking; identical to one micro-batch when none is masked).

Choices where the paper is silent: the reward form and the three weights (default 1/1/1); `eval_temperature` 0.3
and `adv_std_floor` 0.1 (defaults not yet measured on the real data); the PG term excludes
the score token; L_dist is KL to the label distribution (DeQA-style soft labels from `zreward.data.labels`);
per-dimension score gaps (not the weighted overall); dims subset per step for cost; no entropy bonus; multi-process
gradients are averaged by an explicit all-reduce (the Scorer holds the plain module, so accelerate's DDP wrapper is
not used; DeepSpeed/FSDP sharding is not supported by this loop).
Batches: `data.group_batch` groups images by prompt *instance* (`data.prompt_groups`: the images linked by
`pairs.jsonl`, not every image with the same prompt text); `data.max_per_prompt` caps the images taken per group.
Evaluation: held-out pairwise accuracy in reasoning mode (`Scorer.score(reasoning=True, samples=eval_samples)`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.losses import (clipped_pg_loss, distribution_rewards, kl_div_levels, masked_advantages,
                            pair_outcome_rewards, score_gap_huber, thurstone_fidelity)
from zreward.losses.policy import ADV_SCALES
from zreward.losses.rewards import DIST_REWARDS
from zreward.models.level_readout import expectation
from zreward.trainers import rollout as R
from zreward.trainers.checkpoint import gather_rng_states, save_checkpoint
from zreward.trainers.common import (DataConfig, ModelConfig, OptimConfig, build_optimizer, build_scorer,
                                     trainable_parameters, val_pairwise_accuracy)
from zreward.trainers.config import dump_config, parse_cli
from zreward.trainers.data import group_batch, load_train_data, within_group_pairs
from zreward.trainers.run_utils import (AcceleratorConfig, MetricsLogger, RunConfig, make_accelerator,
                                        prepare_run_dir, progress_bar, seed_everything)
from zreward.trainers.sft import model_state, resume_or_seed


@dataclass
class GDSOConfig:
    """The GDSO section (`gdso.*`)."""

    group_size: int = field(default=4, metadata={"help": "G: sampled chains per (image, dim)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "chain length bound (null: the scorer's zreward.json value; saved into the final scorer)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature (the PG chains)"})
    eval_temperature: float | None = field(default=0.3, metadata={"help": "temperature of the chains the distribution and pair terms read, the one the saved scorer samples at (0: greedy; null: those terms read the PG chains, the pre-fix behaviour); 0.3 not yet measured"})
    dist_samples: int = field(default=1, metadata={"help": "chains per (image, dim) at eval_temperature for the distribution and pair terms (greedy: 1)"})
    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to train (null: all the split and scorer share)"})
    dims_per_step: int | None = field(default=None, metadata={"help": "random subset of dims per step (null: all)"})
    reward: str = field(default="neg_abs", metadata={"help": "neg_abs −|μ−MOS|, neg_sq −(μ−MOS)², neg_kl −KL(target‖p)"})
    pair_reward_weight: float = field(default=0.0, metadata={"help": "weight of the within-prompt pair-outcome reward added to the distribution reward (0: off)"})
    adv_scale: str = field(default="group", metadata={"help": "advantage scaling: group, batch or none (Dr. GRPO)"})
    adv_std_floor: float = field(default=0.1, metadata={"help": "advantages divide by max(std, floor), reward units (0: TRL's std + 1e-4; 0.1 not yet measured)"})
    pg_weight: float = field(default=1.0, metadata={"help": "weight of the clipped policy-gradient term"})
    dist_weight: float = field(default=1.0, metadata={"help": "weight of the pointwise KL after each chain"})
    pair_weight: float = field(default=1.0, metadata={"help": "weight of the within-prompt pairwise term"})
    pair_loss: str = field(default="huber", metadata={"help": "huber (score-gap Huber) or fidelity (Thurstone)"})
    huber_delta: float = field(default=1.0, metadata={"help": "Huber threshold of the score-gap loss"})
    clip_eps_low: float = field(default=0.2, metadata={"help": "ratio clip 1 − eps_low"})
    clip_eps_high: float = field(default=0.2, metadata={"help": "ratio clip 1 + eps_high"})
    aggregation: str = field(default="seq_mean", metadata={"help": "token aggregation: seq_mean, token_mean, fixed_norm"})
    kl_coef: float = field(default=0.0, metadata={"help": "k3 KL weight to the frozen initial model (0: no reference)"})
    ppo_epochs: int = field(default=1, metadata={"help": "updates per rollout (1: on-policy, ratio = 1)"})
    groups_per_micro: int | None = field(default=None, metadata={"help": "prompt groups per micro-batch (null: whole batch)"})
    eval_reasoning: bool = field(default=True, metadata={"help": "evaluate in reasoning mode (else direct)"})
    eval_samples: int = field(default=1, metadata={"help": "chains per (image, dim) at evaluation (1: greedy)"})

    def __post_init__(self) -> None:
        checks = {"reward": (self.reward, DIST_REWARDS), "adv_scale": (self.adv_scale, ADV_SCALES),
                  "pair_loss": (self.pair_loss, ("huber", "fidelity")),
                  "aggregation": (self.aggregation, ("seq_mean", "token_mean", "fixed_norm"))}
        for name, (v, ok) in checks.items():
            if v not in ok:
                raise ValueError(f"gdso.{name} must be one of {ok}, got {v!r}")
        if self.eval_temperature is not None and self.eval_temperature < 0:
            raise ValueError(f"gdso.eval_temperature must be >= 0 (0: greedy) or null, got {self.eval_temperature}")
        if self.adv_std_floor < 0:
            raise ValueError(f"gdso.adv_std_floor must be >= 0, got {self.adv_std_floor}")
        for name in ("group_size", "max_new_tokens", "ppo_epochs", "eval_samples", "dist_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"gdso.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    accelerator: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    gdso: GDSOConfig = field(default_factory=GDSOConfig)


def gdso_losses(g: GDSOConfig, scorer, ro: R.Rollout, lab: R.Labels, group_ids: np.ndarray, cache: dict,
                ref_model, ro_eval: R.Rollout | None = None) -> tuple[torch.Tensor, dict]:
    """Forward one micro-batch and return (loss, stats). `cache` holds the first pass's rewards / old log-probs.

    The PG term reads the rollout chains `ro`; the distribution and pair terms read `ro_eval` (chains at the
    evaluation temperature), or `ro` when it is None."""
    levels = scorer.levels
    t0 = time.perf_counter()
    cf = R.score_chains(scorer, ro)
    mos_c, target_c, mask_c = lab.per_chain(ro.group_size)
    mask_c = mask_c.to(cf.level_logits.device)
    if "adv" not in cache:  # first pass over this rollout: it is the sampling policy
        rewards = distribution_rewards(cf.level_logits, levels, mos_c, target_c, g.reward)
        if g.pair_reward_weight:
            mu_c = expectation(torch.softmax(cf.level_logits.detach().float(), -1), levels.to(cf.level_logits.device))
            pr = pair_outcome_rewards(mu_c.view(ro.n_images, ro.n_dims, ro.group_size), lab.mos, lab.mask, group_ids)
            rewards = rewards + g.pair_reward_weight * pr.reshape(-1)
        cache["rewards"] = rewards
        cache["adv"] = masked_advantages(rewards, mask_c, ro.group_size, g.adv_scale, g.adv_std_floor)
        cache["old"] = cf.token_logprobs.detach()
        if g.kl_coef:
            cache["ref"] = R.reference_logprobs(scorer, ref_model, ro).token_logprobs
    ce = cf if ro_eval is None else R.score_chains(scorer, ro_eval)
    t_score = time.perf_counter() - t0
    tok_mask = cf.token_mask.bool() & mask_c.unsqueeze(1)
    pg, st = clipped_pg_loss(cf.token_logprobs, cache["old"], cache["adv"], tok_mask, g.clip_eps_low,
                             g.clip_eps_high, ref_logp=cache.get("ref"), kl_coef=g.kl_coef,
                             aggregation=g.aggregation, max_len=g.max_new_tokens)
    ev = ro if ro_eval is None else ro_eval
    _, target_e, mask_e = lab.per_chain(ev.group_size)
    mask_e = mask_e.to(ce.level_logits.device)
    dist = kl_div_levels(ce.level_logits.float(), target_e.to(ce.level_logits.device), mask=mask_e)
    mu, sd = R.group_moments(ce.level_logits, levels, ev.n_images, ev.n_dims, ev.group_size)
    ia, ib = within_group_pairs(group_ids)
    lm = lab.mask.to(mu.device)
    pair_mask = lm[ia] & lm[ib]
    if len(ia) == 0:
        pair = mu.sum() * 0.0
    elif g.pair_loss == "huber":
        tgt = (lab.mos[ia] - lab.mos[ib]).to(mu)
        pair = score_gap_huber(mu[ia] - mu[ib], tgt, g.huber_delta, mask=pair_mask)
    else:
        s2 = (lab.std[ia] ** 2 + lab.std[ib] ** 2 + 1e-6).sqrt()
        p_t = torch.special.ndtr((lab.mos[ia] - lab.mos[ib]) / s2).to(mu)
        pair = thurstone_fidelity(mu[ia], sd[ia], mu[ib], sd[ib], p_t, mask=pair_mask)
    loss = g.pg_weight * pg + g.dist_weight * dist + g.pair_weight * pair
    with torch.no_grad():
        r, a = cache["rewards"][mask_c], cache["adv"][mask_c]
        spread = cache["rewards"].view(-1, ro.group_size).std(1, correction=0)[mask_c[::ro.group_size]]
        stats = {"loss": loss.detach(), "pg_loss": pg.detach(), "dist_loss": dist.detach(), "pair_loss": pair.detach(),
                 "reward_mean": r.mean() if r.numel() else torch.zeros(()),
                 "adv_abs_mean": a.abs().mean() if a.numel() else torch.zeros(()),
                 "flat_group_frac": (spread < 0.05).float().mean() if spread.numel() else torch.zeros(()),
                 "kl": st["kl"], "clip_frac": st["clip_frac"], "ratio_mean": st["ratio_mean"],
                 "chain_len": cf.token_mask.float().sum(1).mean(), "in_level_mass": cf.in_level_mass.float().mean(),
                 "eval_chain_len": ce.token_mask.float().sum(1).mean(), "t_score": t_score}
    return loss, stats


def train(cfg: Config) -> Path:
    """Run GDSO; returns the final scorer directory `run_dir/final`."""
    g = cfg.gdso
    acc = make_accelerator(cfg.accelerator)
    run, ckpt = prepare_run_dir(cfg.run.output_dir, resume=cfg.run.resume, overwrite=cfg.run.overwrite,
                                is_main=acc.is_main_process)
    seed_everything(cfg.run.seed, 0)
    scorer = build_scorer(cfg.model, acc.device)
    # Evaluation and the saved scorer generate chains like the rollouts do.
    g.max_new_tokens = g.max_new_tokens or scorer.config.max_new_tokens
    scorer.config.max_new_tokens = g.max_new_tokens
    scorer.config.temperature = g.eval_temperature or g.temperature
    scorer.config.mode = "reasoning"
    data = load_train_data(cfg.data.train, max_images=cfg.data.max_images)
    val = load_train_data(cfg.data.val, max_images=cfg.data.val_max_images) if cfg.data.val else None
    dims = R.resolve_dims(g.dims, data, scorer, "gdso.dims")
    model = scorer.model
    params = trainable_parameters(model)
    lora = hasattr(model, "peft_config")
    opt, sched = build_optimizer(params, cfg.optim, cfg.run.max_steps * g.ppo_epochs)
    ref_model = R.make_reference(model) if g.kl_coef else None  # the initial weights, before any resume
    guard, start = resume_or_seed(ckpt, model, opt, sched, cfg, acc.process_index)
    if acc.is_main_process:
        dump_config(cfg, run.config)
    log = MetricsLogger(run.metrics, resume_step=start if ckpt else None, enabled=acc.is_main_process)
    bar = progress_bar(cfg.run.max_steps, initial=start, desc="gdso", enabled=cfg.run.progress,
                       is_main=acc.is_main_process)
    world = acc.num_processes
    for step in range(start, cfg.run.max_steps):
        t_start = time.perf_counter()
        idx = group_batch(data, cfg.data.prompts_per_batch, step, cfg.run.seed, rank=acc.process_index,
                          world_size=world, max_per_prompt=cfg.data.max_per_prompt)
        sdims = R.step_dims(dims, g.dims_per_step, cfg.run.seed, step)
        lab = R.batch_labels(data, idx, data.dim_index(sdims), scorer.levels)
        t0 = time.perf_counter()
        ro = R.rollout(scorer, [data.prompts[i] for i in idx], data.image_batch(idx), sdims, g.group_size,
                       g.max_new_tokens, g.temperature)
        ro_eval = None
        if g.eval_temperature is not None:  # the chains the model reads at evaluation (see module docstring)
            greedy = g.eval_temperature == 0
            ro_eval = R.rollout(scorer, [data.prompts[i] for i in idx], data.image_batch(idx), sdims,
                                1 if greedy else g.dist_samples, g.max_new_tokens, g.eval_temperature or 1.0,
                                do_sample=not greedy)
        t_rollout = time.perf_counter() - t0
        micro = R.micro_batches(data.group[idx], g.groups_per_micro)
        caches = [{} for _ in micro]
        agg: dict[str, float] = {}
        t_score = t_update = 0.0
        for _epoch in range(g.ppo_epochs):
            for rows, cache in zip(micro, caches):
                sub = R.subset(ro, rows)[0] if len(micro) > 1 else ro
                sub_ev = R.subset(ro_eval, rows)[0] if len(micro) > 1 and ro_eval is not None else ro_eval
                loss, st = gdso_losses(g, scorer, sub, lab.rows(rows), data.group[idx][rows], cache, ref_model, sub_ev)
                w = len(rows) / len(idx)
                t0 = time.perf_counter()
                (loss * w).backward()
                t_update += time.perf_counter() - t0
                t_score += st.pop("t_score")
                for k, v in st.items():
                    agg[k] = agg.get(k, 0.0) + float(v) * w / g.ppo_epochs
            t0 = time.perf_counter()
            if world > 1:  # average gradients across processes (see module docstring)
                for p in params:
                    if p.grad is not None:
                        torch.distributed.all_reduce(p.grad)
                        p.grad /= world
            gn = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf"))
            if guard.check(step, torch.tensor(agg["loss"]), gn):
                opt.step()
                sched.step()
            opt.zero_grad(set_to_none=True)
            t_update += time.perf_counter() - t0
        step_time = time.perf_counter() - t_start
        metrics = {**agg, "lr": sched.get_last_lr()[0], "grad_norm": float(gn), "t_rollout": t_rollout,
                   "t_score": t_score, "t_update": t_update, "step_time": step_time,
                   "gen_tokens": ro.gen_tokens, "gen_tok_per_s": ro.gen_tokens / max(t_rollout, 1e-9)}
        last = step + 1 == cfg.run.max_steps
        if val is not None and ((cfg.data.eval_every and (step + 1) % cfg.data.eval_every == 0) or last):
            metrics.update(val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size,
                                                 reasoning=g.eval_reasoning, samples=g.eval_samples))
        if (step + 1) % max(cfg.run.log_every, 1) == 0 or last:
            log.log(step + 1, metrics)
        bar.update(1)
        bar.set_postfix(loss=f"{agg['loss']:.3f}", r=f"{agg['reward_mean']:.2f}")
        if (cfg.run.save_every and (step + 1) % cfg.run.save_every == 0) or last:
            rng = gather_rng_states()
            if acc.is_main_process:
                sd = model_state(model, lora)
                save_checkpoint(run.checkpoints, step + 1, sd, optimizer=opt, scheduler=sched, rng_states=rng,
                                extra={"guard": guard.state_dict()}, keep_last=cfg.run.keep_last)
            acc.wait_for_everyone()
    bar.close()
    log.close()
    if acc.is_main_process:
        scorer.save_pretrained(run.final)
    acc.wait_for_everyone()
    return run.final


def main(argv: list[str] | None = None) -> int:
    cfg = parse_cli(Config, list(argv or []), prog="zreward train gdso",
                    description="GDSO teacher: group-wise PG on distribution rewards + pointwise + pairwise terms.")
    print(train(cfg))
    return 0
