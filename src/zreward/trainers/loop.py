"""The one run loop of every trainer: set-up, resume, cadences, clipping, NaN guard, checkpoints, final save.

A trainer file holds its Config, its batch preparation and its loss; it drives a `RunLoop`::

    loop = RunLoop(cfg, "sft")                    # accelerator, run dir (fresh / resume / overwrite), seed(rank 0)
    data, scorer = ...                            # the trainer's own set-up
    loop.start(scorer)                            # optimizer + schedule, resume or per-rank seed, DDP wrap,
                                                  # config dump, metrics log, progress bar
    def train_step(step):                         # forward/backward of one optimizer step, returns metrics
        ...; loop.backward(loss); loop.optimizer_step(step, loss); return {"loss": ...}
    loop.run(train_step, evaluate)                # the step loop with every cadence below
    return loop.save_final(scorer, mode)          # atomic `run_dir/final`

What the loop owns, the same for every trainer:
- **resume**: from the latest intact checkpoint with the saved settings (`zreward.trainers.resume`: a changed
  setting is refused unless `--resume-with-changes`, which keeps both configs and records the step).
- **cadences**: metrics every `run.log_every` steps (0: only at the last step), on the last step and on every
  evaluation step; held-out evaluation every `data.eval_every` steps (0: only at the end) on the main process,
  with the plain module and the training RNG untouched (`unwrapped`); a checkpoint every `run.save_every` steps
  (0: only at the end) and at the end, holding the model (LoRA: the adapters only), optimizer, scheduler, every
  rank's RNG and the NaN guard.
- **clipping**: `optim.grad_clip` > 0 clips the gradient norm to it; 0 means no clipping (the norm is still
  measured, logged as `grad_norm` and checked by the guard).
- **NaN guard** (`NonFiniteGuard`): a step with a non-finite loss or gradient norm is skipped, on every rank.
- **distribution**, two strategies without sharding: `RunLoop(..., ddp=True)` (default) wraps the model with
  `accelerate.prepare` (DDP, mixed precision through accelerate; micro-batches use `loop.sync`); `ddp=False` keeps
  the plain module (the RL trainers generate with it and run several forwards per backward) and averages gradients
  with one all-reduce per parameter before clipping, mixed precision through `loop.autocast()` (bf16 only).
- **FSDP2** (`fully_shard` through `accelerate.prepare`, when accelerate's configuration asks for it: `accelerate
  launch --config_file configs/accelerate/fsdp.yaml`, see `run_utils.make_accelerator`) replaces both strategies
  for every trainer: the model and optimizer are prepared (parameters become DTensor shards), mixed precision is
  accelerate's FSDP policy, micro-batches skip the gradient reduce-scatter but the last (`loop.sync`), clipping is
  accelerate's DTensor-aware `clip_grad_norm_`. Generation (rollouts, reasoning evaluation) runs with the root
  unit's parameters gathered (`generation`) and transformers' `synced_gpus` (ranks whose chains end early keep
  stepping with the others). Evaluation runs on every rank over the whole held-out split (each forward is a
  collective); rank 0 logs it. Checkpoints are sharded, one file per rank (`zreward.trainers.sharded_checkpoint`);
  the final scorer is gathered to rank 0 and saved as one HF directory.
  `accelerator.gradient_accumulation_steps` = k splits a step into k micro-batches of whole prompt groups in the
  trainers that can (`RunLoop(..., accumulation=True)`); the others (OPD, RewardDance) refuse k > 1 at start.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.distributed.tensor import DTensor

from zreward.atomic import atomic_dir
from zreward.trainers.checkpoint import gather_rng_states, load_checkpoint, save_checkpoint
from zreward.trainers.common import build_optimizer, build_scorer, trainable_parameters
from zreward.trainers.config import config_to_dict, dump_config
from zreward.trainers.resume import check_resume_config
from zreward.trainers.trackers import start_trackers
from zreward.trainers.guard import NonFiniteGuard
from zreward.trainers.run_utils import (
    MetricsLogger,
    make_accelerator,
    prepare_run_dir,
    progress_bar,
    seed_everything,
)
from zreward.trainers.sharded_checkpoint import (is_sharded, load_sharded_checkpoint, reshard_all,
                                                 save_sharded_checkpoint)

__all__ = ["RunLoop", "generation", "global_normalisers", "is_lora", "model_state", "restore_model_state",
           "resume_or_seed", "unwrapped"]


def is_lora(model) -> bool:
    """Whether `model` (plain, not DDP-wrapped) carries peft adapters: the one LoRA test of every trainer."""
    return hasattr(model, "peft_config")


def model_state(model, lora: bool) -> dict[str, torch.Tensor]:
    """What a checkpoint stores: only the trainable (adapter) parameters with LoRA, else the whole state dict."""
    if lora:
        return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    return model.state_dict()


def restore_model_state(model, weights: dict[str, torch.Tensor], lora: bool, where: Path) -> None:
    if not lora:
        model.load_state_dict(weights, strict=True)
        return
    want = {k for k, v in model.named_parameters() if v.requires_grad}
    if want != set(weights):
        raise RuntimeError(f"{where}: checkpoint holds {len(weights)} adapter tensors, the model has {len(want)} "
                           "trainable ones (different LoRA settings?)")
    model.load_state_dict(weights, strict=False)


def resume_or_seed(ckpt: Path | None, model, opt, sched, cfg, rank: int, world: int = 1,
                   lora: bool | None = None) -> tuple[NonFiniteGuard, int]:
    """A resume restores the model (LoRA: the adapters only), optimizer, scheduler, this rank's RNG and the NaN guard
    from checkpoint `ckpt`; a fresh run seeds this rank's randomness. Returns (guard, first step). Unsharded: before
    `acc.prepare` (plain module and optimizer, `restore_model_state`); FSDP2: after it, from this rank's shards
    (`zreward.trainers.sharded_checkpoint`)."""
    guard = NonFiniteGuard(cfg.run.max_nonfinite_skips)
    if ckpt is None:
        seed_everything(cfg.run.seed, rank)
        return guard, 0
    lora = is_lora(model) if lora is None else lora
    try:
        if is_sharded(model):
            state = load_sharded_checkpoint(ckpt, model=model, optimizer=opt, scheduler=sched, lora=lora, rank=rank,
                                            world=world)
        else:
            state = load_checkpoint(ckpt, optimizer=opt, scheduler=sched, rank=rank)
            restore_model_state(model, state.model_state, lora, ckpt)
    except (RuntimeError, ValueError) as e:
        raise RuntimeError(f"cannot resume from {ckpt} (written with other model / LoRA / optimizer settings? "
                           f"use run.overwrite=true or another run.output_dir): {e}") from e
    guard.load_state_dict(state.extra["guard"])
    return guard, state.step


def global_normalisers(counts: list[float], device: torch.device | str = "cpu") -> list[float]:
    """Per-rank normalisers n_global / world for item counts, so that Σ_local / normaliser, averaged by DDP over
    ranks, equals Σ_global / n_global (one all-reduce for all counts; 1 where the global count is 0)."""
    t = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    dist = torch.distributed
    world = 1
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        t = t.to(device if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(t)
    return [c / world if c > 0 else 1.0 for c in t.cpu().tolist()]


@contextlib.contextmanager
def generation(model):
    """Around `generate` with an FSDP2 module (a no-op otherwise): keep the root unit's own parameters gathered.
    `generate` calls the vision tower (and its patch embedding, a root parameter) outside the root's forward, where
    FSDP's hooks would not gather them (observed: "got mixed torch.Tensor and DTensor"). The root is first
    initialised as the root (torch's `_lazy_init`, otherwise run by the root's first forward): before a training
    forward, `generate` reaches a vision block first, which would then claim to be a root (observed)."""
    if not is_sharded(model):
        yield
        return
    model._get_fsdp_state()._lazy_init()  # no-op once initialised
    model.unshard()
    try:
        yield
    finally:
        reshard_all(model)


def _mark_fsdp_for_generate(model) -> None:
    """Make transformers' `generate` run with `synced_gpus` under FSDP2 (its own check only knows the modules that
    transformers sharded itself): every rank keeps calling forward until all ranks' chains ended."""
    from transformers import GenerationMixin  # lazily, as every transformers class of zreward (import cost)

    for m in model.modules():
        if isinstance(m, GenerationMixin):
            m._is_fsdp_managed_module = True


