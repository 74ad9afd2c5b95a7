"""Reward fine-tuning of a flow-matching generator with a differentiable Scorer reward: ReFL, DRaFT-K, AlignProp.

Generators: the tiny pixel-space ShapesWorld `T2IGenerator` (a `zreward gen pretrain` directory), or a local
diffusers Z-Image / SD3 / FLUX / Qwen-Image pipeline directory (`flow_pipeline.PipelineGenerator`: latents →
explicit Euler loop → VAE decode with gradients). Both expose `condition`, `sigmas`, `flow_velocity`, `sample`,
`to_image`.

What is implemented:
- **ReFL** (Xu et al. 2023, ImageReward, arXiv 2304.05977): sample without gradients from σ = 1 down to a random
  late step k ∈ [`refl_min_step`, steps − 1], take one model evaluation with gradients there and score the
  predicted clean image x̂₀ = x_k − σ_k·v_θ(x_k, σ_k).
- **DRaFT-K** (Clark et al. 2023, arXiv 2309.17400): sample the whole trajectory, keeping the autograd graph only
  through the last K Euler steps; score the final image.
- **AlignProp-style random truncation** (Prabhudesai et al. 2023, arXiv 2310.03739): as DRaFT, with K drawn
  uniformly from {1, ..., `k`} at every step.
- Reward: `Scorer.reward(prompts, images)` = Σ_d w_d (mean_d − λ·std_d)/Σ_d w_d, differentiable through the
  scorer's own torch preprocessing, which decides the input size (`scorer_size` resizes first; the ShapesWorld
  profiles set 64, the dataset canvas the students were trained on). Loss = −reward, or ReFL's
  `relu(margin − reward)` when `margin` is set.
- Regulariser toward the frozen (SFT) model: β · mean ‖v_θ(x_i, σ_i) − v_SFT(x_i, σ_i)‖² over the gradient steps
  at the tuned trajectory's own states (the per-step Gaussian-policy KL of Flow-GRPO up to a constant factor). Under
  LoRA the frozen model is the same transformer with its adapters disabled (no second copy in memory).
- Sampling and the gradient steps use the generator's own steps and guidance, so the model is optimised exactly as
  it will be sampled. LoRA (peft, attention projections; merged when saving, the adapter also kept in `lora/` for
  pipelines) or full fine-tuning of the transformer; text encoders and VAE frozen. Gradient checkpointing
  (transformer and VAE decoder), fp32 or bf16 weights, any torch device. Optional EMA of the trained weights
  (used for audits, sample grids and the saved model). Checkpoints every `save_every` steps with exact resume
  (`tune_state.py`); sample grids of fixed prompts/seeds every `sample_every` steps (`samples/step_*.png`).
- **Hacking audit** (`audit.py`): every `audit_every` steps, held-out prompts with fixed seeds are scored by the
  tuned reward and by judges — the ShapesWorld oracle for the ShapesWorld generator, and the held-out Scorers the
  user names (`judges`, optionally in reasoning mode) — and a warning is recorded whenever the reward rose while a
  judge fell by more than `audit_tol` since the previous or the first audit.
Deterministic given `seed`.
"""
from __future__ import annotations

import contextlib
import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.align.audit import OracleJudge, audit_row, hacking_warning, load_scorer_judges, plot_audit
from zreward.align.flow_pipeline import PipelineSampling, is_pipeline_dir, load_pipeline_generator
from zreward.align.generator import T2IGenerator, load_generator
from zreward.align.pretrain import save_grid, split_dir
from zreward.align.tune_state import EMA, load_tune_checkpoint, save_tune_checkpoint, trainable
from zreward.models.scorer import load_scorer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
METHODS = ("refl", "draft", "alignprop")

# quick: 40 DRaFT-1 steps + 3 audits of 16 prompts took 57 s (batch 8, 16 Euler steps, tiny scorer) on the shared
# 2-core machine at load ≈ 10 with 1 torch thread. scorer_size 64: the ShapesWorld canvas the students learnt on.
PROFILES: dict[str, dict] = {
    "quick": {"steps": 40, "batch_size": 8, "audit_every": 20, "audit_prompts": 16, "scorer_size": 64},
    "full": {"steps": 300, "batch_size": 8, "audit_every": 50, "audit_prompts": 64, "scorer_size": 64},
}


