"""A flow-matching transformer text-to-image generator with an explicit, differentiable Euler sampler.

What is implemented:
- **Components** (SD3 style): a diffusers `SD3Transformer2DModel` (joint text–image attention, AdaLN timestep +
  pooled-text conditioning) acting directly in pixel space, a small text encoder (token + position embeddings,
  `nn.TransformerEncoder`, masked-mean pooled output) over a byte-level BPE tokenizer trained locally on the
  ShapesWorld prompt grammar, and the `FlowMatchEulerDiscreteScheduler` sigma schedule.
- **Flow matching** (rectified flow, as SD3): x_σ = (1 − σ)·x₀ + σ·ε, the model predicts v = ε − x₀ at
  timestep t = 1000·σ; images live in [−1, 1] (pixel = (x + 1)/2).
- **Explicit Euler loop** `sample(...)`: x ← x + (σ_{i+1} − σ_i)·v(x, σ_i), the same update as the scheduler's
  `step()` (which is stateful and hides the graph); `grad_steps=K` keeps the autograd graph only for the last K
  steps (DRaFT-K), and `stop_at=i` returns the state at step i for ReFL. Optional classifier-free guidance
  (`guidance > 1`; the empty prompt is the unconditional input, dropped with p = `cond_dropout` in pretraining).
- **Persistence**: `save_pretrained(dir)` writes a diffusers-style directory: `transformer/` (diffusers
  `save_pretrained`: config.json + safetensors), `scheduler/scheduler_config.json`, `text_encoder/`
  (config.json + model.safetensors), `tokenizer/tokenizer.json` and `generator.json`; `load_generator(dir)` reads
  it back. A directory with a diffusers-format `transformer/` (any SD3Transformer2DModel with `in_channels` = 3,
  i.e. pixel space) loads the same way; latent-space checkpoints with a VAE are not supported (see report).
Everything is deterministic given seeds (noise is drawn from a seeded `torch.Generator` per image).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from zreward.data.shapes_world.prompts import RELATIONS
from zreward.data.shapes_world.scene import COLORS, SHAPES

GEN_FILE = "generator.json"


@dataclass
class GeneratorConfig:
    """Architecture and sampling defaults of the tiny pixel-space generator.

    Attributes:
        image_size: side in px of generated images (ShapesWorld images are resized to it for pretraining).
        patch_size: transformer patch side; tokens = (image_size / patch_size)².
        layers, heads, head_dim: transformer depth and width (hidden = heads·head_dim).
        text_dim, text_layers, text_heads, max_tokens: text encoder.
        steps: default Euler steps.  shift: flow-matching sigma shift (SD3 uses 3.0 at 1024 px; 1.0 here).
        guidance: default classifier-free guidance scale (1.0 = off).
    """

    image_size: int = 32
    patch_size: int = 4
    layers: int = 4
    heads: int = 4
    head_dim: int = 24
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    steps: int = 16
    shift: float = 1.0
    guidance: float = 1.0


def _grammar_corpus() -> list[str]:
    """Every word the ShapesWorld prompt grammar can produce (so that each is one BPE token)."""
    words = ["a", "an", "one", "two", "three", *COLORS, *SHAPES, *(s + "s" for s in SHAPES)]
    for phrase in RELATIONS.values():
        words += phrase.split()
    return [" ".join(words)] * 8


def build_prompt_tokenizer(vocab_size: int = 400):
    """Byte-level BPE (`tokenizers`) trained on the prompt grammar in milliseconds; index 0 is `<pad>`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_grammar_corpus(), trainer=trainer)
    return tok


