"""Shared stages of the reasoning-mode RL trainers (`gdso`, `grpo`), named as in verl: rollout → reward → advantages.

Plain functions, no trainer state:

- `rollout`: G sampled chains per (image, dimension) in batched `Scorer.generate_chains` calls (the Scorer's
  rollout engine, `scorer.engine`: `hf` KV-cached `generate` or `vllm`) of at
  most `gen_batch` sequences each (whole images, or whole dims of one image when an image alone exceeds it; eval
  mode, no gradients). Chains are ordered (image, dim, sample), so the G chains of one (image, dim) group are
  contiguous, as `losses.group_relative_advantages` expects.
- `subset` / `micro_batches`: split a rollout into micro-batches of whole prompt groups (the pairwise term couples
  the images of one prompt; advantages couple the G chains of one (image, dim)), so each micro-batch is a
  self-contained forward/backward.
- `score_chains`: the teacher-forced pass (`Scorer.chain_forward`): per-token log-probs of the chain tokens and the
  level logits read at the score position after each closed chain, all chains in one forward.
The rewards and advantages themselves are pure functions in `zreward.losses` (`losses.rewards`,
`losses.policy.masked_advantages`).
- `engine_logprobs`: the rollout engine's sampling log-probs (vllm) as an (N, T) tensor aligned with the
  teacher-forced token log-probs, for the truncated importance weights (`rl.engine_correction`).
- `with_score_token`: append the chosen level token's log-prob (restricted level softmax) as one more "token" of
  each chain, so a PG loss covers the chain tokens and the score token.
- `reference_logprobs`: chain-token log-probs under the frozen initial model (k3 KL): with LoRA the adapters are
  disabled for one no-grad forward (no extra memory); otherwise a frozen copy of the model is used (one more copy
  of the weights in memory + one no-grad forward per rollout).
- `group_moments`: per-(image, dim) mean over the G chains of the expectation and std (differentiable), for the
  pairwise score-gap term.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, replace

import numpy as np
import torch

from zreward.models.logprobs import calls_on_every_rank
from zreward.models.level_readout import expectation, std_of
from zreward.models.preprocess import PixelInputs
from zreward.models.scorer import ChainBatch, ChainForward

__all__ = ["Rollout", "rollout", "generation_chunks", "concat_chains", "with_guides", "subset", "micro_batches",
           "score_chains", "with_score_token", "engine_logprobs", "reference_logprobs", "group_moments", "Labels",
           "batch_labels", "resolve_dims", "step_dims"]


@dataclass
class Rollout:
    """N = B·D·G chains for B images, D dims, G samples (ordered image, dim, sample).

    Attributes:
        chains: the generated chains (`chains.image_index` indexes `pixels`).
        pixels: preprocessed images of the batch (B entries).
        n_images / n_dims / group_size: B, D, G.
        gen_tokens: number of generated chain tokens (for tokens/s).
    """

    chains: ChainBatch
    pixels: PixelInputs
    n_images: int
    n_dims: int
    group_size: int
    gen_tokens: int


def generation_chunks(n_images: int, n_dims: int, group_size: int, gen_batch: int | None) -> list[tuple[slice, slice]]:
    """(image slice, dim slice) per generate call, in (image, dim) order, each ≤ gen_batch sequences when possible.

    Whole images per call while D·G fits; otherwise one image per call split into dims (a single (image, dim)
    group of G sequences is the smallest unit: the G chains of a group are never split).
    """
    per_image = n_dims * group_size
    if not gen_batch or gen_batch >= n_images * per_image:
        return [(slice(0, n_images), slice(0, n_dims))]
    if gen_batch >= per_image:
        step = gen_batch // per_image
        return [(slice(b, min(b + step, n_images)), slice(0, n_dims)) for b in range(0, n_images, step)]
    step = max(1, gen_batch // group_size)
    return [(slice(b, b + 1), slice(d, min(d + step, n_dims))) for b in range(n_images) for d in range(0, n_dims, step)]


def concat_chains(parts: list[tuple[int, int, ChainBatch]]) -> ChainBatch:
    """One ChainBatch from chunks generated for images starting at b0 and dims starting at d0 (offsets added)."""
    out = ChainBatch([], [], [], [], [])
    with_lp = bool(parts) and all(cb.sampling_logprobs is not None for _, _, cb in parts)
    out.sampling_logprobs = [] if with_lp else None
    for b0, d0, cb in parts:
        out.image_index += [b0 + i for i in cb.image_index]
        out.dim_index += [d0 + d for d in cb.dim_index]
        out.prompt_ids += cb.prompt_ids
        out.chain_ids += cb.chain_ids
        out.texts += cb.texts
        if with_lp:
            out.sampling_logprobs += cb.sampling_logprobs
    return out


def rollout(scorer, prompts: list[str], images, dims: list[str], group_size: int, max_new_tokens: int,
            temperature: float, gen_batch: int | None = None, do_sample: bool = True) -> Rollout:
    """Sample G chains per (image, dim) with the current policy (batched generate calls, no gradients).

    Args:
        scorer: a Scorer whose `model` is the plain (unwrapped) policy, or the FSDP2-sharded one.
        prompts: B prompts.  images: B images (tensor (B, 3, H, W) in [0, 1] or a list).  dims: D dimensions.
        group_size: G ≥ 1 chains per (image, dim); sampled even for G = 1 unless do_sample=False (greedy).
        gen_batch: most sequences per `generate` call (default: `scorer.generation_batch`, set from
            `model.generation_batch`; None: all B·D·G in one call); see `generation_chunks`. Chunking bounds the KV
            cache; where sampling is deterministic the chains equal one call's.
    """
    gen_batch = getattr(scorer, "generation_batch", None) if gen_batch is None else gen_batch
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        pixels = scorer.prepare_images(images)
        parts = []
        chunks = generation_chunks(len(prompts), len(dims), group_size, gen_batch)
        # FSDP: every generate step is a collective, so a rank with fewer chunks repeats its last (discarded)
        for k in range(calls_on_every_rank(scorer.model, len(chunks))):
            bs, ds = chunks[min(k, len(chunks) - 1)]
            sub = PixelInputs(pixels.values[bs], None if pixels.grids is None else pixels.grids[bs],
                              pixels.n_tokens[bs], None if pixels.source is None else pixels.source[bs])
            cb = scorer.generate_chains(prompts[bs], sub, dims[ds], samples=group_size, do_sample=do_sample,
                                        temperature=temperature, max_new_tokens=max_new_tokens)
            if k < len(chunks):
                parts.append((bs.start, ds.start, cb))
        chains = concat_chains(parts)
    finally:
        scorer.model.train(was_training)
    return Rollout(chains, pixels, len(prompts), len(dims), group_size, sum(len(c) for c in chains.chain_ids))


def with_guides(ro: Rollout, guides: list[list[int]], texts: list[str]) -> Rollout:
    """The rollout with the last sample of each (image, dim) group replaced by a guide chain (off-policy guidance,
    e.g. the record's true rationale: LUFFY, https://arxiv.org/abs/2504.14945), so that a group whose sampled
    chains are all wrong still holds a right one for its group-relative advantages to prefer.

    Args:
        guides: B·D token lists (image-major, like the rollout's groups); [] keeps the group's sampled chain.
        texts: their decoded texts.
    Needs the trainer's own log-probs (`sampling_logprobs` None, the hf engine): a guide was not sampled by any
    engine, so its first-pass ratio is 1 and its PG gradient is A · ∇ log π(guide).
    """
    n_groups = ro.n_images * ro.n_dims
    if len(guides) != n_groups or len(texts) != n_groups:
        raise ValueError(f"with_guides: {len(guides)} guides / {len(texts)} texts for {n_groups} (image, dim) groups")
    if ro.chains.sampling_logprobs is not None:
        raise ValueError("with_guides: guide chains need the trainer's own log-probs (engine hf), not an engine's")
    chains, out_texts = list(ro.chains.chain_ids), list(ro.chains.texts)
    for k, (guide, text) in enumerate(zip(guides, texts)):
        if guide:
            last = (k + 1) * ro.group_size - 1
            chains[last], out_texts[last] = list(guide), text
    cb = ChainBatch(ro.chains.image_index, ro.chains.dim_index, ro.chains.prompt_ids, chains, out_texts)
    return replace(ro, chains=cb)


def subset(ro: Rollout, image_rows: np.ndarray) -> tuple[Rollout, np.ndarray]:
    """The chains of a subset of the batch images (pixels kept whole; `image_index` still indexes them).

    Returns:
        (sub-rollout, (n,) chain rows taken from the full rollout, in order).
    """
    per = ro.n_dims * ro.group_size
    rows = (np.asarray(image_rows, np.int64)[:, None] * per + np.arange(per)[None, :]).reshape(-1)
    c = ro.chains
    sub = ChainBatch([c.image_index[i] for i in rows], [c.dim_index[i] for i in rows],
                     [c.prompt_ids[i] for i in rows], [c.chain_ids[i] for i in rows], [c.texts[i] for i in rows],
                     None if c.sampling_logprobs is None else [c.sampling_logprobs[i] for i in rows])
    return Rollout(sub, ro.pixels, len(image_rows), ro.n_dims, ro.group_size,
                   sum(len(x) for x in sub.chain_ids)), rows


def micro_batches(group_ids: np.ndarray, groups_per_micro: int | None) -> list[np.ndarray]:
    """Split batch image positions into micro-batches of whole prompt groups (None: one micro-batch).

    Args:
        group_ids: (B,) prompt-group id of each batch image.
    """
    uniq = list(dict.fromkeys(np.asarray(group_ids).tolist()))  # first-appearance order
    step = len(uniq) if not groups_per_micro else groups_per_micro
    out = []
    for s in range(0, len(uniq), step):
        keep = set(uniq[s:s + step])
        out.append(np.array([i for i, g in enumerate(group_ids) if g in keep], np.int64))
    return out


def score_chains(scorer, ro: Rollout) -> ChainForward:
    """Teacher-forced pass over prompt + chain + close for all N chains of `ro` (gradients if enabled)."""
    return scorer.chain_forward(ro.chains, ro.pixels)


def with_score_token(token_logprobs: torch.Tensor, token_mask: torch.Tensor, level_logits: torch.Tensor,
                     level_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Append log p(chosen level | chain) (softmax restricted to the level tokens) as the last token of each row.

    Args:
        token_logprobs / token_mask: (N, C) chain tokens.  level_logits: (N, L).  level_idx: (N,) chosen level.

    Returns:
        (N, C + 1) log-probs and mask; the score token sits right after each chain's last real token (rows are
        right-padded, so it is placed at column C; aggregation is by mask, the column does not matter).
    """
    lp = torch.log_softmax(level_logits.float(), -1).gather(-1, level_idx.view(-1, 1).to(level_logits.device))
    logp = torch.cat([token_logprobs.float(), lp], 1)
    mask = torch.cat([token_mask, torch.ones_like(token_mask[:, :1])], 1)
    return logp, mask


def engine_logprobs(chains: ChainBatch, shape: tuple[int, int]) -> torch.Tensor:
    """(N, T) float32 tensor of the engine's sampling log-probs (`chains.sampling_logprobs`), chain token k at
    column k as in `chain_forward`'s token log-probs; NaN elsewhere (tokens the engine did not sample)."""
    if chains.sampling_logprobs is None:
        raise ValueError("engine_logprobs: the rollout engine returned no sampling log-probs")
    out = torch.full(shape, float("nan"))
    for i, lp in enumerate(chains.sampling_logprobs):
        out[i, :len(lp)] = torch.tensor(lp[:shape[1]], dtype=torch.float32)
    return out


def make_reference(model):
    """A frozen copy of `model` for k3 KL, or None for a peft model (adapters are disabled instead)."""
    if hasattr(model, "peft_config"):
        return None
    ref = copy.deepcopy(model).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


@torch.no_grad()
def reference_logprobs(scorer, ref_model, ro: Rollout) -> ChainForward:
    """Chain log-probs under the frozen initial model: `ref_model` if given, else the policy with LoRA disabled."""
    if ref_model is None and not hasattr(scorer.model, "disable_adapter"):
        raise ValueError("reference_logprobs: no reference model and the policy has no LoRA adapters to disable")
    view = scorer if ref_model is None else copy.copy(scorer)
    if ref_model is not None:
        view.model = ref_model
    ctx = scorer.model.disable_adapter() if ref_model is None else contextlib.nullcontext()
    with ctx:
        return view.chain_forward(ro.chains, ro.pixels)


def group_moments(level_logits: torch.Tensor, levels: torch.Tensor, n_images: int, n_dims: int,
                  group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over the G chains of each (image, dim) of the expectation and of the std (differentiable).

    Args:
        level_logits: (B·D·G, L), ordered (image, dim, sample).

    Returns:
        mu (B, D), sigma (B, D).
    """
    p = torch.softmax(level_logits.float(), -1)
    lv = levels.to(p.device)
    mu = expectation(p, lv)
    sd = std_of(p, lv, mu)
    return mu.view(n_images, n_dims, group_size).mean(-1), sd.view(n_images, n_dims, group_size).mean(-1)


@dataclass
class Labels:
    """Labels of the B batch images on the step's D dims: mos/std (B, D), target (B, D, L), mask (B, D)."""

    mos: torch.Tensor
    std: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor

    def rows(self, rows: np.ndarray) -> Labels:
        """The labels of a subset of the batch images."""
        return Labels(self.mos[rows], self.std[rows], self.target[rows], self.mask[rows])

    def per_chain(self, g: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N,) mos, (N, L) target, (N,) mask expanded to the (image, dim, sample) chain order."""
        return (self.mos.reshape(-1).repeat_interleave(g), self.target.reshape(-1, self.target.shape[-1])
                .repeat_interleave(g, 0), self.mask.reshape(-1).repeat_interleave(g))


def batch_labels(data, idx: np.ndarray, dim_idx: list[int], levels: torch.Tensor) -> Labels:
    """Labels of batch images `idx` (into a TrainData) on the dims `dim_idx` (into its dims); std from the target."""
    target = torch.from_numpy(data.target[idx][:, dim_idx])
    mos = torch.from_numpy(data.mos[idx][:, dim_idx])
    return Labels(mos, std_of(target, levels, mos, eps=0.0), target, torch.from_numpy(data.mask[idx][:, dim_idx]))


def resolve_dims(g_dims: list[str] | None, data, scorer, where: str = "dims") -> list[str]:
    """The run's dims: the configured ones, or all dims the split and the scorer share; checked."""
    dims = list(g_dims) if g_dims else [d for d in data.dims if d in scorer.dims]
    bad = [d for d in dims if d not in data.dims or d not in scorer.dims]
    if bad or not dims:
        raise ValueError(f"{where}: {bad or dims} must be non-empty and in both the split's dims {data.dims} "
                         f"and the scorer's dims {scorer.dims}")
    return dims


def step_dims(dims: list[str], k: int | None, seed: int, step: int) -> list[str]:
    """The dims used at `step`: all, or a seeded random subset of k (a pure function of (seed, step))."""
    if not k or k >= len(dims):
        return dims
    pick = np.sort(np.random.default_rng([seed, step, 7]).choice(len(dims), k, replace=False))
    return [dims[i] for i in pick]