@dataclass
class TuneConfig:
    """Reward fine-tuning settings.

    Attributes:
        generator: ShapesWorld generator dir or local diffusers pipeline dir.  reward: Scorer dir.  out: output dir.
        data: ShapesWorld dataset dir (train prompts for tuning, val prompts for the audit) when `prompts` is unset.
        prompts, heldout_prompts: prompt files (.txt one per line, or .jsonl with "prompt") for real pipelines.
        method: "refl", "draft" or "alignprop".  k: DRaFT-K's K (AlignProp: the largest K drawn).
        refl_min_step: earliest ReFL step (default steps // 2).
        steps, batch_size, lr: optimisation.  sample_steps: Euler steps (default: the generator's).
        height, width, guidance, max_sequence_length: pipeline sampling (None: `PipelineSampling` defaults, or
            those saved with a tuned pipeline).
        lora, lora_rank: LoRA (True) or full fine-tuning.  grad_checkpointing: diffusers checkpointing.
        device: torch device.  dtype: "fp32" or "bf16" weights of pipeline and scorers (the ShapesWorld generator
            is fp32 only).
        reg: β of the velocity regulariser toward the frozen model.  margin: ReFL relu(margin − reward) loss.
        dims, weights, uncertainty_lambda: reward composition (None = the scorer's config).
        scorer_size: resize images to this side before scoring (None: the scorer's preprocessing decides).
        ema: EMA decay of the trained weights (None = off).
        save_every: checkpoint period in steps (0 = none).  resume: continue from `out/checkpoints` if present.
        sample_every, sample_prompts: sample grid period (0 = off) and number of held-out prompts in it.
        judges: held-out Scorers for the audit, `[NAME=]DIR[:direct | :reasoning[:M]]` each.
        judge_reasoning, judge_samples: reasoning mode (M chains) for teacher judges without a suffix.
        audit_every, audit_prompts: hacking audit.  audit_tol: judge drop that counts as "fell" in the warning, so
            that sampling noise of a small audit set does not warn.  seed: everything random.
    """

    generator: str = "runs/gen_sft"
    reward: str = ""
    out: str = "runs/gen_tuned"
    data: str = "runs/shapes_world"
    prompts: str | None = None
    heldout_prompts: str | None = None
    method: str = "draft"
    k: int = 1
    refl_min_step: int | None = None
    steps: int = 40
    batch_size: int = 8
    lr: float = 3e-4
    sample_steps: int | None = None
    height: int | None = None
    width: int | None = None
    guidance: float | None = None
    max_sequence_length: int | None = None
    lora: bool = True
    lora_rank: int = 8
    grad_checkpointing: bool = False
    device: str = "cpu"
    dtype: str = "fp32"
    reg: float = 0.0
    margin: float | None = None
    dims: list[str] | None = None
    weights: list[float] | None = None
    uncertainty_lambda: float | None = None
    scorer_size: int | None = None
    ema: float | None = None
    save_every: int = 0
    resume: bool = True
    sample_every: int = 0
    sample_prompts: int = 4
    judges: list[str] | None = None
    judge_reasoning: bool = False
    judge_samples: int = 4
    audit_every: int = 20
    audit_prompts: int = 16
    audit_tol: float = 0.05
    seed: int = 0
    profile: str = "custom"
    extra: dict = field(default_factory=dict)

    @classmethod
    def for_profile(cls, name: str, **overrides) -> TuneConfig:
        """The `quick` / `full` settings (see `PROFILES`) with keyword overrides, e.g. data=..., out=...."""
        if name not in PROFILES:
            raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {name!r}")
        return cls(**{**PROFILES[name], "profile": name, **overrides})


def prompts_of(data: str | Path, split: str) -> list[str]:
    """Distinct prompts of a ShapesWorld split, in file order."""
    seen: dict[str, None] = {}
    with open(split_dir(data, split) / "images.jsonl") as f:
        for line in f:
            seen.setdefault(json.loads(line)["prompt"], None)
    return list(seen)


