"""Real diffusers flow-matching pipelines (Z-Image, SD3, FLUX, Qwen-Image) behind the tuner's generator interface.

What is implemented: `PipelineGenerator` wraps a `ZImagePipeline`, `StableDiffusion3Pipeline`, `FluxPipeline` or
`QwenImagePipeline` loaded from a local directory (`load_pipeline_generator`) and exposes the interface
`zreward.align.tune` drives (the same as the ShapesWorld `T2IGenerator`):

- `condition(prompts, guidance)`: the pipeline's own `encode_prompt` (frozen text encoders, no gradients), with
  the negative ("") prompt where the family uses classifier-free guidance.
- `sigmas(steps)`: the pipeline's sigma schedule, computed by its scheduler exactly as its `__call__` does
  (SD3: the scheduler's shifted linspace; FLUX, Qwen-Image and Z-Image: linspace(1, 1/n, n) with the
  resolution-dependent `mu` of dynamic shifting); (steps + 1,) ending with 0.
- `flow_velocity(x, σ, cond)`: one transformer call in the convention x_σ = (1 − σ)·x₀ + σ·ε, v = ε − x₀, with
  each family's own timestep and guidance rules:
    SD3    t = 1000σ;  CFG v_u + g·(v_c − v_u) when g > 1 (uncond and cond in one batch, as the pipeline).
    FLUX   t = σ (the pipeline divides by 1000); packed 2×2 latents with image/text position ids; a
           guidance-distilled transformer gets g as its guidance embedding (no second pass).
    Z-Image  t = 1 − σ; the transformer takes per-image lists and predicts −v; CFG v_c + g·(v_c − v_u) when
           g > 0 (its pipeline's convention; `cfg_normalization`/`cfg_truncation` are left at their off defaults).
    Qwen-Image  t = σ; packed latents as FLUX; `true_cfg_scale` g > 1 with the "" negative prompt:
           v = (v_u + g·(v_c − v_u)) rescaled per token to the norm of v_c (its pipeline's rule).
- `sample(...)`: the explicit Euler loop x ← x + (σ_{i+1} − σ_i)·v — the scheduler's `step()` without its hidden
  state — with `grad_steps` / `stop_at` / `x, start_at` for DRaFT-K and ReFL. With gradients off it equals the
  pipeline's own sampling from the same initial latents (tests/align/test_flow_pipeline.py).
- `to_image(x)`: VAE decode *with* gradients: x / scaling_factor + shift_factor (Qwen-Image: x·std + mean per
  channel, one frame) → `vae.decode` → [0, 1].
Latents are float32 (as the pipelines keep them); the transformer runs in its own dtype (bf16 or fp32).
Noise is drawn per image from a seeded CPU `torch.Generator` (batch-size independent).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zreward.align.generator import generate_in_chunks

FAMILY_OF_CLASS = {"StableDiffusion3Pipeline": "sd3", "FluxPipeline": "flux", "ZImagePipeline": "zimage",
                   "QwenImagePipeline": "qwenimage"}
PACKED = ("flux", "qwenimage")  # families whose transformer takes 2×2-packed latent tokens
# LoRA targets: attention projections of every family (those present in the model are used).
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")


@dataclass
class PipelineSampling:
    """Sampling settings of a pipeline generator.

    Attributes:
        height, width: image size in px.  steps: Euler steps.  guidance: the pipeline's `guidance_scale`
            (SD3: CFG scale, 1 = off; FLUX: distilled guidance embedding; Z-Image: CFG, 0 = off; Qwen-Image: its
            `true_cfg_scale`, 1 = off).
        max_sequence_length: text tokens for T5 / Qwen encoders.
    """

    height: int = 512
    width: int = 512
    steps: int = 28
    guidance: float = 4.5
    max_sequence_length: int = 256


@dataclass
class Cond:
    """Encoded prompts: `pos`/`neg` hold the family's tensors (neg is None without CFG); g: guidance scale."""

    pos: tuple
    neg: tuple | None
    g: float


def _calculate_shift(seq_len: int, sched_cfg) -> float:
    """`mu` of dynamic shifting: linear in the latent token count (the pipelines' `calculate_shift`)."""
    lo, hi = sched_cfg.get("base_image_seq_len", 256), sched_cfg.get("max_image_seq_len", 4096)
    b_lo, b_hi = sched_cfg.get("base_shift", 0.5), sched_cfg.get("max_shift", 1.15)
    m = (b_hi - b_lo) / (hi - lo)
    return seq_len * m + (b_lo - m * lo)


