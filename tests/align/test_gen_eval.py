"""GSB by simulated raters: hand-made arithmetic, same-seed pairing, and the reward_fn callable."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.align import gen_eval
from zreward.align.gen_eval import evaluate_gsb, rater_judgements
from zreward.data.shapes_world import annotators
from zreward.data.shapes_world.annotators import RaterPool
from zreward.eval.gsb import gsb


def _pool(r=5):
    return RaterPool(bias=np.zeros((r, 4)), weights=np.tile([0.4, 0.2, 0.2, 0.2], (r, 1)))


def test_gsb_hand_made(monkeypatch):
    """3 clearly better, 1 clearly worse, 1 identical (noise off) -> G=3, S=1, B=1, net = (3-1)/5 = 0.4."""
    monkeypatch.setattr(annotators, "SIGMA", (0.0, 0.0, 0.0, 0.0))
    a = np.array([[5, 5, 5, 5], [4.5, 5, 5, 5], [5, 3, 5, 5], [1, 5, 5, 5], [3, 3, 3, 3]], dtype=float)
    b = np.array([[1, 5, 5, 5], [2.0, 5, 5, 5], [5, 1, 5, 5], [5, 5, 5, 5], [3, 3, 3, 3]], dtype=float)
    judg, counts = rater_judgements(a, b, _pool(), np.random.default_rng(0))
    assert judg.tolist() == [1, 1, 1, -1, 0]
    assert counts[0].tolist() == [5, 0, 0] and counts[4].tolist() == [0, 0, 5]
    rep = gsb(judg, n_boot=200, seed=0)
    assert (rep["good"], rep["same"], rep["bad"]) == (3, 1, 1)
    assert rep["net"] == pytest.approx(0.4)
    assert rep["net_lo"] <= 0.4 <= rep["net_hi"]


def test_tie_margin_and_majority(monkeypatch):
    """Overall differences below 0.25 are ties for every rater; a 0.5 gap on realism (w 0.2) is 0.1 -> Same."""
    monkeypatch.setattr(annotators, "SIGMA", (0.0, 0.0, 0.0, 0.0))
    a = np.array([[5, 5, 5, 5], [5, 5, 5, 5]], dtype=float)
    b = np.array([[5, 4.5, 5, 5], [4.0, 5, 5, 5]], dtype=float)  # overall gaps 0.1 and 0.4
    judg, _ = rater_judgements(a, b, _pool(3), np.random.default_rng(0))
    assert judg.tolist() == [0, 1]


def test_evaluate_same_generator_pairs_identically(tiny_gen_dir, small_world, tmp_path):
    """A vs A with the same seeds: identical images, so identical oracle means (pairing is per prompt+seed)."""
    rep = evaluate_gsb(tiny_gen_dir, tiny_gen_dir, 5, tmp_path / "ev", seed=1, data=small_world)
    assert rep["n_prompts"] == 5 and rep["good"] + rep["same"] + rep["bad"] == 5
    assert rep["oracle_tuned"] == rep["oracle_sft"]
    assert all(v == 0 for v in rep["oracle_delta"].values())
    assert set(rep) >= {"net_gsb", "net_gsb_ci", "n_prompts", "oracle_sft", "oracle_tuned"}
    assert (tmp_path / "ev" / "side_by_side.png").is_file() and (tmp_path / "ev" / "gsb.json").is_file()
    assert gen_eval.GOAL_NET_GSB == 0.413


def test_reward_fn_matches_scorer_reward(tiny_model):
    from zreward.align.reward_fn import ScorerRewardFn

    fn = ScorerRewardFn(tiny_model, uncertainty_lambda=0.5)
    imgs = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    prompts = ["a red circle", "two blue squares", "a green triangle on top of a yellow square"]
    scores, stds = fn(prompts, imgs)
    with torch.no_grad():
        ref = fn.scorer.reward(prompts, imgs, uncertainty_lambda=0.5)
    assert torch.allclose(scores, ref, atol=1e-5)
    assert scores.shape == stds.shape == (3,) and (stds >= 0).all()
    u8 = (imgs.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    s2, _ = fn(prompts, u8)  # uint8 (B, H, W, 3) input goes through the same path (up to quantisation)
    assert torch.allclose(s2, scores, atol=0.05)
    with pytest.raises(ValueError, match="expected"):
        fn(prompts, torch.rand(3, 64, 64))


def test_reward_fn_docstring_example_runs():
    import doctest

    from zreward.align import reward_fn

    res = doctest.testmod(reward_fn, verbose=False)
    assert res.attempted >= 5 and res.failed == 0
