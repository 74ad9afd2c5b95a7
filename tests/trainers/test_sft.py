"""SFT trainer: direct and reasoning (cold start) runs on a small ShapesWorld, the rationale forward, helpers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zreward.trainers import sft
from zreward.trainers.run_utils import read_metrics


def _cfg(tiny_model, world, out, **over) -> sft.Config:
    cfg = sft.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(world / "train"), str(world / "val")
    cfg.data.prompts_per_batch, cfg.data.val_max_images = 2, 24
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_steps = str(out), False, 6
    cfg.optim.lr = 3e-3
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _reasoning_run(tiny_model, world, run_dir, steps: int, **over) -> tuple[sft.Config, list[dict]]:
    """Train a reasoning-mode cold start (chains cut at 24 tokens, no val) for `steps` steps: (config, logged
    metrics)."""
    cfg = _cfg(tiny_model, world, run_dir, sft__mode="reasoning", sft__max_chain_tokens=24, **over)
    cfg.data.val, cfg.run.max_steps = None, steps
    sft.train(cfg)
    return cfg, read_metrics(run_dir / "metrics.jsonl")


def test_direct_sft_learns_and_saves_a_direct_scorer(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer
    from zreward.trainers.data import load_train_data

    cfg = _cfg(tiny_model, small_world, tmp_path / "run", sft__pair_weight=0.5, sft__expected_weight=0.5)
    final = sft.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [e["step"] for e in logs] == list(range(1, 7))
    for key in ("loss", "kl", "pair", "expected", "lr", "grad_norm", "step_time"):
        assert key in logs[0]
    assert "val_acc" in logs[-1] and 0.0 <= logs[-1]["val_acc"] <= 1.0
    assert np.mean([e["kl"] for e in logs[-2:]]) < logs[0]["kl"]  # it learns
    assert json.loads((final / "zreward.json").read_text())["mode"] == "direct"
    # the saved scorer has a lower KL on the training data than the initial model
    data = load_train_data(small_world / "train", max_images=16)
    kls = []
    for path in (tiny_model, final):
        sc = load_scorer(path)
        with torch.no_grad():
            logits = sc.direct_logits(data.prompts, data.image_batch(range(16)))
        kls.append(float(sft.kl_div_levels(logits, torch.tensor(data.target), torch.tensor(data.mask))))
    assert kls[1] < kls[0]


def test_reasoning_cold_start_saves_a_reasoning_scorer(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer

    cfg = _cfg(tiny_model, small_world, tmp_path / "run", sft__mode="reasoning", sft__max_chain_tokens=24)
    cfg.data.val = None
    cfg.run.max_steps = 5
    cfg.accelerator.gradient_accumulation_steps = 2  # also exercises the micro-batch split
    final = sft.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert logs[-1]["ce"] < logs[0]["ce"] and logs[-1]["kl"] < logs[0]["kl"]
    zr = json.loads((final / "zreward.json").read_text())
    assert zr["mode"] == "reasoning" and zr["max_new_tokens"] >= 25
    sc = load_scorer(final)
    out = sc.score(["a red circle"], torch.rand(1, 3, 64, 64), reasoning=True)
    assert out.probs.shape == (1, 4, 9) and out.chains is not None


LONG_CHAIN = "1 object: red circle. want 1 red circle: see 1. extra: none. " * 3


@pytest.mark.parametrize("texts", [("see 1 red circle.", "", "noise: 0.", "blur 1"),
                                   (LONG_CHAIN, "", "noise: 0.", "blur 1")], ids=["one_forward", "two_chunks"])
def test_rationale_forward_targets_chain_tokens_and_eos_and_reads_the_inference_position(tiny_model, texts,
                                                                                        monkeypatch):
    """CE = −Σ log p(chain_j | prefix) − log p(EOS | prompt+chain); score logits equal `chain_forward`'s — also
    when the rows run in two forwards cut by length (a long alignment chain beside short ones)."""
    from zreward.models.batch import length_chunks
    from zreward.models.scorer import ChainBatch, load_scorer

    sc = load_scorer(tiny_model)
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    prompts, dims = ["a red circle", "two blue squares"], ["alignment", "realism"]
    tok = sc.tokenizer
    chains = [tok.encode(t, add_special_tokens=False) for t in texts]
    cuts = []
    monkeypatch.setattr(sft, "length_chunks", lambda lengths: cuts.append(length_chunks(lengths)) or cuts[-1])
    with torch.no_grad():
        ce, n, ro = sft.rationale_forward(sc, prompts, images, dims, chains)
        # by hand, one sequence at a time: full logits over prompt + chain + close
        pixels = sc.prepare_images(images)
        want, count = 0.0, 0
        for i, c in enumerate(chains):
            if not c:
                continue
            b, d = divmod(i, len(dims))
            batch, pids = sc.encode_items([sc.reasoning_prompt(prompts[b], dims[d])], [b], pixels,
                                          suffix_ids=[c + sc.close_ids])
            logp = sc.model(**batch.inputs, use_cache=False).logits[0].log_softmax(-1)
            p = len(pids[0])
            targets = c + [tok.eos_token_id]
            want -= sum(float(logp[p - 1 + j, t]) for j, t in enumerate(targets))
            count += len(targets)
        cb = ChainBatch([i // 2 for i in range(4)], [i % 2 for i in range(4)],
                        [sc.encode_items([sc.reasoning_prompt(prompts[i // 2], dims[i % 2])], [i // 2], pixels)[1][0]
                         for i in range(4)], chains, [""] * 4)
        ref = sc.chain_forward(cb, pixels).level_logits.view(2, 2, -1)
    assert [len(c) for c in cuts] == [2 if texts[0] == LONG_CHAIN else 1]  # the rows ran in that many forwards
    assert n == count == sum(len(c) + 1 for c in chains if c)
    assert float(ce) == pytest.approx(want, rel=1e-4)
    torch.testing.assert_close(ro.logits, ref, rtol=1e-4, atol=1e-4)


def test_pairwise_sum_huber_and_fidelity_hand_values():
    mean = torch.tensor([[3.0], [2.0], [4.0]])
    std = torch.tensor([[0.0], [0.0], [0.5]])
    mos = torch.tensor([[4.0], [2.0], [1.0]])
    mask = torch.tensor([[True], [True], [False]])
    group = np.array([0, 0, 1])  # only (0, 1) is a within-prompt pair
    target = torch.zeros(3, 1, 9)
    # pred gap 1, target gap 2: Huber(δ=1) of |x| = 1 → δ(|x| − δ/2) = 0.5
    assert float(sft.pairwise_sum(mean, std, group, target, mos, mask, "huber", 1.0)) == pytest.approx(0.5)
    target[0, 0, 6], target[1, 0, 2] = 1.0, 1.0  # labels say a ≻ b for sure; Φ(1/√1e-6) ≈ 1 → loss ≈ 0
    assert float(sft.pairwise_sum(mean, std, group, target, mos, mask, "fidelity", 1.0)) == pytest.approx(0.0, abs=1e-6)
    assert pytest.approx(sft.pair_counts(group, mask.numpy())) == 1


def test_split_by_group_keeps_groups_and_normalisers_single_process():
    group = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    idx = np.arange(8)
    parts = sft.split_by_group(idx, group, 3)
    assert np.concatenate(parts).tolist() == idx.tolist()
    assert len(parts) == 3
    for i, p in enumerate(parts):  # a group never straddles two micro-batches
        for q in parts[i + 1:]:
            assert not set(group[p].tolist()) & set(group[q].tolist())
    assert sft.split_by_group(idx, group, 1)[0].tolist() == idx.tolist()
    assert sft.global_normalisers([5, 0, 3]) == [5.0, 1.0, 3.0]


def test_config_rejects_bad_mode():
    with pytest.raises(ValueError, match="sft.mode"):
        sft.SFTConfig(mode="cot")
    with pytest.raises(ValueError, match="caption_weight"):
        sft.SFTConfig(mode="direct", caption_weight=0.5)  # captioning is kept alive in the cold start only


def test_caption_term_with_extra_train_is_refused_before_anything_is_written(tiny_model, small_world, tmp_path):
    cfg = _cfg(tiny_model, small_world, tmp_path / "run", sft__mode="reasoning", sft__caption_weight=0.5,
               data__extra_train=[str(small_world / "ood")])
    with pytest.raises(ValueError, match="caption_weight.*data.extra_train"):
        sft.train(cfg)
    assert not (tmp_path / "run").exists()


def test_cold_start_caption_term_is_the_captioning_ce_and_is_learned(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer
    from zreward.trainers.caption import caption_forward, split_captions, tokenize_captions
    from zreward.trainers.data import load_train_data

    cfg, logs = _reasoning_run(tiny_model, small_world, tmp_path / "run", 5, sft__caption_weight=0.5)
    assert logs[-1]["caption"] < logs[0]["caption"]
    for e in logs:  # the logged loss is the weighted sum of its terms, the caption term included
        assert e["loss"] == pytest.approx(e["kl"] + e["ce"] + 0.5 * e["caption"], rel=1e-5)
    # step 1's caption term is the captioning CE of the initial model on that batch (mean per caption token + EOS)
    data = load_train_data(small_world / "train")
    ids, texts = split_captions(small_world / "train")
    assert ids == data.ids
    sc = load_scorer(tiny_model)
    caps = tokenize_captions(sc.tokenizer, texts, sft.CaptionConfig.max_tokens)
    idx = sft.group_batch(data, 2, 0, cfg.run.seed)
    with torch.no_grad():
        ce, n, _ = caption_forward(sc, data.image_batch(idx), [caps[i] for i in idx], sft.CaptionConfig.instruction)
    assert logs[0]["caption"] == pytest.approx(float(ce) / n, rel=1e-4)


def test_lora_resume_gives_identical_losses_and_rejects_other_adapters(tiny_model, small_world, tmp_path):
    """`resume_or_seed` restores only the adapters of a LoRA run (every trainer goes through it)."""
    kw = dict(model__lora=True, model__lora_r=4, model__lora_alpha=8, run__save_every=1)
    straight = _cfg(tiny_model, small_world, tmp_path / "straight", run__max_steps=2, **kw)
    straight.data.val = None
    sft.train(straight)
    half = _cfg(tiny_model, small_world, tmp_path / "half", run__max_steps=1, **kw)
    half.data.val = None
    sft.train(half)
    half.run.max_steps = 2
    sft.train(half)  # resume="auto" picks up step_000001
    a, b = read_metrics(tmp_path / "straight" / "metrics.jsonl"), read_metrics(tmp_path / "half" / "metrics.jsonl")
    assert [e["step"] for e in b] == [1, 2]
    assert [e["loss"] for e in a] == pytest.approx([e["loss"] for e in b], rel=1e-5, abs=1e-7)
    # a checkpoint with adapters is not silently loaded into a model trained without them
    full = _cfg(tiny_model, small_world, tmp_path / "half", run__max_steps=3, run__save_every=1)
    full.data.val = None
    with pytest.raises(RuntimeError, match="cannot resume from .*half/checkpoints/step_000002"):
        sft.train(full)


def test_rationale_forward_in_two_chunks_gives_the_gradients_of_one_forward(tiny_factory, monkeypatch):
    """Cutting the rows by length changes no loss and no gradient (right padding: rows do not see each other)."""
    from zreward.models.scorer import load_scorer

    sc = load_scorer(tiny_factory(seed=3))
    sc.model.train()
    torch.manual_seed(0)
    images, prompts, dims = torch.rand(2, 3, 64, 64), ["a red circle", "two blue squares"], ["alignment", "realism"]
    chains = [sc.tokenizer.encode(t, add_special_tokens=False) for t in (LONG_CHAIN, "", "noise: 0.", "blur 1")]
    w = torch.linspace(-1, 1, 9)

    cuts = []
    chunked = sft.length_chunks

    def grads(one_forward: bool):
        monkeypatch.setattr(sft, "length_chunks", (lambda lengths: [list(range(len(lengths)))]) if one_forward
                            else (lambda lengths: cuts.append(chunked(lengths)) or cuts[-1]))
        sc.model.zero_grad()
        ce, _, ro = sft.rationale_forward(sc, prompts, images, dims, chains)
        loss = ce + (ro.logits * w).sum() + 3 * ro.mean[0, 1] - ro.std.sum()
        loss.backward()
        return float(loss), {n: p.grad.clone() for n, p in sc.model.named_parameters() if p.grad is not None}

    (l2, g2), (l1, g1) = grads(False), grads(True)
    assert [len(c) for c in cuts] == [2]  # the compared run really used two forwards
    assert l2 == pytest.approx(l1, rel=1e-5) and g2.keys() == g1.keys() and len(g1) > 10
    for name in g1:
        torch.testing.assert_close(g2[name], g1[name], rtol=1e-4, atol=1e-6, msg=name)


def test_empty_chain_term_is_the_kl_at_the_position_opd_reads_and_is_learned(tiny_model, small_world, tmp_path):
    from zreward.losses import kl_div_levels
    from zreward.models.scorer import load_scorer
    from zreward.trainers.data import load_train_data
    from zreward.trainers.opd import teacher_level_logits

    with pytest.raises(ValueError, match="empty_chain_weight"):
        sft.SFTConfig(mode="direct", empty_chain_weight=1.0)
    cfg, logs = _reasoning_run(tiny_model, small_world, tmp_path / "run", 6, sft__empty_chain_weight=0.5)
    assert logs[-1]["kl_empty"] < logs[0]["kl_empty"]
    for e in logs:
        assert e["loss"] == pytest.approx(e["kl"] + e["ce"] + 0.5 * e["kl_empty"], rel=1e-5)
    # step 1's term: KL(label ‖ p) of the initial model read after its reasoning prompt closed at once — the
    # teacher query OPD makes of a reasoning teacher — summed over labelled rows / their count
    data = load_train_data(small_world / "train")
    sc = load_scorer(tiny_model)
    idx = sft.group_batch(data, 2, 0, cfg.run.seed)
    dims = list(data.dims)
    logits = teacher_level_logits(sc, [data.prompts[i] for i in idx], data.image_batch(idx), dims, "empty_chain")
    mask = torch.as_tensor(data.mask[idx])
    want = kl_div_levels(logits.float(), torch.as_tensor(data.target[idx]), mask, reduction="sum") / mask.sum()
    assert logs[0]["kl_empty"] == pytest.approx(float(want), rel=1e-4)
