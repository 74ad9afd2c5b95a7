"""Training data shared by every trainer: a canonical split's records and labels, images decoded per batch.

- `load_train_data(split_dir)` reads a split (validated by `zreward.data.records`) and turns labels into target
  distributions over the levels (`zreward.data.labels.label_dist`: histogram, else ratings, else DeQA-style Gaussian
  from MOS+std). Images are **not** decoded here: `TrainData.images` is a lazy `zreward.data.image_store.ImageStore`
  and `image_batch(idx)` decodes exactly the images of one batch (a rank only ever decodes its own shard), capped at
  `max_pixels` when set (`data.max_pixels` of every trainer). Memory no longer grows with the split's size; the
  tensors a batch gets are the ones the former decode-everything cache held (tests/trainers/test_data.py).
- Batches are built from **prompt groups** (all images of one prompt), so within-prompt pairs — what the pairwise
  losses need — always exist in a batch. `group_batch` is a pure function of (seed, step) (see
  `run_utils.batch_indices`), so resume and multi-process sharding need no loader state.
- `concat_splits` appends a second split (its own prompt groups; labels kept, or dropped for RISD's unlabelled
  images): `data.extra_train` of every trainer.
- `within_group_pairs` lists every ordered-once pair of batch items that share a prompt (vectorised).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from zreward.data.image_store import ImageStore
from zreward.data.labels import label_dist
from zreward.data.records import RecordError, read_split, skip_summary
from zreward.trainers.run_utils import batch_indices


@dataclass
class ImageOptions:
    """How the images of a trainer's splits are decoded: the `max_pixels` / `decode_workers` fields every
    trainer's `data` section inherits (validated here)."""

    max_pixels: int | None = field(default=None, metadata={
        "help": "downscale (bicubic, aspect kept) any training / held-out image larger than this many pixels when it is decoded (null: keep sizes)"})
    decode_workers: int = field(default=0, metadata={
        "help": "threads decoding one batch's images (0: decode in the training process's own thread)"})

    def __post_init__(self) -> None:
        if self.max_pixels is not None and self.max_pixels < 1:
            raise ValueError(f"data.max_pixels must be a positive pixel count or null, got {self.max_pixels}")
        if self.decode_workers < 0:
            raise ValueError(f"data.decode_workers must be >= 0, got {self.decode_workers}")

    def load(self, split_dir: str | Path, max_images: int | None = None) -> TrainData:
        """`load_train_data` with these options."""
        return load_train_data(split_dir, max_images=max_images, max_pixels=self.max_pixels,
                               decode_workers=self.decode_workers)


@dataclass
class TrainData:
    """N images of one split, with labels as arrays.

    Attributes:
        ids / prompts: N image ids and prompts.  images: the N images as uint8 (3, H, W), decoded on access
            (an `ImageStore`; a list of tensors works too).
        target: (N, D, L) float32 label distributions (zeros where unlabelled).  mask: (N, D) bool, labelled.
        mos: (N, D) float32 label means (0 where unlabelled).  group: (N,) prompt-group index of each image.
        groups: G arrays of image indices, one per distinct prompt.  rationales: N dicts dim → text.
        dims / levels: the split's dimensions and level values.
        pair_votes: {(id_a, id_b): vote share for a} from `pairs.jsonl` overall pairs (ties count half).
    """

    ids: list[str]
    prompts: list[str]
    images: ImageStore | list[torch.Tensor]
    target: np.ndarray
    mask: np.ndarray
    mos: np.ndarray
    group: np.ndarray
    groups: list[np.ndarray]
    rationales: list[dict[str, str]]
    dims: list[str]
    levels: list[float]
    pair_votes: dict[tuple[str, str], float] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def image_batch(self, idx) -> torch.Tensor | list[torch.Tensor]:
        """Float images in [0, 1] for the given indices: a (B, 3, H, W) tensor when sizes agree, else a list."""
        return float_images(self.images, idx)

    def dim_index(self, dims: list[str] | None) -> list[int]:
        if dims is None:
            return list(range(len(self.dims)))
        missing = [d for d in dims if d not in self.dims]
        if missing:
            raise ValueError(f"dims {missing} are not in this split's dims {self.dims}")
        return [self.dims.index(d) for d in dims]



