"""Load a VLM + tokenizer + preprocessing from a local directory (or a hub name) for scoring and training.

One code path for every family (HF `AutoModelForImageTextToText`, imported lazily) with the options every adapter
honours: dtype (float32 by default on CPU, bfloat16 by default on CUDA), device, attention implementation, LoRA
(peft; targets and level rows in `zreward.models.lora`), gradient checkpointing. Weights load low-memory: transformers
5 builds the model on the meta device, and on CUDA `device_map` puts each tensor straight on the rank's GPU (no
full host copy per rank). A Qwen3.5 model on CUDA without the linear-attention kernels (the `gpu` extra:
flash-linear-attention, causal-conv1d) gets a warning: transformers then runs its gated-DeltaNet layers in a slow
torch loop.
Also the **single-token level check**: every level string must be exactly one token, also right after the score
prefix; otherwise the levels are added as tokens (embeddings resized; recorded in `zreward.json`) or loading fails
with a message naming the level and its tokenization.
"""
from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import torch

from zreward.models.families import FamilySpec, get_family
from zreward.models.lora import LoraOptions, apply_lora
from zreward.models.preprocess import PixelSpec
from zreward.models.scorer_config import CONFIG_NAME, ScorerConfig, read_config_json


class LevelTokenError(ValueError):
    """A rubric level is not exactly one token in the tokenizer."""


__all__ = ["LevelTokenError", "LoraOptions", "ATTN_IMPLEMENTATIONS", "load_components", "default_dtype",
           "check_level_tokens", "resolve_level_tokens", "prepare_for_training", "preprocessor_file",
           "tokens_per_image", "missing_linear_attention_kernels", "warn_without_linear_attention_kernels"]

ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
# Model types whose linear-attention (gated-DeltaNet) layers need these kernels to run fast on a GPU.
LINEAR_ATTENTION_MODELS = ("qwen3_5", "qwen3_5_moe", "qwen3_next")
LINEAR_ATTENTION_KERNELS = {"fla": "flash-linear-attention", "causal_conv1d": "causal-conv1d"}


def missing_linear_attention_kernels() -> list[str]:
    """pip names of the linear-attention kernel packages that are not importable."""
    return [pip for mod, pip in LINEAR_ATTENTION_KERNELS.items() if importlib.util.find_spec(mod) is None]


def warn_without_linear_attention_kernels(model_type: str, device: str | torch.device) -> bool:
    """Warn (and return True) when a gated-DeltaNet model runs on CUDA without the fast kernels."""
    if model_type not in LINEAR_ATTENTION_MODELS or not str(device).startswith("cuda"):
        return False
    missing = missing_linear_attention_kernels()
    if missing:
        warnings.warn(f"{model_type} on {device} without {', '.join(missing)}: transformers falls back to a slow torch "
                      f"loop for the gated-DeltaNet layers (≈1.7× slower steps reported for Qwen3.5-9B). Install "
                      f"them with `pip install 'zreward[gpu]'`.", RuntimeWarning, stacklevel=3)
    return bool(missing)


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


def _override(data: dict, overrides: dict | None) -> dict:
    """zreward.json data with overrides: dict values (templates, rubrics) merge key by key; new level strings
    drop the stored level token ids (they are resolved again against the tokenizer)."""
    data = dict(data)
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            if key in ("levels", "level_strings") and value != data.get(key) and "level_token_ids" not in overrides:
                data["level_token_ids"] = []
            if key == "levels" and value != data.get(key) and "level_strings" not in overrides:
                data["level_strings"] = []  # derived from the levels again
            data[key] = value
    return data


def load_components(path_or_name: str | Path, device: str = "cpu", dtype=None, *, lora: LoraOptions | None = None,
                    gradient_checkpointing: bool = False, add_level_tokens: bool = True, family: str | None = None,
                    config_overrides: dict | None = None, attn_implementation: str | None = None):
    """Load (model, tokenizer, PixelSpec, ScorerConfig, FamilySpec) from a scorer dir, a plain HF VLM dir or a hub name.

    Args:
        path_or_name: directory (with or without `zreward.json`) or hub repo id.
        device: torch device string.
        dtype: None (fp32 on CPU, bf16 on CUDA), a name ("bf16") or a torch dtype.
        lora: wrap the model with peft LoRA adapters (see `zreward.models.lora`; adapters and level rows train).
        gradient_checkpointing: enable non-reentrant activation checkpointing.
        add_level_tokens: when a level is not one token, add level tokens instead of failing.
        family: family override when there is no zreward.json (default: config.model_type).
        config_overrides: ScorerConfig fields to override (dims, rubrics, level_strings, reward_weights, templates,
            ...); dict-valued ones (rubrics, templates) merge into the stored ones.
        attn_implementation: one of ATTN_IMPLEMENTATIONS (None: transformers' default, sdpa where supported).
    """
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoTokenizer

    src = str(path_or_name)
    zr = _file(src, CONFIG_NAME)
    hf_cfg = AutoConfig.from_pretrained(src)
    if attn_implementation is not None and attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation: expected one of {ATTN_IMPLEMENTATIONS}, got {attn_implementation!r}")
    if zr is not None:
        cfg = ScorerConfig.from_json(_override(read_config_json(zr), config_overrides), where=str(zr))
    else:
        data = ScorerConfig(family=get_family(family or hf_cfg.model_type).name).to_json()
        cfg = ScorerConfig.from_json(_override(data, config_overrides), where="config_overrides")
    spec: FamilySpec = get_family(cfg.family)
    pp = preprocessor_file(src)
    pixel_spec = PixelSpec.from_json_file(pp, spec.pixels)
    tokenizer = AutoTokenizer.from_pretrained(src)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch_dtype = default_dtype(device, dtype)
    extra = {} if attn_implementation is None else {"attn_implementation": attn_implementation}
    if str(device).startswith("cuda"):  # each tensor goes straight to this rank's GPU
        extra["device_map"] = {"": str(device)}
    model = AutoModelForImageTextToText.from_pretrained(src, dtype=torch_dtype, **extra)
    warn_without_linear_attention_kernels(hf_cfg.model_type, device)
    resolve_level_tokens(tokenizer, model, cfg, add_level_tokens)
    model.to(device)
    model = prepare_for_training(model, lora, gradient_checkpointing, cfg.level_token_ids)
    return model, tokenizer, pixel_spec, cfg, spec


def prepare_for_training(model, lora: LoraOptions | None, gradient_checkpointing: bool, level_token_ids: list[int]):
    """Enable non-reentrant activation checkpointing and/or wrap with LoRA; returns the model in eval mode."""
    if gradient_checkpointing:
        if hasattr(model, "activation_checkpointing_enable"):  # transformers ≥ 5.2x name
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if lora is not None:
        if gradient_checkpointing:
            model.enable_input_require_grads()
        model = apply_lora(model, lora, level_token_ids)
    return model.eval()


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
