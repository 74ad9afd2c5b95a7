"""RewardDance baseline (https://arxiv.org/abs/2509.08826): a generative yes/no reward trained with next-token CE.

Implemented variant (pairwise RewardDance, the paper's main paradigm):
- **Question**: one chat turn showing two images of the same prompt, "Image A: <img> Image B: <img>" + "Prompt: …
  Is image A better than image B for this prompt? Answer yes or no.", then the assistant prefix `answer_prefix`;
  the next token is the answer. The reward is P("yes") (`losses.yes_probability`). One question about overall
  quality (the human pair labels are overall preferences), no rubric dimensions.
- **Training pairs**: batches of `pairs_per_batch` labelled overall pairs (pairs.jsonl; they are within-prompt by
  construction) drawn as a pure function of (seed, step) (`run_utils.batch_indices`), so `data.prompts_per_batch`
  is not used; with `both_orders` (default) each pair is asked in both orders with targets t and 1 − t, so the
  model cannot learn a position bias.
- **Targets** (paper: the human binary preference): `target=hard` → a wins: 1, b wins: 0, **tie: 0.5 soft target**
  (kept rather than skipped: the CE with t = 0.5 teaches "undecided", and skipping would throw away ~11% of pairs);
  `target=votes` → the rater vote share for a (ties count half).
- **Loss**: `losses.yes_no_ce` at the answer position; `normalize=full` (default) is exact next-token CE over the
  whole vocabulary (what training a generative RM with the LM head does).
- **Pointwise use** (a per-image score for evaluation, RL and serving): P(yes) that the image is better than a
  **fixed reference image**, symmetrised over both orders: s(x) = ½·[P(yes | x, ref) + 1 − P(yes | ref, x)].
  The reference (`reference`): "median" (default) = the training image whose weighted-mean MOS is the median of the
  training set, "blank" = a uniform grey canvas, or an image path. Also logged during training: the
  group-average score (mean of s over the other candidates of the same prompt), which needs the whole candidate
  set and is therefore not usable through the single-image Scorer API, and the direct pairwise judgement accuracy.
- **Final model**: a normal Scorer dir whose `zreward.json` has `mode: "yesno"` and a `yesno` section (question
  template, answer strings and ids, the reference image as base64 PNG so the dir is self-contained).
  `load_scorer(dir).score(prompts, images)` then returns P(yes)-based scores: probs puts mass 1 − p on the lowest
  and p on the highest level, so mean per dim = 1 + 4·p and `overall` = 1 + 4·p (monotone in p).
- **Answer tokens**: " yes"/" no" must each be one token after `answer_prefix` (native in Qwen tokenizers); when
  they are not (the tiny test tokenizer) they are added as tokens and the embeddings resized (not with LoRA).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.data.images import image_to_tensor, load_image
from zreward.losses import yes_no_ce, yes_probability
from zreward.metrics import pairwise_accuracy
from zreward.models.yesno import YesNoConfig, answer_token_ids, encode_png, pair_logits, prefer_prob, score_yesno
from zreward.trainers.common import DataConfig, OptimConfig, TrainConfig, build_scorer, val_pairs
from zreward.trainers.config import parse_cli
from zreward.trainers.data import TrainData
from zreward.trainers.loop import RunLoop
from zreward.trainers.run_utils import RunConfig, batch_indices


@dataclass
class RewardDanceSection:
    """RewardDance-specific options (`cfg.rewarddance`)."""

    yesno: YesNoConfig = field(default_factory=YesNoConfig)
    pairs_per_batch: int = field(default=16, metadata={"help": "labelled pairs per global batch (×2 with both_orders)"})
    target: str = field(default="hard", metadata={"help": "hard (a: 1, b: 0, tie: 0.5) or votes (rater vote share)"})
    both_orders: bool = field(default=True, metadata={"help": "ask each pair as (a, b) and (b, a)"})
    normalize: str = field(default="full", metadata={"help": "CE over the full vocabulary (full) or {yes, no} (restricted)"})
    reference: str = field(default="median", metadata={"help": "pointwise reference: median, blank or an image path"})

    def __post_init__(self) -> None:
        if self.target not in ("hard", "votes"):
            raise ValueError(f"rewarddance.target must be hard or votes, got {self.target!r}")
        if self.normalize not in ("full", "restricted"):
            raise ValueError(f"rewarddance.normalize must be full or restricted, got {self.normalize!r}")


@dataclass
class Config(TrainConfig):
    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/rewarddance_tiny", max_steps=150))
    data: DataConfig = field(default_factory=lambda: DataConfig(prompts_per_batch=4, val_max_images=200))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=10))
    rewarddance: RewardDanceSection = field(default_factory=RewardDanceSection)


# ------------------------------------------------------------------------------------------ data and eval


def labelled_pairs(data: TrainData, mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every labelled overall pair of a split → (ia, ib, t): image indices and target P(A better than B).

    Args:
        mode: "hard" (a: 1, b: 0, tie: 0.5) or "votes" (the vote share for a, ties counting half).
    """
    pos = {i: k for k, i in enumerate(data.ids)}
    ia = np.array([pos[a] for a, _ in data.pair_votes], np.int64)
    ib = np.array([pos[b] for _, b in data.pair_votes], np.int64)
    t = np.array(list(data.pair_votes.values()), np.float32)
    if mode == "hard":
        t = np.where(t > 0.5, 1.0, np.where(t < 0.5, 0.0, 0.5)).astype(np.float32)
    return ia, ib, t