class TextEncoder(nn.Module):
    """Token + position embeddings and a pre-norm transformer encoder.

    Outputs per-token states (B, T, text_dim) for joint attention and a masked-mean pooled vector (B, text_dim).
    """

    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, max_tokens: int):
        super().__init__()
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Embedding(max_tokens, dim)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids, mask: (B, T) long / bool (True = real token). Returns (B, T, D) states, (B, D) pooled."""
        pos = torch.arange(ids.shape[1], device=ids.device)
        h = self.tok(ids) + self.pos(pos)[None]
        # An all-padding row (the empty, unconditional prompt) would make attention NaN on the fast inference
        # path; let it attend to its first (padding) slot. Its output is zeroed by the mask below anyway.
        kpm = ~mask
        kpm[:, 0] &= mask.any(1)
        h = self.norm(self.encoder(h, src_key_padding_mask=kpm))
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
        return h * m, pooled


class T2IGenerator(nn.Module):
    """Tokenizer + text encoder + SD3 transformer + flow-matching Euler sampler (see module docstring)."""

    def __init__(self, cfg: GeneratorConfig, tokenizer=None, transformer=None, text_encoder=None):
        super().__init__()
        from diffusers import SD3Transformer2DModel

        self.cfg = cfg
        self.tokenizer = tokenizer or build_prompt_tokenizer()
        hidden = cfg.heads * cfg.head_dim
        self.transformer = transformer or SD3Transformer2DModel(
            sample_size=cfg.image_size, patch_size=cfg.patch_size, in_channels=3, out_channels=3,
            num_layers=cfg.layers, attention_head_dim=cfg.head_dim, num_attention_heads=cfg.heads,
            joint_attention_dim=cfg.text_dim, caption_projection_dim=hidden, pooled_projection_dim=cfg.text_dim,
            pos_embed_max_size=cfg.image_size // cfg.patch_size)
        self.text_encoder = text_encoder or TextEncoder(self.tokenizer.get_vocab_size(), cfg.text_dim,
                                                        cfg.text_layers, cfg.text_heads, cfg.max_tokens)

    # ------------------------------------------------------------------ conditioning
    def tokenize(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B prompts → ids (B, T) and mask (B, T), T = max_tokens (empty prompt = all padding: unconditional)."""
        t = self.cfg.max_tokens
        ids = torch.zeros(len(prompts), t, dtype=torch.long)
        for i, p in enumerate(prompts):  # tokenisation is per string; tensors are filled once
            enc = self.tokenizer.encode(p.strip().lower()).ids if p.strip() else []
            if len(enc) > t:
                raise ValueError(f"prompt {i} {p!r}: {len(enc)} tokens, the text encoder takes at most {t}")
            ids[i, : len(enc)] = torch.tensor(enc, dtype=torch.long)
        return ids, ids != 0

    def encode_prompts(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, text_dim) token states and (B, text_dim) pooled vector."""
        ids, mask = self.tokenize(prompts)
        dev = self.device
        return self.text_encoder(ids.to(dev), mask.to(dev))

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    # ------------------------------------------------------------------ the model
    def velocity(self, x: torch.Tensor, sigma: torch.Tensor, text: tuple[torch.Tensor, torch.Tensor],
                 uncond: tuple[torch.Tensor, torch.Tensor] | None = None, guidance: float = 1.0) -> torch.Tensor:
        """Predicted velocity v = ε − x₀.

        Args:
            x: (B, 3, S, S) noisy images in model space.  sigma: (B,) or scalar noise level in [0, 1].
            text: (states (B, T, D), pooled (B, D)).  uncond: the same for the empty prompt (for guidance > 1).
        """
        t = (sigma * 1000.0).expand(x.shape[0]) if torch.as_tensor(sigma).ndim == 0 else sigma * 1000.0
        if uncond is None or guidance == 1.0:
            return self.transformer(x, text[0], text[1], t, return_dict=False)[0]
        both = self.transformer(torch.cat([x, x]), torch.cat([uncond[0], text[0]]), torch.cat([uncond[1], text[1]]),
                                torch.cat([t, t]), return_dict=False)[0]
        v_u, v_c = both.chunk(2)
        return v_u + guidance * (v_c - v_u)

    def condition(self, prompts: list[str], guidance: float | None = None) -> tuple:
        """(text, uncond or None, guidance) for `flow_velocity` (the tuner's generator interface)."""
        g = self.cfg.guidance if guidance is None else guidance
        return self.encode_prompts(prompts), self.encode_prompts([""] * len(prompts)) if g != 1.0 else None, g

    def flow_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: tuple) -> torch.Tensor:
        """`velocity` with the conditioning of `condition` (same interface as `PipelineGenerator`)."""
        return self.velocity(x, sigma, *cond)

    def lora_targets(self) -> list[str]:
        return ["to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out"]

    def sigmas(self, steps: int) -> torch.Tensor:
        """(steps + 1,) the scheduler's sigma schedule, ending with 0."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        sch = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=self.cfg.shift)
        sch.set_timesteps(steps)
        return sch.sigmas.float()

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        """(B, 3, S, S) standard normal noise, one seeded generator per image (batch-size independent)."""
        s = self.cfg.image_size
        return torch.stack([torch.randn(3, s, s, generator=torch.Generator().manual_seed(int(sd))) for sd in seeds])

    def sample(self, prompts: list[str], seeds: list[int], steps: int | None = None, guidance: float | None = None,
               grad_steps: int = 0, stop_at: int | None = None, x: torch.Tensor | None = None,
               start_at: int = 0, cond: tuple | None = None) -> torch.Tensor:
        """Explicit Euler sampling of the flow ODE from σ = 1 to 0.

        Args:
            prompts: B prompts.  seeds: B noise seeds (ignored when `x` is given).
            steps: number of Euler steps (default cfg.steps).  guidance: CFG scale (default cfg.guidance).
            grad_steps: keep gradients for the last `grad_steps` steps only (0 = none, DRaFT-K uses K).
            stop_at: return the state *before* step `stop_at` (ReFL samples to a late step without gradients).
            x, start_at: resume from state `x` at step index `start_at`.
            cond: conditioning from `condition` (then `guidance` is cond's and nothing is re-encoded).

        Returns:
            (B, 3, S, S) state in model space ([−1, 1] for a finished sample).
        """
        steps = steps or self.cfg.steps
        guidance = self.cfg.guidance if guidance is None else guidance
        sig = self.sigmas(steps).to(self.device)
        x = self.initial_noise(seeds).to(self.device) if x is None else x
        end = steps if stop_at is None else stop_at
        first_grad = steps - grad_steps
        text, uncond = (None, None) if cond is None else cond[:2]
        guidance = guidance if cond is None else cond[2]
        for i in range(start_at, end):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= first_grad):
                if cond is None and (text is None or (i == first_grad and grad_steps > 0)):
                    # (re-)encode so that the text encoder is inside the graph when gradients start
                    text = self.encode_prompts(prompts)
                    uncond = self.encode_prompts([""] * len(prompts)) if guidance != 1.0 else None
                v = self.velocity(x, sig[i], text, uncond, guidance)
                x = x + (sig[i + 1] - sig[i]) * v
        return x

    @staticmethod
    def to_image(x: torch.Tensor) -> torch.Tensor:
        """Model space [−1, 1] → image in [0, 1] (clamped)."""
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 32) -> torch.Tensor:
        """(B, 3, S, S) images in [0, 1], no gradients, in chunks of `batch_size`."""
        return generate_in_chunks(self, prompts, seeds, steps, guidance, batch_size)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write the diffusers-style generator directory (see module docstring)."""
        from diffusers import FlowMatchEulerDiscreteScheduler
        from safetensors.torch import save_file

        out = Path(directory)
        self.transformer.save_pretrained(out / "transformer", safe_serialization=True)
        FlowMatchEulerDiscreteScheduler(shift=self.cfg.shift).save_pretrained(out / "scheduler")
        (out / "text_encoder").mkdir(parents=True, exist_ok=True)
        te = self.text_encoder
        (out / "text_encoder" / "config.json").write_text(json.dumps(
            {"vocab_size": te.tok.num_embeddings, "dim": self.cfg.text_dim, "layers": self.cfg.text_layers,
             "heads": self.cfg.text_heads, "max_tokens": self.cfg.max_tokens}, indent=2) + "\n")
        save_file({k: v.detach().contiguous().cpu() for k, v in te.state_dict().items()},
                  str(out / "text_encoder" / "model.safetensors"))
        (out / "tokenizer").mkdir(exist_ok=True)
        self.tokenizer.save(str(out / "tokenizer" / "tokenizer.json"))
        meta = {"format": "zreward-t2i-generator/1", "config": asdict(self.cfg), **(extra or {})}
        (out / GEN_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        return out


def generate_in_chunks(gen, prompts: list[str], seeds: list[int], steps: int | None, guidance: float | None,
                       batch_size: int) -> torch.Tensor:
    """`gen.to_image(gen.sample(...))` over chunks of `batch_size` prompts, concatenated on the CPU: the `generate`
    of every generator behind the tuner's interface (`T2IGenerator`, `flow_pipeline.PipelineGenerator`)."""
    out = [gen.to_image(gen.sample(prompts[i:i + batch_size], seeds[i:i + batch_size], steps, guidance))
           for i in range(0, len(prompts), batch_size)]
    return torch.cat(out).cpu()


def load_generator(directory: str | Path, device: str = "cpu") -> T2IGenerator:
    """Load a generator directory written by `save_pretrained` (or a pixel-space diffusers SD3 transformer dir with
    our text_encoder/ and tokenizer/ next to it).

    Raises:
        FileNotFoundError / ValueError naming the missing or malformed file.
    """
    from diffusers import SD3Transformer2DModel
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    d = Path(directory)
    meta_path = d / GEN_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: not found; expected a generator directory from `zreward gen pretrain`")
    meta = json.loads(meta_path.read_text())
    known = set(GeneratorConfig.__dataclass_fields__)
    cfg = GeneratorConfig(**{k: v for k, v in meta.get("config", {}).items() if k in known})
    transformer = SD3Transformer2DModel.from_pretrained(d / "transformer")
    if transformer.config.in_channels != 3:
        raise ValueError(f"{d / 'transformer' / 'config.json'}: in_channels: expected 3 (pixel space), got "
                         f"{transformer.config.in_channels} (latent checkpoints need a VAE, not supported)")
    tok = Tokenizer.from_file(str(d / "tokenizer" / "tokenizer.json"))
    tcfg = json.loads((d / "text_encoder" / "config.json").read_text())
    te = TextEncoder(tcfg["vocab_size"], tcfg["dim"], tcfg["layers"], tcfg["heads"], tcfg["max_tokens"])
    te.load_state_dict(load_file(str(d / "text_encoder" / "model.safetensors")))
    gen = T2IGenerator(cfg, tokenizer=tok, transformer=transformer, text_encoder=te)
    return gen.to(device)