def read_prompt_file(path: str | Path) -> list[str]:
    """Prompts from a .txt file (one per non-empty line) or a .jsonl file (field "prompt" per line)."""
    p = Path(path)
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    if p.suffix != ".jsonl":
        return [ln.strip() for ln in lines]
    out = []
    for i, ln in enumerate(lines):
        rec = json.loads(ln)
        if not isinstance(rec.get("prompt"), str):
            raise ValueError(f"{p}: line {i + 1}: prompt: expected a string field")
        out.append(rec["prompt"])
    return out


def scorer_reward(scorer, prompts: list[str], images: torch.Tensor, cfg: TuneConfig) -> torch.Tensor:
    """(B,) differentiable reward of (B, 3, H, W) images in [0, 1] (float32)."""
    if cfg.scorer_size and images.shape[-1] != cfg.scorer_size:
        images = F.interpolate(images, size=(cfg.scorer_size, cfg.scorer_size), mode="bilinear",
                               align_corners=False).clamp(0, 1)
    return scorer.reward(prompts, images, dims=cfg.dims, weights=cfg.weights,
                         uncertainty_lambda=cfg.uncertainty_lambda).float()


def apply_lora(gen, rank: int) -> None:
    """Wrap the transformer with peft LoRA adapters on its attention projections (only they train)."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=gen.lora_targets(), lora_dropout=0.0,
                      init_lora_weights=True)
    gen.transformer = get_peft_model(gen.transformer, lcfg)


def merge_lora(gen) -> None:
    if hasattr(gen.transformer, "merge_and_unload"):
        gen.transformer = gen.transformer.merge_and_unload()


@contextlib.contextmanager
def frozen_model(gen, frozen: torch.nn.Module | None):
    """The frozen (SFT) model inside the block: `frozen` swapped in, or the LoRA adapters disabled when None."""
    if frozen is None:
        with gen.transformer.disable_adapter():
            yield
        return
    live, gen.transformer = gen.transformer, frozen
    try:
        yield
    finally:
        gen.transformer = live


def reward_step(gen, frozen: torch.nn.Module | None, scorer, prompts: list[str], seeds: list[int],
                cfg: TuneConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ReFL / DRaFT-K / AlignProp forward with gradients.

    Args:
        frozen: a frozen copy of the transformer for the regulariser, or None under LoRA (adapters disabled).

    Returns:
        (loss scalar, reward (B,) detached, regulariser scalar detached).
    """
    steps = cfg.sample_steps or gen.cfg.steps
    sig = gen.sigmas(steps)
    if cfg.method == "refl":
        lo = steps // 2 if cfg.refl_min_step is None else cfg.refl_min_step
        grad_from, n_grad = int(torch.randint(lo, steps, (1,), generator=g)), 1
    elif cfg.method in ("draft", "alignprop"):
        if not 1 <= cfg.k <= steps:
            raise ValueError(f"k: expected 1 <= k <= sample steps ({steps}), got {cfg.k}")
        n_grad = cfg.k if cfg.method == "draft" else int(torch.randint(1, cfg.k + 1, (1,), generator=g))
        grad_from = steps - n_grad
    else:
        raise ValueError(f"method: expected one of {METHODS}, got {cfg.method!r}")
    cond = gen.condition(prompts)
    with torch.no_grad():
        x = gen.sample(prompts, seeds, steps=steps, stop_at=grad_from, cond=cond)
    reg = torch.zeros((), device=x.device)
    for i in range(grad_from, grad_from + n_grad):
        v = gen.flow_velocity(x, sig[i], cond)
        if cfg.reg > 0:
            with torch.no_grad(), frozen_model(gen, frozen):
                v_ref = gen.flow_velocity(x.detach(), sig[i], cond)
            reg = reg + (v - v_ref).pow(2).mean() / n_grad
        # ReFL scores the one-step prediction of the clean image; DRaFT integrates to σ = 0.
        x = x - sig[i] * v if cfg.method == "refl" else x + (sig[i + 1] - sig[i]) * v
    reward = scorer_reward(scorer, prompts, gen.to_image(x), cfg)
    main = -reward.mean() if cfg.margin is None else F.relu(cfg.margin - reward).mean()
    return main + cfg.reg * reg, reward.detach(), reg.detach()


