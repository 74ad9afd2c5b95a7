"""SFT: direct score-token training against annotator distributions, and the teacher's reasoning cold start.

Two variants (`sft.mode`), both explicit loops over prompt-grouped batches (`zreward.trainers.data.group_batch`):

- **direct** (the SFT baseline of Z-Reward, arXiv 2606.09076, and the usual Q-Align / DeQA-Score recipe,
  https://arxiv.org/abs/2312.17090, https://arxiv.org/abs/2501.11561): one forward per (image, dim) prompt that ends
  at the score position; level logits = the full logits restricted to the 9 level tokens. Loss per step:
      kl_weight · KL(target ‖ p)                       (losses.kl_div_levels, all labelled (image, dim) rows)
    + expected_weight · (E_p[s] − MOS)²                 (losses.expected_score_loss; MSE or Huber)
    + pair_weight · pairwise(images of one prompt)      (losses.score_gap_huber on E[s] gaps vs MOS gaps, or
                                                         losses.thurstone_fidelity vs P(a ≻ b) of the labels)
  The plain SFT baseline is KL only: `expected_weight` and `pair_weight` default to 0. The paper's SFT baseline is
  "cross-entropy on the score token"; KL to the annotator distribution has the same gradient as the soft-label
  cross-entropy (they differ by the target's entropy, a constant), so it is that baseline with soft labels.
- **reasoning** (the teacher's cold start before GDSO): teacher-forced on the scorer's reasoning prompt + the
  record's rationale for that dim (`rationales[dim]`, truncated to `max_chain_tokens` tokens) + EOS, then
  `reasoning_close`: next-token CE on the rationale tokens and on the EOS after them (so that generation stops
  there), plus the same KL (and optional expected / pairwise terms) on the level distribution at the score
  position after `prompt + rationale + reasoning_close` — exactly the sequence `Scorer.score(reasoning=True)` reads
  after it generated a chain and cut it at EOS. One forward gives both, because the EOS logits and the first close
  token's logits sit at the same (causal) position.
  Choices where the paper is silent: rows without a rationale get no CE (the KL still applies); CE is a mean over
  rationale tokens (+EOS) of the whole global batch, `ce_weight` 1. Optional `caption_weight` > 0 adds the
  captioning CE of `zreward.trainers.caption` on the batch's own images (their scene captions; mean over caption
  tokens + EOS of the global batch), so that the cold start keeps the base VLM's description — which the
  describe-then-compare chains begin with — alive (measured: without it a cold start no longer captions at all).
  Optional `empty_chain_weight` > 0 adds the same KL read after an *empty* chain (the reasoning prompt closed at
  once), so the teacher can also answer without reasoning: that is the score position OPD queries a reasoning
  teacher at (`zreward.trainers.opd.teacher_level_logits`, `empty_chain`), which a cold start on rationales alone
  never trains (issue 12: OPD then distils a ≈ 55 % target).

Normalisation (exact under DDP): every term is a sum over its items divided by the item count of the **global**
batch (counts all-reduced once per step), so N processes with the same global batch give the same loss and
gradient as one process (up to float summation order). Gradient accumulation splits the local batch by prompt
groups with the same global normalisers.

The final Scorer (`run_dir/final`) records `mode` in zreward.json ("direct" or "reasoning"); a reasoning scorer
also gets `max_new_tokens ≥ max_chain_tokens + 1` so the chains it learned fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.losses import (expected_score_loss, kl_div_levels, pair_target_win_prob, score_gap_huber,
                            thurstone_fidelity)
from zreward.models import level_readout
from zreward.models import vision_share as vs
from zreward.models.batch import length_chunks
from zreward.trainers.caption import CaptionConfig, caption_forward, split_captions, tokenize_captions
from zreward.trainers.common import TrainConfig, build_scorer, val_pairwise_accuracy
from zreward.trainers.config import parse_cli
from zreward.trainers.data import TrainData, group_batch, split_by_group, within_group_pairs
from zreward.trainers.loop import RunLoop, global_normalisers
from zreward.trainers.run_utils import RunConfig
from zreward.trainers.sharding import rank_world


@dataclass
class SFTConfig:
    """The SFT method section (`cfg.sft`)."""

    mode: str = field(default="direct", metadata={"help": "direct (SFT baseline) or reasoning (teacher cold start on rationales)"})
    dims: list[str] | None = field(default=None, metadata={"help": "dimensions to train (null: all of the split's)"})
    kl_weight: float = field(default=1.0, metadata={"help": "weight of KL(annotator distribution ‖ p) at the score position"})
    expected_weight: float = field(default=0.0, metadata={"help": "weight of the expected-score regression onto the MOS (0: off)"})
    expected_kind: str = field(default="mse", metadata={"help": "mse or huber (expected-score term)"})
    pair_weight: float = field(default=0.0, metadata={"help": "weight of the within-prompt pairwise term (0: off, the plain baseline)"})
    pair_loss: str = field(default="huber", metadata={"help": "huber (E[s] gap vs MOS gap) or fidelity (Thurstone vs label P(a>b))"})
    pair_delta: float = field(default=1.0, metadata={"help": "Huber threshold of the score-gap term"})
    ce_weight: float = field(default=1.0, metadata={"help": "reasoning mode: weight of the rationale next-token CE"})
    max_chain_tokens: int = field(default=64, metadata={"help": "reasoning mode: rationales are cut to this many tokens"})
    caption_weight: float = field(default=0.0, metadata={"help": "reasoning mode: weight of a captioning CE on the batch's images (keeps the base VLM's description alive; 0: off)"})
    empty_chain_weight: float = field(default=0.0, metadata={"help": "reasoning mode: weight of the same KL read after an empty chain (the reasoning prompt closed at once: the teacher's answer without reasoning, which OPD distils; a row without a rationale is read there by both terms; 0: off)"})

    def __post_init__(self) -> None:
        if self.mode not in ("direct", "reasoning"):
            raise ValueError(f"sft.mode must be direct or reasoning, got {self.mode!r}")
        if self.pair_loss not in ("huber", "fidelity"):
            raise ValueError(f"sft.pair_loss must be huber or fidelity, got {self.pair_loss!r}")
        if self.expected_kind not in ("mse", "huber"):
            raise ValueError(f"sft.expected_kind must be mse or huber, got {self.expected_kind!r}")
        if self.max_chain_tokens < 1:
            raise ValueError(f"sft.max_chain_tokens must be >= 1, got {self.max_chain_tokens}")
        for name in ("caption_weight", "empty_chain_weight"):
            w = getattr(self, name)
            if w < 0 or (w and self.mode != "reasoning"):
                raise ValueError(f"sft.{name} must be >= 0 and is for sft.mode=reasoning only, got {w} with mode "
                                 f"{self.mode!r}")


@dataclass
class Config(TrainConfig):
    """`zreward train sft` configuration (YAML files and `a.b=c` overrides only override these defaults)."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/sft"))
    sft: SFTConfig = field(default_factory=SFTConfig)