def pair_batch(pairs, pairs_per_batch: int, step: int, seed: int, both_orders: bool, rank: int = 0,
               world_size: int = 1):
    """This rank's questions at `step`: (images, ia, ib, t) with ia/ib positions into `images`.

    A pure function of (seed, step) like `run_utils.batch_indices`; with `both_orders` each pair also appears as
    (b, a, 1 − t).
    """
    ia, ib, t = pairs
    sel = batch_indices(len(ia), pairs_per_batch, step, seed, rank=rank, world_size=world_size)
    a, b, tt = ia[sel], ib[sel], t[sel]
    if both_orders:
        a, b, tt = np.concatenate([a, b]), np.concatenate([b, a]), np.concatenate([tt, 1 - tt])
    images, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    return images, inv[: len(a)], inv[len(a):], tt


def pick_reference(data: TrainData, reference: str, weights: list[float]) -> torch.Tensor:
    """The pointwise reference image (3, H, W) in [0, 1] (see module docstring)."""
    if reference == "median":
        w = np.asarray(weights, np.float32)[: data.mos.shape[1]]
        m = (data.mos * w).sum(1) / np.maximum((data.mask * w).sum(1), 1e-9)
        i = int(np.argsort(m, kind="stable")[len(m) // 2])
        return data.images[i].float() / 255.0
    if reference == "blank":
        return torch.full_like(data.images[0], 128, dtype=torch.float32) / 255.0
    return image_to_tensor(load_image(reference, what="rewarddance.reference"))


@torch.no_grad()
def evaluate(scorer, yn: YesNoConfig, ids: tuple[int, int], data: TrainData, batch_size: int = 64) -> dict:
    """Held-out pairwise accuracy (non-tie overall pairs) of three readouts: the reference score (`val_acc`, what
    `Scorer.score` returns), the candidate-set average (`val_acc_group`: mean of the symmetrised P(better) over the
    image's labelled partners, i.e. the other candidates of its prompt) and the direct pair judgement
    (`val_acc_pair`)."""
    was = scorer.model.training
    scorer.model.eval()
    try:
        n = len(data)
        ims = data.image_batch(np.arange(n))
        ia, ib, lab = val_pairs(data)
        p = prefer_prob(scorer, yn, ids, [data.prompts[i] for i in ia], scorer.prepare_images(ims), ia, ib,
                        batch_size).numpy()
        tot, cnt = np.zeros(n), np.zeros(n)
        np.add.at(tot, ia, p)
        np.add.at(tot, ib, 1 - p)
        np.add.at(cnt, ia, 1)
        np.add.at(cnt, ib, 1)
        group = tot / np.maximum(cnt, 1)
        ref = score_yesno(scorer, data.prompts, ims, batch_size=batch_size).overall.numpy()
        return {"val_acc": float(pairwise_accuracy(ref[ia], ref[ib], lab)),
                "val_acc_group": float(pairwise_accuracy(group[ia], group[ib], lab)),
                "val_acc_pair": float(pairwise_accuracy(p - 0.5, np.zeros_like(p), lab)), "val_pairs": int(len(ia))}
    finally:
        scorer.model.train(was)


# ------------------------------------------------------------------------------------------------ training


def train(cfg: Config) -> Path:
    """Train a RewardDance yes/no reward model; returns the final Scorer dir (`mode: "yesno"`)."""
    rd = cfg.rewarddance
    loop = RunLoop(cfg, "rewarddance", accumulation=False)
    data = cfg.data.load_train()
    val = cfg.data.load_val()
    pairs = labelled_pairs(data, rd.target)
    if len(pairs[0]) == 0:
        raise ValueError(f"{cfg.data.train}/pairs.jsonl: expected labelled overall pairs (RewardDance trains on them)")
    scorer = build_scorer(cfg.model, device=loop.device)
    ids = answer_token_ids(scorer, rd.yesno)
    ref = pick_reference(data, rd.reference, scorer.config.reward_weights)
    # Filled now so that evaluation during training scores exactly like the final dir will.
    scorer.config.yesno = {**asdict(rd.yesno), "yes_id": ids[0], "no_id": ids[1], "reference": rd.reference,
                           "reference_png": encode_png(ref)}
    loop.start(scorer)

    def train_step(step: int) -> dict:
        idx, ia, ib, t = pair_batch(pairs, rd.pairs_per_batch, step, cfg.run.seed, rd.both_orders,
                                    rank=loop.rank, world_size=loop.world)
        pixels = scorer.prepare_images(data.image_batch(idx))
        logits = pair_logits(scorer, rd.yesno, [data.prompts[idx[a]] for a in ia], pixels, ia, ib).float()
        target = torch.from_numpy(t).to(logits.device)
        loss = yes_no_ce(logits, target, *ids, normalize=rd.normalize)
        loop.backward(loss)
        loop.optimizer_step(step, loss)
        with torch.no_grad():
            p_yes = yes_probability(logits.detach(), *ids)
            hit = ((p_yes > 0.5) == (target > 0.5)).float()[target != 0.5].mean() if (target != 0.5).any() else torch.tensor(float("nan"))
        return {"loss": loop.acc.reduce(loss.detach(), "mean"), "train_pair_acc": hit, "pairs": len(ia)}

    def evaluate_step(step: int) -> dict:
        return evaluate(scorer, rd.yesno, ids, val, cfg.data.eval_batch_size)

    loop.run(train_step, evaluate_step if val is not None else None)
    return loop.save_final(scorer, "yesno")


def main(argv: list[str]) -> int:
    cfg = parse_cli(Config, argv, prog="zreward train rewarddance",
                    description="RewardDance baseline: pairwise P('yes') generative reward, next-token CE.")
    print(train(cfg))
    return 0