def float_images(images: ImageStore | list[torch.Tensor], idx) -> torch.Tensor | list[torch.Tensor]:
    """uint8 (3, H, W) images at `idx` → floats in [0, 1]: a (B, 3, H, W) tensor when sizes agree, else a list.
    A store decodes just these images (in its decode threads)."""
    ims = images.batch(idx) if isinstance(images, ImageStore) else [images[i] for i in idx]
    if all(t.shape == ims[0].shape for t in ims):
        return torch.stack(ims).float().div_(255.0)
    return [t.float().div_(255.0) for t in ims]


def load_train_data(split_dir: str | Path, *, max_images: int | None = None, skip_bad: bool = False,
                    max_pixels: int | None = None, decode_workers: int = 0) -> TrainData:
    """Load a canonical split for training.

    Args:
        split_dir: a split directory (dataset.json, images.jsonl, pairs.jsonl, images/).
        max_images: keep only the first N images (whole prompt groups are not guaranteed; for quick runs).
        skip_bad: skip invalid records (reported on stderr with counts and reasons) instead of failing.
        max_pixels: downscale larger images to at most this many pixels when decoded (None: keep their size).
        decode_workers: threads decoding one batch's images (0: the calling thread).

    Raises:
        RecordError: an invalid record (names file, line and field).  An unreadable image fails when a batch
        first decodes it, with `ImageLoadError` naming the record.
    """
    split = read_split(split_dir, skip_bad=skip_bad)
    if split.skipped:
        import sys

        print(f"[data] {split.root}: skipped {len(split.skipped)} bad records:\n{skip_summary(split.skipped)}",
              file=sys.stderr)
    recs = split.images[:max_images] if max_images else split.images
    if not recs:
        raise RecordError(f"{split.root / 'images.jsonl'}: records: expected at least one image record")
    dims, levels = list(split.info.dims), list(split.info.levels)
    n, d, k = len(recs), len(dims), len(levels)
    target = np.zeros((n, d, k), np.float32)
    mask = np.zeros((n, d), bool)
    for i, rec in enumerate(recs):
        for j, dim in enumerate(dims):
            lab = rec.labels.get(dim)
            if lab is None:
                continue
            try:
                target[i, j] = label_dist(lab, levels)
            except ValueError as e:
                raise RecordError(f"{split.root / 'images.jsonl'} (id {rec.id}): labels.{dim}: {e}") from None
            mask[i, j] = True
    mos = (target * np.asarray(levels, np.float32)).sum(-1) * mask
    images = ImageStore.for_split(split, recs, kind="uint8", max_pixels=max_pixels, workers=decode_workers)
    group = prompt_groups(recs, split.pairs)
    order = np.argsort(group, kind="stable")
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    groups = np.split(order, bounds)
    kept = {r.id for r in recs}
    votes = {}
    for p in split.pairs:
        if p.dim != "overall" or p.a not in kept or p.b not in kept:
            continue
        if p.votes:
            tot = sum(p.votes.values())
            share = (p.votes.get("a", 0) + 0.5 * p.votes.get("tie", 0)) / tot if tot else 0.5
        else:
            share = {"a": 1.0, "b": 0.0, "tie": 0.5}[p.label]
        votes[(p.a, p.b)] = share
    return TrainData(ids=[r.id for r in recs], prompts=[r.prompt for r in recs], images=images, target=target,
                     mask=mask, mos=mos.astype(np.float32), group=group, groups=groups,
                     rationales=[r.rationales for r in recs], dims=dims, levels=levels, pair_votes=votes)


