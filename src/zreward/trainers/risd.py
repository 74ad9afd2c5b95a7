"""RISD: distil a reasoning teacher's chain-averaged score distribution into a one-token (direct-mode) student.

Z-Reward (arXiv 2606.09076) trains its student (Qwen3.5-9B, one output token) to match the teacher's
(Qwen3.5-27B) **reasoning-conditioned** level distribution averaged over M sampled chains. Implemented here:

1. **Teacher targets, computed once and cached.** For every training input — the labelled split `data.train` and
   an optional unlabelled split `data.extra_unlabelled` (e.g. extra generated ShapesWorld images; any labels there
   are ignored) — the teacher (`teacher.path`, a reasoning-mode Scorer, e.g. GDSO or the SFT cold start) samples
   M = `teacher.samples` chains per (image, dim) at `teacher.temperature` (batched
   `Scorer.score(reasoning=True, samples=M)`; chains sampled by `teacher.engine`: hf KV-cached `generate`, or vllm
   on `teacher.path` — a frozen teacher needs no weight sync and no log-prob correction, only its distributions
   after each chain are used, read by the teacher's own teacher-forced forward), reads the level distribution after each chain and averages them:
   p̄_T = (1/M) Σ_m p_T(· | chain_m) (the per-chain average is what `Scorer.score` returns).
   The cache is a safetensors file under `teacher.cache_dir` named by a hash of (teacher directory fingerprint,
   M, temperature, max_new_tokens, dims, levels, seed); inside, rows are keyed by a hash of (image id, prompt,
   image file, `data.max_pixels`). A rerun reuses every row it finds and computes only missing ones; changing the
   teacher's files, M, the temperature, the chain length or an image gives new keys, so stale targets are never
   used. Under torchrun every process runs the teacher on its share of the missing images (batches of
   `teacher.batch_size`, each under its own seed, so the file equals a one-process run's; see `teacher_targets`),
   the main process writes the file, and the teacher is freed before the student is loaded. `teacher.part=R/W`
   runs only part R of W of that pass (the same chunks and seeds) into a part file the cache reads, then stops:
   the parts can run side by side before the student's run (`zreward.trainers.risd_teacher`, where the cache lives).
2. **Student loss** per step over prompt-grouped batches of the union of both splits (direct readout, with grad):
       kl_weight    · KL(p̄_T ‖ p_S)                      (losses.risd_kl, every (image, dim) row)
     + gap_weight   · Huber(E_S[a] − E_S[b], E_T[a] − E_T[b])   (losses.score_gap_huber, score-gap distillation
                                                           over all within-prompt pairs and dims; E = expectation)
     + human_weight · KL(human label ‖ p_S)               (losses.kl_div_levels, labelled rows only; 0 by default)
   Each term is Σ / global item count, exact under DDP (`loop.global_normalisers`, see `zreward.trainers.sft`).

Choices where the paper is silent: M = 4 by default; plain temperature sampling at the teacher's temperature
(no top-k/top-p); the score-gap target uses the expectation of the averaged distribution (equal to the mean of
the per-chain expectations); gaps use a Huber loss (δ = 1 level point) over every within-prompt pair; the student
starts from `model.init_from` (usually a smaller model than the teacher) and is saved in "direct" mode.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.losses import kl_div_levels, risd_kl, score_gap_huber
from zreward.trainers.common import DistilDataConfig, TrainConfig, build_scorer, val_pairwise_accuracy
from zreward.trainers.config import parse_cli
from zreward.trainers.data import TrainData, group_batch, split_by_group, within_group_pairs
from zreward.trainers.loop import RunLoop, global_normalisers
from zreward.trainers.risd_teacher import TeacherConfig, cache_dir_of, teacher_part, teacher_targets
from zreward.trainers.run_utils import RunConfig


@dataclass
class RISDConfig:
    """The RISD loss section (`cfg.risd`)."""

    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to distil (null: all of the split's)"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(p̄_T ‖ p_S)"})
    gap_weight: float = field(default=1.0, metadata={"help": "weight of the within-prompt score-gap distillation (Huber)"})
    gap_delta: float = field(default=1.0, metadata={"help": "Huber threshold of the score-gap term"})
    human_weight: float = field(default=0.0, metadata={"help": "weight of KL(human label ‖ p_S) on labelled rows (0: off)"})


@dataclass
class Config(TrainConfig):
    """`zreward train risd` configuration (YAML files and `a.b=c` overrides only override these defaults)."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/risd"))
    data: DistilDataConfig = field(default_factory=DistilDataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    risd: RISDConfig = field(default_factory=RISDConfig)


# -------------------------------------------------------------------------------------------------- train


def step_losses(cfg: Config, scorer, data: TrainData, teach: torch.Tensor, idx: np.ndarray, dims: list[str],
                norms: dict[str, float], device) -> dict[str, torch.Tensor]:
    """Loss terms of one (micro-)batch, each Σ_items / global normaliser (see module docstring)."""
    r = cfg.risd
    ro = scorer.direct_readout([data.prompts[i] for i in idx], data.image_batch(idx), dims)
    logits = ro.logits.float()
    p_t = teach[torch.as_tensor(idx)].to(device)  # (B, D, L)
    terms = {"kl": risd_kl(p_t, logits, reduction="sum") / norms["rows"]}
    if r.gap_weight:
        ia, ib = (torch.as_tensor(x, dtype=torch.long, device=device) for x in within_group_pairs(data.group[idx]))
        mean_t = p_t @ scorer.levels.to(device)  # (B, D)
        mean_s = ro.mean.float()
        terms["gap"] = score_gap_huber((mean_s[ia] - mean_s[ib]).flatten(), (mean_t[ia] - mean_t[ib]).flatten(),
                                       delta=r.gap_delta, reduction="sum") / norms["pairs"]
    if r.human_weight:
        di = data.dim_index(dims)
        target = torch.as_tensor(data.target[idx][:, di], device=device)
        mask = torch.as_tensor(data.mask[idx][:, di], device=device)
        terms["human_kl"] = kl_div_levels(logits, target, mask, reduction="sum") / norms["labelled"]
    return terms


def train_inputs(cfg: Config) -> tuple[TrainData, list[str]]:
    """The images the student learns from (`data.train` + `data.extra_unlabelled`, labels of the latter dropped)
    and the dims it distils."""
    if not cfg.data.train:
        raise ValueError("data.train is required: a canonical split directory")
    data = cfg.data.load_distil()
    dims = list(cfg.risd.dims or data.dims)
    data.dim_index(dims)  # raises naming unknown dims
    return data, dims


def train(cfg: Config) -> Path:
    """Build/reuse the teacher cache, then train the direct-mode student; returns `run_dir/final` (with
    `teacher.part`: only that part of the teacher pass, `teacher_part`; returns the part file)."""
    if cfg.teacher.part is not None:
        return teacher_part(cfg, *train_inputs(cfg))
    data, dims = train_inputs(cfg)
    loop = RunLoop(cfg, "risd")
    val = cfg.data.load_val()
    teach, tinfo = teacher_targets(cfg, data, dims, cache_dir_of(cfg), loop.acc)
    if loop.is_main:
        print(f"[risd] teacher targets for {len(data)} images: {tinfo['computed']} computed, "
              f"{len(data) - tinfo['computed']} from {tinfo['cache']} ({tinfo['seconds']:.1f} s)", file=sys.stderr)
    scorer = build_scorer(cfg.model, loop.device)
    bad = [d for d in dims if d not in scorer.dims]
    if bad:
        raise ValueError(f"risd.dims: {bad} are not dims of the student {cfg.model.init_from} ({scorer.dims})")
    start = loop.start(scorer)
    r, ga, device, di = cfg.risd, cfg.accelerator.gradient_accumulation_steps, loop.device, data.dim_index(dims)
    weights = {"kl": r.kl_weight, "gap": r.gap_weight, "human_kl": r.human_weight}

    def train_step(step: int) -> dict:
        idx = group_batch(data, cfg.data.prompts_per_batch, step, cfg.run.seed, rank=loop.rank,
                          world_size=loop.world, max_per_prompt=cfg.data.max_per_prompt)
        n_pairs = len(within_group_pairs(data.group[idx])[0]) * len(dims)
        rows, pairs, labelled = global_normalisers([len(idx) * len(dims), n_pairs, data.mask[idx][:, di].sum()],
                                                   device)
        norms = {"rows": rows, "pairs": pairs, "labelled": labelled}
        metrics = loop.step_on_terms(step, split_by_group(idx, data.group, ga),
                                     lambda part: step_losses(cfg, scorer, data, teach, part, dims, norms, device),
                                     weights)
        if step == start:
            metrics.update(teacher_cache_s=tinfo["seconds"], teacher_computed=tinfo["computed"],
                           teacher_in_level_mass=tinfo["in_level_mass"])
        return metrics

    def evaluate(step: int) -> dict:
        return val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size)

    loop.run(train_step, evaluate if val is not None else None)
    return loop.save_final(scorer, "direct")


def main(argv: list[str] | None = None) -> int:
    """`zreward train risd --config FILE [a.b=c ...]`."""
    cfg = parse_cli(Config, list(argv or []), prog="zreward train risd")
    final = train(cfg)
    print(f"[risd] {'teacher part file' if cfg.teacher.part is not None else 'final scorer'}: {final}")
    return 0
