"""Randomly initialised small VLMs, built from config, for tests and the embedded ShapesWorld demo.

`init_tiny(family, preset, out)` writes a directory that loads exactly like a real checkpoint: HF `config.json` +
`model.safetensors` (via `save_pretrained`), a locally trained byte-level BPE tokenizer with a chat template and
single-token levels, the image processor config (`preprocessor_config.json`), and `zreward.json`.

Images are 64 px: 8-px patches → 16 image tokens for the Qwen families (2×2 merge) and Gemma 3 (4×4 pooling);
16-px patches → 16 image tokens for LLaVA. Presets (text LM size dominates): tiny ≈ 0.3–0.6M params, 1m, 10m, 50m.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from zreward.models.families import get_family
from zreward.models.scorer_config import DEFAULT_DIMS, ScorerConfig, Templates
from zreward.models.tiny_tokenizer import build_tiny_tokenizer

IMAGE_SIZE = 64
PATCH = 8
# Tiny models learn ShapesWorld from random weights: a rubric sentence is a constant they read no meaning into, and
# with its closing instruction it was 23–30 tokens of every scoring sequence (33–39% of a direct one). They read the
# dimension's name instead ("Alignment") and no closing instruction; real checkpoints keep `ScorerConfig`'s sentences.
TINY_USER = "Prompt: {prompt}\n{rubric}"


def tiny_rubrics(dims: list[str]) -> dict[str, str]:
    """The tiny models' rubric text of each dim: its capitalised name."""
    return {d: d.capitalize() for d in dims}


@dataclass(frozen=True)
class Preset:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    inter: int
    v_hidden: int
    v_layers: int
    v_heads: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset(64, 2, 2, 1, 128, 32, 1, 2),
    "1m": Preset(128, 4, 4, 2, 256, 64, 2, 2),
    "10m": Preset(320, 8, 5, 5, 1024, 128, 4, 4),
    "50m": Preset(640, 10, 10, 5, 2048, 256, 6, 4),
}


def _mrope_section(rotary_dim: int) -> list[int]:
    """Split rotary_dim/2 frequencies over (t, h, w) as Qwen does (sum must be rotary_dim/2)."""
    s = rotary_dim // 2
    t = s // 4
    h = (s - t) // 2
    return [t, h, s - t - h]


def _qwen_text(p: Preset, vocab: int, family: str, ids: dict) -> dict:
    head_dim = p.hidden // p.heads
    rotary = head_dim // 4 if family == "qwen3_5" else head_dim  # Qwen3.5 rotates a quarter of each head
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": _mrope_section(rotary)}
    cfg = dict(vocab_size=vocab, hidden_size=p.hidden, intermediate_size=p.inter, num_hidden_layers=p.layers,
               num_attention_heads=p.heads, num_key_value_heads=p.kv_heads, max_position_embeddings=4096,
               rope_parameters=rope, pad_token_id=ids["pad"], eos_token_id=ids["eos"], bos_token_id=None)
    if family in ("qwen3_vl", "qwen3_5"):
        cfg["head_dim"] = head_dim
    if family == "qwen3_5":
        rope["partial_rotary_factor"] = 0.25
        rope["mrope_interleaved"] = True
        # Qwen3.5 interleaves 3 gated-delta-net (linear attention) layers with 1 full-attention layer; keep both
        # kinds even in the smallest preset.
        cfg["layer_types"] = ["linear_attention" if (i + 1) % 4 else "full_attention" for i in range(p.layers)]
        if "full_attention" not in cfg["layer_types"]:
            cfg["layer_types"][-1] = "full_attention"
        cfg.update(linear_num_key_heads=p.heads, linear_num_value_heads=p.heads, linear_key_head_dim=head_dim,
                   linear_value_head_dim=head_dim, linear_conv_kernel_dim=4)
    return cfg


