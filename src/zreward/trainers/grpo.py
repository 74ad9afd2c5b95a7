"""GRPO baseline for the reasoning scorer (https://arxiv.org/abs/2402.03300; Z-Reward's baseline, arXiv 2606.09076).

The same rollout machinery as `gdso` (`zreward.trainers.rollout`), but the policy is rewarded only through a
**scalar reward on one score level** and there are no direct distribution or pairwise terms. Per optimizer step:

1. **batch**: `prompts_per_batch` prompt groups (`data.group_batch`), the run's dims (or a seeded random subset of
   `dims_per_step` per step).
2. **rollout**: G = `group_size` chains per (image, dim), plain temperature sampling, one batched KV-cached
   `generate` call.
3. **scoring**: one teacher-forced forward (`Scorer.chain_forward`) gives the chain-token log-probs and the level
   logits after each chain.
4. **reward** (`rollout.sampled_level_rewards`): the policy's score token ℓ_i is drawn from the level distribution
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
   old and reference log-probs.

Choices where the paper is silent: the level is chosen with the restricted (level-token) softmax rather than the
full vocabulary, so the score "token" is always a level; the reward uses the MOS of the (image, dim), not a single
rater; multi-process gradients are averaged by an explicit all-reduce (as in `gdso`).
Batches: `data.group_batch` groups images by prompt *instance* (`data.prompt_groups`: the images linked by
`pairs.jsonl`, not every image with the same prompt text); `data.max_per_prompt` caps the images taken per group.
The saved scorer samples chains at `eval_temperature` (as GDSO's, for a matched comparison).
Evaluation: held-out pairwise accuracy in reasoning mode (`Scorer.score(reasoning=True, samples=eval_samples)`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zreward.losses import clipped_pg_loss, masked_advantages, sampled_level_rewards
from zreward.losses.policy import ADV_SCALES
from zreward.losses.rewards import LEVEL_REWARDS
from zreward.trainers import rollout as R
from zreward.trainers.checkpoint import gather_rng_states, save_checkpoint
from zreward.trainers.common import (DataConfig, ModelConfig, OptimConfig, build_optimizer, build_scorer,
                                     trainable_parameters, val_pairwise_accuracy)
from zreward.trainers.config import dump_config, parse_cli
from zreward.trainers.data import group_batch, load_train_data
from zreward.trainers.run_utils import (AcceleratorConfig, MetricsLogger, RunConfig, make_accelerator,
                                        prepare_run_dir, progress_bar, seed_everything)
from zreward.trainers.sft import model_state, resume_or_seed


@dataclass
class GRPOConfig:
    """The GRPO section (`grpo.*`)."""

    group_size: int = field(default=4, metadata={"help": "G: sampled chains per (image, dim)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "chain length bound (null: the scorer's zreward.json value; saved into the final scorer)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature (the PG chains)"})
    eval_temperature: float | None = field(default=0.3, metadata={"help": "temperature the saved scorer samples chains at, as GDSO's (null: the rollout temperature, the pre-fix behaviour); 0.3 not yet measured"})
    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to train (null: all the split and scorer share)"})
    dims_per_step: int | None = field(default=None, metadata={"help": "random subset of dims per step (null: all)"})
    level_choice: str = field(default="sample", metadata={"help": "score token: sample from the level distribution, or argmax"})
    reward: str = field(default="neg_abs", metadata={"help": "neg_abs −|level − MOS| or exact 1[|level − MOS| ≤ exact_tol]"})
    exact_tol: float = field(default=0.25, metadata={"help": "tolerance of the exact reward"})
    adv_scale: str = field(default="group", metadata={"help": "advantage scaling: group, batch or none (Dr. GRPO)"})
    adv_std_floor: float = field(default=0.1, metadata={"help": "advantages divide by max(std, floor), reward units (0: TRL's std + 1e-4; 0.1 not yet measured)"})
    clip_eps_low: float = field(default=0.2, metadata={"help": "ratio clip 1 − eps_low"})
    clip_eps_high: float = field(default=0.2, metadata={"help": "ratio clip 1 + eps_high"})
    aggregation: str = field(default="seq_mean", metadata={"help": "token aggregation: seq_mean, token_mean, fixed_norm"})
    kl_coef: float = field(default=0.0, metadata={"help": "k3 KL weight to the frozen initial model (0: no reference)"})
    ppo_epochs: int = field(default=1, metadata={"help": "updates per rollout (1: on-policy, ratio = 1)"})
    groups_per_micro: int | None = field(default=None, metadata={"help": "prompt groups per micro-batch (null: whole batch)"})
    eval_reasoning: bool = field(default=True, metadata={"help": "evaluate in reasoning mode (else direct)"})
    eval_samples: int = field(default=1, metadata={"help": "chains per (image, dim) at evaluation (1: greedy)"})

    def __post_init__(self) -> None:
        checks = {"reward": (self.reward, LEVEL_REWARDS), "level_choice": (self.level_choice, ("sample", "argmax")),
                  "adv_scale": (self.adv_scale, ADV_SCALES),
                  "aggregation": (self.aggregation, ("seq_mean", "token_mean", "fixed_norm"))}
        for name, (v, ok) in checks.items():
            if v not in ok:
                raise ValueError(f"grpo.{name} must be one of {ok}, got {v!r}")
        if self.eval_temperature is not None and self.eval_temperature <= 0:
            raise ValueError(f"grpo.eval_temperature must be > 0 or null, got {self.eval_temperature}")
        if self.adv_std_floor < 0:
            raise ValueError(f"grpo.adv_std_floor must be >= 0, got {self.adv_std_floor}")
        for name in ("group_size", "max_new_tokens", "ppo_epochs", "eval_samples"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"grpo.{name} must be >= 1, got {getattr(self, name)}")


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    accelerator: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)


def grpo_losses(g: GRPOConfig, scorer, ro: R.Rollout, lab: R.Labels, cache: dict, ref_model) -> tuple[torch.Tensor, dict]:
    """Forward one micro-batch and return (loss, stats). `cache` holds the first pass's levels / rewards / log-probs."""
    t0 = time.perf_counter()
    cf = R.score_chains(scorer, ro)
    mos_c, _, mask_c = lab.per_chain(ro.group_size)
    mask_c = mask_c.to(cf.level_logits.device)
    if "adv" not in cache:  # first pass over this rollout: it is the sampling policy
        cache["rewards"], cache["level"] = sampled_level_rewards(cf.level_logits, scorer.levels, mos_c,
                                                                 g.level_choice, g.reward, g.exact_tol)
        cache["adv"] = masked_advantages(cache["rewards"], mask_c, ro.group_size, g.adv_scale, g.adv_std_floor)
    logp, tok_mask = R.with_score_token(cf.token_logprobs, cf.token_mask, cf.level_logits, cache["level"])
    if "old" not in cache:
        cache["old"] = logp.detach()
        if g.kl_coef:
            rf = R.reference_logprobs(scorer, ref_model, ro)
            cache["ref"] = R.with_score_token(rf.token_logprobs, rf.token_mask, rf.level_logits, cache["level"])[0]
    t_score = time.perf_counter() - t0
    tok_mask = tok_mask.bool() & mask_c.unsqueeze(1)
    loss, st = clipped_pg_loss(logp, cache["old"], cache["adv"], tok_mask, g.clip_eps_low, g.clip_eps_high,
                               ref_logp=cache.get("ref"), kl_coef=g.kl_coef, aggregation=g.aggregation,
                               max_len=g.max_new_tokens + 1)
    with torch.no_grad():
        r = cache["rewards"][mask_c]
        p = torch.softmax(cf.level_logits.float(), -1)
        mu = (p * scorer.levels.to(p)).sum(-1)
        stats = {"loss": loss.detach(), "pg_loss": loss.detach(), "reward_mean": r.mean() if r.numel() else torch.zeros(()),
                 "mu_abs_err": ((mu - mos_c.to(mu)).abs()[mask_c]).mean() if r.numel() else torch.zeros(()),
                 "kl": st["kl"], "clip_frac": st["clip_frac"], "ratio_mean": st["ratio_mean"],
                 "chain_len": cf.token_mask.float().sum(1).mean(), "in_level_mass": cf.in_level_mass.float().mean(),
                 "t_score": t_score}
    return loss, stats