@contextlib.contextmanager
def unwrapped(scorer, acc):
    """Temporarily give the Scorer the plain module (generation, evaluation, saving) and keep RNG untouched."""
    wrapped = scorer.model
    scorer.model = acc.unwrap_model(wrapped)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    try:
        with torch.random.fork_rng(devices=devices):
            yield scorer
    finally:
        scorer.model = wrapped


def _due(every: int, step: int) -> bool:
    """Whether 1-based `step` is on an `every`-step cadence (0: never; the last step is handled by the caller)."""
    return bool(every) and step % every == 0


class RunLoop:
    """One training run (see the module docstring). Attributes: acc, run_dir, ckpt (checkpoint resumed from or
    None), rank, world, device, is_main; after `start`: scorer, opt, sched, guard, params, start_step."""

    def __init__(self, cfg, name: str, *, accumulation: bool = True, ddp: bool = True):
        self.cfg, self.name, self.ddp = cfg, name, ddp
        ga = cfg.accelerator.gradient_accumulation_steps
        if not ddp and cfg.accelerator.mixed_precision == "fp16":
            raise ValueError(f"accelerator.mixed_precision=fp16: `{name}` keeps the plain module and has no loss "
                             "scaler; use bf16 or no")
        if not accumulation and ga != 1:
            raise ValueError(f"accelerator.gradient_accumulation_steps: `{name}` takes one micro-batch per step "
                             f"(got {ga}); use a smaller batch or more processes")
        self.acc = make_accelerator(cfg.accelerator)
        self.fsdp = bool(self.acc.is_fsdp2)
        self.prepared = ddp or self.fsdp  # the model goes through `acc.prepare`
        self.rank, self.world, self.device = self.acc.process_index, self.acc.num_processes, self.acc.device
        self.is_main = self.acc.is_main_process
        self.run_dir, self.ckpt = prepare_run_dir(cfg.run.output_dir, resume=cfg.run.resume,
                                                  overwrite=cfg.run.overwrite, is_main=self.is_main)
        seed_everything(cfg.run.seed, 0)  # identical initial weights on every rank

    # ------------------------------------------------------------------------------------------- set-up
    def start(self, scorer, *, total_steps: int | None = None) -> int:
        """Optimizer and schedule over `total_steps` optimizer steps (default run.max_steps), resume or per-rank
        seed, DDP wrap (unless the loop was made with ddp=False), config dump, metrics log and progress bar.
        Returns the first step."""
        cfg = self.cfg
        self.scorer = scorer
        model = scorer.model
        self.lora = is_lora(model)
        self.params = trainable_parameters(model)
        self.opt, self.sched = build_optimizer(self.params, cfg.optim, total_steps or cfg.run.max_steps)
        self.param_dtype = self.params[0].dtype  # of the exported scorer (FSDP's mixed precision may upcast)
        if self.fsdp:
            scorer.model, self.opt = self.acc.prepare(model, self.opt)  # parameters become DTensor shards
            self.params = trainable_parameters(scorer.model)
            _mark_fsdp_for_generate(scorer.model)
        self.guard, self.start_step = resume_or_seed(self.ckpt, scorer.model, self.opt, self.sched, cfg, self.rank,
                                                     self.world, self.lora)
        if self.ckpt is not None:  # the same settings, or the change on record (`zreward.trainers.resume`)
            check_resume_config(cfg, self.run_dir.config, self.start_step, cfg.run.resume_with_changes, self.is_main)
        if self.ddp and not self.fsdp:  # not the scheduler (accelerate would step it once per process)
            scorer.model, self.opt = self.acc.prepare(model, self.opt)
        if self.is_main:
            dump_config(cfg, self.run_dir.config)
        trackers = (start_trackers(cfg.run.trackers, self.run_dir.root, config_to_dict(cfg), cfg.run.tracker_project)
                    if self.is_main else [])
        self.log = MetricsLogger(self.run_dir.metrics, resume_step=self.start_step if self.ckpt else None,
                                 enabled=self.is_main, trackers=trackers)
        self.bar = progress_bar(cfg.run.max_steps, initial=self.start_step, desc=self.name,
                                enabled=cfg.run.progress, is_main=self.is_main)
        self.grad_norm: torch.Tensor | float = float("nan")
        return self.start_step

    # -------------------------------------------------------------------------------------- inside a step
    def autocast(self):
        """Mixed precision for the plain-module strategy (a no-op with `accelerator.mixed_precision=no`)."""
        return self.acc.autocast() if not self.prepared else contextlib.nullcontext()

    def sync(self, last: bool):
        """Context of one micro-batch's backward: gradients are all-reduced (FSDP: reduce-scattered) only after the
        `last` one."""
        return contextlib.nullcontext() if last or not self.prepared else self.acc.no_sync(self.scorer.model)

    def generation(self):
        """Context around generation with the training model (see `generation`)."""
        return generation(self.scorer.model)

    def backward(self, loss: torch.Tensor) -> None:
        if self.prepared:
            self.acc.backward(loss)
        else:
            loss.backward()

    def optimizer_step(self, step: int, loss) -> torch.Tensor | float:
        """Average gradients (plain-module strategy), clip (`optim.grad_clip`, 0: none), apply the step unless the
        NaN guard skips it, zero the gradients. Returns the gradient norm before clipping."""
        if not self.prepared and self.world > 1:
            for p in self.params:
                if p.grad is not None:
                    torch.distributed.all_reduce(p.grad)
                    p.grad /= self.world
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else float("inf")
        if self.prepared:
            gn = self.acc.clip_grad_norm_(self.params, clip)
            gn = gn.full_tensor() if hasattr(gn, "full_tensor") else gn  # FSDP2: a replicated DTensor
        else:
            gn = torch.nn.utils.clip_grad_norm_(self.params, clip)
        if self.guard.check(step, loss if isinstance(loss, torch.Tensor) else torch.tensor(float(loss)), gn):
            self.opt.step()
            self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.grad_norm = gn
        return gn

    def step_on_terms(self, step: int, micro: list, terms_of: Callable[[object], dict[str, torch.Tensor]],
                      weights: dict[str, float]) -> dict:
        """One optimizer step over micro-batches whose loss is Σ_k weights[k]·term_k (each term already divided by
        its global-batch count): backward per micro-batch, `optimizer_step`, then the loss and every term averaged
        over processes, as metrics."""
        totals: dict[str, torch.Tensor] = {}
        for m, part in enumerate(micro):
            with self.sync(last=m == len(micro) - 1):
                terms = terms_of(part)
                self.backward(sum(weights[k] * v for k, v in terms.items()))
            for k, v in terms.items():
                totals[k] = totals.get(k, 0.0) + v.detach()
        loss = sum(weights[k] * v for k, v in totals.items())
        self.optimizer_step(step, loss)
        names = sorted(totals)
        red = self.acc.reduce(torch.stack([loss, *(totals[k] for k in names)]).float(), reduction="mean")
        return {"loss": red[0], **{k: red[i + 1] for i, k in enumerate(names)}}

    # ------------------------------------------------------------------------------------------ the loop
    def run(self, train_step: Callable[[int], dict], evaluate: Callable[[int], dict] | None = None,
            postfix: tuple[str, ...] = ("loss",)) -> None:
        """Steps start_step .. run.max_steps − 1: `train_step(step)` → metrics (it calls `optimizer_step`), then
        lr / grad norm / timing, evaluation, logging, progress and checkpoints on their cadences."""
        cfg = self.cfg
        for step in range(self.start_step, cfg.run.max_steps):
            t0 = time.perf_counter()
            metrics = train_step(step)
            metrics.update(lr=self.sched.get_last_lr()[0], grad_norm=self.grad_norm,
                           step_time=time.perf_counter() - t0, skipped=self.guard.total)
            done, last = step + 1, step + 1 == cfg.run.max_steps
            evaluated = evaluate is not None and (_due(cfg.data.eval_every, done) or last)
            if evaluated:
                if self.is_main or self.fsdp:  # FSDP: every forward is a collective, every rank evaluates
                    with unwrapped(self.scorer, self.acc), generation(self.scorer.model):
                        result = evaluate(step)
                    if self.is_main:
                        metrics.update(result)
                self.acc.wait_for_everyone()
            if _due(cfg.run.log_every, done) or last or evaluated:
                self.log.log(done, metrics)
            self.bar.update(1)
            self.bar.set_postfix({k: f"{float(metrics[k]):.4f}" for k in postfix if k in metrics})
            if _due(cfg.run.save_every, done) or last:
                self.checkpoint(done)
        self.bar.close()
        self.log.close()

    def checkpoint(self, step: int) -> None:
        """Save `run_dir/checkpoints/step_XXXXXX` (collective: every rank calls it)."""
        rng = gather_rng_states()
        if self.fsdp:
            reshard_all(self.scorer.model)  # shards, not gathered parameters, go to the files
            save_sharded_checkpoint(self.run_dir.checkpoints, step, model_state(self.scorer.model, self.lora),
                                    optimizer=self.opt, scheduler=self.sched, rng_states=rng,
                                    extra={"guard": self.guard.state_dict()}, keep_last=self.cfg.run.keep_last,
                                    rank=self.rank, world=self.world, device=self.device)
            return
        if self.is_main:
            save_checkpoint(self.run_dir.checkpoints, step, model_state(self.acc.unwrap_model(self.scorer.model),
                                                                        self.lora),
                            optimizer=self.opt, scheduler=self.sched, rng_states=rng,
                            extra={"guard": self.guard.state_dict()}, keep_last=self.cfg.run.keep_last)
        self.acc.wait_for_everyone()

    def save_final(self, scorer, mode: str, max_new_tokens: int | None = None) -> Path:
        """Write the trained Scorer atomically to `run_dir/final` with `mode` (and at least `max_new_tokens` as the
        chain length bound) in its zreward.json, checked before writing."""
        out = self.run_dir.final
        scorer.config.mode = mode
        if max_new_tokens is not None:
            scorer.config.max_new_tokens = max(scorer.config.max_new_tokens, max_new_tokens)
        scorer.config.validate()
        if self.fsdp:
            self._save_final_sharded(scorer, out)
        else:
            with unwrapped(scorer, self.acc):
                if self.is_main:
                    with atomic_dir(out) as tmp:
                        scorer.save_pretrained(tmp)
        self.acc.wait_for_everyone()
        return out

    def _save_final_sharded(self, scorer, out: Path) -> None:
        """FSDP2: rank 0 builds a plain copy of the model from `model.init_from` with the same settings; every rank
        then gathers the trained state one tensor at a time (`full_tensor`, a collective, in the same order on every
        rank) and rank 0 copies it in and saves that one HF directory (LoRA merged). Rank 0 holds one full model on
        the CPU, in the dtype the model was loaded in, plus one gathered tensor."""
        plain = build_scorer(self.cfg.model, "cpu") if self.is_main else None
        target = {}
        if plain is not None:
            plain.model.to(self.param_dtype)
            target = plain.model.state_dict()
        missing = []
        for name, t in scorer.model.state_dict().items():  # DTensor shards, replicated buffers
            full = t.full_tensor() if isinstance(t, DTensor) else t
            if plain is None:
                continue
            if name not in target or target[name].shape != full.shape:
                missing.append(name)
            else:
                with torch.no_grad():
                    target[name].copy_(full.detach().to("cpu"))
        if plain is None:
            return
        if missing:
            raise RuntimeError(f"{out}: the trained model's tensors {missing[:5]} do not match a fresh build of "
                               f"{self.cfg.model.init_from} (the final scorer cannot be exported)")
        plain.config, plain.generation_batch = scorer.config, scorer.generation_batch
        with atomic_dir(out) as tmp:
            plain.save_pretrained(tmp)
