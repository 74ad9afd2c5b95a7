"""LoRA on a tiny Qwen3.5 built from config: adapter coverage (gated-DeltaNet included, vision excluded), level rows
that train, a streaming merged export that reloads to the same scores; loading options and config overrides."""
from __future__ import annotations

import json

import pytest
import torch

from zreward.models import load as load_mod
from zreward.models.lora import LoraOptions, lora_target_names, save_merged
from zreward.models.scorer import load_scorer

FAM = "qwen3_5"
PROMPTS = ["a red circle", "three green triangles above a purple hexagon"]
DELTANET = ("in_proj_qkv", "in_proj_z", "in_proj_b", "in_proj_a", "out_proj")
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")


def _x(n=2, seed=0):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def _linear_names(model, suffixes):
    return [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in suffixes]


def test_every_deltanet_and_attention_projection_gets_an_adapter_vision_excluded(tiny_dir):
    s = load_scorer(tiny_dir(FAM), lora=LoraOptions(r=4, alpha=8))
    base = s.model.get_base_model()
    adapted = {n for n, m in base.named_modules() if hasattr(m, "lora_A")}
    deltanet = [n for n, m in base.named_modules() if n.endswith(DELTANET) and hasattr(m, "base_layer")]
    attention = [n for n, m in base.named_modules() if n.endswith(ATTENTION) and hasattr(m, "base_layer")]
    cfg = base.config.get_text_config()
    n_linear = sum(t == "linear_attention" for t in cfg.layer_types)
    assert len(deltanet) == 5 * n_linear >= 5 and len(attention) == 4 * (cfg.num_hidden_layers - n_linear) >= 4
    assert set(deltanet) | set(attention) <= adapted
    assert not any("visual" in n for n in adapted) and "lm_head" not in adapted
    mlp = [n for n in adapted if n.endswith(("gate_proj", "up_proj", "down_proj"))]
    assert len(mlp) == 3 * cfg.num_hidden_layers
    # the vision tower is configurable; a suffix list narrows the targets
    plain = load_scorer(tiny_dir(FAM)).model
    assert any("visual" in n for n in lora_target_names(plain, LoraOptions(include_vision=True)))
    only_q = lora_target_names(plain, LoraOptions(target_modules=["q_proj"]))
    assert only_q and all(n.endswith(".q_proj") for n in only_q)
    with pytest.raises(ValueError, match="no linear layer matches"):
        lora_target_names(plain, LoraOptions(target_modules=["nothing_like_this"]))


def test_level_rows_receive_gradients_and_drive_the_readout(tiny_dir):
    s = load_scorer(tiny_dir(FAM), lora=LoraOptions(r=4, alpha=8))
    s.model.train()
    deltas = {n: p for n, p in s.model.named_parameters() if "trainable_tokens_delta" in n}
    assert len(deltas) == 2  # input embedding and (untied) output head
    # level strings in the input, so that their embedding rows are read (a tiny model's prompt has none of its own)
    logits = s.direct_logits([p + " from 1.0 to 5.0" for p in PROMPTS], _x())
    (-torch.log_softmax(logits, -1)[..., -1]).mean().backward()
    head_delta = next(p for n, p in deltas.items() if "lm_head" in n)
    assert head_delta.grad is not None and (head_delta.grad.abs().sum(-1) > 0).all()  # every level row
    emb_delta = next(p for n, p in deltas.items() if "embed_tokens" in n)
    assert emb_delta.grad is not None and emb_delta.grad.abs().sum() > 0  # "1.0" / "5.0" are read
    # the readout uses the trainable rows: moving them moves the level logits exactly as the full head does
    with torch.no_grad():
        head_delta.add_(torch.randn_like(head_delta))
        texts = [s.direct_prompt(p, "alignment") for p in PROMPTS]
        batch, _ = s.encode_items(texts, [0, 1], s.prepare_images(_x()))
        full = s.model(**batch.inputs, use_cache=False).logits[torch.arange(2), batch.last_pos]
        ro = s.readout_at(batch, batch.last_pos)
    assert torch.allclose(ro.logits, full[:, s.config.level_token_ids], atol=1e-5)
    s.model.zero_grad(set_to_none=True)