# ------------------------------------------------------------------------------------------- loss terms


def pair_counts(group: np.ndarray, mask: np.ndarray) -> int:
    """Number of (within-prompt pair, dim) items where both images are labelled. group: (B,), mask: (B, D)."""
    ia, ib = within_group_pairs(group)
    return int((mask[ia] & mask[ib]).sum())


def pairwise_sum(mean: torch.Tensor, std: torch.Tensor, group: np.ndarray, target: torch.Tensor,
                 mos: torch.Tensor, mask: torch.Tensor, kind: str, delta: float) -> torch.Tensor:
    """Summed pairwise loss over within-prompt pairs and dims.

    Args:
        mean, std: (B, D) predicted expected score and spread.  group: (B,) prompt group ids.
        target: (B, D, L) label distributions.  mos: (B, D) label means.  mask: (B, D) bool, labelled.
        kind: "huber" (E[s] gap vs MOS gap, losses.score_gap_huber) or "fidelity" (losses.thurstone_fidelity
            against `losses.pair_target_win_prob`).
    """
    ia, ib = (torch.as_tensor(x, dtype=torch.long, device=mean.device) for x in within_group_pairs(group))
    if len(ia) == 0:
        return mean.sum() * 0.0
    m = (mask[ia] & mask[ib]).flatten()
    if kind == "huber":
        return score_gap_huber((mean[ia] - mean[ib]).flatten(), (mos[ia] - mos[ib]).flatten(), delta=delta,
                               mask=m, reduction="sum")
    p = pair_target_win_prob(target[ia], target[ib]).flatten()
    return thurstone_fidelity(mean[ia].flatten(), std[ia].flatten(), mean[ib].flatten(), std[ib].flatten(), p,
                              mask=m, reduction="sum")


