"""LoRA for scorers: which layers get adapters, trainable level-token rows, and a streaming merged export.

- **Targets** (verl's VLM LoRA recipe): every `nn.Linear` of the language model — attention q/k/v/o, MLP
  gate/up/down and, in Qwen3.5, the gated-DeltaNet projections `in_proj_qkv`, `in_proj_z`, `in_proj_b`,
  `in_proj_a`, `out_proj` that a fixed suffix list misses — but not the output head, and not the vision tower
  or its projector unless `include_vision` is set. `target_modules` narrows this to given name suffixes.
- **Level rows**: the level tokens' rows of the input embedding and of the output head train too (peft
  `trainable_token_indices`), so level tokens added to a tokenizer that split them ("3.5" in Qwen) do not stay at
  their initial rows. With tied embeddings peft shares one set of rows.
- **Export** (`save_merged`): writes HF safetensors shards with LoRA and the trainable rows merged in, one tensor
  at a time on the CPU — no second copy of the weights on the accelerator and at most one shard in host memory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

# Path components that mark the vision side of a VLM (tower and the projector into the language model).
VISION_PARTS = ("visual", "vision_tower", "vision_model", "multi_modal_projector")


@dataclass
class LoraOptions:
    """peft LoRA settings.

    Attributes:
        r: rank.
        alpha: scaling numerator (scale = alpha / r).
        dropout: LoRA dropout.
        target_modules: None: every linear layer of the language model (see module doc); else module-name suffixes
            (e.g. ["q_proj", "v_proj"]) that a linear layer must end with.
        include_vision: also put adapters on the vision tower's and projector's linear layers.
        train_level_rows: make the level tokens' embedding / output-head rows trainable.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | None = None
    include_vision: bool = False
    train_level_rows: bool = True


def _is_vision(name: str) -> bool:
    return any(part in VISION_PARTS for part in name.split("."))


def lora_target_names(model: torch.nn.Module, opts: LoraOptions) -> list[str]:
    """Full names of the linear layers that get adapters (see `LoraOptions`); ValueError when none match."""
    head = model.get_output_embeddings()
    names = []
    for name, mod in model.named_modules():
        if not isinstance(mod, torch.nn.Linear) or mod is head or (_is_vision(name) and not opts.include_vision):
            continue
        if opts.target_modules is None or any(name == s or name.endswith("." + s) for s in opts.target_modules):
            names.append(name)
    if not names:
        raise ValueError(f"lora target_modules: no linear layer matches {opts.target_modules} "
                         f"(include_vision={opts.include_vision})")
    return names


def _module_name(model: torch.nn.Module, target: torch.nn.Module | None) -> str | None:
    return next((n for n, m in model.named_modules() if m is target), None) if target is not None else None


def apply_lora(model: torch.nn.Module, opts: LoraOptions, level_token_ids: list[int]):
    """Wrap `model` with peft LoRA adapters (only adapters and, optionally, the level rows train)."""
    from peft import LoraConfig, get_peft_model

    tokens = None
    if opts.train_level_rows and level_token_ids:
        emb, head = model.get_input_embeddings(), model.get_output_embeddings()
        tokens = {_module_name(model, emb).rsplit(".", 1)[-1]: list(level_token_ids)}
        if head is not None and head.weight is not emb.weight:  # untied head: its rows train too
            tokens[_module_name(model, head).rsplit(".", 1)[-1]] = list(level_token_ids)
    cfg = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout, bias="none",
                     target_modules=lora_target_names(model, opts), trainable_token_indices=tokens)
    return get_peft_model(model, cfg)


def _merged_cpu(key: str, tensor: torch.Tensor, lora_layers: dict, token_layers: dict) -> tuple[str, torch.Tensor]:
    """(HF key, CPU tensor with adapters merged) for one state-dict entry of a peft-wrapped base model."""
    for prefix, layer in lora_layers.items():
        if key == f"{prefix}.base_layer.weight":
            w = tensor.detach().to("cpu", torch.float32, copy=True)
            for name in layer.active_adapters:
                if getattr(layer, "use_dora", {}).get(name) or getattr(layer, "fan_in_fan_out", False):
                    raise ValueError(f"{prefix}: only plain LoRA on linear layers can be merged here")
                a = layer.lora_A[name].weight.detach().to("cpu", torch.float32)
                b = layer.lora_B[name].weight.detach().to("cpu", torch.float32)
                w += layer.scaling[name] * (b @ a)
            return f"{prefix}.weight", w.to(tensor.dtype)
        if key.startswith(f"{prefix}.base_layer."):
            return f"{prefix}.{key[len(prefix) + len('.base_layer.'):]}", tensor.detach().to("cpu", copy=True)
    for prefix, layer in token_layers.items():
        if key == f"{prefix}.token_adapter.base_layer.weight":
            w = tensor.detach().to("cpu", copy=True)
            for name in layer.token_adapter.active_adapters:
                idx = torch.tensor(layer.token_adapter.token_indices[name], dtype=torch.long)
                w.index_copy_(0, idx, layer.token_adapter.trainable_tokens_delta[name].detach().to("cpu", w.dtype))
            return f"{prefix}.weight", w
    return key, tensor.detach().to("cpu", copy=True)


def merged_tensors(model):
    """Yield (HF key, CPU tensor) of `model`'s weights with LoRA / trainable rows merged, one tensor at a time.

    A plain (non-peft) model yields its own state dict. Tied weights are yielded once (the loader re-ties them).
    """
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    lora_layers = {n: m for n, m in base.named_modules() if hasattr(m, "lora_A") and hasattr(m, "base_layer")}
    token_layers = {n: m for n, m in base.named_modules() if hasattr(m, "token_adapter")}
    seen: set[int] = set()
    for key, tensor in base.state_dict(keep_vars=True).items():
        if "lora_" in key or "trainable_tokens_" in key:
            continue
        ptr = tensor.data_ptr()
        if ptr in seen and tensor.numel():
            continue
        seen.add(ptr)
        yield _merged_cpu(key, tensor, lora_layers, token_layers)


def save_merged(model, out: str | Path, max_shard_bytes: int = 4 * 2**30) -> Path:
    """Write `model` as an HF checkpoint (config, generation config, safetensors shards) with adapters merged.

    Streams: each tensor is merged on the CPU and a shard is written as soon as it reaches `max_shard_bytes`.
    """
    from safetensors.torch import save_file

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = model.get_base_model() if hasattr(model, "peft_config") else model
    base.config.save_pretrained(out)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(out)
    shards: list[list[str]] = []
    buf: dict[str, torch.Tensor] = {}
    size = total = 0

    def flush():
        nonlocal buf, size
        if buf:
            save_file(buf, str(out / f"shard-{len(shards):05d}.safetensors"), metadata={"format": "pt"})
            shards.append(list(buf))
            buf, size = {}, 0

    for key, tensor in merged_tensors(model):
        nbytes = tensor.numel() * tensor.element_size()
        if buf and size + nbytes > max_shard_bytes:
            flush()
        buf[key] = tensor.contiguous()
        size += nbytes
        total += nbytes
    flush()
    n = len(shards)
    names = [f"model-{i + 1:05d}-of-{n:05d}.safetensors" if n > 1 else "model.safetensors" for i in range(n)]
    for i, name in enumerate(names):
        (out / f"shard-{i:05d}.safetensors").rename(out / name)
    if n > 1:
        weight_map = {k: names[i] for i, ks in enumerate(shards) for k in ks}
        index = {"metadata": {"total_size": total}, "weight_map": weight_map}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out
