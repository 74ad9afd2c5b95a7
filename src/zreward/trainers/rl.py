"""The one RL loop of the reasoning-mode trainers (`gdso`, `grpo`): their difference is exactly their objective.

Per optimizer step (stages named as in verl; the shared settings are `RLConfig`):

1. **batch**: `data.prompts_per_batch` prompt groups (`data.group_batch`: prompt *instances*, up to
   `data.max_per_prompt` images each), so that pairs of images of the same prompt exist; the run's dims, or a
   seeded random subset of `dims_per_step` of them (the same for the whole batch).
2. **rollout**: G = `group_size` chains per (image, dim) at `temperature`, plain temperature sampling, one
   batched KV-cached `generate` call (`rollout.rollout`): the policy-gradient chains. An objective that reads
   chains as at evaluation (GDSO's distribution and pair terms) also gets `eval_rollout`: `eval_samples_per_item`
   chains per (image, dim) at `eval_temperature` (0: one greedy chain).
3. **micro-batches** of whole prompt groups (`groups_per_micro`, or `accelerator.gradient_accumulation_steps`
   equal parts), each one forward/backward of the objective, its loss weighted by its share of the batch images.
4. **objective** (the trainer's file): `objective(g, scorer, mb, state, ref_model) -> (loss, stats, state)`. The
   first call on a micro-batch gets state None and returns the `RolloutState` it froze (rewards, advantages,
   sampling-policy and reference log-probs); `ppo_epochs` > 1 re-uses the rollout with that state, one optimizer
   and scheduler step per epoch. With `anchor_weight` > 0 the loop adds `anchor_weight` × `anchor_loss` (the
   cold start's own CE + KL on the micro-batch's true rationales, logged as anchor_loss) to every objective — the
   same for GDSO and GRPO, so their comparison stays matched. With `guide_rationale` the last chain of each
   rollout group is the record's true rationale instead of a sample (`rollout.with_guides`; issue 12: 57% of the
   cold start's alignment groups hold no right chain at the rollout temperature 1.0, 49% at 0.3, so group-relative
   advantages cannot point at one) — also the same for both.
5. **update**: `RunLoop.optimizer_step` (gradients all-reduced across processes, clipping, NaN guard), then
   `scorer.engine.sync_weights` once the rollout's last update is done, before the next rollout (the engine is
   `release`d between the rollouts and the update).

**Rollout engine** (`engine`, `zreward.models.engine`): `hf` generates with the training module itself (the CPU
path; its log-probs are the trainer's, no correction). `vllm` (CUDA only, `pip install 'zreward[vllm]'`,
untested here) is a colocated vLLM engine in sleep mode with prefix caching, started on a copy of the initial
scorer in `<run_dir>/vllm_init`, its weights re-pushed after each update (LoRA merged for the push); its own
sampling log-probs differ from the trainer's, so the PG tokens are weighted by truncated importance weights
(`engine_correction`, cap `tis_cap`, metrics tis_weight_mean / tis_capped_frac / tis_logp_diff_abs). Evaluation in
reasoning mode samples with the same engine. vLLM's sampling does not follow torch's RNG: the exact-resume
guarantee holds for the hf engine only.

Without sharding the model stays the plain module (it generates; the objective runs several forwards per
backward), so gradients are averaged by an explicit all-reduce and `accelerator.mixed_precision=bf16` is applied by
autocast around the rollout and the objective (fp16 is refused: no loss scaler). Under FSDP2 the module is
prepared like every trainer's (`zreward.trainers.loop`): rollouts generate with the sharded module (root unit
gathered, `synced_gpus`), micro-batches reduce-scatter only after the last. With `kl_coef` > 0 and no LoRA the
frozen reference is an unsharded copy on every rank (use LoRA for large models: its reference is the policy with
the adapters disabled).
Evaluation: held-out pairwise accuracy in reasoning mode (`Scorer.score(reasoning=True, samples=eval_samples)`);
the saved scorer samples chains at `eval_temperature` (or `temperature` when that is 0 / null).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.losses import kl_div_levels
from zreward.losses.policy import ADV_SCALES, truncated_is_weights
from zreward.models.engine import check_engine, make_engine
from zreward.trainers import rollout as R
from zreward.trainers.common import build_scorer, val_pairwise_accuracy
from zreward.trainers.data import group_batch, split_by_group
from zreward.trainers.loop import RunLoop
from zreward.trainers.sft import rationale_forward, tokenize_rationales

AGGREGATIONS = ("seq_mean", "token_mean", "fixed_norm")


@dataclass
class RLConfig:
    """Settings GDSO and GRPO share (their sections `gdso.*` / `grpo.*` add their objective's)."""

    group_size: int = field(default=4, metadata={"help": "G: sampled chains per (image, dim)"})
    max_new_tokens: int | None = field(default=None, metadata={"help": "chain length bound (null: the scorer's zreward.json value; saved into the final scorer)"})
    temperature: float = field(default=1.0, metadata={"help": "rollout sampling temperature (the PG chains)"})
    eval_temperature: float | None = field(default=0.3, metadata={"help": "temperature the model's chains are read at, as at evaluation; the saved scorer samples at it (0: greedy; null: the rollout temperature, the pre-fix behaviour); 0.3 not yet measured"})
    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to train (null: all the split and scorer share)"})
    dims_per_step: int | None = field(default=None, metadata={"help": "random subset of dims per step (null: all)"})
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
    engine: str = field(default="hf", metadata={"help": "rollout engine: hf (transformers generate, the CPU path) or vllm (colocated vLLM, sleep mode, prefix caching; pip install 'zreward[vllm]', CUDA only, untested here)"})
    tis_cap: float = field(default=3.0, metadata={"help": "truncated importance sampling cap C: PG tokens weighted by min(exp(trainer − engine log-prob), C) when the engine returns its sampling log-probs (vllm; the hf engine's are the trainer's own, weight 1); 3.0 as TRL's vllm_importance_sampling_clip_max"})
    anchor_weight: float = field(default=0.0, metadata={"help": "weight of the cold start's own loss on the true rationales (CE on rationale + EOS, KL of the level distribution after it, `anchor_loss`) added to every micro-batch's objective (0: off; not yet a measured default)"})
    guide_rationale: bool = field(default=False, metadata={"help": "replace the last sampled chain of each (image, dim) group by the record's true rationale (off-policy guidance, `rollout.with_guides`), so that groups of wrong chains only still hold a right one; the logged chain statistics include it, and with eval_temperature null GDSO's distribution and pair terms read it too (hf engine, group_size >= 2; off: measured no better)"})

    section = "rl"  # the config section name, for messages (a class attribute, not a field)

    def check(self, choices: dict[str, tuple[str, tuple]], positive: tuple[str, ...] = ()) -> None:
        """Raise ValueError naming `<section>.<field>` for a value outside its choices or < 1."""
        choices = {"adv_scale": (self.adv_scale, ADV_SCALES), "aggregation": (self.aggregation, AGGREGATIONS),
                   **choices}
        for name, (v, ok) in choices.items():
            if v not in ok:
                raise ValueError(f"{self.section}.{name} must be one of {ok}, got {v!r}")
        for name in ("group_size", "max_new_tokens", "ppo_epochs", "eval_samples", *positive):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{self.section}.{name} must be >= 1, got {getattr(self, name)}")
        if self.eval_temperature is not None and self.eval_temperature < 0:
            raise ValueError(f"{self.section}.eval_temperature must be >= 0 (0: greedy) or null, "
                             f"got {self.eval_temperature}")
        if self.adv_std_floor < 0:
            raise ValueError(f"{self.section}.adv_std_floor must be >= 0, got {self.adv_std_floor}")
        if not self.anchor_weight >= 0:
            raise ValueError(f"{self.section}.anchor_weight must be >= 0, got {self.anchor_weight}")
        if not self.tis_cap > 0:
            raise ValueError(f"{self.section}.tis_cap must be > 0, got {self.tis_cap}")
        if self.guide_rationale and self.engine != "hf":
            raise ValueError(f"{self.section}.guide_rationale needs {self.section}.engine=hf (a guide chain has no "
                             f"engine log-probs), got {self.engine!r}")
        if self.guide_rationale and self.group_size < 2:
            raise ValueError(f"{self.section}.guide_rationale needs {self.section}.group_size >= 2 (a group of the "
                             f"guide alone has no advantage), got {self.group_size}")
        check_engine(self.engine, f"{self.section}.engine")


@dataclass
class RolloutState:
    """What the first pass over a rollout freezes for the later PPO epochs (replaces a string-keyed cache).

    Attributes:
        rewards / advantages: (N,) per PG chain.
        old_logp: (N, T) the sampling policy's log-probs of the tokens the PG term covers.
        ref_logp: (N, T) the same under the frozen initial model (only with kl_coef > 0).
        level: (N,) the score level chosen per chain (GRPO).
        is_weights: (N, T) truncated importance weights for the engine/trainer mismatch (`engine_correction`), or
            None (the hf engine).
        is_stats: their metrics (tis_weight_mean, tis_capped_frac, tis_logp_diff_abs), empty without them.
    """

    rewards: torch.Tensor
    advantages: torch.Tensor
    old_logp: torch.Tensor
    ref_logp: torch.Tensor | None = None
    level: torch.Tensor | None = None
    is_weights: torch.Tensor | None = None
    is_stats: dict = field(default_factory=dict)


@dataclass
class MicroBatch:
    """One micro-batch of whole prompt groups: PG chains, evaluation-temperature chains (or None), labels, groups."""

    ro: R.Rollout
    ro_eval: R.Rollout | None
    lab: R.Labels
    group_ids: np.ndarray


Objective = Callable[[RLConfig, object, MicroBatch, "RolloutState | None", object],
                     "tuple[torch.Tensor, dict, RolloutState]"]


def engine_correction(g: RLConfig, ro: R.Rollout, old_logp: torch.Tensor,
                      mask: torch.Tensor) -> tuple[torch.Tensor | None, dict]:
    """Truncated importance weights (`losses.truncated_is_weights`, cap `tis_cap`) of the PG tokens when the rollout
    engine returned its own sampling log-probs (vllm), else (None, {}): the hf engine samples with the trainer's
    module, so its log-probs are `old_logp` itself. Tokens the engine did not sample (GRPO's appended score token)
    get weight 1.

    Args:
        old_logp: (N, T) trainer log-probs at rollout time, chain tokens first in each row.  mask: (N, T).
    """
    if ro.chains.sampling_logprobs is None:
        return None, {}
    return truncated_is_weights(old_logp, R.engine_logprobs(ro.chains, old_logp.shape).to(old_logp), mask, g.tis_cap)


def anchor_loss(scorer, data, idx: np.ndarray, dims: list[str], max_tokens: int) -> torch.Tensor:
    """The teacher cold start's own objective on the items' true rationales — `sft.rationale_forward` (CE on each
    rationale token and the EOS after it) per CE token plus `kl_div_levels` of the level distribution read after the
    rationale per labelled (image, dim) row: what `zreward train sft` in reasoning mode minimises with ce_weight =
    kl_weight = 1 on one batch. Anchors the head (and the chains) to true rationales while the RL terms move them."""
    chains = tokenize_rationales(scorer.tokenizer, data, idx, dims, max_tokens)
    ce, n_ce, ro = rationale_forward(scorer, [data.prompts[i] for i in idx], data.image_batch(idx), dims, chains)
    di = data.dim_index(dims)
    device = ro.logits.device
    target = torch.as_tensor(data.target[idx][:, di], device=device)
    mask = torch.as_tensor(data.mask[idx][:, di], device=device)
    kl = kl_div_levels(ro.logits.float(), target, mask, reduction="sum")
    return ce / max(n_ce, 1) + kl / max(int(mask.sum()), 1)


def micro_batches(group_ids: np.ndarray, g: RLConfig, accumulation_steps: int) -> list[np.ndarray]:
    """Batch positions per micro-batch: `groups_per_micro` groups each, or `accumulation_steps` parts."""
    if accumulation_steps > 1:
        if g.groups_per_micro:
            raise ValueError(f"set either {g.section}.groups_per_micro or accelerator.gradient_accumulation_steps, "
                             "not both (both split a step into micro-batches of whole prompt groups)")
        return split_by_group(np.arange(len(group_ids)), np.asarray(group_ids), accumulation_steps)
    return R.micro_batches(group_ids, g.groups_per_micro)


def eval_rollout(scorer, g: RLConfig, prompts: list[str], images, dims: list[str], samples: int) -> R.Rollout | None:
    """The chains the model is read with at evaluation: `samples` per (image, dim) at `g.eval_temperature` (greedy,
    one chain, when it is 0); None when `g.eval_temperature` is None (the objective then reads the PG chains)."""
    if g.eval_temperature is None:
        return None
    greedy = g.eval_temperature == 0
    return R.rollout(scorer, prompts, images, dims, 1 if greedy else samples, g.max_new_tokens,
                     g.eval_temperature or 1.0, do_sample=not greedy)


def start_engine(g: RLConfig, scorer, loop):
    """The rollout engine `g.engine`: hf, or a colocated vLLM engine (sleep mode) started on a copy of the initial
    scorer written to `<run_dir>/vllm_init` by the main process (vLLM loads a directory; the copy holds the added
    level tokens)."""
    if g.engine == "hf":
        return make_engine("hf", f"{g.section}.engine")
    init = loop.run_dir.root / "vllm_init"
    if loop.is_main and not (init / "zreward.json").exists():
        scorer.save_pretrained(init)
    loop.acc.wait_for_everyone()
    return make_engine("vllm", f"{g.section}.engine", model_dir=init, sleep=True, seed=loop.rank)


def train_rl(cfg, g: RLConfig, objective: Objective, eval_samples_per_item: int | None = None) -> Path:
    """Run the RL loop with `objective`; `eval_samples_per_item` (None: no evaluation-temperature chains) chains per
    (image, dim) are sampled at `g.eval_temperature` for it. Returns the final scorer directory `run_dir/final`."""
    loop = RunLoop(cfg, g.section, ddp=False)
    scorer = build_scorer(cfg.model, loop.device)
    # Evaluation and the saved scorer generate chains like the model is read at evaluation.
    g.max_new_tokens = g.max_new_tokens or scorer.config.max_new_tokens
    scorer.config.max_new_tokens = g.max_new_tokens
    scorer.config.temperature = g.eval_temperature or g.temperature
    scorer.config.mode = "reasoning"
    data = cfg.data.load_train()
    val = cfg.data.load_val()
    dims = R.resolve_dims(g.dims, data, scorer, f"{g.section}.dims")
    ref_model = R.make_reference(scorer.model) if g.kl_coef else None  # the initial weights, before any resume
    scorer.engine = start_engine(g, scorer, loop)
    loop.start(scorer, total_steps=cfg.run.max_steps * g.ppo_epochs)
    scorer.engine.sync_weights(scorer.model)  # a resumed run's weights (hf: nothing to do)
    ga = cfg.accelerator.gradient_accumulation_steps

    def train_step(step: int) -> dict:
        idx = group_batch(data, cfg.data.prompts_per_batch, step, cfg.run.seed, rank=loop.rank,
                          world_size=loop.world, max_per_prompt=cfg.data.max_per_prompt)
        sdims = R.step_dims(dims, g.dims_per_step, cfg.run.seed, step)
        lab = R.batch_labels(data, idx, data.dim_index(sdims), scorer.levels)
        prompts, images, groups = [data.prompts[i] for i in idx], data.image_batch(idx), data.group[idx]
        t0 = time.perf_counter()
        with loop.autocast(), loop.generation():
            ro = R.rollout(scorer, prompts, images, sdims, g.group_size, g.max_new_tokens, g.temperature)
            if g.guide_rationale:
                guides = tokenize_rationales(scorer.tokenizer, data, idx, sdims, g.max_new_tokens - 1)
                ro = R.with_guides(ro, guides, scorer.tokenizer.batch_decode(guides, skip_special_tokens=True))
            ro_eval = (eval_rollout(scorer, g, prompts, images, sdims, eval_samples_per_item)
                       if eval_samples_per_item is not None else None)
        scorer.engine.release()  # vllm in sleep mode: the update gets the GPU (hf: nothing)
        t_rollout = time.perf_counter() - t0
        micro = micro_batches(groups, g, ga)
        states: list[RolloutState | None] = [None] * len(micro)
        agg: dict[str, float] = {}
        t_score = t_update = 0.0
        for _epoch in range(g.ppo_epochs):
            for j, rows in enumerate(micro):
                whole = len(micro) == 1
                mb = MicroBatch(ro if whole else R.subset(ro, rows)[0],
                                ro_eval if whole or ro_eval is None else R.subset(ro_eval, rows)[0],
                                lab.rows(rows), groups[rows])
                t0 = time.perf_counter()
                with loop.sync(last=j == len(micro) - 1):
                    with loop.autocast():
                        loss, st, states[j] = objective(g, scorer, mb, states[j], ref_model)
                        if g.anchor_weight:
                            anchor = anchor_loss(scorer, data, idx[rows], sdims, g.max_new_tokens - 1)
                            loss = loss + g.anchor_weight * anchor
                            st = {**st, "loss": loss.detach(), "anchor_loss": anchor.detach()}
                    t1 = time.perf_counter()
                    w = len(rows) / len(idx)
                    loop.backward(loss * w)
                t_score, t_update = t_score + t1 - t0, t_update + time.perf_counter() - t1
                for k, v in st.items():
                    agg[k] = agg.get(k, 0.0) + float(v) * w / g.ppo_epochs
            t0 = time.perf_counter()
            loop.optimizer_step(step, agg["loss"])
            t_update += time.perf_counter() - t0
        t0 = time.perf_counter()
        scorer.engine.sync_weights(scorer.model)  # the next rollout samples from the updated policy (hf: no-op)
        t_update += time.perf_counter() - t0
        return {**agg, "t_rollout": t_rollout, "t_score": t_score, "t_update": t_update,
                "gen_tokens": ro.gen_tokens, "gen_tok_per_s": ro.gen_tokens / max(t_rollout, 1e-9),
                # this rank's first chain (image 0, dim 0, sample 0) as text: JSONL and trackers (run.trackers)
                "sample_chain": f"{prompts[0]} | {sdims[0]}: {ro.chains.texts[0]}"}

    def evaluate(step: int) -> dict:
        return val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size, reasoning=g.eval_reasoning,
                                     samples=g.eval_samples)

    loop.run(train_step, evaluate if val is not None else None, postfix=("loss", "reward_mean"))
    return loop.save_final(scorer, "reasoning")
