"""Captioning pretraining: next-token cross-entropy on image captions, teacher-forced, through the Scorer's model.

Why: the tiny ShapesWorld VLMs start from random weights, and reward training from scratch does not teach them to
see; real reward models start from a pretrained VLM. This trainer is that pretraining stage, on unlabelled images
(no annotator labels, no prompts, no scores are read). Its output initialises the other trainers
(`zreward train sft model.init_from=<run>/final`).

- **Caption** of an image record: `meta["caption"]` when it is a non-empty string, else the ShapesWorld caption of
  its `scene` (`zreward.data.shapes_world.captions.caption`); a record with neither is an error naming the file,
  line and id. Captions are cut to `caption.max_tokens` tokens.
- **Sequence** per image: the scorer's chat template with one user turn [image, `caption.instruction`] and the
  generation prompt (rendered like `Scorer._chat`), then the caption tokens c_1..c_n and EOS, right-padded, one
  forward (`logits_to_keep` covers the caption positions only).
- **Loss** (teacher forcing; P is the prompt, c_{n+1} = EOS):
      L = − Σ_images Σ_{j=1..n+1} log p(c_j | P, c_<j)  /  N_tokens
  where N_tokens = Σ_images (n + 1) over the **global** batch (all-reduced once per step), so N processes with the
  same global batch give the same loss and gradient as one process; gradient accumulation splits the local batch
  with the same normaliser.
- **Batches**: `data.images_per_batch` images per global step, drawn without replacement from a seeded permutation
  per epoch (`run_utils.batch_indices`, a pure function of (seed, step): resume is exact), split across ranks.
- **Validation** (`data.val`; every `data.eval_every` steps and at the end): teacher-forced `val_ce` (mean per
  token) and `val_token_acc` (greedy next token = target) on the first `data.val_max_images` images; with
  `caption.val_generate` > 0 also greedy generation on the first images (`val_gen_exact`: caption reproduced
  exactly, `val_gen_word_acc`: words right at their position), the samples written to `run_dir/val_captions.json`.

The final Scorer (`run_dir/final`) keeps the `mode` of zreward.json it was loaded with.
"""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zreward.atomic import atomic_write_text
from zreward.data.image_store import ImageStore
from zreward.data.records import IMAGES_FILE, ImageRecord, RecordError, read_split
from zreward.data.shapes_world.captions import caption
from zreward.data.shapes_world.scene import SceneError
from zreward.trainers.common import TrainConfig, build_scorer
from zreward.trainers.config import parse_cli
from zreward.trainers.data import ImageOptions, float_images
from zreward.trainers.loop import RunLoop, global_normalisers
from zreward.trainers.run_utils import RunConfig, batch_indices


@dataclass
class CaptionConfig:
    """The captioning section (`cfg.caption`)."""

    instruction: str = field(default="Describe the image.", metadata={"help": "user text after the image"})
    max_tokens: int = field(default=160, metadata={"help": "captions are cut to this many tokens (EOS follows, trained too)"})
    val_generate: int = field(default=4, metadata={"help": "held-out images captioned greedily at each evaluation (0: none)"})

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError(f"caption.max_tokens must be >= 1, got {self.max_tokens}")
        if self.val_generate < 0:
            raise ValueError(f"caption.val_generate must be >= 0, got {self.val_generate}")