def rationale_forward(scorer, prompts: list[str], images, dims: list[str], chains: list[list[int]]):
    """Teacher-forced reasoning pass: prompt + chain + `reasoning_close` per (image, dim).

    The B·D rows run in one or two forwards cut by length (`models.batch.length_chunks`: the chains' lengths vary
    a lot across dims, and a right-padded row's outputs do not depend on its batch mates), each image through the
    vision tower once per forward (`models.vision_share`). Under several processes always one forward: every
    forward of a DDP (buffer broadcast) or FSDP2 (parameter all-gather) model is a collective, so all ranks must
    make the same number of them.

    Args:
        prompts: B prompts.  images: B images.  dims: D dims.
        chains: B·D token lists (image-major); an empty chain gets no CE targets.

    Returns:
        (ce_sum, n_ce_tokens, LevelReadout (B, D, L) at the score position after each closed chain). The CE
        targets are each chain token and an EOS after the last one (predicted where the close begins).
    """
    b, d = len(prompts), len(dims)
    pixels = scorer.prepare_images(images)
    texts = [scorer.reasoning_prompt(p, dim) for p in prompts for dim in dims]
    image_index = [i for i in range(b) for _ in dims]
    ids = scorer.tokenize_items(texts, image_index, pixels)
    seqs = [p + c + scorer.close_ids for p, c in zip(ids, chains)]
    ce, score_logits, rows = 0.0, [], []
    parts = length_chunks([len(x) for x in seqs]) if rank_world()[1] == 1 else [list(range(len(seqs)))]
    for part in parts:
        c_ce, c_score = _rationale_rows(scorer, [seqs[i] for i in part], [len(ids[i]) for i in part],
                                        [chains[i] for i in part], [image_index[i] for i in part], pixels)
        ce, score_logits, rows = ce + c_ce, score_logits + [c_score], rows + part
    inverse = torch.empty(len(rows), dtype=torch.long)
    inverse[torch.tensor(rows)] = torch.arange(len(rows))
    full = torch.cat(score_logits)[inverse.to(score_logits[0].device)].view(b, d, -1)
    ro = level_readout.readout(full, scorer.level_token_ids.to(full.device), scorer.levels.to(full.device))
    return ce, sum(len(c) + 1 for c in chains if c), ro


def _rationale_rows(scorer, seqs: list[list[int]], p_lens: list[int], chains: list[list[int]], image_index: list[int],
                    pixels) -> tuple[torch.Tensor, torch.Tensor]:
    """One right-padded forward over `seqs` (prompt + chain + close): (CE sum over chain tokens + EOS, (N, V)
    logits at each row's score position)."""
    batch = scorer.batch_of(seqs, image_index, pixels)
    n, t = batch.inputs["input_ids"].shape
    p_len = torch.tensor(p_lens)
    k = int(t - p_len.min().item() + 1)  # logits for positions t-k..t-1 cover every target and the score position
    with vs.encode_each_image_once(scorer.model, image_index, pixels):
        logits = scorer.model(**batch.inputs, logits_to_keep=k, use_cache=False).logits  # (N, k, V)
    j = torch.arange(max(len(c) for c in chains) + 1)
    targets = torch.full((n, len(j)), -100, dtype=torch.long)
    for i, c in enumerate(chains):  # index bookkeeping only
        if c:
            targets[i, : len(c)] = torch.tensor(c, dtype=torch.long)
            targets[i, len(c)] = scorer.tokenizer.eos_token_id
    local = (p_len.unsqueeze(1) - 1 + j.unsqueeze(0) - (t - k)).clamp(0, k - 1).to(logits.device)
    rows = torch.arange(n, device=logits.device)
    ce = F.cross_entropy(logits[rows.unsqueeze(1), local].float().flatten(0, 1), targets.to(logits.device).flatten(),
                         ignore_index=-100, reduction="sum")
    return ce, logits[rows, (batch.lengths - 1 - (t - k)).to(logits.device)]


def tokenize_rationales(tokenizer, data: TrainData, idx: np.ndarray, dims: list[str], max_tokens: int) -> list[list[int]]:
    """B·D rationale token lists (image-major), cut to `max_tokens`; [] where a record has no rationale."""
    texts = [data.rationales[i].get(d, "") or "" for i in idx for d in dims]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [x[:max_tokens] for x in ids]


# -------------------------------------------------------------------------------------------------- train


def _check_dims(cfg: Config, scorer, data: TrainData) -> list[str]:
    dims = list(cfg.sft.dims or data.dims)
    for what, have in (("training split", data.dims), (f"scorer {cfg.model.init_from}", scorer.dims)):
        missing = [d for d in dims if d not in have]
        if missing:
            raise ValueError(f"sft.dims: {missing} are not dims of the {what} ({have})")
    return dims


