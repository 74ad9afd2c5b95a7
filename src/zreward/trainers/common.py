"""Config sections and plain helpers that every trainer uses (the run loop itself is `zreward.trainers.loop`).

- `ModelConfig`, `DataConfig`, `OptimConfig`: nested into each trainer's own `Config` as `model`, `data`, `optim`;
  `TrainConfig`: those with `run` and `accelerator`, the base of every trainer's `Config`; `DistilDataConfig`: the
  distilling trainers' (RISD, OPD) data section, with their unlabelled images.
- `build_scorer`: load the model to train through the one scoring path (`zreward.load_scorer`), with LoRA /
  gradient checkpointing / dtype from the config.
- `build_optimizer`: AdamW over the trainable parameters + linear warm-up then constant or cosine decay.
- `val_pairwise_accuracy`: held-out pairwise accuracy (direct mode, or reasoning mode for teachers) for the metrics
  log — the same metric function as `zreward eval` (`zreward.metrics.pairwise_accuracy`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zreward.models.load import LoraOptions
from zreward.metrics import kl, pairwise_accuracy
from zreward.models.scorer import load_scorer
from zreward.trainers.data import ImageOptions, TrainData, concat_splits
from zreward.trainers.run_utils import AcceleratorConfig, RunConfig


@dataclass
class ModelConfig:
    """Which model to train and how."""

    init_from: str = field(default="", metadata={"help": "scorer dir / HF VLM dir / hub name to start from (required)"})
    dtype: str | None = field(default=None, metadata={"help": "fp32, bf16 or fp16 (default: fp32 on CPU, bf16 on GPU)"})
    lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "activation checkpointing"})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "eager, sdpa, flash_attention_2, ... (null: transformers' default)"})
    lora_targets: list[str] | None = field(default=None, metadata={
        "help": "LoRA module-name suffixes (null: every linear layer of the language model, gated-DeltaNet included)"})
    lora_vision: bool = field(default=False, metadata={"help": "LoRA on the vision tower and projector too"})
    lora_level_rows: bool = field(default=True, metadata={
        "help": "under LoRA, train the level tokens' embedding and output-head rows"})
    chat_template_kwargs: dict[str, Any] | None = field(default=None, metadata={
        "help": "chat-template variables, merged into zreward.json's (e.g. {enable_thinking: false} for Qwen3.5)"})
    level_strings: list[str] | None = field(default=None, metadata={
        "help": "text of each rubric level (null: from zreward.json / the defaults); each must be one token"})
    rubrics: dict[str, str] | None = field(default=None, metadata={
        "help": "dim → rubric text, merged into zreward.json's rubrics"})
    generation_batch: int | None = field(default=None, metadata={
        "help": "most sequences per generate call in rollouts (bounds the KV cache; null: one call per step)"})

    def scorer_overrides(self) -> dict:
        """The zreward.json fields these options override (see `zreward.models.load.load_components`)."""
        out: dict = {}
        if self.chat_template_kwargs is not None:
            out["templates"] = {"chat_template_kwargs": dict(self.chat_template_kwargs)}
        if self.level_strings is not None:
            out["level_strings"] = list(self.level_strings)
        if self.rubrics is not None:
            out["rubrics"] = dict(self.rubrics)
        return out


@dataclass
class DataConfig(ImageOptions):
    """Canonical split directories, how batches are drawn from them and how images are decoded (`ImageOptions`:
    `max_pixels`, `decode_workers`)."""

    train: str = field(default="", metadata={"help": "training split directory (required)"})
    extra_train: list[str] = field(default_factory=list, metadata={
        "help": "labelled split directories appended to data.train, all their images (each keeps its own prompt groups; e.g. `zreward gen label` output)"})
    val: str | None = field(default=None, metadata={"help": "held-out split for accuracy logging (optional)"})
    prompts_per_batch: int = field(default=8, metadata={"help": "prompt groups per global batch"})
    max_per_prompt: int | None = field(default=None, metadata={"help": "images taken per prompt (null: all)"})
    max_images: int | None = field(default=None, metadata={"help": "use only the first N training images"})
    val_max_images: int | None = field(default=400, metadata={"help": "use only the first N held-out images"})
    eval_every: int = field(default=0, metadata={"help": "held-out accuracy every N steps (0: only at the end)"})
    eval_batch_size: int = field(default=64, metadata={"help": "images per scoring call during evaluation"})

    def load_train(self) -> TrainData:
        """`data.train` (its first `max_images` records), then every `data.extra_train` split in full, images decoded
        per batch with these options."""
        data = self.load(self.train, self.max_images)
        for i, extra in enumerate(self.extra_train):
            data = concat_splits(data, self.load(extra), keep_labels=True, what=f"data.extra_train[{i}]")
        return data

    def load_val(self) -> TrainData | None:
        """`data.val` (its first `val_max_images` records), or None when no held-out split is set."""
        return self.load(self.val, self.val_max_images) if self.val else None


@dataclass
class DistilDataConfig(DataConfig):
    """The data section of the distilling trainers (RISD, OPD): the shared one plus unlabelled images."""

    extra_unlabelled: str | None = field(default=None, metadata={"help": "extra split dir whose images are distilled too (labels ignored)"})
    extra_max_images: int | None = field(default=None, metadata={"help": "use only the first N extra images"})

    def load_distil(self) -> TrainData:
        """`load_train()`, then the first `extra_max_images` images of `extra_unlabelled` with their labels dropped
        (their own prompt groups)."""
        data = self.load_train()
        if self.extra_unlabelled:
            data = concat_splits(data, self.load(self.extra_unlabelled, self.extra_max_images), keep_labels=False,
                                 what="data.extra_unlabelled")
        return data


@dataclass
class OptimConfig:
    lr: float = field(default=1e-3, metadata={"help": "peak learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999], metadata={"help": "AdamW betas"})
    warmup_steps: int = field(default=0, metadata={"help": "linear warm-up steps"})
    schedule: str = field(default="constant", metadata={"help": "constant or cosine (after warm-up)"})
    grad_clip: float = field(default=1.0, metadata={"help": "max gradient norm (0: no clipping)"})

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"optim.schedule must be constant or cosine, got {self.schedule!r}")


@dataclass
class TrainConfig:
    """The sections every trainer's `Config` has; a trainer subclasses it, adds its method's section and may
    override a section's defaults (YAML files and `a.b=c` overrides only override these defaults)."""

    run: RunConfig = field(default_factory=RunConfig)
    accelerator: AcceleratorConfig = field(default_factory=AcceleratorConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)


