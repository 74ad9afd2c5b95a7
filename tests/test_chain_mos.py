"""benchmarks/chain_mos.py: score-vs-MOS correlation after a scorer's own chains and after the true rationales."""
from __future__ import annotations

import json

import numpy as np
from benchmark_scripts import load_benchmark

import torch

from zreward import load_scorer
from zreward.metrics import plcc
from zreward.models.scorer import ChainBatch
from zreward.trainers.data import load_train_data
from zreward.trainers.sft import tokenize_rationales


def _module():
    return load_benchmark("chain_mos")


def test_true_reading_is_the_score_after_the_true_rationale_whatever_the_batch(small_world, tiny_model):
    mod = _module()
    sc = load_scorer(tiny_model)
    sc.model.eval()
    data = load_train_data(small_world / "val", max_images=7)
    idx = np.arange(7)
    own_a, true_a, texts = mod.expected_scores(sc, data, idx, sc.dims, samples=1, batch=7)
    own_b, true_b, _ = mod.expected_scores(sc, data, idx, sc.dims, samples=1, batch=3)
    assert true_a.shape == own_a.shape == (7, len(sc.dims))
    assert len(texts) == 7 and all(len(t) == len(sc.dims) for t in texts)
    np.testing.assert_allclose(true_a, true_b, atol=1e-4)
    assert ((true_a >= 1.0) & (true_a <= 5.0)).all()
    # the same readout through the Scorer's own teacher-forced path: prompt + the true rationale + close
    pixels = sc.prepare_images(data.image_batch(idx))
    items = [(b, d) for b in range(7) for d in sc.dims]
    texts = [sc.reasoning_prompt(data.prompts[b], d) for b, d in items]
    image_index = [b for b, _ in items]
    chains = tokenize_rationales(sc.tokenizer, data, idx, sc.dims, max_tokens=sc.config.max_new_tokens)
    assert all(chains)
    cb = ChainBatch(image_index, [sc.dims.index(d) for _, d in items], sc.tokenize_items(texts, image_index, pixels),
                    chains, texts)
    with torch.no_grad():
        cf = sc.chain_forward(cb, pixels, with_tokens=False)
    mean = (torch.softmax(cf.level_logits.float(), -1) @ sc.levels.float()).view(7, len(sc.dims)).numpy()
    np.testing.assert_allclose(true_a, mean, atol=1e-4)


def test_correlations_point_is_the_metric_and_inside_its_ci():
    mod = _module()
    rng = np.random.default_rng(0)
    mos = rng.uniform(1, 5, 60)
    pred = mos + rng.normal(0, 1.0, 60)
    out = mod.correlations(pred, mos, np.repeat(np.arange(15), 4), n_boot=200)
    assert abs(out["plcc"][0] - round(float(plcc(pred, mos)), 4)) < 1e-9
    for name in ("plcc", "srcc"):
        point, lo, hi = out[name]
        assert lo <= point <= hi and 0.3 < point < 1.0


def test_by_chain_splits_exact_and_wrong_chains_on_hand_numbers():
    own = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    true = np.array([1.0, 2.0, 3.0, 1.0, 1.0, 1.0])
    mos = np.array([1.0, 2.0, 3.0, 6.0, 5.0, 4.0])
    out = _module().by_chain(own, true, mos, np.array([True, True, True, False, False, False]))
    assert out["exact_share"] == 0.5
    assert out["exact"] == {"n": 3, "plcc_own": 1.0, "mean_abs_own_minus_true": 0.0}
    # wrong chains: own 4, 5, 6 against MOS 6, 5, 4 (PLCC -1) and against true 1, 1, 1 (|3|, |4|, |5| -> 4)
    assert out["wrong"] == {"n": 3, "plcc_own": -1.0, "mean_abs_own_minus_true": 4.0}
    small = _module().by_chain(own[3:5], true[3:5], mos[3:5], np.array([True, False]))  # own 4, 5 vs true 1, 1
    assert small["exact"]["plcc_own"] is None and small["exact"]["mean_abs_own_minus_true"] == 3.0
    assert small["wrong"] == {"n": 1, "plcc_own": None, "mean_abs_own_minus_true": 4.0}


def test_exact_chains_compare_each_images_chain_of_that_dim_with_its_rationale():
    rationales = [{"alignment": "want 1 red circle: see 1.", "realism": "noise: 0.00."},
                  {"alignment": "want 2 blue square: see 1."}, {}]
    texts = [["want 1 red circle: see 1. ", "noise: 0.10."],  # image 0: right, wrong
             ["want 2 blue square: see 2.", "noise: 0.00."],  # image 1: wrong, no realism rationale
             ["", ""]]                                          # image 2: no rationale, empty chains
    rows = np.array([0, 1, 2])
    assert _module().exact_chains(texts, rationales, rows, 0, "alignment").tolist() == [True, False, False]
    assert _module().exact_chains(texts, rationales, rows, 1, "realism").tolist() == [False, False, False]
    # the n-th texts belong to image rows[n]
    assert _module().exact_chains([texts[2], texts[0]], rationales, np.array([2, 0]), 0, "alignment").tolist() == [
        False, True]


def test_greedy_main_splits_readings_by_chain(small_world, tiny_model, capsys):
    assert _module().main([str(tiny_model), str(small_world / "val"), "--images", "6", "--samples", "1",
                           "--n-boot", "20"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for reading in out["dims"].values():
        split = reading["by_chain"]
        assert split["exact"]["n"] + split["wrong"]["n"] == 6
        assert split["exact_share"] == round(split["exact"]["n"] / 6, 4)


def test_main_prints_both_readings_per_dim(small_world, tiny_model, capsys):
    assert _module().main([str(tiny_model), str(small_world / "val"), "--images", "6", "--samples", "2",
                           "--temperature", "0.5", "--n-boot", "50"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["images"] == 6 and out["temperature"] == 0.5
    assert set(out["dims"]) == set(load_scorer(tiny_model).dims)
    for reading in out["dims"].values():
        assert set(reading) == {"own", "true"} and len(reading["own"]["plcc"]) == 3  # M > 1: no by_chain