def _qwen_vision(p: Preset, family: str, out_hidden: int) -> dict:
    common = dict(depth=p.v_layers, num_heads=p.v_heads, in_channels=3, patch_size=PATCH, spatial_merge_size=2,
                  temporal_patch_size=2)
    if family == "qwen2_vl":
        return dict(common, embed_dim=p.v_hidden, hidden_size=out_hidden, mlp_ratio=2)
    if family == "qwen2_5_vl":
        return dict(common, hidden_size=p.v_hidden, intermediate_size=2 * p.v_hidden, out_hidden_size=out_hidden,
                    window_size=4 * PATCH, fullatt_block_indexes=[p.v_layers - 1])
    # qwen3_vl / qwen3_5: learned position embeddings on a square grid (8×8 patches at 64 px).
    v = dict(common, hidden_size=p.v_hidden, intermediate_size=2 * p.v_hidden, out_hidden_size=out_hidden,
             num_position_embeddings=(IMAGE_SIZE // PATCH) ** 2)
    if family == "qwen3_vl":
        v["deepstack_visual_indexes"] = [p.v_layers - 1]
    return v


def build_config(family: str, preset: str, tokenizer, vocab_size: int | None = None):
    """HF config for a tiny model of `family` whose special token ids come from `tokenizer`.

    vocab_size: pad the model's vocabulary to this many rows (≥ the tokenizer's; memory tests use ~150k).
    """
    from transformers import AutoConfig

    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    spec = get_family(family)
    vocab = int(math.ceil(len(tokenizer) / 64) * 64)
    if vocab_size is not None:
        if vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size {vocab_size} is below the tokenizer's {len(tokenizer)} tokens")
        vocab = vocab_size
    t2i = tokenizer.convert_tokens_to_ids
    ids = {"pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id}
    if spec.pixels == "qwen":
        return AutoConfig.for_model(
            family, text_config=_qwen_text(p, vocab, family, ids), vision_config=_qwen_vision(p, family, p.hidden),
            image_token_id=t2i("<|image_pad|>"), video_token_id=t2i("<|video_pad|>"),
            vision_start_token_id=t2i("<|vision_start|>"), vision_end_token_id=t2i("<|vision_end|>"),
            tie_word_embeddings=False)
    # LLaVA feeds every patch to the LM: 16-px patches keep it at 16 image tokens; Gemma 3 pools 8-px patches to 16.
    vision = dict(hidden_size=p.v_hidden, intermediate_size=2 * p.v_hidden, num_hidden_layers=p.v_layers,
                  num_attention_heads=p.v_heads, image_size=IMAGE_SIZE,
                  patch_size=2 * PATCH if family == "llava" else PATCH)
    head_dim = p.hidden // p.heads
    if family == "llava":
        text = dict(model_type="llama", vocab_size=vocab, hidden_size=p.hidden, intermediate_size=p.inter,
                    num_hidden_layers=p.layers, num_attention_heads=p.heads, num_key_value_heads=p.kv_heads,
                    max_position_embeddings=4096, pad_token_id=ids["pad"], eos_token_id=ids["eos"],
                    bos_token_id=None)
        return AutoConfig.for_model(
            "llava", vision_config=dict(vision, model_type="clip_vision_model", projection_dim=p.v_hidden),
            text_config=text, image_token_index=t2i("<image>"), image_seq_length=(IMAGE_SIZE // (2 * PATCH)) ** 2,
            vision_feature_select_strategy="default", vision_feature_layer=-1)
    if family == "gemma3":
        text = dict(vocab_size=vocab, hidden_size=p.hidden, intermediate_size=p.inter, num_hidden_layers=p.layers,
                    num_attention_heads=p.heads, num_key_value_heads=p.kv_heads, head_dim=head_dim,
                    query_pre_attn_scalar=head_dim, sliding_window=64, max_position_embeddings=4096,
                    pad_token_id=ids["pad"], eos_token_id=ids["eos"], bos_token_id=None)
        return AutoConfig.for_model(
            "gemma3", vision_config=dict(vision, model_type="siglip_vision_model"), text_config=text,
            mm_tokens_per_image=16, boi_token_index=t2i("<start_of_image>"), eoi_token_index=t2i("<end_of_image>"),
            image_token_index=t2i("<image_soft_token>"), tie_word_embeddings=True)
    raise ValueError(f"no tiny config for family {family!r}")


def build_image_processor(family: str):
    """The HF (PIL-backend, torchvision-free) image processor matching the tiny model's vision tower."""
    spec = get_family(family)
    clip_mean, clip_std = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]
    half = [0.5, 0.5, 0.5]
    if spec.pixels == "qwen":
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        mean, std = (half, half) if family in ("qwen3_vl", "qwen3_5") else (clip_mean, clip_std)
        return Qwen2VLImageProcessorPil(patch_size=PATCH, merge_size=2, temporal_patch_size=2, image_mean=mean,
                                        image_std=std, min_pixels=(IMAGE_SIZE // 2) ** 2, max_pixels=IMAGE_SIZE**2)
    if family == "llava":
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

        return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE,
                                     "width": IMAGE_SIZE}, image_mean=clip_mean, image_std=clip_std)
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    return Gemma3ImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_mean=half,
                                   image_std=half)


def init_tiny(family: str, out: str | Path, preset: str = "tiny", seed: int = 0, vocab_size: int | None = None,
              **scorer_kwargs) -> Path:
    """Write a randomly initialised tiny scorer directory.

    Args:
        family: zreward family name.
        out: output directory (created).
        preset: tiny | 1m | 10m | 50m.
        seed: torch seed for the weights.
        vocab_size: pad the vocabulary to this size (default: the tokenizer's, rounded up to 64).
        **scorer_kwargs: ScorerConfig overrides (dims, rubrics, levels, reward_weights, ...); without `rubrics` /
            `templates` the model reads the dims' names (`tiny_rubrics`) in `TINY_USER`.

    Returns:
        The output directory.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    scorer_kwargs.setdefault("rubrics", tiny_rubrics(scorer_kwargs.get("dims", DEFAULT_DIMS)))
    scorer_kwargs.setdefault("templates", Templates(user=TINY_USER))
    cfg = ScorerConfig(family=get_family(family).name, **scorer_kwargs)
    tok = build_tiny_tokenizer(get_family(family), cfg.level_strings)
    config = build_config(family, preset, tok, vocab_size)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    if family == "gemma3":
        # Gemma 3 zero-initialises its image→text projection: a random model would ignore the image entirely.
        torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.02)
    cfg.level_token_ids = tok.convert_tokens_to_ids(cfg.level_strings)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    build_image_processor(family).save_pretrained(out)
    cfg.save(out)
    return out