class PipelineGenerator:
    """A diffusers flow-matching pipeline driven by the explicit Euler loop (see the module docstring)."""

    def __init__(self, pipe, cfg: PipelineSampling, device: str | torch.device = "cpu"):
        name = type(pipe).__name__
        if name not in FAMILY_OF_CLASS:
            raise ValueError(f"pipeline: expected one of {sorted(FAMILY_OF_CLASS)}, got {name}")
        self.pipe, self.cfg, self.family = pipe, cfg, FAMILY_OF_CLASS[name]
        self._device = torch.device(device)
        self._tdtype = pipe.transformer.dtype  # before any peft wrapping
        tc = pipe.transformer.config
        self._patch, self._in_channels = getattr(tc, "patch_size", 1), tc.in_channels
        self._guidance_embeds = bool(getattr(tc, "guidance_embeds", False))
        if self.family == "qwenimage" and self._guidance_embeds:
            raise ValueError("transformer: guidance_embeds: a guidance-distilled Qwen-Image is not supported")
        f = 2 * pipe.vae_scale_factor  # latents must be a multiple of 2 (packing / 2×2 patches)
        for what, v in (("height", cfg.height), ("width", cfg.width)):
            if v % f:
                raise ValueError(f"{what}: expected a multiple of {f} for this pipeline, got {v}")
        for m in (pipe.vae, *self._text_encoders()):
            m.requires_grad_(False)

    # ------------------------------------------------------------------ components
    def _text_encoders(self) -> list:
        names = ("text_encoder", "text_encoder_2", "text_encoder_3")
        return [getattr(self.pipe, n) for n in names if getattr(self.pipe, n, None) is not None]

    @property
    def transformer(self):
        return self.pipe.transformer

    @transformer.setter
    def transformer(self, module) -> None:  # peft wraps it in place of the original
        self.pipe.transformer = module

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        return self.pipe.vae.dtype

    def lora_targets(self) -> list[str]:
        names = {n for n, _ in self.transformer.named_modules()}
        return [t for t in LORA_TARGETS if any(n == t or n.endswith("." + t) for n in names)]

    def latent_hw(self) -> tuple[int, int]:
        f = self.pipe.vae_scale_factor
        return 2 * (self.cfg.height // (2 * f)), 2 * (self.cfg.width // (2 * f))

    # ------------------------------------------------------------------ conditioning and schedule
    @torch.no_grad()
    def condition(self, prompts: list[str], guidance: float | None = None) -> Cond:
        g = self.cfg.guidance if guidance is None else float(guidance)
        p, dev, msl = list(prompts), self.device, self.cfg.max_sequence_length
        if self.family == "sd3":
            cfg_on = g > 1.0
            pe, npe, pp, npp = self.pipe.encode_prompt(prompt=p, prompt_2=None, prompt_3=None, device=dev,
                                                       do_classifier_free_guidance=cfg_on, max_sequence_length=msl)
            return Cond((pe, pp), (npe, npp) if cfg_on else None, g)
        if self.family == "flux":
            pe, pp, ids = self.pipe.encode_prompt(prompt=p, prompt_2=None, device=dev, max_sequence_length=msl)
            return Cond((pe, pp, ids), None, g)
        if self.family == "qwenimage":
            pos = self.pipe.encode_prompt(prompt=p, device=dev, max_sequence_length=msl)
            neg = self.pipe.encode_prompt(prompt=[""] * len(p), device=dev, max_sequence_length=msl) if g > 1 else None
            return Cond(pos, neg, g)
        cfg_on = g > 0.0  # Z-Image (its encode_prompt rewrites the list it is given: pass a copy)
        pe, npe = self.pipe.encode_prompt(prompt=p, device=dev, do_classifier_free_guidance=cfg_on,
                                          max_sequence_length=msl)
        return Cond((pe,), (npe,) if cfg_on else None, g)

    def sigmas(self, steps: int | None = None) -> torch.Tensor:
        """(steps + 1,) float32 sigmas as the pipeline's `__call__` sets them on its scheduler (last = 0)."""
        n = steps or self.cfg.steps
        sch = self.pipe.scheduler
        if self.family == "sd3":
            kw = {}
            if sch.config.get("use_dynamic_shifting", False):
                h, w = self.latent_hw()
                ps = self._patch
                kw["mu"] = _calculate_shift((h // ps) * (w // ps), sch.config)
            sch.set_timesteps(n, device="cpu", **kw)
        else:
            h, w = self.latent_hw()
            sch.set_timesteps(sigmas=np.linspace(1.0, 1 / n, n).tolist() if self.family in PACKED
                              else torch.linspace(1.0, 1 / n, n).tolist(),
                              device="cpu", mu=_calculate_shift((h // 2) * (w // 2), sch.config))
        return sch.sigmas.float().to(self.device)

    def initial_noise(self, seeds: list[int]) -> torch.Tensor:
        """(B, C, h, w) standard normal latents (FLUX, Qwen-Image: packed to (B, h·w/4, 4C)), one seeded generator
        per image."""
        c = self._in_channels // (4 if self.family in PACKED else 1)
        h, w = self.latent_hw()
        x = torch.stack([torch.randn(c, h, w, generator=torch.Generator().manual_seed(int(s))) for s in seeds])
        return (self.pipe._pack_latents(x, len(seeds), c, h, w) if self.family in PACKED else x).to(self.device)

    # ------------------------------------------------------------------ the model
    def flow_velocity(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v = ε − x₀ predicted at state x (float32) and noise level σ (scalar tensor); see the module docstring."""
        tr, b, dt = self.transformer, x.shape[0], self._tdtype
        xs = x.to(dt)
        sig = sigma.reshape(1).to(self.device)
        if self.family == "sd3":
            (pe, pp), neg = cond.pos, cond.neg
            if neg is not None:
                pe, pp, xs = torch.cat([neg[0], pe]), torch.cat([neg[1], pp]), torch.cat([xs, xs])
            t = (sig * 1000.0).expand(xs.shape[0])
            v = tr(hidden_states=xs, timestep=t, encoder_hidden_states=pe, pooled_projections=pp,
                   return_dict=False)[0].float()
            if neg is None:
                return v
            v_u, v_c = v.chunk(2)
            return v_u + cond.g * (v_c - v_u)
        if self.family == "flux":
            pe, pp, txt_ids = cond.pos
            h, w = self.latent_hw()
            img_ids = self.pipe._prepare_latent_image_ids(b, h // 2, w // 2, self.device, dt)
            gd = torch.full((b,), cond.g, device=self.device) if self._guidance_embeds else None
            return tr(hidden_states=xs, timestep=sig.to(dt).expand(b), guidance=gd, pooled_projections=pp,
                      encoder_hidden_states=pe, txt_ids=txt_ids, img_ids=img_ids, return_dict=False)[0].float()
        if self.family == "qwenimage":
            h, w = self.latent_hw()

            def call(c):
                return tr(hidden_states=xs, timestep=sig.to(dt).expand(b), encoder_hidden_states=c[0],
                          encoder_hidden_states_mask=c[1], img_shapes=[[(1, h // 2, w // 2)]] * b,
                          return_dict=False)[0].float()

            v_c = call(cond.pos)
            if cond.neg is None:
                return v_c
            v_u = call(cond.neg)
            comb = v_u + cond.g * (v_c - v_u)
            return comb * (v_c.norm(dim=-1, keepdim=True) / comb.norm(dim=-1, keepdim=True))
        caps = list(cond.pos[0]) + (list(cond.neg[0]) if cond.neg is not None else [])
        inp = list(xs.unsqueeze(2).unbind(0))
        t = (1.0 - sig).expand(b)
        if cond.neg is not None:
            inp, t = inp + inp, t.repeat(2)
        out = torch.stack([o.float() for o in tr(inp, t, caps, return_dict=False)[0]]).squeeze(2)
        if cond.neg is not None:
            pos, neg = out.chunk(2)
            out = pos + cond.g * (pos - neg)
        return -out

    def sample(self, prompts: list[str], seeds: list[int], steps: int | None = None, guidance: float | None = None,
               grad_steps: int = 0, stop_at: int | None = None, x: torch.Tensor | None = None,
               start_at: int = 0, cond: Cond | None = None) -> torch.Tensor:
        """Explicit Euler sampling from σ = 1 to 0 (arguments as `T2IGenerator.sample`); returns latents."""
        n = steps or self.cfg.steps
        sig = self.sigmas(n)
        cond = self.condition(prompts, guidance) if cond is None else cond
        x = self.initial_noise(seeds) if x is None else x
        first_grad = n - grad_steps
        for i in range(start_at, n if stop_at is None else stop_at):
            with torch.set_grad_enabled(torch.is_grad_enabled() and i >= first_grad):
                x = x + (sig[i + 1] - sig[i]) * self.flow_velocity(x, sig[i], cond)
        return x

    def to_image(self, x: torch.Tensor) -> torch.Tensor:
        """Latents → (B, 3, H, W) images in [0, 1], differentiable through the VAE decoder."""
        vc = self.pipe.vae.config
        if self.family == "qwenimage":
            x = self.pipe._unpack_latents(x, self.cfg.height, self.cfg.width, self.pipe.vae_scale_factor)
            shape = (1, vc.z_dim, 1, 1, 1)
            z = x * torch.tensor(vc.latents_std).view(shape).to(x) + torch.tensor(vc.latents_mean).view(shape).to(x)
            img = self.pipe.vae.decode(z.to(self.dtype), return_dict=False)[0][:, :, 0]
            return (img.float() / 2 + 0.5).clamp(0, 1)
        if self.family == "flux":
            x = self.pipe._unpack_latents(x, self.cfg.height, self.cfg.width, self.pipe.vae_scale_factor)
        z = x / vc.scaling_factor + (vc.shift_factor or 0.0)
        img = self.pipe.vae.decode(z.to(self.dtype), return_dict=False)[0]
        return (img.float() / 2 + 0.5).clamp(0, 1)

    @torch.no_grad()
    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, batch_size: int = 8) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] on CPU, no gradients, in chunks of `batch_size`."""
        return generate_in_chunks(self, prompts, seeds, steps, guidance, batch_size)

    def eval(self) -> PipelineGenerator:
        self.transformer.eval()
        return self

    def train(self, mode: bool = True) -> PipelineGenerator:
        self.transformer.train(mode)
        return self

    def save_pretrained(self, directory: str | Path, extra: dict | None = None) -> Path:
        """The whole pipeline in diffusers format (transformer with any LoRA merged by the caller) + tuned.json."""
        out = Path(directory)
        self.pipe.save_pretrained(out)
        (out / "tuned.json").write_text(json.dumps({"sampling": self.cfg.__dict__, **(extra or {})}, indent=2) + "\n")
        return out


def is_pipeline_dir(path: str | Path) -> bool:
    return (Path(path) / "model_index.json").is_file()


def load_pipeline_generator(path: str | Path, sampling: PipelineSampling | None = None, device: str = "cpu",
                            dtype: torch.dtype = torch.float32) -> PipelineGenerator:
    """Load a local diffusers pipeline directory (no hub access) as a `PipelineGenerator`.

    Components recorded as absent in `model_index.json` (e.g. SD3 without T5) are passed as None.
    A directory written by `PipelineGenerator.save_pretrained` keeps its sampling settings unless `sampling` is given.

    Raises:
        FileNotFoundError: no model_index.json.  ValueError: a class other than Z-Image / SD3 / FLUX / Qwen-Image.
    """
    import diffusers
    from packaging.version import Version

    d = Path(path)
    idx_path = d / "model_index.json"
    if not idx_path.is_file():
        raise FileNotFoundError(f"{idx_path}: not found; expected a local diffusers pipeline directory")
    idx = json.loads(idx_path.read_text())
    name = idx.get("_class_name")
    if name not in FAMILY_OF_CLASS:
        raise ValueError(f"{idx_path}: _class_name: expected one of {sorted(FAMILY_OF_CLASS)}, got {name!r}")
    cls = getattr(diffusers, name)
    expected, _ = cls._get_signature_keys(cls)
    absent = {k: None for k in expected if (idx.get(k) or [None])[0] is None}
    # diffusers >= 0.42 renamed `torch_dtype` to `dtype` (the old name still works there, with a warning)
    dkey = "dtype" if Version(diffusers.__version__) >= Version("0.42") else "torch_dtype"
    pipe = cls.from_pretrained(d, local_files_only=True, **{dkey: dtype}, **absent).to(device)
    pipe.set_progress_bar_config(disable=True)
    if sampling is None and (d / "tuned.json").is_file():
        sampling = PipelineSampling(**json.loads((d / "tuned.json").read_text())["sampling"])
    return PipelineGenerator(pipe, sampling or PipelineSampling(), device)
