"""Load a VLM + tokenizer + preprocessing from a local directory (or a hub name) for scoring and training.

One code path for every family (HF `AutoModelForImageTextToText`, imported lazily) with the options every adapter
honours: dtype (float32 by default on CPU, bfloat16 by default on CUDA), device, LoRA (peft), gradient checkpointing.
Also the **single-token level check**: every level string must be exactly one token, also right after the score
prefix; otherwise the levels are added as tokens (embeddings resized; recorded in `zreward.json`) or loading fails
with a message naming the level and its tokenization.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from zreward.models.families import FamilySpec, get_family
from zreward.models.preprocess import PixelSpec
from zreward.models.scorer_config import CONFIG_NAME, ScorerConfig, read_config_json


class LevelTokenError(ValueError):
    """A rubric level is not exactly one token in the tokenizer."""


@dataclass
class LoraOptions:
    """peft LoRA settings (applied to the language model's linear layers by default).

    Attributes:
        r: rank.
        alpha: scaling numerator (scale = alpha / r).
        dropout: LoRA dropout.
        target_modules: module name suffixes; the default covers attention and MLP projections of all families.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                               "up_proj", "down_proj"])


def _file(path_or_name: str, filename: str) -> Path | None:
    """Local file in a directory, or (for a hub name) HF's cached download; None when absent."""
    local = Path(path_or_name)
    if local.is_dir():
        p = local / filename
        return p if p.exists() else None
    if local.is_absolute() or path_or_name.startswith(("./", "../", "~")) or local.exists():
        raise FileNotFoundError(f"{path_or_name}: no such model directory (expected a scorer / HF VLM directory, or "
                                "a hub name like 'Qwen/Qwen3-VL-8B-Instruct')")
    from transformers.utils import cached_file

    got = cached_file(path_or_name, filename, _raise_exceptions_for_missing_entries=False)
    return Path(got) if got else None


def preprocessor_file(src: str) -> Path:
    """The image processor config: `preprocessor_config.json`, else a v5 `processor_config.json`."""
    for name in ("preprocessor_config.json", "processor_config.json"):
        p = _file(src, name)
        if p is not None and (name == "preprocessor_config.json" or "image_processor" in json.loads(p.read_text())):
            return p
    raise FileNotFoundError(f"{src}: no preprocessor_config.json (or processor_config.json with an image_processor "
                            f"entry); the image processor config is required")


