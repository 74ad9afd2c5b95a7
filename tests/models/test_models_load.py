"""Loading options and building blocks on the default family: level-token check, LoRA, checkpointing, inputs,
chain log-probs, and the `zreward model` / `zreward score` verbs."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

import zreward
from zreward.models import DEFAULT_FAMILY
from zreward.models.load import LevelTokenError, LoraOptions
from zreward.models.scorer import load_scorer  # zreward.load_scorer does not forward loading options (yet)

FAM = DEFAULT_FAMILY
PROMPTS = ["a red circle", "three green triangles above a purple hexagon"]


def _x(n=2, seed=0):
    return torch.rand(n, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def test_split_level_fails_clearly_or_is_added(tiny_dir, tmp_path):
    d = tiny_dir(FAM)
    # "2.25" etc. are not tokens of the tiny tokenizer: BPE splits them into several pieces.
    bad = {"levels": [1.0, 2.25, 3.5], "level_strings": ["1.0", "2.25", "3.5"], "level_token_ids": []}
    with pytest.raises(LevelTokenError, match=r"level '2\.25' tokenizes as \[") as e:
        load_scorer(d, add_level_tokens=False, config_overrides=bad)
    assert "'1.0'" not in str(e.value)  # only the offending level is named
    s = load_scorer(d, add_level_tokens=True, config_overrides=bad)
    assert s.config.added_level_tokens
    ids = s.config.level_token_ids
    assert len(set(ids)) == 3 and all(len(s.tokenizer.encode(t, add_special_tokens=False)) == 1
                                       for t in ["1.0", "2.25", "3.5"])
    assert s.model.get_input_embeddings().weight.shape[0] > max(ids)
    a = s.score(PROMPTS, _x())
    assert a.probs.shape == (2, 4, 3)
    s.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "zreward.json").read_text())
    assert cfg["added_level_tokens"] and cfg["level_token_ids"] == ids and cfg["level_strings"][1] == "2.25"
    s2 = load_scorer(tmp_path, add_level_tokens=False)  # saved tokenizer already has them
    assert torch.equal(s2.score(PROMPTS, _x()).probs, a.probs)


def test_bad_config_field_is_named(tiny_dir):
    with pytest.raises(ValueError, match="reward_weights"):
        load_scorer(tiny_dir(FAM), config_overrides={"reward_weights": [1.0]})
    with pytest.raises(ValueError, match="dims: unknown dimensions"):
        zreward.load_scorer(tiny_dir(FAM)).score(PROMPTS, _x(), dims=["sharpness"])


def test_image_inputs_paths_pil_tensor_agree(tiny_scorer, tmp_path):
    s = tiny_scorer(FAM)
    arr = (np.random.default_rng(0).random((2, 64, 64, 3)) * 255).astype(np.uint8)
    pils = [Image.fromarray(a) for a in arr]
    paths = []
    for i, p in enumerate(pils):
        paths.append(tmp_path / f"{i}.png")
        p.save(paths[-1])
    t = torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255
    a, b, c = s.score(PROMPTS, pils), s.score(PROMPTS, [str(p) for p in paths]), s.score(PROMPTS, t)
    assert torch.allclose(a.probs, b.probs, atol=1e-6) and torch.allclose(a.probs, c.probs, atol=1e-6)
    assert torch.allclose(s.score(PROMPTS, t, batch_size=1).probs, c.probs, atol=1e-5)


def test_chain_forward_logprobs_match_single_unpadded_forward(tiny_scorer):
    s = tiny_scorer(FAM)
    x = _x(2, seed=4)
    torch.manual_seed(0)
    cb = s.generate_chains(PROMPTS, x, dims=["alignment"], samples=2, max_new_tokens=6)
    assert len(cb.chain_ids) == 4 and cb.image_index == [0, 0, 1, 1]
    with torch.no_grad():
        cf = s.chain_forward(cb, x)
        for i in range(4):  # reference: one row alone, no padding, full logits
            seq = cb.prompt_ids[i] + cb.chain_ids[i] + s.close_ids
            px = s.prepare_images(x[cb.image_index[i]: cb.image_index[i] + 1])
            from zreward.models.batch import build_batch

            eb = build_batch([seq], [0], px, s.family, s.image_token_id, s.tokenizer.pad_token_id)
            logits = s.model(**eb.inputs).logits[0].float()
            lp = logits.log_softmax(-1)
            p = len(cb.prompt_ids[i])
            ref = torch.stack([lp[p - 1 + j, t] for j, t in enumerate(cb.chain_ids[i])]) if cb.chain_ids[i] else None
            n = len(cb.chain_ids[i])
            assert int(cf.token_mask[i].sum()) == n
            if n:
                assert torch.allclose(cf.token_logprobs[i, :n], ref, atol=1e-4)
            assert torch.allclose(cf.level_logits[i], logits[-1, s.level_token_ids], atol=1e-4)


def test_chain_forward_has_policy_gradient(tiny_scorer):
    s = tiny_scorer(FAM)
    x = _x(1, seed=2)
    cb = s.generate_chains(PROMPTS[:1], x, dims=["realism"], max_new_tokens=4)
    cf = s.chain_forward(cb, x)
    (cf.token_logprobs.sum() + cf.level_logits.logsumexp(-1).sum()).backward()
    grads = [p.grad for p in s.model.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    s.model.zero_grad(set_to_none=True)


def test_lora_gradient_checkpointing_and_merged_save(tiny_dir, tmp_path):
    s = load_scorer(tiny_dir(FAM), lora=LoraOptions(r=4, alpha=8), gradient_checkpointing=True)
    trainable = [n for n, p in s.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or "trainable_tokens_delta" in n for n in trainable)
    assert s.model.get_base_model().is_activation_checkpointing
    s.model.train()
    opt = torch.optim.SGD([p for p in s.model.parameters() if p.requires_grad], lr=0.5)
    target = torch.tensor([0.0] * 8 + [1.0])  # push mass to the top level
    before = s.score(PROMPTS, _x()).mean.mean().item()
    for _ in range(10):
        logits = s.direct_logits(PROMPTS, _x())
        loss = -(torch.log_softmax(logits, -1) * target).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    s.model.eval()
    after = s.score(PROMPTS, _x())
    assert after.mean.mean().item() > before + 1e-3  # LoRA training moved the scores
    s.save_pretrained(tmp_path)
    reloaded = zreward.load_scorer(tmp_path).score(PROMPTS, _x())
    assert torch.allclose(reloaded.probs, after.probs, atol=1e-5)  # merged weights == base + LoRA


def test_bf16_dtype(tiny_dir):
    s = load_scorer(tiny_dir(FAM), dtype="bf16")
    assert s.model.dtype == torch.bfloat16
    out = s.score(PROMPTS, _x())
    ref = zreward.load_scorer(tiny_dir(FAM)).score(PROMPTS, _x())
    assert out.probs.dtype == torch.float32 and (out.probs - ref.probs).abs().max() < 0.05


def test_model_init_and_score_cli(tmp_path):
    from zreward.cli import main as cli
    from zreward.data.records import DatasetInfo, ImageRecord
    from zreward.data.split_writer import write_split

    assert cli(["model", "init", "--family", FAM, "--preset", "tiny", "--out", str(tmp_path / "m"), "--seed", "1"]) == 0
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
        items.append((ImageRecord(id=f"im{i}", prompt=f"{i} red squares", image=f"images/im{i}.png"), buf.getvalue()))
    write_split(tmp_path / "split", DatasetInfo(name="t"), items)
    out = tmp_path / "scores.jsonl"
    assert cli(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "split"), "--out", str(out),
                "--batch-size", "2", "--no-progress"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["im0", "im1", "im2"]
    s = zreward.load_scorer(tmp_path / "m")
    direct = s.score([r["prompt"] for r in rows], [tmp_path / "split" / f"images/im{i}.png" for i in range(3)])
    got = torch.tensor([[r["scores"][d]["mean"] for d in s.dims] for r in rows])
    assert torch.allclose(got, direct.mean, atol=1e-5)
    out2 = tmp_path / "reason.jsonl"
    assert cli(["score", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "split"), "--out", str(out2),
                "--reasoning", "--samples", "2", "--dims", "alignment", "--no-progress"]) == 0
    row = json.loads(out2.read_text().splitlines()[0])
    assert list(row["scores"]) == ["alignment"] and len(row["chains"]["alignment"]) == 2


def test_missing_local_directory_is_named(tmp_path):
    from zreward.models.load import load_components

    missing = tmp_path / "no_such_scorer"
    with pytest.raises(FileNotFoundError, match="no_such_scorer: no such model directory"):
        load_components(str(missing))
