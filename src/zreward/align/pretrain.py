"""Pretraining of the tiny ShapesWorld generator (the **SFT generator**) by flow matching.

What is implemented (SD3's rectified-flow objective, Esser et al. 2024, arXiv 2403.03206, section 2):
- data: the *high-quality* candidates of a ShapesWorld split (all four oracle scores 5.0 in `meta.oracle`, i.e.
  correct, clean, well-composed, physically plausible images), box-downsampled to the generator's size, with their
  prompts;
- loss: ‖v_θ(x_σ, σ, text) − (ε − x₀)‖² with x_σ = (1 − σ)x₀ + σε and σ = sigmoid(n), n ~ N(0, 1) (SD3's
  logit-normal timestep sampling); the prompt is replaced by "" with probability `cond_dropout` so that
  classifier-free guidance is available;
- AdamW with linear warm-up and cosine decay, gradient clipping at 1.0, an EMA of the weights (decay ramped as
  min(ema, (1 + n)/(10 + n))) which is what gets saved;
- a sample grid (`samples.png`: held-out val prompts, fixed seeds) and `pretrain.json` (config, losses, time).
Two profiles: `quick` (demo stage, a few minutes on 2 CPU cores) and `full` (longer, better samples).
Deterministic given `seed` (data order, noise, dropout decisions all come from seeded generators).
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from zreward.align.generator import GeneratorConfig, T2IGenerator

# quick: 800 steps took 236 s on the shared 2-core machine (load ≈ 10, 1 torch thread; 0.3 s/step); prompt colours
# are visible at 800 steps (lr 2e-3), not yet at 400. full: a longer schedule for cleaner shapes (1500 steps at
# lr 1e-3 gave perceived alignment 1.67 vs 1.37 for quick); full itself was not run to the end (see the report).
PROFILES: dict[str, dict] = {
    "quick": {"steps": 800, "batch_size": 32, "lr": 2e-3},
    "full": {"steps": 2500, "batch_size": 32, "lr": 2e-3},
}

# Generator architectures by name (`--arch`): "default" is the one the profiles were measured with; "tiny" is a
# seconds-scale smoke-test size (learns nothing useful).
ARCHS: dict[str, GeneratorConfig] = {
    "default": GeneratorConfig(),
    "tiny": GeneratorConfig(image_size=16, patch_size=4, layers=1, heads=2, head_dim=8, text_dim=16, text_layers=1,
                            text_heads=2, steps=4),
}


@dataclass
class PretrainConfig:
    """Pretraining settings.

    Attributes:
        data: ShapesWorld dataset dir (with train/ and val/) or a split dir.
        out: output generator directory.
        steps, batch_size, lr, warmup, weight_decay: optimisation.
        cond_dropout: probability of training on the empty prompt (for CFG).
        ema: EMA decay of the saved weights.  seed: everything random.
        max_images: cap on training images (0 = all high-quality ones).
        gen: generator architecture.  profile: name recorded in pretrain.json.
    """

    data: str = "runs/shapes_world"
    out: str = "runs/gen_sft"
    steps: int = 800
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.0
    cond_dropout: float = 0.1
    ema: float = 0.995
    seed: int = 0
    max_images: int = 0
    grid_prompts: int = 16
    gen: GeneratorConfig = field(default_factory=GeneratorConfig)
    profile: str = "custom"

    @classmethod
    def for_profile(cls, name: str, **overrides) -> PretrainConfig:
        """The `quick` / `full` settings (see `PROFILES`) with keyword overrides, e.g. data=..., out=...."""
        if name not in PROFILES:
            raise ValueError(f"profile: expected one of {sorted(PROFILES)}, got {name!r}")
        return cls(**{**PROFILES[name], "profile": name, **overrides})


def split_dir(data: str | Path, split: str) -> Path:
    """`data/split` when `data` is a dataset dir, else `data` itself (a split dir)."""
    d = Path(data)
    if (d / split / "images.jsonl").is_file():
        return d / split
    if (d / "images.jsonl").is_file():
        return d
    raise FileNotFoundError(f"{d}: expected a ShapesWorld dataset dir with {split}/images.jsonl, or a split dir")


def load_good_images(data: str | Path, size: int, split: str = "train", max_images: int = 0
                     ) -> tuple[torch.Tensor, list[str]]:
    """High-quality (all oracle dims 5.0) images of a split, resized to `size` px.

    Returns:
        images (N, 3, size, size) float in [0, 1], and their N prompts.
    """
    root = split_dir(data, split)
    imgs, prompts = [], []
    with open(root / "images.jsonl") as f:
        for line_no, line in enumerate(f, 1):
            rec = json.loads(line)
            oracle = (rec.get("meta") or {}).get("oracle")
            if not isinstance(oracle, dict):
                raise ValueError(f"{root / 'images.jsonl'}:{line_no}: meta.oracle: expected the oracle scores "
                                 f"(a ShapesWorld split), got {oracle!r}")
            if not all(v == 5.0 for v in oracle.values()):
                continue
            im = Image.open(root / rec["image"]).convert("RGB")
            if im.size != (size, size):
                im = im.resize((size, size), Image.BOX)  # area average = what a camera at lower res would see
            imgs.append(np.asarray(im))
            prompts.append(rec["prompt"])
            if max_images and len(imgs) >= max_images:
                break
    if not imgs:
        raise ValueError(f"{root / 'images.jsonl'}: no image with all oracle scores 5.0")
    x = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255
    return x, prompts


def flow_matching_loss(gen: T2IGenerator, x0: torch.Tensor, prompts: list[str], g: torch.Generator) -> torch.Tensor:
    """Rectified-flow loss on a batch.

    Args:
        x0: (B, 3, S, S) clean images in model space [−1, 1].  prompts: B prompts ("" = unconditional).
        g: generator for σ and ε.
    """
    b = x0.shape[0]
    sigma = torch.sigmoid(torch.randn(b, generator=g))  # logit-normal(0, 1)
    eps = torch.randn(x0.shape, generator=g)
    s = sigma.view(b, 1, 1, 1)
    xt = (1 - s) * x0 + s * eps
    v = gen.velocity(xt, sigma, gen.encode_prompts(prompts))
    return (v - (eps - x0)).pow(2).mean()


def save_grid(images: torch.Tensor, captions: list[str], path: str | Path, cols: int = 4, scale: int = 4) -> Path:
    """Save (N, 3, S, S) images in [0, 1] as a captioned grid PNG (nearest upscaling so pixels stay visible)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = images.shape[0]
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.4, rows * 2.7), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < n:
            ax.imshow(images[i].permute(1, 2, 0).numpy(), interpolation="nearest")
            words = captions[i].split()
            cap = "\n".join(" ".join(words[j:j + 4]) for j in range(0, len(words), 4))
            ax.set_title(cap, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=60 * scale // 4 + 40)
    plt.close(fig)
    return Path(path)


def val_prompts(data: str | Path, n: int) -> list[str]:
    """The first n distinct prompts of the val split (held out from pretraining)."""
    root = split_dir(data, "val")
    out: list[str] = []
    with open(root / "images.jsonl") as f:
        for line in f:
            p = json.loads(line)["prompt"]
            if p not in out:
                out.append(p)
            if len(out) >= n:
                break
    return out


def pretrain(cfg: PretrainConfig) -> Path:
    """Train the SFT generator; returns the output directory (a generator dir, see `generator.py`)."""
    t0 = time.time()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    data, prompts = load_good_images(cfg.data, cfg.gen.image_size, "train", cfg.max_images)
    x_all = data * 2 - 1
    gen = T2IGenerator(cfg.gen)
    gen.train()
    ema = copy.deepcopy(gen).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(gen.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(cfg.warmup, 1)) * 0.5 * (
        1 + math.cos(math.pi * min(s, cfg.steps) / max(cfg.steps, 1))))
    g = torch.Generator().manual_seed(cfg.seed)
    losses = []
    n = x_all.shape[0]
    perm, pos = torch.randperm(n, generator=g), 0
    for step in range(cfg.steps):
        if pos + cfg.batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos: pos + cfg.batch_size]
        pos += cfg.batch_size
        drop = torch.rand(len(idx), generator=g) < cfg.cond_dropout
        bp = ["" if d else prompts[i] for i, d in zip(idx.tolist(), drop.tolist())]
        loss = flow_matching_loss(gen, x_all[idx], bp, g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gen.parameters(), 1.0)
        opt.step()
        sched.step()
        decay = min(cfg.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), gen.parameters()):
                pe.lerp_(pm, 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0 or step == cfg.steps - 1:
            print(f"[gen pretrain] step {step}/{cfg.steps} loss {np.mean(losses[-50:]):.4f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    train_s = time.time() - t0
    ema.save_pretrained(out, extra={"trained": {"kind": "pretrain", "steps": cfg.steps, "data": str(cfg.data),
                                                "images": n, "seed": cfg.seed}})
    gp = val_prompts(cfg.data, cfg.grid_prompts)
    imgs = ema.generate(gp, list(range(len(gp))))
    save_grid(imgs, gp, out / "samples.png")
    cfg_json = asdict(cfg)
    (out / "pretrain.json").write_text(json.dumps(
        {"config": cfg_json, "train_images": n, "final_loss": float(np.mean(losses[-50:])),
         "losses": losses[::10], "train_seconds": round(train_s, 1),
         "total_seconds": round(time.time() - t0, 1)}, indent=2) + "\n")
    print(f"[gen pretrain] wrote {out} ({time.time() - t0:.0f}s); samples: {out / 'samples.png'}", flush=True)
    return out