def default_dtype(device: str | torch.device, dtype: str | torch.dtype | None) -> torch.dtype:
    """float32 on CPU, bfloat16 on CUDA unless given ("fp32"/"bf16"/"fp16" or a torch dtype)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype is None:
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if dtype not in names:
        raise ValueError(f"dtype: expected one of {sorted(names)} or a torch.dtype, got {dtype!r}")
    return names[dtype]


def check_level_tokens(tokenizer, cfg: ScorerConfig) -> tuple[list[int], list[str]]:
    """Return (level token ids, problems). A level is fine when it encodes to one token both alone and after
    each score prefix (`direct_prefix`, `reasoning_close`) — BPE merges across the boundary would break the readout.
    """
    ids, problems = [], []
    prefixes = [cfg.templates.direct_prefix, cfg.templates.reasoning_close]
    for s in cfg.level_strings:
        alone = tokenizer.encode(s, add_special_tokens=False)
        ok = len(alone) == 1
        for pre in prefixes:
            base = tokenizer.encode(pre, add_special_tokens=False)
            if tokenizer.encode(pre + s, add_special_tokens=False) != base + alone[:1]:
                ok = False
        ids.append(alone[0] if alone else -1)
        if not ok:
            pieces = tokenizer.convert_ids_to_tokens(alone)
            after = tokenizer.convert_ids_to_tokens(tokenizer.encode(prefixes[0] + s, add_special_tokens=False))
            problems.append(f"level {s!r} tokenizes as {pieces} (ids {alone}) alone, {after} "
                            f"after the prefix {prefixes[0]!r}")
    return ids, problems


def resolve_level_tokens(tokenizer, model, cfg: ScorerConfig, add_level_tokens: bool) -> None:
    """Fill `cfg.level_token_ids`, adding level tokens to tokenizer+model when allowed (see module doc)."""
    ids, problems = check_level_tokens(tokenizer, cfg)
    if problems and add_level_tokens:
        from tokenizers import AddedToken

        tokenizer.add_tokens([AddedToken(s, normalized=False, special=False) for s in cfg.level_strings])
        if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
            model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
        cfg.added_level_tokens = True
        warnings.warn(f"adding {len(cfg.level_strings)} level tokens {cfg.level_strings} to the vocabulary (new, "
                      f"untrained embeddings; training must teach them)", stacklevel=2)
        ids, problems = check_level_tokens(tokenizer, cfg)
    if problems:
        raise LevelTokenError("each rubric level must be exactly one token of this model's tokenizer; new level "
                              "tokens (untrained embeddings) are added only when training (add_level_tokens=True), "
                              "never for scoring: " + "; ".join(problems))
    if cfg.level_token_ids and cfg.level_token_ids != ids:
        raise LevelTokenError(f"{CONFIG_NAME}: level_token_ids {cfg.level_token_ids} do not match the tokenizer's "
                              f"ids {ids} for levels {cfg.level_strings}")
    cfg.level_token_ids = ids


def load_components(path_or_name: str | Path, device: str = "cpu", dtype=None, *, lora: LoraOptions | None = None,
                    gradient_checkpointing: bool = False, add_level_tokens: bool = True, family: str | None = None,
                    config_overrides: dict | None = None):
    """Load (model, tokenizer, PixelSpec, ScorerConfig, FamilySpec) from a scorer dir, a plain HF VLM dir or a hub name.

    Args:
        path_or_name: directory (with or without `zreward.json`) or hub repo id.
        device: torch device string.
        dtype: None (fp32 on CPU, bf16 on CUDA), a name ("bf16") or a torch dtype.
        lora: wrap the model with peft LoRA adapters (only adapters train).
        gradient_checkpointing: enable non-reentrant activation checkpointing.
        add_level_tokens: when a level is not one token, add level tokens instead of failing.
        family: family override when there is no zreward.json (default: config.model_type).
        config_overrides: ScorerConfig fields to override (dims, rubrics, reward_weights, ...).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    src = str(path_or_name)
    zr = _file(src, CONFIG_NAME)
    hf_cfg = AutoConfig.from_pretrained(src)
    if zr is not None:
        data = read_config_json(zr)
        data.update(config_overrides or {})
        cfg = ScorerConfig.from_json(data, where=str(zr))
    else:
        cfg = ScorerConfig(family=get_family(family or hf_cfg.model_type).name, **(config_overrides or {}))
    spec: FamilySpec = get_family(cfg.family)
    pp = preprocessor_file(src)
    pixel_spec = PixelSpec.from_json_file(pp, spec.pixels)
    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = default_dtype(device, dtype)
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch_dtype)
    resolve_level_tokens(tokenizer, model, cfg, add_level_tokens)
    model.to(device)
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        if gradient_checkpointing:
            model.enable_input_require_grads()
        lcfg = LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=list(lora.target_modules), bias="none")
        model = get_peft_model(model, lcfg)
    model.eval()
    return model, tokenizer, pixel_spec, cfg, spec


def tokens_per_image(model_config) -> int | None:
    """Image tokens per image for fixed-resolution families (LLaVA, Gemma 3); None for Qwen (dynamic)."""
    mt = model_config.model_type
    if mt == "gemma3":
        return int(model_config.mm_tokens_per_image)
    if mt == "llava":
        v = model_config.vision_config
        n = (v.image_size // v.patch_size) ** 2
        return n + (1 if model_config.vision_feature_select_strategy == "full" else 0)
    return None


def merged_state_dict(model) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(base HF model, its state dict with LoRA merged in) without changing `model`'s trainable adapters."""
    if not hasattr(model, "peft_config"):
        return model, model.state_dict()
    model.merge_adapter()
    try:
        base = model.get_base_model()
        sd = {}
        for k, v in base.state_dict().items():
            if "lora_" in k:
                continue
            sd[k.replace(".base_layer.", ".")] = v.detach().clone()
    finally:
        model.unmerge_adapter()
    return base, sd