def train(cfg: Config) -> Path:
    """Run GRPO; returns the final scorer directory `run_dir/final`."""
    g = cfg.grpo
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
    dims = R.resolve_dims(g.dims, data, scorer, "grpo.dims")
    model = scorer.model
    params = trainable_parameters(model)
    lora = hasattr(model, "peft_config")
    opt, sched = build_optimizer(params, cfg.optim, cfg.run.max_steps * g.ppo_epochs)
    ref_model = R.make_reference(model) if g.kl_coef else None  # the initial weights, before any resume
    guard, start = resume_or_seed(ckpt, model, opt, sched, cfg, acc.process_index)
    if acc.is_main_process:
        dump_config(cfg, run.config)
    log = MetricsLogger(run.metrics, resume_step=start if ckpt else None, enabled=acc.is_main_process)
    bar = progress_bar(cfg.run.max_steps, initial=start, desc="grpo", enabled=cfg.run.progress,
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
        t_rollout = time.perf_counter() - t0
        micro = R.micro_batches(data.group[idx], g.groups_per_micro)
        caches = [{} for _ in micro]
        agg: dict[str, float] = {}
        t_score = t_update = 0.0
        for _epoch in range(g.ppo_epochs):
            for rows, cache in zip(micro, caches):
                sub, _ = R.subset(ro, rows) if len(micro) > 1 else (ro, None)
                sub_lab = lab.rows(rows)
                loss, st = grpo_losses(g, scorer, sub, sub_lab, cache, ref_model)
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
    cfg = parse_cli(Config, list(argv or []), prog="zreward train grpo",
                    description="GRPO baseline: reasoning + scalar PG reward on the score level only.")
    print(train(cfg))
    return 0