def load_tuning_generator(cfg: TuneConfig):
    """The generator named by `cfg.generator` on `cfg.device` (a ShapesWorld generator or a pipeline)."""
    if cfg.dtype not in DTYPES:
        raise ValueError(f"dtype: expected one of {sorted(DTYPES)}, got {cfg.dtype!r}")
    if not is_pipeline_dir(cfg.generator):
        if cfg.dtype != "fp32":
            raise ValueError(f"dtype: the ShapesWorld generator {cfg.generator} is fp32 only, got {cfg.dtype!r}")
        gen = load_generator(cfg.generator, device=cfg.device)
        gen.text_encoder.requires_grad_(False)
        return gen
    over = {k: getattr(cfg, k) for k in ("height", "width", "guidance", "max_sequence_length")
            if getattr(cfg, k) is not None}
    if cfg.sample_steps:
        over["steps"] = cfg.sample_steps
    gen = load_pipeline_generator(cfg.generator, device=cfg.device, dtype=DTYPES[cfg.dtype])
    gen.cfg = PipelineSampling(**{**asdict(gen.cfg), **over})
    if cfg.grad_checkpointing:
        gen.pipe.vae.enable_gradient_checkpointing()
    return gen


def _prompt_sets(cfg: TuneConfig, shapes: bool) -> tuple[list[str], list[str]]:
    if cfg.prompts:
        train = read_prompt_file(cfg.prompts)
        held = read_prompt_file(cfg.heldout_prompts) if cfg.heldout_prompts else []
    elif shapes:
        train, held = prompts_of(cfg.data, "train"), prompts_of(cfg.data, "val")
    else:
        raise ValueError(f"prompts: a pipeline generator ({cfg.generator}) needs a prompt file (--prompts)")
    if not train:
        raise ValueError(f"prompts: {cfg.prompts or cfg.data}: expected at least one training prompt")
    if not held:
        raise ValueError("heldout_prompts: expected a file with at least one held-out prompt (--heldout-prompts), "
                         "for the hacking audit and the sample grids")
    return train, held[: cfg.audit_prompts]