@dataclass
class CaptionDataConfig(ImageOptions):
    """Unlabelled image splits, how batches are drawn from them (no prompt grouping: captions need none) and how
    images are decoded (`ImageOptions`: `max_pixels`, `decode_workers`)."""

    train: str = field(default="", metadata={"help": "training split directory (required)"})
    val: str | None = field(default=None, metadata={"help": "held-out split for val_ce / val_token_acc (optional)"})
    images_per_batch: int = field(default=32, metadata={"help": "images per global batch"})
    max_images: int | None = field(default=None, metadata={"help": "use only the first N training images"})
    val_max_images: int | None = field(default=200, metadata={"help": "use only the first N held-out images"})
    eval_every: int = field(default=0, metadata={"help": "validation every N steps (0: only at the end)"})
    eval_batch_size: int = field(default=32, metadata={"help": "images per forward during validation"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.images_per_batch < 1:
            raise ValueError(f"data.images_per_batch must be >= 1, got {self.images_per_batch}")


@dataclass
class Config(TrainConfig):
    """`zreward train caption` configuration (YAML files and `a.b=c` overrides only override these defaults)."""

    run: RunConfig = field(default_factory=lambda: RunConfig(output_dir="runs/caption"))
    data: CaptionDataConfig = field(default_factory=CaptionDataConfig)
    caption: CaptionConfig = field(default_factory=CaptionConfig)


# ------------------------------------------------------------------------------------------------------ data


@dataclass
class CaptionData:
    """N images of one split with their captions. images: N uint8 (3, H, W), decoded on access (`ImageStore`);
    captions: N strings."""

    ids: list[str]
    images: ImageStore | list[torch.Tensor]
    captions: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def image_batch(self, idx) -> torch.Tensor | list[torch.Tensor]:
        """Float images in [0, 1]: a (B, 3, H, W) tensor when sizes agree, else a list of (3, H, W)."""
        return float_images(self.images, idx)


def _line_of(path: Path, rid: str) -> int | None:
    """Line number of the record with id `rid` in a JSONL file (only for error messages)."""
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            with contextlib.suppress(ValueError):
                obj = json.loads(line)
                if isinstance(obj, dict) and obj.get("id") == rid:
                    return i
    return None


def record_caption(rec: ImageRecord, path: Path) -> str:
    """The caption of one record: `meta.caption` if a non-empty string, else the ShapesWorld caption of its scene.

    Raises:
        RecordError: naming `path`, the line and the record id, when there is neither (or either is malformed).
    """
    def where() -> str:
        line = _line_of(path, rec.id)
        return f"{path}:{line} (id {rec.id})" if line else f"{path} (id {rec.id})"

    text = rec.meta.get("caption")
    if text is not None and not isinstance(text, str):
        raise RecordError(f"{where()}: meta.caption: expected a string, got {type(text).__name__}")
    if text and text.strip():
        return text
    if rec.scene is not None:
        try:
            return caption(rec.scene)
        except SceneError as e:
            raise RecordError(f"{where()}: scene: {e}") from None
    raise RecordError(f"{where()}: meta.caption / scene: expected a non-empty meta.caption or a ShapesWorld scene "
                      "to caption the image (captioning pretraining needs one of them)")


def split_captions(split_dir: str | Path, max_images: int | None = None) -> tuple[list[str], list[str]]:
    """(ids, captions) of a split's first `max_images` records, without decoding any image.

    Raises:
        RecordError: an invalid record or a record without caption or scene (names the record).
    """
    split = read_split(split_dir)
    recs = split.images[:max_images] if max_images else split.images
    path = split.root / IMAGES_FILE
    return [r.id for r in recs], [record_caption(r, path) for r in recs]


def load_caption_data(split_dir: str | Path, max_images: int | None = None, *, max_pixels: int | None = None,
                      decode_workers: int = 0) -> CaptionData:
    """Images (decoded per batch, see `zreward.trainers.data`) and captions of a canonical split; labels are not
    needed. `max_pixels` / `decode_workers`: as `zreward.trainers.data.ImageOptions`.

    Raises:
        RecordError: an invalid record or a record without caption or scene (names the record); an unreadable
        image fails when a batch first decodes it (`ImageLoadError` naming the record).
    """
    split = read_split(split_dir)
    recs = split.images[:max_images] if max_images else split.images
    path = split.root / IMAGES_FILE
    if not recs:
        raise RecordError(f"{path}: records: expected at least one image record")
    _, captions = split_captions(split_dir, max_images)  # fail on captions before decoding any image
    images = ImageStore.for_split(split, recs, kind="uint8", max_pixels=max_pixels, workers=decode_workers)
    return CaptionData(ids=[r.id for r in recs], images=images, captions=captions)


def tokenize_captions(tokenizer, captions: list[str], max_tokens: int) -> list[list[int]]:
    """Caption token ids without special tokens, cut to `max_tokens` (EOS is appended by `caption_forward`)."""
    return [ids[:max_tokens] for ids in tokenizer(captions, add_special_tokens=False)["input_ids"]]


# ---------------------------------------------------------------------------------------------- forward


def caption_prompt(scorer, instruction: str) -> str:
    """The chat text (one unexpanded image placeholder) a caption follows: user [image, instruction] + generation
    prompt, rendered like `Scorer._chat`."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
    return scorer.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                **scorer.config.templates.chat_template_kwargs)


def caption_forward(scorer, images, captions: list[list[int]], instruction: str):
    """Teacher-forced pass over prompt + caption + EOS for B images, one forward.

    Args:
        images: B images (tensor (B, 3, H, W) or list).  captions: B token lists (without EOS).

    Returns:
        (ce_sum, n_tokens, n_correct): summed next-token CE over every caption token and the EOS after it, their
        count, and how many of them are the argmax of the logits (teacher-forced token accuracy).
    """
    b = len(captions)
    eos = scorer.tokenizer.eos_token_id
    pixels = scorer.prepare_images(images)
    batch, prompt_ids = scorer.encode_items([caption_prompt(scorer, instruction)] * b, list(range(b)), pixels,
                                            suffix_ids=[c + [eos] for c in captions])
    t = batch.inputs["input_ids"].shape[1]
    p_len = torch.tensor([len(p) for p in prompt_ids])
    k = int(t - p_len.min().item() + 1)  # logits for positions t-k..t-1 cover every caption target
    logits = scorer.model(**batch.inputs, logits_to_keep=k, use_cache=False).logits  # (B, k, V)
    width = max(len(c) for c in captions) + 1
    targets = torch.full((b, width), -100, dtype=torch.long)
    for i, c in enumerate(captions):  # index bookkeeping only
        targets[i, : len(c) + 1] = torch.tensor(c + [eos], dtype=torch.long)
    j = torch.arange(width)
    local = (p_len.unsqueeze(1) - 1 + j.unsqueeze(0) - (t - k)).clamp(0, k - 1).to(logits.device)  # (B, width)
    picked = logits[torch.arange(b, device=logits.device).unsqueeze(1), local].float()  # (B, width, V)
    tgt = targets.to(logits.device)
    ce = F.cross_entropy(picked.flatten(0, 1), tgt.flatten(), ignore_index=-100, reduction="sum")
    valid = tgt != -100
    correct = int(((picked.detach().argmax(-1) == tgt) & valid).sum())
    return ce, int(valid.sum()), correct


@torch.no_grad()
def caption_images(scorer, images, instruction: str, max_new_tokens: int) -> list[str]:
    """Greedy captions of B images (one batched, KV-cached `generate`, left padding), cut at the first EOS."""
    b, pixels = len(images), scorer.prepare_images(images)
    batch, _ = scorer.encode_items([caption_prompt(scorer, instruction)] * b, list(range(b)), pixels,
                                   padding_side="left")
    out = scorer.model.generate(**batch.inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                pad_token_id=scorer.tokenizer.pad_token_id, eos_token_id=sorted(scorer.eos_ids),
                                suppress_tokens=scorer.suppress_ids)
    rows = out[:, batch.inputs["input_ids"].shape[1]:].tolist()
    cut = [r[:next((i for i, x in enumerate(r) if x in scorer.eos_ids), len(r))] for r in rows]
    return scorer.tokenizer.batch_decode(cut, skip_special_tokens=True)


def word_accuracy(generated: str, reference: str) -> float:
    """Fraction of the reference's words that the generated text has at the same position."""
    g, r = generated.split(), reference.split()
    return sum(a == b for a, b in zip(g, r)) / len(r) if r else float(not g)


@torch.no_grad()
def evaluate_captions(scorer, data: CaptionData, caption_ids: list[list[int]], cfg: Config) -> tuple[dict, list[dict]]:
    """Held-out teacher-forced CE / token accuracy, and greedy captions of the first `caption.val_generate` images.

    Returns:
        (metrics, samples): samples are {"id", "reference", "generated"} dicts.
    """
    was_training = scorer.model.training
    scorer.model.eval()
    try:
        ce, n, hit = 0.0, 0, 0
        for s in range(0, len(data), cfg.data.eval_batch_size):
            idx = range(s, min(s + cfg.data.eval_batch_size, len(data)))
            c, m, h = caption_forward(scorer, data.image_batch(idx), [caption_ids[i] for i in idx],
                                      cfg.caption.instruction)
            ce, n, hit = ce + float(c), n + m, hit + h
        metrics = {"val_ce": ce / n, "val_token_acc": hit / n}
        samples: list[dict] = []
        g = min(cfg.caption.val_generate, len(data))
        if g:
            idx = range(g)
            gen = caption_images(scorer, data.image_batch(idx), cfg.caption.instruction, cfg.caption.max_tokens + 1)
            ref = [scorer.tokenizer.decode(caption_ids[i], skip_special_tokens=True) for i in idx]
            samples = [{"id": data.ids[i], "reference": r, "generated": x} for i, r, x in zip(idx, ref, gen)]
            metrics["val_gen_exact"] = float(np.mean([x.strip() == r.strip() for r, x in zip(ref, gen)]))
            metrics["val_gen_word_acc"] = float(np.mean([word_accuracy(x, r) for r, x in zip(ref, gen)]))
        return metrics, samples
    finally:
        scorer.model.train(was_training)


# -------------------------------------------------------------------------------------------------- train


def train(cfg: Config) -> Path:
    """Run captioning pretraining; returns the final Scorer directory `run_dir/final`."""
    if not cfg.data.train:
        raise ValueError("data.train is required: a canonical split directory (images with meta.caption or scene)")
    loop = RunLoop(cfg, "caption")
    opts = dict(max_pixels=cfg.data.max_pixels, decode_workers=cfg.data.decode_workers)
    data = load_caption_data(cfg.data.train, max_images=cfg.data.max_images, **opts)
    val = load_caption_data(cfg.data.val, max_images=cfg.data.val_max_images, **opts) if cfg.data.val else None
    if cfg.data.images_per_batch > len(data) or cfg.data.images_per_batch % loop.world:
        raise ValueError(f"data.images_per_batch={cfg.data.images_per_batch}: expected at most the {len(data)} "
                         f"training images and divisible by the {loop.world} processes")
    scorer = build_scorer(cfg.model, loop.device)
    caps = tokenize_captions(scorer.tokenizer, data.captions, cfg.caption.max_tokens)
    val_caps = tokenize_captions(scorer.tokenizer, val.captions, cfg.caption.max_tokens) if val else []
    loop.start(scorer)
    ga, device, world = cfg.accelerator.gradient_accumulation_steps, loop.device, loop.world

    def train_step(step: int) -> dict:
        idx = np.asarray(batch_indices(len(data), cfg.data.images_per_batch, step, cfg.run.seed, rank=loop.rank,
                                       world_size=world), np.int64)
        (norm,) = global_normalisers([sum(len(caps[i]) + 1 for i in idx)], device)
        ce_total, hits, n = torch.zeros((), device=device), 0, 0
        micro = [m for m in np.array_split(idx, min(ga, len(idx))) if len(m)]
        for m, part in enumerate(micro):
            with loop.sync(last=m == len(micro) - 1):
                ce, cnt, hit = caption_forward(scorer, data.image_batch(part), [caps[i] for i in part],
                                               cfg.caption.instruction)
                loss = ce / norm
                loop.backward(loss)  # `norm` covers the whole step (make_accelerator does not divide by ga)
            ce_total, hits, n = ce_total + loss.detach(), hits + hit, n + cnt
        loop.optimizer_step(step, ce_total)
        red = loop.acc.reduce(torch.stack([ce_total.float(), torch.tensor(float(hits), device=device),
                                           torch.tensor(float(n), device=device)]), reduction="sum")
        return {"loss": red[0] / world, "token_acc": red[1] / red[2], "tokens": int(red[2])}

    def evaluate(step: int) -> dict:
        vm, samples = evaluate_captions(scorer, val, val_caps, cfg)
        if samples and loop.is_main:  # under FSDP every rank evaluates (`zreward.trainers.loop`)
            atomic_write_text(loop.run_dir.root / "val_captions.json",
                              json.dumps({"step": step + 1, "samples": samples}, indent=1) + "\n")
        return vm

    loop.run(train_step, evaluate if val is not None else None)
    return loop.save_final(scorer, scorer.config.mode)


def main(argv: list[str] | None = None) -> int:
    """`zreward train caption --config FILE [a.b=c ...]`."""
    cfg = parse_cli(Config, list(argv or []), prog="zreward train caption",
                    description="Captioning pretraining: next-token CE on image captions (initialises the tiny VLMs).")
    final = train(cfg)
    print(f"[caption] final scorer: {final}")
    return 0
