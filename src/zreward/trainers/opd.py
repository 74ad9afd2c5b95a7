"""OPD baseline: on-policy distillation of a teacher Scorer into a one-token student (GKD with λ = 1, β = 1).

On-policy distillation (GKD, Agarwal et al. https://arxiv.org/abs/2306.13649; TRL `GKDTrainer` with lmbda=1,
beta=1): the student samples its own output, the teacher scores the student's tokens, and the loss is the
per-token reverse KL KL(p_S ‖ p_T) at every position of the student's sample.

Implemented variant, for a one-token scorer (the Z-Reward student emits a single level token):
- **Output**: the student's output is the level token at the score position of the direct prompt (one per
  (image, dimension)). Distributions are over the L level tokens only (the level readout's restricted softmax,
  `Scorer.direct_logits`), not the full vocabulary.
- **Teacher**: a Scorer dir (`teacher.path`), queried WITHOUT generating or seeing its own reasoning — OPD only
  ever queries the teacher on the student's own trajectory, and the student's trajectory has no reasoning (this
  is exactly what RISD changes: it distils the teacher's reasoning-conditioned distribution). `teacher.query`:
  `direct` = the teacher's direct prompt; `empty_chain` = the teacher's reasoning prompt closed at once with
  `reasoning_close` (an empty chain), which is the score position a reasoning-trained teacher (SFT cold start /
  GDSO) was actually trained on, whereas its direct prompt may never have been trained; `auto` (default) picks
  `empty_chain` for a `mode: reasoning` teacher and `direct` otherwise. Frozen, no_grad.
- **Estimator** (`opd.estimator`):
  - `exact` (default): loss = `losses.generalized_jsd(student_logits, teacher_logits, beta=1)` over the L levels,
    i.e. the closed-form KL(p_S ‖ p_T) at the score position. This *is* TRL's GKD loss with λ = 1: GKD samples a
    sequence from the student and then computes the full-distribution divergence at each position of it; for a
    one-token output the only position is the score position, whose context (the prompt) does not depend on the
    sample, so sampling changes nothing and the loss is exact and zero-variance. Reduction "batchmean" = sum over
    (image, dim) rows and levels / number of rows.
  - `sampled`: the literal Monte-Carlo form ("the student samples a token, the teacher scores it"):
    y ~ p_S (temperature 1), per-token reverse KL r = log p_S(y) − log p_T(y), loss = mean of sg(r)·log p_S(y)
    (score-function gradient; E_y[sg(r)·∇log p_S(y)] = ∇KL(p_S ‖ p_T)). Unbiased but noisy — kept for comparison;
    `samples_per_item` tokens are drawn per (image, dim). The logged `loss` is always the exact reverse KL.
- **Data**: images only (no human labels are used): `data.train` plus the optional unlabelled split
  `data.extra_unlabelled` (RISD's images: `DistilDataConfig.load_distil`); batches of `images_per_batch` images drawn
  as a pure function of (seed, step) (`run_utils.batch_indices`), all `dims` each; `data.prompts_per_batch` is not used.
- **Temperature** (`opd.temperature`): both logit sets divided by it (TRL semantics); default 1.0.
- **Teacher cache** (`TeacherCache`): the teacher is frozen and its query does not depend on the student, so its
  level logits of an image are computed the first time a batch draws it and kept (D × L floats per image): with
  the demo's 1,600 images × 800 steps × 16 images per step, one teacher forward per image instead of eight (per
  process: under DDP each rank keeps its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from zreward.losses import generalized_jsd
from zreward.models.level_readout import expectation
from zreward.models.scorer import ChainBatch, load_scorer
from zreward.trainers.common import DistilDataConfig, OptimConfig, TrainConfig, build_scorer, val_pairwise_accuracy
from zreward.trainers.config import parse_cli
from zreward.trainers.loop import RunLoop
from zreward.trainers.run_utils import RunConfig, batch_indices


@dataclass
class TeacherConfig:
    """The frozen teacher (`cfg.teacher`)."""

    path: str = field(default="", metadata={"help": "teacher Scorer dir / HF VLM dir / hub name (required)"})
    dtype: str | None = field(default=None, metadata={"help": "fp32, bf16 or fp16 (default: fp32 on CPU, bf16 on GPU)"})
    query: str = field(default="auto", metadata={"help": "direct, empty_chain, or auto (empty_chain for a "
                                                           "reasoning-mode teacher, else direct)"})

    def __post_init__(self) -> None:
        if self.query not in ("auto", "direct", "empty_chain"):
            raise ValueError(f"teacher.query must be auto, direct or empty_chain, got {self.query!r}")


@dataclass
class OPDSection:
    """OPD-specific options (`cfg.opd`)."""

    estimator: str = field(default="exact", metadata={"help": "exact (closed-form reverse KL over the levels) or sampled"})
    samples_per_item: int = field(default=4, metadata={"help": "sampled estimator: level tokens drawn per (image, dim)"})
    temperature: float = field(default=1.0, metadata={"help": "divide student and teacher logits by this"})
    images_per_batch: int = field(default=16, metadata={"help": "images per global batch (each scored on all dims)"})
    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to distil (null: the student's dims)"})

    def __post_init__(self) -> None:
        if self.estimator not in ("exact", "sampled"):
            raise ValueError(f"opd.estimator must be exact or sampled, got {self.estimator!r}")
        if self.samples_per_item < 1:
            raise ValueError(f"opd.samples_per_item must be >= 1, got {self.samples_per_item}")
        if self.temperature <= 0:
            raise ValueError(f"opd.temperature must be > 0, got {self.temperature}")


@dataclass
class Config(TrainConfig):
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/opd_tiny", max_steps=150))
    data: DistilDataConfig = field(default_factory=lambda: DistilDataConfig(val_max_images=400))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=10))
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    opd: OPDSection = field(default_factory=OPDSection)


def sampled_reverse_kl_surrogate(student_logits: torch.Tensor, teacher_logits: torch.Tensor, samples: torch.Tensor,
                                 temperature: float = 1.0) -> torch.Tensor:
    """Score-function surrogate whose gradient is an unbiased estimate of ∇KL(p_S ‖ p_T) from sampled tokens.

    Args:
        student_logits: (N, L) student level logits (with grad).
        teacher_logits: (N, L) teacher level logits (constant).
        samples: (N, M) level indices drawn from the (detached) student distribution.
        temperature: both logit sets are divided by it.

    Returns:
        Scalar mean over the N·M samples of sg(log p_S(y) − log p_T(y)) · log p_S(y).
    """
    log_s = torch.log_softmax(student_logits / temperature, -1).gather(-1, samples)
    log_t = torch.log_softmax(teacher_logits.detach() / temperature, -1).gather(-1, samples)
    return ((log_s - log_t).detach() * log_s).mean()


@torch.no_grad()
def teacher_level_logits(teacher, prompts: list[str], images, dims: list[str], query: str) -> torch.Tensor:
    """(B, D, L) teacher level logits without the teacher's reasoning.

    Args:
        query: "direct" (the direct prompt) or "empty_chain" (the reasoning prompt immediately followed by
            `reasoning_close`: the score position a reasoning teacher was trained on, reached with no chain).
    """
    if query == "direct":
        return teacher.direct_logits(prompts, images, dims)
    pixels = teacher.prepare_images(images)
    items = [(b, d) for b in range(len(prompts)) for d in range(len(dims))]
    texts = [teacher.reasoning_prompt(prompts[b], dims[d]) for b, d in items]
    _, prompt_ids = teacher.encode_items(texts, [b for b, _ in items], pixels)
    chains = ChainBatch([b for b, _ in items], [d for _, d in items], prompt_ids, [[] for _ in items],
                        ["" for _ in items])
    return teacher.chain_forward(chains, pixels).level_logits.view(len(prompts), len(dims), -1)


class TeacherCache:
    """A frozen teacher's (D, L) level logits per image index, computed the first time a batch shows the image.

    `cache(idx, prompts, images)` → (B, D, L) float32 for the batch's B indices (repeats allowed); only the indices
    not seen before go to `compute(prompts, images)` (their first occurrences, in batch order). One per process.
    """

    def __init__(self, compute):
        self.compute, self.rows = compute, {}

    def __call__(self, idx, prompts: list[str], images) -> torch.Tensor:
        first = {}
        for pos, i in enumerate(int(i) for i in idx):
            if i not in self.rows:
                first.setdefault(i, pos)
        if first:
            pos = list(first.values())
            ims = images[torch.tensor(pos)] if isinstance(images, torch.Tensor) else [images[p] for p in pos]
            with torch.no_grad():
                out = self.compute([prompts[p] for p in pos], ims).float().cpu()
            self.rows.update(zip(first, out))
        return torch.stack([self.rows[int(i)] for i in idx])


def check_teacher(student, teacher, dims: list[str]) -> None:
    """The teacher must read out the same levels and know every distilled dimension."""
    if [float(x) for x in teacher.levels] != [float(x) for x in student.levels]:
        raise ValueError(f"teacher.path: teacher levels {teacher.levels.tolist()} differ from the student's "
                         f"{student.levels.tolist()}")
    missing = [d for d in dims if d not in teacher.config.rubrics]
    if missing:
        raise ValueError(f"teacher.path: the teacher has no rubric for dims {missing} (it knows "
                         f"{sorted(teacher.config.rubrics)})")


def train(cfg: Config) -> Path:
    """Distil `cfg.teacher.path` into the student `cfg.model.init_from` on-policy; returns the final Scorer dir."""
    o = cfg.opd
    if not cfg.teacher.path:
        raise ValueError("teacher.path is required: the Scorer dir of the teacher to distil")
    loop = RunLoop(cfg, "opd", accumulation=False)
    data = cfg.data.load_distil()
    val = cfg.data.load_val()
    scorer = build_scorer(cfg.model, device=loop.device)
    teacher = load_scorer(cfg.teacher.path, device=str(loop.device), dtype=cfg.teacher.dtype)
    teacher.model.eval().requires_grad_(False)
    dims = scorer.resolve_dims(o.dims)
    check_teacher(scorer, teacher, dims)
    query = cfg.teacher.query
    if query == "auto":
        query = "empty_chain" if teacher.config.mode == "reasoning" else "direct"
    loop.start(scorer)
    teacher_val: list[float] = []  # the ceiling the student distils towards; computed once
    teacher_logits = TeacherCache(lambda prompts, images: teacher_level_logits(teacher, prompts, images, dims, query))

    def train_step(step: int) -> dict:
        idx = batch_indices(len(data), o.images_per_batch, step, cfg.run.seed, rank=loop.rank,
                            world_size=loop.world)
        prompts, images = [data.prompts[i] for i in idx], data.image_batch(idx)
        # rollout: the student's distribution over its one output token; the teacher scores the same outputs.
        s_logits = scorer.direct_logits(prompts, images, dims).float().flatten(0, 1)  # (B·D, L)
        t_logits = teacher_logits(idx, prompts, images).flatten(0, 1).to(s_logits.device)
        reverse_kl = generalized_jsd(s_logits, t_logits, beta=1.0, temperature=o.temperature)
        if o.estimator == "exact":
            loss = reverse_kl
        else:
            with torch.no_grad():
                probs = torch.softmax(s_logits / o.temperature, -1)
                y = torch.multinomial(probs, o.samples_per_item, replacement=True)  # (B·D, M)
            loss = sampled_reverse_kl_surrogate(s_logits, t_logits, y, o.temperature)
        loop.backward(loss)
        loop.optimizer_step(step, loss)
        with torch.no_grad():
            gap = (expectation(s_logits.softmax(-1), scorer.levels)
                   - expectation(t_logits.softmax(-1), scorer.levels)).abs().mean()
            fwd = generalized_jsd(s_logits, t_logits, beta=0.0, temperature=o.temperature)
        metrics = {"loss": loop.acc.reduce(reverse_kl.detach(), "mean"), "forward_kl": fwd, "mean_abs_gap": gap}
        if o.estimator == "sampled":
            metrics["surrogate"] = loss.detach()
        return metrics

    def evaluate(step: int) -> dict:
        if not teacher_val:
            teacher_val.append(val_pairwise_accuracy(teacher, val, batch_size=cfg.data.eval_batch_size)["val_acc"])
        return {**val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size),
                "teacher_val_acc": teacher_val[0]}

    loop.run(train_step, evaluate if val is not None else None)
    return loop.save_final(scorer, scorer.config.mode)


def main(argv: list[str]) -> int:
    cfg = parse_cli(Config, argv, prog="zreward train opd",
                    description="OPD baseline: on-policy distillation (GKD λ=1, β=1) of a teacher Scorer.")
    print(train(cfg))
    return 0