def test_scores_agree_after_save_load_merge(tiny_dir, tmp_path):
    s = load_scorer(tiny_dir(FAM), lora=LoraOptions(r=4, alpha=8))
    s.model.train()
    opt = torch.optim.SGD([p for p in s.model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = -torch.log_softmax(s.direct_logits(PROMPTS, _x()), -1)[..., -1].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s.model.eval()
    before = s.score(PROMPTS, _x())
    with s.model.disable_adapter():
        untrained = s.score(PROMPTS, _x())
    assert (before.mean - untrained.mean).abs().max() > 1e-3  # adapters and level rows matter
    s.save_pretrained(tmp_path / "one")
    one = load_scorer(tmp_path / "one").score(PROMPTS, _x())
    assert torch.allclose(one.probs, before.probs, atol=1e-5)
    # several shards + an index, as a 27B export writes them
    out = save_merged(s.model, tmp_path / "sharded", max_shard_bytes=200_000)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 2
    assert not any("lora_" in k or "base_layer" in k or "token_adapter" in k for k in index["weight_map"])
    for f in (tmp_path / "one").iterdir():  # tokenizer, chat template, image processor, zreward.json
        if not f.name.startswith("model") and not (out / f.name).exists():
            (out / f.name).write_bytes(f.read_bytes())
    sharded = load_scorer(out).score(PROMPTS, _x())
    assert torch.allclose(sharded.probs, before.probs, atol=1e-5)


def test_attn_implementation_and_kernel_warning(tiny_dir, monkeypatch):
    s = load_scorer(tiny_dir(FAM), attn_implementation="eager")
    assert s.model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation: expected one of"):
        load_scorer(tiny_dir(FAM), attn_implementation="fast_please")
    monkeypatch.setattr(load_mod, "missing_linear_attention_kernels", lambda: ["flash-linear-attention"])
    with pytest.warns(RuntimeWarning, match=r"zreward\[gpu\]"):
        assert load_mod.warn_without_linear_attention_kernels("qwen3_5", "cuda:0")
    assert not load_mod.warn_without_linear_attention_kernels("qwen3_5", "cpu")  # kernels are CUDA-only
    assert not load_mod.warn_without_linear_attention_kernels("qwen2_vl", "cuda:0")


def test_model_config_sets_chat_template_kwargs_levels_and_rubrics(tiny_dir):
    from zreward.trainers.common import ModelConfig, build_scorer

    levels = [f"L{i}" for i in range(9)]
    cfg = ModelConfig(init_from=str(tiny_dir(FAM)), chat_template_kwargs={"enable_thinking": False},
                      level_strings=levels, rubrics={"realism": "Realism: is it real?"}, lora=True, lora_r=2,
                      lora_alpha=4)
    s = build_scorer(cfg)
    assert s.config.templates.chat_template_kwargs == {"enable_thinking": False}
    assert s.config.level_strings == levels
    assert s.tokenizer.convert_ids_to_tokens(s.config.level_token_ids) == levels
    assert s.config.rubrics["realism"] == "Realism: is it real?" and "alignment" in s.config.rubrics
    assert "Realism: is it real?" in s.direct_prompt("a cat", "realism")
    assert s.score(PROMPTS, _x(), dims=["realism"]).probs.shape == (2, 1, 9)


def test_tied_embeddings_share_level_rows_and_round_trip(tiny_dir, tmp_path):
    """Gemma 3 ties lm_head to the input embedding: one set of trainable rows serves both, and the export keeps it."""
    s = load_scorer(tiny_dir("gemma3"), lora=LoraOptions(r=4, alpha=8))
    assert sum("trainable_tokens_delta" in n for n, _ in s.model.named_parameters()) == 1
    s.model.train()
    opt = torch.optim.SGD([p for p in s.model.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        loss = -torch.log_softmax(s.direct_logits(PROMPTS, _x()), -1)[..., -1].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s.model.eval()
    with torch.no_grad():
        batch, _ = s.encode_items([s.direct_prompt(p, "alignment") for p in PROMPTS], [0, 1], s.prepare_images(_x()))
        full = s.model(**batch.inputs, use_cache=False).logits[torch.arange(2), batch.last_pos]
        assert torch.allclose(s.readout_at(batch, batch.last_pos).logits, full[:, s.config.level_token_ids], atol=1e-5)
    before = s.score(PROMPTS, _x())
    s.save_pretrained(tmp_path)
    assert torch.allclose(load_scorer(tmp_path).score(PROMPTS, _x()).probs, before.probs, atol=1e-5)


def test_cuda_loading_goes_straight_to_the_rank_device(tiny_dir, monkeypatch):
    """On CUDA each tensor is loaded onto the rank's GPU (device_map), not built on the host first."""
    from transformers import AutoModelForImageTextToText

    seen = {}

    class Stop(Exception):
        pass

    def fake(src, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(AutoModelForImageTextToText, "from_pretrained", fake)
    with pytest.raises(Stop):
        load_mod.load_components(tiny_dir(FAM), device="cuda:1", attn_implementation="sdpa")
    assert seen["device_map"] == {"": "cuda:1"} and seen["attn_implementation"] == "sdpa"
    assert seen["dtype"] == torch.bfloat16
    seen.clear()
    with pytest.raises(Stop):
        load_mod.load_components(tiny_dir(FAM), device="cpu")
    assert "device_map" not in seen and seen["dtype"] == torch.float32