def step_losses(cfg: Config, scorer, data: TrainData, idx: np.ndarray, dims: list[str], norms: dict[str, float],
                device, captions: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Weighted-ready loss terms of one (micro-)batch, each Σ_items / global normaliser. See module docstring."""
    s = cfg.sft
    di = data.dim_index(dims)
    target = torch.as_tensor(data.target[idx][:, di], device=device)
    mask = torch.as_tensor(data.mask[idx][:, di], device=device)
    mos = torch.as_tensor(data.mos[idx][:, di], device=device)
    prompts, images = [data.prompts[i] for i in idx], data.image_batch(idx)
    terms: dict[str, torch.Tensor] = {}
    if s.mode == "reasoning":
        chains = tokenize_rationales(scorer.tokenizer, data, idx, dims, s.max_chain_tokens)
        ce, _, ro = rationale_forward(scorer, prompts, images, dims, chains)
        terms["ce"] = ce / norms["ce"]
        if s.caption_weight:
            cap, _, _ = caption_forward(scorer, images, [captions[i] for i in idx], CaptionConfig.instruction)
            terms["caption"] = cap / norms["caption"]
        if s.empty_chain_weight:
            _, _, ro0 = rationale_forward(scorer, prompts, images, dims, [[] for _ in chains])
            terms["kl_empty"] = kl_div_levels(ro0.logits.float(), target, mask, reduction="sum") / norms["rows"]
    else:
        ro = scorer.direct_readout(prompts, images, dims)
    logits = ro.logits.float()
    terms["kl"] = kl_div_levels(logits, target, mask, reduction="sum") / norms["rows"]
    if s.expected_weight:
        terms["expected"] = expected_score_loss(logits, mos, scorer.levels.to(device), mask, kind=s.expected_kind,
                                                reduction="sum") / norms["rows"]
    if s.pair_weight:
        terms["pair"] = pairwise_sum(ro.mean.float(), ro.std.float(), data.group[idx], target, mos, mask,
                                     s.pair_loss, s.pair_delta) / norms["pairs"]
    return terms


def _weights(cfg: Config) -> dict[str, float]:
    s = cfg.sft
    return {"kl": s.kl_weight, "expected": s.expected_weight, "pair": s.pair_weight, "ce": s.ce_weight,
            "caption": s.caption_weight, "kl_empty": s.empty_chain_weight}


def train(cfg: Config) -> Path:
    """Run SFT (direct or reasoning cold start); returns the final Scorer directory `run_dir/final`."""
    if not cfg.data.train:
        raise ValueError("data.train is required: a canonical split directory")
    if cfg.sft.caption_weight and cfg.data.extra_train:
        raise ValueError("sft.caption_weight: the captioning term reads the scene captions of data.train only; it "
                         "cannot be combined with data.extra_train (set one of them off)")
    loop = RunLoop(cfg, f"sft[{cfg.sft.mode}]")
    data = cfg.data.load_train()
    val = cfg.data.load_val()
    scorer = build_scorer(cfg.model, loop.device)
    dims = _check_dims(cfg, scorer, data)
    loop.start(scorer)
    weights, ga, device = _weights(cfg), cfg.accelerator.gradient_accumulation_steps, loop.device
    captions = None
    if cfg.sft.caption_weight:  # the scene captions of the training images, in the split's order
        ids, texts = split_captions(cfg.data.train, cfg.data.max_images)
        if ids != data.ids:
            raise ValueError(f"{cfg.data.train}: caption records do not line up with the training records")
        captions = tokenize_captions(scorer.tokenizer, texts, CaptionConfig.max_tokens)

    def train_step(step: int) -> dict:
        idx = group_batch(data, cfg.data.prompts_per_batch, step, cfg.run.seed, rank=loop.rank,
                          world_size=loop.world, max_per_prompt=cfg.data.max_per_prompt)
        mask = data.mask[idx][:, data.dim_index(dims)]
        n_ce = 0
        if cfg.sft.mode == "reasoning":
            n_ce = sum(len(c) + 1 for c in tokenize_rationales(scorer.tokenizer, data, idx, dims,
                                                               cfg.sft.max_chain_tokens) if c)
        n_cap = sum(len(captions[i]) + 1 for i in idx) if captions is not None else 0
        rows, pairs, ce, cap = global_normalisers([mask.sum(), pair_counts(data.group[idx], mask), n_ce, n_cap],
                                                  device)
        norms = {"rows": rows, "pairs": pairs, "ce": ce, "caption": cap}
        return loop.step_on_terms(step, split_by_group(idx, data.group, ga),
                                  lambda part: step_losses(cfg, scorer, data, part, dims, norms, device, captions),
                                  weights)

    def evaluate(step: int) -> dict:
        return val_pairwise_accuracy(scorer, val, batch_size=cfg.data.eval_batch_size,
                                     reasoning=cfg.sft.mode == "reasoning")

    loop.run(train_step, evaluate if val is not None else None)
    chain_len = cfg.sft.max_chain_tokens + 1 if cfg.sft.mode == "reasoning" else None
    return loop.save_final(scorer, cfg.sft.mode, chain_len)


def main(argv: list[str] | None = None) -> int:
    """`zreward train sft --config FILE [a.b=c ...]`."""
    cfg = parse_cli(Config, list(argv or []), prog="zreward train sft")
    final = train(cfg)
    print(f"[sft] final scorer: {final}")
    return 0
