"""Reward fine-tuning of a flow-matching generator with a differentiable Scorer reward: ReFL and DRaFT-K.

What is implemented:
- **ReFL** (Xu et al. 2023, ImageReward, arXiv 2304.05977): sample without gradients from σ = 1 down to a random
  late step k ∈ [`refl_min_step`, steps − 1], take one model evaluation with gradients there and score the
  predicted clean image x̂₀ = x_k − σ_k·v_θ(x_k, σ_k).
- **DRaFT-K** (Clark et al. 2023, arXiv 2309.17400): sample the whole trajectory, keeping the autograd graph only
  through the last K Euler steps; score the final image.
- Reward: `Scorer.reward(prompts, images)` = Σ_d w_d (mean_d − λ·std_d)/Σ_d w_d, differentiable through the
  scorer's torch preprocessing (images are bilinearly resized to the scorer's size first). Loss = −reward by
  default, or ReFL's `relu(margin − reward)` when `margin` is set.
- Regulariser toward the SFT generator: β · mean ‖v_θ(x_i, σ_i) − v_SFT(x_i, σ_i)‖² over the gradient steps, at
  the tuned trajectory's own states (the per-step Gaussian-policy KL of Flow-GRPO up to a constant factor).
- Sampling and the gradient steps use the generator's own Euler steps and classifier-free guidance scale
  (`generator.json`), so the tuned model is optimised exactly as it will be sampled.
- LoRA (peft, on all attention projections of the transformer; merged into the weights when saving) or full
  fine-tuning of the transformer; the text encoder stays frozen. Optional gradient checkpointing (diffusers).
- **Hacking audit**: every `audit_every` steps, held-out prompts (val split) with fixed seeds are sampled and scored
  by both the reward and the ShapesWorld oracle (via `perceive.py`); `audit.jsonl` + `audit.png` log them side by
  side, and a warning is printed (and recorded in tune.json) whenever the reward rose while the oracle's
  mean-weight overall fell — since the previous audit, or since the first audit (step 0), so that a gradual fall
  spread over many audits warns too (`hacking_warning`).
Deterministic given `seed`.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.align.generator import T2IGenerator, load_generator
from zreward.align.perceive import perceived_scores
from zreward.align.pretrain import split_dir
from zreward.data.shapes_world.oracle import DIMS, MEAN_WEIGHTS
from zreward.models.scorer import load_scorer

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]

# quick: 40 DRaFT-1 steps + 3 audits of 16 prompts took 57 s (batch 8, 16 Euler steps, tiny scorer) on the shared
# 2-core machine at load ≈ 10 with 1 torch thread.
PROFILES: dict[str, dict] = {
    "quick": {"steps": 40, "batch_size": 8, "audit_every": 20, "audit_prompts": 16},
    "full": {"steps": 300, "batch_size": 8, "audit_every": 50, "audit_prompts": 64},
}


@dataclass
class TuneConfig:
    """Reward fine-tuning settings.

    Attributes:
        generator: SFT generator dir.  reward: Scorer dir.  out: tuned generator dir.
        data: ShapesWorld dataset dir (train prompts for tuning, val prompts for the audit).
        method: "refl" or "draft".  k: DRaFT-K's K.  refl_min_step: earliest ReFL step (default steps // 2).
        steps, batch_size, lr: optimisation.  sample_steps: Euler steps (default: the generator's).
        lora, lora_rank: LoRA (True) or full fine-tuning.  grad_checkpointing: diffusers checkpointing.
        reg: β of the L2-to-SFT velocity regulariser.  margin: ReFL relu(margin − reward) loss (None = −reward).
        dims, weights, uncertainty_lambda: reward composition (None = the scorer's config).
        scorer_size: side the images are resized to before scoring.
        audit_every, audit_prompts: hacking audit.  audit_tol: oracle drop (mean-weight overall) that counts as
            "fell" in the warning, so that sampling noise of a small audit set does not warn.  seed: everything random.
    """

    generator: str = "runs/gen_sft"
    reward: str = ""
    out: str = "runs/gen_tuned"
    data: str = "runs/shapes_world"
    method: str = "draft"
    k: int = 1
    refl_min_step: int | None = None
    steps: int = 40
    batch_size: int = 8
    lr: float = 3e-4
    sample_steps: int | None = None
    lora: bool = True
    lora_rank: int = 8
    grad_checkpointing: bool = False
    reg: float = 0.0
    margin: float | None = None
    dims: list[str] | None = None
    weights: list[float] | None = None
    uncertainty_lambda: float | None = None
    scorer_size: int = 64
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
    """Distinct prompts of a split, in file order."""
    seen: dict[str, None] = {}
    with open(split_dir(data, split) / "images.jsonl") as f:
        for line in f:
            seen.setdefault(json.loads(line)["prompt"], None)
    return list(seen)


def scorer_reward(scorer, prompts: list[str], images: torch.Tensor, cfg: TuneConfig) -> torch.Tensor:
    """(B,) differentiable reward of (B, 3, S, S) images in [0, 1]."""
    if images.shape[-1] != cfg.scorer_size:
        images = F.interpolate(images, size=(cfg.scorer_size, cfg.scorer_size), mode="bilinear",
                               align_corners=False).clamp(0, 1)
    return scorer.reward(prompts, images, dims=cfg.dims, weights=cfg.weights,
                         uncertainty_lambda=cfg.uncertainty_lambda)


def apply_lora(gen: T2IGenerator, rank: int) -> None:
    """Wrap the transformer with peft LoRA adapters (only they train)."""
    from peft import LoraConfig, get_peft_model

    lcfg = LoraConfig(r=rank, lora_alpha=rank, target_modules=LORA_TARGETS, lora_dropout=0.0, init_lora_weights=True)
    gen.transformer = get_peft_model(gen.transformer, lcfg)


def merge_lora(gen: T2IGenerator) -> None:
    if hasattr(gen.transformer, "merge_and_unload"):
        gen.transformer = gen.transformer.merge_and_unload()


def reward_step(gen: T2IGenerator, ref: T2IGenerator, scorer, prompts: list[str], seeds: list[int],
                cfg: TuneConfig, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One ReFL / DRaFT-K forward with gradients.

    Returns:
        (loss scalar, reward (B,) detached, regulariser scalar detached).
    """
    steps = cfg.sample_steps or gen.cfg.steps
    sig = gen.sigmas(steps)
    if cfg.method == "refl":
        lo = steps // 2 if cfg.refl_min_step is None else cfg.refl_min_step
        k = int(torch.randint(lo, steps, (1,), generator=g))
        grad_from, n_grad = k, 1
    elif cfg.method == "draft":
        if not 1 <= cfg.k <= steps:
            raise ValueError(f"k: expected 1 <= k <= sample steps ({steps}), got {cfg.k}")
        grad_from, n_grad = steps - cfg.k, cfg.k
    else:
        raise ValueError(f"method: expected 'refl' or 'draft', got {cfg.method!r}")
    with torch.no_grad():
        x = gen.sample(prompts, seeds, steps=steps, stop_at=grad_from)
    gs = gen.cfg.guidance  # the gradient steps use the same guidance as sampling
    text = gen.encode_prompts(prompts)
    unc = gen.encode_prompts([""] * len(prompts)) if gs != 1.0 else None
    reg = torch.zeros(())
    for i in range(grad_from, grad_from + n_grad):
        v = gen.velocity(x, sig[i], text, unc, gs)
        if cfg.reg > 0:
            with torch.no_grad():
                r_unc = ref.encode_prompts([""] * len(prompts)) if gs != 1.0 else None
                v_ref = ref.velocity(x.detach(), sig[i], ref.encode_prompts(prompts), r_unc, gs)
            reg = reg + (v - v_ref).pow(2).mean() / n_grad
        # ReFL scores the one-step prediction of the clean image; DRaFT integrates to σ = 0.
        x = x - sig[i] * v if cfg.method == "refl" else x + (sig[i + 1] - sig[i]) * v
    reward = scorer_reward(scorer, prompts, gen.to_image(x), cfg)
    main = -reward.mean() if cfg.margin is None else F.relu(cfg.margin - reward).mean()
    return main + cfg.reg * reg, reward.detach(), reg.detach()


def audit(gen: T2IGenerator, scorer, prompts: list[str], cfg: TuneConfig) -> dict:
    """Reward and perceived-oracle scores of held-out prompts (fixed seeds 10_000 + i)."""
    seeds = [10_000 + i for i in range(len(prompts))]
    imgs = gen.generate(prompts, seeds, steps=cfg.sample_steps)
    with torch.no_grad():
        r = torch.cat([scorer_reward(scorer, prompts[i:i + 16], imgs[i:i + 16], cfg)
                       for i in range(0, len(prompts), 16)])
    o = perceived_scores(imgs, prompts)  # (N, 4)
    return {"reward": float(r.mean()), **{d: float(o[:, j].mean()) for j, d in enumerate(DIMS)},
            "oracle_overall": float((o @ np.asarray(MEAN_WEIGHTS)).mean())}


def hacking_warning(previous: list[dict], row: dict, tol: float) -> str | None:
    """The warning for audit `row` given the earlier audits, or None.

    It warns when the reward rose while the oracle's overall fell by more than `tol`, compared with the previous
    audit or with the first one (a slow drift that never drops `tol` between two audits still warns).
    """
    for ref, what in ((previous[-1:], "the previous audit"), (previous[:1], "the first audit")):
        if ref and row["reward"] > ref[0]["reward"] and row["oracle_overall"] < ref[0]["oracle_overall"] - tol:
            r = ref[0]
            return (f"step {row['step']}: since {what} (step {r['step']}) the reward rose {r['reward']:.4f} -> "
                    f"{row['reward']:.4f} while the oracle fell {r['oracle_overall']:.3f} -> "
                    f"{row['oracle_overall']:.3f} (possible reward hacking)")
    return None


def plot_audit(rows: list[dict], path: Path) -> Path:
    """Reward and oracle overall vs step, two y axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = [r["step"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(st, [r["reward"] for r in rows], "o-", color="tab:blue", label="reward (scorer)")
    ax.set_xlabel("tuning step")
    ax.set_ylabel("reward", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(st, [r["oracle_overall"] for r in rows], "s--", color="tab:red", label="oracle overall")
    ax2.set_ylabel("ShapesWorld oracle (perceived)", color="tab:red")
    ax.set_title("hacking audit: held-out prompts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def tune(cfg: TuneConfig) -> Path:
    """Reward-tune the generator; returns the tuned generator directory (LoRA merged)."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    gen = load_generator(cfg.generator)
    ref = copy.deepcopy(gen).eval()
    for p in list(ref.parameters()) + list(gen.text_encoder.parameters()):
        p.requires_grad_(False)
    scorer = load_scorer(cfg.reward, add_level_tokens=False)
    scorer.model.eval()
    for p in scorer.model.parameters():
        p.requires_grad_(False)
    if cfg.grad_checkpointing:
        gen.transformer.enable_gradient_checkpointing()
    if cfg.lora:
        apply_lora(gen, cfg.lora_rank)
    params = [p for p in gen.transformer.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    train_prompts = prompts_of(cfg.data, "train")
    audit_prompts = prompts_of(cfg.data, "val")[: cfg.audit_prompts]
    g = torch.Generator().manual_seed(cfg.seed)
    rows, warnings, log = [], [], []

    def do_audit(step: int) -> None:
        gen.eval()
        row = {"step": step, **audit(gen, scorer, audit_prompts, cfg)}
        gen.train()
        msg = hacking_warning(rows, row, cfg.audit_tol)
        if msg:
            warnings.append(msg)
            print(f"[gen tune] WARNING {msg}", flush=True)
        rows.append(row)
        print(f"[gen tune] audit step {step}: reward {row['reward']:.3f} oracle overall {row['oracle_overall']:.3f} "
              + " ".join(f"{d[:5]} {row[d]:.2f}" for d in DIMS), flush=True)

    do_audit(0)
    gen.train()
    for step in range(1, cfg.steps + 1):
        idx = torch.randint(len(train_prompts), (cfg.batch_size,), generator=g).tolist()
        seeds = torch.randint(2**31 - 1, (cfg.batch_size,), generator=g).tolist()
        loss, reward, reg = reward_step(gen, ref, scorer, [train_prompts[i] for i in idx], seeds, cfg, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        log.append({"step": step, "loss": loss.item(), "reward": float(reward.mean()), "reg": float(reg)})
        if step % 10 == 0:
            print(f"[gen tune] step {step}/{cfg.steps} reward {np.mean([r['reward'] for r in log[-10:]]):.3f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
        if step % cfg.audit_every == 0 or step == cfg.steps:
            do_audit(step)
    merge_lora(gen)
    gen.eval()
    gen.save_pretrained(out, extra={"trained": {"kind": "tune", "method": cfg.method, "k": cfg.k,
                                                "from": str(cfg.generator), "reward": str(cfg.reward)}})
    (out / "audit.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_audit(rows, out / "audit.png")
    (out / "tune.json").write_text(json.dumps({"config": asdict(cfg), "log": log, "audit": rows,
                                               "hacking_warnings": warnings,
                                               "seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
    print(f"[gen tune] wrote {out} ({time.time() - t0:.0f}s)", flush=True)
    return out
