"""Which Hugging Face VLM families zreward supports, and the few facts in which they truly differ.

All families load through `AutoModelForImageTextToText` (transformers v5); what differs is captured as data:
- how an image appears in the text (a placeholder the chat template emits, expanded to N image tokens),
- how pixels become `pixel_values` ("qwen": smart-resize + flat patches + `image_grid_thw`; "clip": square resize,
  normalise, `(B, 3, S, S)`),
- extra per-token inputs (`mm_token_type_ids` for the Qwen families' M-RoPE in transformers v5, `token_type_ids`
  for Gemma 3's bidirectional image attention).

Family names (command line and configs): qwen3_5, qwen3_vl, qwen2_5_vl, qwen2_vl, llava, gemma3.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FamilySpec:
    """Static facts about one VLM family.

    Attributes:
        name: zreward family name (also the HF `model_type`).
        pixels: "qwen" (patchified, dynamic resolution) or "clip" (fixed square).
        image_token: the token repeated once per image feature.
        placeholder: what the chat template emits for one image (before expansion).
        expand: format string of the expanded placeholder; `{tokens}` is replaced by image_token × N.
        mm_token_type_ids: pass `mm_token_type_ids` (1 on image tokens) to the model.
        token_type_ids: pass `token_type_ids` (1 on image tokens) to the model (Gemma 3).
        extra_special: other special tokens the tiny tokenizer needs.
    """

    name: str
    pixels: str
    image_token: str
    placeholder: str
    expand: str
    mm_token_type_ids: bool = False
    token_type_ids: bool = False
    extra_special: tuple[str, ...] = ()


_QWEN_SPECIAL = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")
_QWEN_PH = "<|vision_start|><|image_pad|><|vision_end|>"
_QWEN_EXPAND = "<|vision_start|>{tokens}<|vision_end|>"

FAMILIES: dict[str, FamilySpec] = {
    "qwen3_5": FamilySpec("qwen3_5", "qwen", "<|image_pad|>", _QWEN_PH, _QWEN_EXPAND, mm_token_type_ids=True,
                          extra_special=_QWEN_SPECIAL),
    "qwen3_vl": FamilySpec("qwen3_vl", "qwen", "<|image_pad|>", _QWEN_PH, _QWEN_EXPAND, mm_token_type_ids=True,
                           extra_special=_QWEN_SPECIAL),
    "qwen2_5_vl": FamilySpec("qwen2_5_vl", "qwen", "<|image_pad|>", _QWEN_PH, _QWEN_EXPAND, mm_token_type_ids=True,
                             extra_special=_QWEN_SPECIAL),
    "qwen2_vl": FamilySpec("qwen2_vl", "qwen", "<|image_pad|>", _QWEN_PH, _QWEN_EXPAND, mm_token_type_ids=True,
                           extra_special=_QWEN_SPECIAL),
    "llava": FamilySpec("llava", "clip", "<image>", "<image>", "{tokens}", extra_special=("<image>",)),
    # Gemma3Processor replaces "<start_of_image>" by "\n\n<start_of_image>" + soft tokens + "<end_of_image>\n\n".
    "gemma3": FamilySpec("gemma3", "clip", "<image_soft_token>", "<start_of_image>",
                         "\n\n<start_of_image>{tokens}<end_of_image>\n\n", token_type_ids=True,
                         extra_special=("<start_of_image>", "<end_of_image>", "<image_soft_token>")),
}

# Families whose HF model_type differs from the zreward name (none today; kept for checkpoints with MoE variants).
MODEL_TYPE_TO_FAMILY = {"qwen3_5_moe": "qwen3_5", "qwen3_vl_moe": "qwen3_vl"}


def get_family(name: str) -> FamilySpec:
    """Return the spec of a family name or HF model_type; raise ValueError naming the valid choices."""
    key = MODEL_TYPE_TO_FAMILY.get(name, name)
    if key not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; expected one of {sorted(FAMILIES)}")
    return FAMILIES[key]
