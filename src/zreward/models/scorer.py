"""The `Scorer`: the one scoring contract used by trainers, evaluation, generator tuning and serving.

A Scorer wraps a HF VLM (any supported family) + tokenizer + differentiable preprocessing + `zreward.json`:
- **direct mode** (student / SFT): one right-padded forward over all (image, dimension) prompts of a batch; the
  prompt ends at the score position; level readout = softmax restricted to the level tokens (`level_readout`).
- **reasoning mode** (teacher): the prompt ends where a chain starts; chains are generated in one batched
  call of the Scorer's rollout engine (`scorer.engine`, `zreward.models.engine`; default `hf`: `generate`, left
  padding, KV cache), cut at EOS, closed with `reasoning_close`, and the level distribution is
  read at the score position after each chain in one teacher-forced forward; with `samples=M` the M distributions
  per (image, dim) are averaged (mean and std are then computed from the averaged distribution).
- **reward**: Σ_d w_d·(mean_d − λ·std_d)/Σ_d w_d, differentiable w.r.t. an image tensor.

Building blocks for trainers (all documented below): `direct_logits` / `direct_readout` (with grad),
`reasoning_prompt`, `generate_chains`, `chain_forward` (per-token log-probs of given chain tokens + level logits
after each chain, one forward), `prepare_images`, `encode_items`.

A `mode: "yesno"` scorer (the RewardDance baseline, `zreward.models.yesno`) answers "is this image better than the
stored reference?" and `score` reports P(yes) as a two-point distribution on the lowest and highest level.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from zreward.data.images import load_image
from zreward.models import level_readout
from zreward.models import logprobs as lp
from zreward.models import vision_share as vs
from zreward.models.batch import EncodedBatch, build_batch, expand_image_placeholders, item_images
from zreward.models.engine import HFEngine, PromptBatch, RolloutEngine, Sampling
from zreward.models.families import FamilySpec
from zreward.models.load import load_components, preprocessor_file, tokens_per_image
from zreward.models.lora import save_merged
from zreward.models.preprocess import PixelInputs, PixelSpec, pil_to_tensor, prepare_pixels
from zreward.models.scorer_config import ScorerConfig
from zreward.models.yesno import score_yesno


@dataclass
class ScoreOutput:
    """Scores of B images on D dimensions over L levels.

    Attributes:
        probs: (B, D, L) level distributions (averaged over chains in reasoning mode).
        mean: (B, D) expected score.  std: (B, D) its spread.  overall: (B,) weighted mean over dims.
        in_level_mass: (B, D) probability of the level tokens under the full softmax (diagnostic; chain-averaged).
        dims: dimension names.  levels: (L,) level values.
        chains: reasoning mode only: chains[b] holds D·M strings, dim-major (chains[b][d·M + m]).
    """

    probs: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    overall: torch.Tensor
    in_level_mass: torch.Tensor
    dims: list[str]
    levels: torch.Tensor
    chains: list[list[str]] | None = None


@dataclass
class ChainBatch:
    """N = B·D·M generated chains, ordered (image, dim, sample).

    Attributes:
        image_index: (N,) index into the images passed.  dim_index: (N,) index into the dims used.
        prompt_ids: N reasoning-prompt token lists (image tokens expanded; ends where the chain starts).
        chain_ids: N generated chain token lists (cut before the first EOS).
        texts: N decoded chains.
        sampling_logprobs: N lists (aligned with chain_ids) of the log-probs the rollout engine sampled each token
            with, or None when they are the trainer's own (the `hf` engine; see `zreward.models.engine`).
    """

    image_index: list[int]
    dim_index: list[int]
    prompt_ids: list[list[int]]
    chain_ids: list[list[int]]
    texts: list[str]
    sampling_logprobs: list[list[float]] | None = None


@dataclass
class ChainForward:
    """Teacher-forced pass over prompt + chain + close.

    Attributes:
        token_logprobs: (N, C) log p(chain token | prefix) under the current model; 0 where masked.
        token_mask: (N, C) 1 on real chain tokens.
        level_logits: (N, L) level logits at the score position after each closed chain.
        in_level_mass: (N,) in-level mass there.
    """

    token_logprobs: torch.Tensor
    token_mask: torch.Tensor
    level_logits: torch.Tensor
    in_level_mass: torch.Tensor




class Scorer:
    """Score images with a VLM; see the module docstring. Build with `load_scorer`."""

    def __init__(self, model, tokenizer, pixel_spec: PixelSpec, config: ScorerConfig, family: FamilySpec,
                 device: str | torch.device = "cpu", preprocessor_json: dict | None = None):
        self.model, self.tokenizer, self.pixel_spec = model, tokenizer, pixel_spec
        self.config, self.family = config, family
        self.device = torch.device(device)
        self.preprocessor_json = preprocessor_json or {}
        self.max_chunk_elems = lp.MAX_CHUNK_ELEMS  # logits held at once when lm_head runs over many positions
        self.generation_batch: int | None = None  # most sequences per generate call in trainer rollouts (None: all)
        self.engine: RolloutEngine = HFEngine()  # what samples the chains (`zreward.models.engine`)
        hf_cfg = model.config
        self.image_token_id = tokenizer.convert_tokens_to_ids(family.image_token)
        self.tokens_per_image = tokens_per_image(hf_cfg)
        self.level_token_ids = torch.tensor(config.level_token_ids, dtype=torch.long)
        self.levels = torch.tensor(config.levels, dtype=torch.float32)
        self.close_ids = tokenizer.encode(config.templates.reasoning_close, add_special_tokens=False)
        self.eos_ids = {tokenizer.eos_token_id, tokenizer.pad_token_id} - {None}
        # Chat checkpoints end a turn with a token listed only in generation_config (Gemma's <end_of_turn>, ...).
        gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        self.eos_ids |= set(gen_eos if isinstance(gen_eos, (list, tuple)) else [gen_eos]) - {None}
        # A chain must never contain image/vision tokens: the model would expect pixels for them.
        self.suppress_ids = sorted({tokenizer.convert_tokens_to_ids(t) for t in family.extra_special} - {None})

    # ------------------------------------------------------------------ prompts and inputs
    @property
    def model_dtype(self) -> torch.dtype:
        """The model's dtype, also while a trainer has swapped in a DDP-wrapped model (DDP has no `.dtype`)."""
        return getattr(self.model, "module", self.model).dtype

    @property
    def dims(self) -> list[str]:
        return list(self.config.dims)

    def resolve_dims(self, dims: list[str] | None) -> list[str]:
        """None → all dims of this scorer; otherwise check the names (ValueError naming unknown ones)."""
        dims = self.dims if dims is None else list(dims)
        bad = [d for d in dims if d not in self.config.rubrics]
        if bad:
            raise ValueError(f"dims: unknown dimensions {bad}; this scorer knows {sorted(self.config.rubrics)}")
        return dims

    def _chat(self, prompt: str, dim: str) -> str:
        t = self.config.templates
        user = t.user.format(prompt=prompt, dim=dim, rubric=self.config.rubrics[dim],
                             lo=self.config.level_strings[0], hi=self.config.level_strings[-1])
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": user}]}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                  **t.chat_template_kwargs)

    def direct_prompt(self, prompt: str, dim: str) -> str:
        """Rendered chat text (one unexpanded image placeholder) ending at the score position."""
        return self._chat(prompt, dim) + self.config.templates.direct_prefix

    def reasoning_prompt(self, prompt: str, dim: str) -> str:
        """Rendered chat text (one unexpanded image placeholder) ending where a reasoning chain starts."""
        return self._chat(prompt, dim) + self.config.templates.reasoning_prefix

    def prepare_images(self, images) -> PixelInputs:
        """PIL images, paths, a list of (3, H, W) tensors or a (B, 3, H, W) tensor in [0, 1] → PixelInputs.

        A tensor batch is preprocessed in one vectorised, differentiable call.
        """
        if isinstance(images, torch.Tensor):
            x = images if images.ndim == 4 else images.unsqueeze(0)
            return prepare_pixels(x.to(self.device, torch.float32), self.pixel_spec, self.tokens_per_image)
        tensors = []
        for i, im in enumerate(images):
            if isinstance(im, torch.Tensor):
                tensors.append(im.to(self.device, torch.float32))
                continue
            if isinstance(im, (str, Path, bytes)):
                im = load_image(im, what=f"image {i}")
            tensors.append(pil_to_tensor(im).to(self.device))
        if tensors and all(t.shape == tensors[0].shape for t in tensors):
            return prepare_pixels(torch.stack(tensors), self.pixel_spec, self.tokens_per_image)
        return prepare_pixels(tensors, self.pixel_spec, self.tokens_per_image)

    def encode_items(self, texts: list[str], image_index: list, pixels: PixelInputs,
                     suffix_ids: list[list[int]] | None = None,
                     padding_side: str = "right") -> tuple[EncodedBatch, list[list[int]]]:
        """Tokenise N rendered texts (placeholders expanded per image), append optional suffix tokens, and batch.

        Args:
            image_index: (N,) entries of `pixels` shown by each text: an int (one placeholder), or a list of ints
                for a text with several image placeholders (in text order, e.g. a pairwise "A vs B" prompt).

        Returns:
            (EncodedBatch on the scorer's device, the N token lists before the suffix).
        """
        ids = self.tokenize_items(texts, image_index, pixels)
        seqs = ids if suffix_ids is None else [a + b for a, b in zip(ids, suffix_ids)]
        return self.batch_of(seqs, image_index, pixels, padding_side), ids

    def tokenize_items(self, texts: list[str], image_index: list, pixels: PixelInputs) -> list[list[int]]:
        """N rendered texts → token id lists, each image placeholder expanded to its image's number of tokens."""
        expanded = [expand_image_placeholders(t, self.family, [pixels.n_tokens[j] for j in js], where=f"item {i}")
                    for i, (t, js) in enumerate(zip(texts, item_images(image_index)))]
        return self.tokenizer(expanded, add_special_tokens=False)["input_ids"]

    def batch_of(self, seqs: list[list[int]], image_index: list, pixels: PixelInputs,
                 padding_side: str = "right") -> EncodedBatch:
        """Token id lists (image tokens expanded) + the pixels they show → padded model inputs on the device."""
        batch = build_batch(seqs, image_index, pixels, self.family, self.image_token_id, self.tokenizer.pad_token_id,
                            padding_side)
        batch.inputs["pixel_values"] = batch.inputs["pixel_values"].to(self.model_dtype)
        return batch.to(self.device)

    def logits_at(self, batch: EncodedBatch, positions: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits (N, V) at one position per row; hidden states are gathered before lm_head."""
        return lp.output_head(self.model)(lp.hidden_at(self.model, batch.inputs, positions))

    def readout_at(self, batch: EncodedBatch, positions: torch.Tensor) -> level_readout.LevelReadout:
        """Level readout (N, L) at one position per row from the L level rows of lm_head (no (N, V) logits)."""
        h = lp.hidden_at(self.model, batch.inputs, positions)
        return lp.hidden_readout(lp.output_head(self.model), h, self.config.level_token_ids, self.levels,
                                 self.max_chunk_elems)

    # ------------------------------------------------------------------ direct mode
    def direct_readout(self, prompts: list[str], images, dims: list[str] | None = None) -> level_readout.LevelReadout:
        """Direct-mode readout with gradients: one forward for all B·D (image, dim) prompts.

        Args:
            prompts: B text prompts.  images: B images (see `prepare_images`).  dims: subset of dims (default all).

        Returns:
            LevelReadout with logits/probs (B, D, L), mean/std/in_level_mass (B, D).
        """
        dims = self.resolve_dims(dims)
        pixels = images if isinstance(images, PixelInputs) else self.prepare_images(images)
        b = len(prompts)
        if len(pixels.values) != b:
            raise ValueError(f"got {b} prompts but {len(pixels.values)} images")
        texts = [self.direct_prompt(p, d) for p in prompts for d in dims]
        image_index = [i for i in range(b) for _ in dims]
        batch, _ = self.encode_items(texts, image_index, pixels)
        with vs.encode_each_image_once(self.model, image_index, pixels):  # each image encoded once, not D times
            ro = self.readout_at(batch, batch.last_pos)
        shape = (b, len(dims))
        return level_readout.LevelReadout(ro.logits.view(*shape, -1), ro.probs.view(*shape, -1),
                                          ro.mean.view(shape), ro.std.view(shape), ro.in_level_mass.view(shape))

    def direct_logits(self, prompts: list[str], images, dims: list[str] | None = None) -> torch.Tensor:
        """(B, D, L) level logits at the score position, with gradients (direct mode, teacher-forced)."""
        return self.direct_readout(prompts, images, dims).logits

    def reward(self, prompts: list[str], images, dims: list[str] | None = None, weights=None,
               uncertainty_lambda: float | None = None) -> torch.Tensor:
        """Differentiable reward (B,): weighted over dims of `mean − λ·std` (direct mode).

        Args:
            prompts: B prompts.  images: (B, 3, H, W) float tensor in [0, 1] (gradients flow to it) or images.
            dims: dims to use (default all).  weights: per-dim weights (default: config weights for those dims).
            uncertainty_lambda: λ (default: config value, 0 = plain expectation).
        """
        dims = self.resolve_dims(dims)
        if weights is None:
            weights = self.config.weights_for(dims)
        w = torch.as_tensor(weights, dtype=torch.float32)
        lam = self.config.uncertainty_lambda if uncertainty_lambda is None else uncertainty_lambda
        ro = self.direct_readout(prompts, images, dims)
        return level_readout.reward_from_readout(ro.mean, ro.std, w.to(ro.mean.device), lam)

    # ------------------------------------------------------------------ reasoning mode
    def generate_chains(self, prompts: list[str], images, dims: list[str] | None = None, samples: int = 1,
                        do_sample: bool | None = None, temperature: float | None = None,
                        max_new_tokens: int | None = None) -> ChainBatch:
        """Generate M chains per (image, dim) in one batched call of `self.engine` (`hf`: KV-cached `generate`,
        left padding).

        Args:
            do_sample: default True when samples > 1 (greedy chains would be identical), else False.
            temperature / max_new_tokens: default from zreward.json.
        """
        dims = self.resolve_dims(dims)
        pixels = images if isinstance(images, PixelInputs) else self.prepare_images(images)
        do_sample = samples > 1 if do_sample is None else do_sample
        items = [(b, d) for b in range(len(prompts)) for d in range(len(dims)) for _ in range(samples)]
        texts = [self.reasoning_prompt(prompts[b], dims[d]) for b, d in items]
        image_index = [b for b, _ in items]
        batch, prompt_ids = self.encode_items(texts, image_index, pixels, padding_side="left")
        sampling = Sampling(max_new_tokens=max_new_tokens or self.config.max_new_tokens, do_sample=do_sample,
                            temperature=temperature or self.config.temperature, eos_ids=sorted(self.eos_ids),
                            pad_id=self.tokenizer.pad_token_id, suppress_ids=self.suppress_ids)
        gen = self.engine.generate(self.model, PromptBatch(prompt_ids, batch, image_index, pixels), sampling)
        cuts = [next((k for k, t in enumerate(row) if t in self.eos_ids), len(row)) for row in gen.token_ids]
        chains = [row[:cut] for row, cut in zip(gen.token_ids, cuts)]
        logprobs = None if gen.logprobs is None else [lp[:cut] for lp, cut in zip(gen.logprobs, cuts)]
        texts_out = self.tokenizer.batch_decode(chains, skip_special_tokens=True)
        return ChainBatch(image_index, [d for _, d in items], prompt_ids, chains, texts_out, logprobs)

    def chain_forward(self, chains: ChainBatch, images, with_tokens: bool = True) -> ChainForward:
        """One teacher-forced forward over prompt + chain + `reasoning_close` for each chain (with gradients).

        Vocabulary-lean (`zreward.models.logprobs`): token log-probs in bounded chunks, level logits from the level
        rows of lm_head; `with_tokens=False` skips the token log-probs (token_logprobs is then all zeros).

        Args:
            chains: from `generate_chains` (or built by a trainer with the same fields).
            images: the images the chains were generated for (same order as `chains.image_index` refers to).
        """
        pixels = images if isinstance(images, PixelInputs) else self.prepare_images(images)
        seqs = [p + c + self.close_ids for p, c in zip(chains.prompt_ids, chains.chain_ids)]
        batch = self.batch_of(seqs, chains.image_index, pixels)
        p_lens = [len(p) for p in chains.prompt_ids]
        with vs.encode_each_image_once(self.model, chains.image_index, pixels):
            logp, mask, ro = lp.chain_scores(self.model, batch.inputs, batch.lengths, p_lens, chains.chain_ids,
                                             self.config.level_token_ids, self.levels, with_tokens,
                                             self.max_chunk_elems)
        return ChainForward(logp, mask, ro.logits, ro.in_level_mass)

    # ------------------------------------------------------------------ the public scoring call
    def score(self, prompts: list[str], images, dims: list[str] | None = None, reasoning: bool = False,
              samples: int = 1, batch_size: int | None = None) -> ScoreOutput:
        """Score B images (no gradients). See `ScoreOutput`; `batch_size` bounds images per model call.

        A `mode: "yesno"` scorer (RewardDance baseline) scores P(image better than its stored reference) instead;
        see `score_yesno`.
        """
        if self.config.mode == "yesno":
            if reasoning:
                raise ValueError("reasoning=True: a yes/no (RewardDance) scorer has no reasoning mode")
            return score_yesno(self, prompts, images, dims, batch_size)
        dims = self.resolve_dims(dims)
        if isinstance(images, torch.Tensor) and images.ndim == 3:
            images = images.unsqueeze(0)
        b = len(prompts)
        if len(images) != b:
            raise ValueError(f"got {b} prompts but {len(images)} images")
        bs = batch_size or b or 1
        probs, mass, chains = [], [], []
        with torch.no_grad():
            for s in range(0, b, bs):
                ps, ims = prompts[s: s + bs], images[s: s + bs]
                if not reasoning:
                    ro = self.direct_readout(ps, ims, dims)
                    probs.append(ro.probs.float().cpu())
                    mass.append(ro.in_level_mass.float().cpu())
                    continue
                pixels = self.prepare_images(ims)
                cb = self.generate_chains(ps, pixels, dims, samples=samples)
                cf = self.chain_forward(cb, pixels, with_tokens=False)
                p = torch.softmax(cf.level_logits.float(), -1).view(len(ps), len(dims), samples, -1)
                probs.append(level_readout.mean_over_chains(p.transpose(1, 2)).cpu())
                m = cf.in_level_mass.float().view(len(ps), len(dims), samples)
                mass.append(level_readout.mean_over_chains(m.mT).cpu())
                per = len(dims) * samples
                chains += [cb.texts[i * per: (i + 1) * per] for i in range(len(ps))]
        P = torch.cat(probs) if probs else torch.zeros(0, len(dims), len(self.levels))
        mass = torch.cat(mass) if mass else torch.zeros(0, len(dims))
        return self.score_output(P, mass, dims, chains if reasoning else None)

    def score_output(self, probs: torch.Tensor, in_level_mass: torch.Tensor, dims: list[str],
                     chains: list[list[str]] | None = None) -> ScoreOutput:
        """ScoreOutput from (B, D, L) level distributions: mean, std and the weighted overall are computed here."""
        mean = level_readout.expectation(probs, self.levels)
        overall = level_readout.overall(mean, torch.tensor(self.config.weights_for(dims)))
        return ScoreOutput(probs, mean, level_readout.std_of(probs, self.levels, mean), overall, in_level_mass, dims,
                           self.levels.clone(), chains)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write safetensors weights (LoRA merged, streamed through the CPU), tokenizer, image processor config and
        zreward.json."""
        out = Path(directory)
        save_merged(getattr(self.model, "module", self.model), out)
        self.tokenizer.save_pretrained(out)
        (out / "preprocessor_config.json").write_text(json.dumps(self.preprocessor_json, indent=2) + "\n")
        self.config.save(out)
        return out


def load_scorer(path_or_name: str | Path, device: str = "cpu", dtype=None, **options) -> Scorer:
    """Load a Scorer from a scorer directory, a plain HF VLM directory or a hub name.

    Args:
        path_or_name: see `zreward.models.load.load_components`.
        device: torch device.  dtype: None → fp32 on CPU, bf16 on CUDA.
        **options: lora (LoraOptions), gradient_checkpointing, add_level_tokens, family, config_overrides,
            attn_implementation.
    """
    model, tok, pixel_spec, cfg, spec = load_components(path_or_name, device=device, dtype=dtype, **options)
    pp = json.loads(preprocessor_file(str(path_or_name)).read_text())
    pp = pp.get("image_processor", pp) if isinstance(pp.get("image_processor"), dict) else pp
    return Scorer(model, tok, pixel_spec, cfg, spec, device=device, preprocessor_json=pp)