def build_scorer(cfg: ModelConfig, device: str | torch.device = "cpu"):
    """Load the Scorer to train (train mode, LoRA/gradient checkpointing per config)."""
    if not cfg.init_from:
        raise ValueError("model.init_from is required: a scorer directory, an HF VLM directory or a hub name")
    lora = LoraOptions(r=cfg.lora_r, alpha=cfg.lora_alpha, target_modules=cfg.lora_targets,
                       include_vision=cfg.lora_vision, train_level_rows=cfg.lora_level_rows) if cfg.lora else None
    scorer = load_scorer(cfg.init_from, device=str(device), dtype=cfg.dtype, lora=lora,
                         gradient_checkpointing=cfg.gradient_checkpointing, attn_implementation=cfg.attn_implementation,
                         config_overrides=cfg.scorer_overrides())
    scorer.generation_batch = cfg.generation_batch
    scorer.model.train()
    return scorer


def trainable_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def build_optimizer(params, cfg: OptimConfig, max_steps: int):
    """AdamW + LambdaLR (linear warm-up, then constant or cosine to 0 at max_steps)."""
    params = list(params)
    if not params:
        raise ValueError("no trainable parameters")
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)

    def factor(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "cosine":
            t = (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def val_pairs(data: TrainData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Held-out overall pairs as (index_a, index_b, label) with label in {"a", "b", "tie"}."""
    pos = {i: k for k, i in enumerate(data.ids)}
    ia, ib, lab = [], [], []
    for (a, b), share in data.pair_votes.items():
        ia.append(pos[a])
        ib.append(pos[b])
        lab.append("a" if share > 0.5 else "b" if share < 0.5 else "tie")
    return np.array(ia, np.int64), np.array(ib, np.int64), np.array(lab)


@torch.no_grad()
def val_pairwise_accuracy(scorer, data: TrainData, *, batch_size: int = 64, reasoning: bool = False,
                          samples: int = 1) -> dict[str, float]:
    """Pairwise accuracy (non-tie pairs) of the scorer's `overall` on a held-out split; also mean KL to labels."""
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        idx = np.arange(len(data))
        overall, probs = [], []
        for s in range(0, len(idx), batch_size):
            chunk = idx[s:s + batch_size]
            out = scorer.score([data.prompts[i] for i in chunk], data.image_batch(chunk), dims=data.dims,
                               reasoning=reasoning, samples=samples)
            overall.append(out.overall.numpy())
            probs.append(out.probs.numpy())
        ov, pr = np.concatenate(overall), np.concatenate(probs)
        ia, ib, lab = val_pairs(data)
        acc = float(pairwise_accuracy(ov[ia], ov[ib], lab)) if len(ia) else float("nan")
        return {"val_acc": acc, "val_kl": float(kl(data.target.reshape(-1, pr.shape[-1]), pr.reshape(-1, pr.shape[-1]),
                                                 mask=data.mask.reshape(-1))), "val_pairs": int(len(ia))}
    finally:
        scorer.model.train(was_training)