def concat_splits(data: TrainData, extra: TrainData, *, keep_labels: bool, what: str) -> TrainData:
    """`data` followed by `extra`; each split keeps its own prompt groups (prompt instances, `prompt_groups`),
    extra's renumbered after data's. keep_labels=False drops extra's labels (RISD's unlabelled images: teacher
    targets only); True keeps its label distributions, MOS, rationales and pair vote shares. Extra ids are always
    prefixed `<what>/` (two ShapesWorld splits share the id scheme), pair votes with them, so that ids stay unique
    (what id → index maps rely on) and an image's id does not depend on which other splits are loaded.

    Args:
        what: the config key the extra split came from (`data.extra_train[0]`): error messages and renaming.

    Raises:
        ValueError: naming `what`, when the dims or levels differ.
    """
    if extra.dims != data.dims or extra.levels != data.levels:
        raise ValueError(f"{what}: dims/levels {extra.dims}/{extra.levels} differ from the training split's "
                         f"{data.dims}/{data.levels}")
    m = len(extra)
    if not m:
        return data
    group = np.concatenate([data.group, extra.group + int(data.group.max()) + 1]).astype(np.int64)
    order = np.argsort(group, kind="stable")
    groups = np.split(order, np.flatnonzero(np.diff(group[order])) + 1)
    ids = [f"{what}/{i}" for i in extra.ids]
    if keep_labels:
        rename = dict(zip(extra.ids, ids))
        target, mask, mos = extra.target, extra.mask, extra.mos
        rationales = extra.rationales
        votes = {**data.pair_votes, **{(rename[a], rename[b]): v for (a, b), v in extra.pair_votes.items()}}
    else:
        target = np.zeros((m, *data.target.shape[1:]), np.float32)
        mask, mos = np.zeros((m, len(data.dims)), bool), target[..., 0]
        rationales, votes = [{} for _ in range(m)], dict(data.pair_votes)
    return TrainData(ids=data.ids + ids, prompts=data.prompts + extra.prompts, images=data.images + extra.images,
                     target=np.concatenate([data.target, target]), mask=np.concatenate([data.mask, mask]),
                     mos=np.concatenate([data.mos, mos]), group=group, groups=groups,
                     rationales=data.rationales + list(rationales), dims=data.dims, levels=data.levels,
                     pair_votes=votes)


def prompt_groups(recs: list, pairs: list) -> np.ndarray:
    """(N,) group index per image: one group per prompt *instance*.

    Two images are in one group when a pair of `pairs.jsonl` links them (pairs are only formed between images of
    the same prompt), found as connected components; images in no pair fall back to grouping by prompt text.
    Text alone is not enough: ShapesWorld (and public sets) repeat the same prompt text for different instances.
    """
    index = {r.id: i for i, r in enumerate(recs)}
    parent = list(range(len(recs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    paired = np.zeros(len(recs), bool)
    for p in pairs:
        ia, ib = index.get(p.a), index.get(p.b)
        if ia is None or ib is None:
            continue
        paired[ia] = paired[ib] = True
        ra, rb = find(ia), find(ib)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    key: dict = {}
    out = np.empty(len(recs), np.int64)
    for i, r in enumerate(recs):
        k = ("pair", find(i)) if paired[i] else ("text", r.prompt)
        out[i] = key.setdefault(k, len(key))
    return out


def group_batch(data: TrainData, prompts_per_batch: int, step: int, seed: int, *, rank: int = 0,
                world_size: int = 1, max_per_prompt: int | None = None) -> np.ndarray:
    """Image indices for `rank` at global `step`: all images (up to `max_per_prompt`) of a seeded choice of prompts.

    With decode workers (`data.decode_workers` > 0) it also tells the image store to start decoding this rank's
    batch of step + 1 in the background (`ImageStore.prefetch`), so decoding overlaps the step; the indices
    returned stay a pure function of (seed, step, rank).

    Raises:
        ValueError: prompts_per_batch not divisible by world_size or larger than the number of prompts.
    """
    def pick(s: int) -> np.ndarray:
        gi = batch_indices(len(data.groups), prompts_per_batch, s, seed, rank=rank, world_size=world_size)
        parts = [data.groups[g][:max_per_prompt] if max_per_prompt else data.groups[g] for g in gi]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    if isinstance(data.images, ImageStore) and data.images.workers:
        data.images.prefetch(pick(step + 1).tolist())
    return pick(step)


def within_group_pairs(group_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i < j) of batch positions whose items share a prompt group.

    Args:
        group_ids: (B,) group index of each batch item.

    Returns:
        (ia, ib): (P,) positions into the batch.
    """
    g = np.asarray(group_ids)
    same = (g[:, None] == g[None, :]) & np.triu(np.ones((len(g), len(g)), bool), k=1)
    ia, ib = np.nonzero(same)
    return ia, ib


def split_by_group(idx: np.ndarray, group: np.ndarray, parts: int) -> list[np.ndarray]:
    """Split batch indices into ≤ `parts` micro-batches without cutting a prompt group (pairs stay together)."""
    if parts <= 1:
        return [idx]
    g = group[idx]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    chunks = np.array_split(np.arange(len(starts)), min(parts, len(starts)))
    ends = np.r_[starts[1:], len(idx)]
    return [idx[starts[c[0]]:ends[c[-1]]] for c in chunks if len(c)]
