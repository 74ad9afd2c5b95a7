"""Batched model inputs for a list of (text, image) items, with correct padding for every family.

- Text: the chat-template text holds one image placeholder per item; it is expanded to the item's number of image
  tokens (as the HF processors do), then tokenised in one batched call.
- Padding: **right** padding for teacher-forced forwards (direct scoring, chain forwards): real tokens keep the same
  positions and causal attention never sees the pads, so an item's output does not depend on its batch mates;
  the score position is gathered per row. **Left** padding for generation (HF `generate` appends on the right and
  computes positions / M-RoPE indices from the attention mask).
- Per-token extras: `mm_token_type_ids` (Qwen3-VL, Qwen3.5 M-RoPE) and `token_type_ids` (Gemma 3) mark image tokens.
- Pixels: gathered in sequence order (`image_index` may repeat an image, e.g. once per rubric dimension). An
  item may show several images (e.g. a pairwise "A vs B" question): its `image_index` entry is then a list
  of indices, one per placeholder, in text order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from zreward.models.families import FamilySpec
from zreward.models.preprocess import PixelInputs


@dataclass
class EncodedBatch:
    """Model inputs for N sequences.

    Attributes:
        inputs: kwargs for the HF model: input_ids (N, T), attention_mask (N, T), pixel_values, and
            image_grid_thw / mm_token_type_ids / token_type_ids where the family needs them.
        lengths: (N,) number of real tokens per row.
        padding_side: "right" or "left".
    """

    inputs: dict[str, torch.Tensor]
    lengths: torch.Tensor
    padding_side: str

    @property
    def last_pos(self) -> torch.Tensor:
        """(N,) index of each row's last real token (the score position for a prompt that ends there)."""
        t = self.inputs["input_ids"].shape[1]
        return self.lengths - 1 if self.padding_side == "right" else torch.full_like(self.lengths, t - 1)

    def to(self, device) -> EncodedBatch:
        return EncodedBatch({k: v.to(device) for k, v in self.inputs.items()}, self.lengths.to(device),
                            self.padding_side)


def expand_image_placeholders(text: str, spec: FamilySpec, n_tokens: list[int], where: str = "prompt") -> str:
    """Replace the k image placeholders in `text`, in order, by runs of `n_tokens[0]`, ..., `n_tokens[k-1]` tokens."""
    parts = text.split(spec.placeholder)
    if len(parts) - 1 != len(n_tokens):
        raise ValueError(f"{where}: expected {len(n_tokens)} image placeholder(s) {spec.placeholder!r} in the rendered "
                         f"chat text, found {len(parts) - 1}: {text[:200]!r}")
    runs = [spec.expand.format(tokens=spec.image_token * n) for n in n_tokens]
    return parts[0] + "".join(r + rest for r, rest in zip(runs, parts[1:]))


def item_images(image_index) -> list[list[int]]:
    """Normalise an `image_index` list whose entries are an int (one image) or a list of ints (several images)."""
    return [[int(j)] if isinstance(j, (int, np.integer)) else [int(x) for x in j] for j in image_index]


def length_chunks(lengths: list[int], min_saving: float = 0.1) -> list[list[int]]:
    """Rows cut into one or two chunks by length so that right-padded forwards compute fewer pad tokens.

    The rows are sorted by length and cut where the padded token count, Σ_chunks rows · longest row, is smallest;
    one chunk when the cut saves less than `min_saving` of the unchunked count (a forward has a fixed cost too).
    A right-padded row's outputs do not depend on its batch mates, so chunking changes no result.

    Returns:
        Lists of row indices (each ascending by length); together every row once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    if n < 2:
        return [order]
    sl = [lengths[i] for i in order]
    whole = n * sl[-1]
    cost, k = min((k * sl[k - 1] + (n - k) * sl[-1], k) for k in range(1, n))
    if whole - cost < min_saving * whole:
        return [order]
    return [order[:k], order[k:]]


def pad_token_lists(seqs: list[list[int]], pad_id: int, side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token id lists → (ids (N, T) long, attention_mask (N, T) long)."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):  # building index tensors; no model compute here
        if side == "right":
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        else:
            ids[i, t - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[i, t - len(s):] = 1
    return ids, mask


def build_batch(token_ids: list[list[int]], image_index: list[int], pixels: PixelInputs, spec: FamilySpec,
                image_token_id: int, pad_id: int, padding_side: str = "right") -> EncodedBatch:
    """Assemble model inputs for N sequences whose image tokens are already expanded.

    Args:
        token_ids: N token id lists (each containing its image's run of image tokens).
        image_index: (N,) which entry of `pixels` each sequence shows (an int, or a list of ints for a sequence
            showing several images, in the order of their image-token runs).
        pixels: preprocessed images.
        spec: family spec.
        image_token_id: id of the repeated image token.
        pad_id: padding token id.
        padding_side: "right" (teacher-forced) or "left" (generation).

    Returns:
        EncodedBatch on CPU (move with `.to(device)`).
    """
    ids, mask = pad_token_lists(token_ids, pad_id, padding_side)
    per_item = item_images(image_index)
    flat = [j for js in per_item for j in js]  # every image in sequence order
    n_img = (ids == image_token_id).sum(1)
    want = torch.tensor([sum(pixels.n_tokens[j] for j in js) for js in per_item])
    if not torch.equal(n_img, want):
        bad = int((n_img != want).nonzero()[0, 0])
        raise ValueError(f"sequence {bad}: {int(n_img[bad])} image tokens in the text but its image needs "
                         f"{int(want[bad])} (image placeholder expanded wrongly?)")
    inputs = {"input_ids": ids, "attention_mask": mask}
    if pixels.grids is not None:
        inputs["pixel_values"] = torch.cat([pixels.values[j] for j in flat], 0)
        inputs["image_grid_thw"] = torch.stack([pixels.grids[j] for j in flat], 0)
    else:
        inputs["pixel_values"] = torch.stack([pixels.values[j] for j in flat], 0)
    is_img = (ids == image_token_id).long()
    if spec.mm_token_type_ids:
        inputs["mm_token_type_ids"] = is_img
    if spec.token_type_ids:
        inputs["token_type_ids"] = is_img
    return EncodedBatch(inputs, mask.sum(1), padding_side)