def tune(cfg: TuneConfig, judges: list | None = None) -> Path:
    """Reward-tune the generator; returns the tuned generator directory (LoRA merged).

    Args:
        judges: audit judges (callables, see `audit.py`); default: the oracle for ShapesWorld plus `cfg.judges`.
    """
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = load_tuning_generator(cfg)
    shapes = isinstance(gen, T2IGenerator)
    dtype = None if cfg.dtype == "fp32" and cfg.device == "cpu" else DTYPES[cfg.dtype]
    scorer = load_scorer(cfg.reward, device=cfg.device, dtype=dtype, add_level_tokens=False)
    scorer.model.eval().requires_grad_(False)
    if judges is None:
        judges = ([OracleJudge()] if shapes else []) + load_scorer_judges(
            cfg.judges or [], cfg.judge_reasoning, cfg.judge_samples, cfg.device, dtype)
    watch = tuple(k for j in judges for k in j.watch)
    if not watch:
        print("[gen tune] note: no judge (--judge): the audit records the reward only and cannot warn of hacking",
              flush=True)
    labels = {k: v for j in judges for k, v in j.labels.items()}
    if cfg.grad_checkpointing:
        gen.transformer.enable_gradient_checkpointing()
    frozen = None
    if cfg.lora:
        gen.transformer.requires_grad_(False)
        apply_lora(gen, cfg.lora_rank)
    elif cfg.reg > 0:
        frozen = copy.deepcopy(gen.transformer).eval().requires_grad_(False)
    params = trainable(gen.transformer)
    opt = torch.optim.AdamW(list(params.values()), lr=cfg.lr, weight_decay=0.0)
    ema = EMA(params, cfg.ema) if cfg.ema else None
    train_prompts, held = _prompt_sets(cfg, shapes)
    g = torch.Generator().manual_seed(cfg.seed)
    state = {"rows": [], "warnings": [], "log": []}
    rows, warnings, log = state["rows"], state["warnings"], state["log"]
    averaged = (lambda: ema.swapped_in(params)) if ema else contextlib.nullcontext

    def do_audit(step: int) -> None:
        gen.eval()
        with averaged():
            imgs = gen.generate(held, [10_000 + i for i in range(len(held))], steps=cfg.sample_steps)
        with torch.no_grad():
            r = torch.cat([scorer_reward(scorer, held[i:i + 16], imgs[i:i + 16].to(cfg.device), cfg).cpu()
                           for i in range(0, len(held), 16)])
        gen.train()
        row = audit_row(step, held, imgs, r, judges)
        msg = hacking_warning(rows, row, cfg.audit_tol, watch, labels)
        if msg:
            warnings.append(msg)
            print(f"[gen tune] WARNING {msg}", flush=True)
        rows.append(row)
        print(f"[gen tune] audit step {step}: " + " ".join(f"{k} {'n/a' if v is None else format(v, '.3f')}"
                                                        for k, v in row.items() if k != "step"),
              flush=True)

    def sample_grid(step: int) -> None:
        (out / "samples").mkdir(exist_ok=True)
        ps = held[: cfg.sample_prompts]
        with averaged():
            imgs = gen.eval().generate(ps, [20_000 + i for i in range(len(ps))], steps=cfg.sample_steps)
        gen.train()
        save_grid(imgs, ps, out / "samples" / f"step_{step:06d}.png", scale=4 if imgs.shape[-1] < 128 else 1)

    start = 0
    got = load_tune_checkpoint(out, params, opt, g, ema) if cfg.resume else None
    if got is not None:
        start, saved = got
        for key in state:
            state[key][:] = saved[key]
        print(f"[gen tune] resumed from step {start}", flush=True)
    else:
        do_audit(0)
    gen.train()
    for step in range(start + 1, cfg.steps + 1):
        idx = torch.randint(len(train_prompts), (cfg.batch_size,), generator=g).tolist()
        seeds = torch.randint(2**31 - 1, (cfg.batch_size,), generator=g).tolist()
        loss, reward, reg = reward_step(gen, frozen, scorer, [train_prompts[i] for i in idx], seeds, cfg, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if ema:
            ema.update(params)
        log.append({"step": step, "loss": loss.item(), "reward": float(reward.float().mean()), "reg": float(reg)})
        if step % 10 == 0:
            print(f"[gen tune] step {step}/{cfg.steps} reward {np.mean([r['reward'] for r in log[-10:]]):.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
        if step % cfg.audit_every == 0 or step == cfg.steps:
            do_audit(step)
        if cfg.sample_every and step % cfg.sample_every == 0:
            sample_grid(step)
        if cfg.save_every and step % cfg.save_every == 0:
            save_tune_checkpoint(out, step, params, opt, g, ema, state)
    _save_tuned(gen, cfg, out, ema, params, shapes)
    (out / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_audit(rows, out / "audit.png", watch)
    (out / "tune.json").write_text(json.dumps({"config": asdict(cfg), "log": log, "audit": rows,
                                               "hacking_warnings": warnings,
                                               "seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
    print(f"[gen tune] wrote {out} ({time.time() - t0:.0f}s)", flush=True)
    return out


def _save_tuned(gen, cfg: TuneConfig, out: Path, ema: EMA | None, params: dict, shapes: bool) -> None:
    """The tuned generator (EMA weights when on; LoRA merged; pipelines also keep the adapter in `lora/`)."""
    if ema:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(ema.shadow[n].to(p.dtype))
    if cfg.lora and not shapes:
        gen.transformer.save_pretrained(out / "lora")
    merge_lora(gen)
    gen.eval()
    gen.save_pretrained(out, extra={"trained": {"kind": "tune", "method": cfg.method, "k": cfg.k,
                                                "from": str(cfg.generator), "reward": str(cfg.reward)}})
