"""GRPO baseline: a short run improves its reward and saves a loadable scorer; exact resume; the PG loss covers the
chain tokens and the chosen score token."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.trainers import grpo
from zreward.trainers import rollout as R
from zreward.trainers.rl import MicroBatch
from zreward.trainers.run_utils import read_metrics


def _cfg(tiny_model, world, out, steps=6, **g):
    cfg = grpo.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(world / "train"), None
    cfg.data.prompts_per_batch, cfg.data.max_per_prompt = 2, 3
    cfg.optim.lr = 1e-2
    cfg.run.output_dir, cfg.run.max_steps, cfg.run.progress = str(out), steps, False
    cfg.grpo.group_size, cfg.grpo.max_new_tokens, cfg.grpo.dims_per_step = 4, 3, 2
    for k, v in g.items():
        setattr(cfg.grpo, k, v)
    return cfg


def test_grpo_short_run_improves_reward_and_saves(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer

    final = grpo.train(_cfg(tiny_model, small_world, tmp_path / "run", steps=10))
    m = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert len(m) == 10 and all(np.isfinite(e["loss"]) for e in m)
    # a sampled chain as text on every line (what run.trackers shows as text): "<prompt> | <dim>: <chain>"
    assert all(isinstance(e["sample_chain"], str) and " | " in e["sample_chain"] for e in m)
    # MOS are mostly high (4-5); a random scorer's expectation sits near 3, so the error must shrink
    first, last = np.mean([e["mu_abs_err"] for e in m[:2]]), np.mean([e["mu_abs_err"] for e in m[-2:]])
    assert last < first - 0.1, (first, last)
    sc = load_scorer(final)
    assert sc.config.mode == "reasoning" and sc.config.max_new_tokens == 3
    out = sc.score(["a red circle"], torch.rand(1, 3, 64, 64), reasoning=True)
    assert out.probs.shape == (1, 4, 9)


def test_grpo_resume_gives_identical_losses(tiny_model, small_world, tmp_path):
    kw = dict(kl_coef=0.1, ppo_epochs=2, dims_per_step=1, reward="exact")
    grpo.train(_cfg(tiny_model, small_world, tmp_path / "a", steps=2, **kw))
    cfg = _cfg(tiny_model, small_world, tmp_path / "b", steps=1, **kw)
    grpo.train(cfg)
    cfg.run.max_steps = 2
    grpo.train(cfg)
    a, b = read_metrics(tmp_path / "a" / "metrics.jsonl"), read_metrics(tmp_path / "b" / "metrics.jsonl")
    for key in ("loss", "kl", "reward_mean", "mu_abs_err"):
        assert [e[key] for e in a] == pytest.approx([e[key] for e in b], rel=1e-5, abs=1e-7), key


def test_pg_covers_chain_and_score_token(tiny_model, small_world, leafy_score_chains):
    """d loss / d logp = −A_i / (|chain_i| + 1) on chain tokens; d loss / d level logits = that × (onehot − p)."""
    from zreward.models.scorer import load_scorer
    from zreward.trainers.data import load_train_data

    captured = leafy_score_chains
    sc = load_scorer(tiny_model)
    data = load_train_data(small_world / "train", max_images=4)
    idx = np.arange(4)
    lab = R.batch_labels(data, idx, [0], sc.levels)
    torch.manual_seed(0)
    ro = R.rollout(sc, [data.prompts[i] for i in idx], data.image_batch(idx), data.dims[:1], 3, 4, 1.0)
    g = grpo.GRPOConfig(max_new_tokens=4)
    loss, _, state = grpo.grpo_losses(g, sc, MicroBatch(ro, None, lab, data.group[idx]), None, None)
    loss.backward()
    cf = captured["cf"]
    m = cf.token_mask.float()
    n = m.shape[0]
    scale = -state.advantages / (m.sum(1) + 1) / n  # (N,): one score token per chain
    assert torch.allclose(cf.token_logprobs.grad, scale.unsqueeze(1) * m, atol=1e-6)
    onehot = torch.nn.functional.one_hot(state.level, 9).float()
    p = torch.softmax(cf.level_logits.detach(), -1)
    assert torch.allclose(cf.level_logits.grad, scale.unsqueeze(1) * (onehot - p), atol=1e-6)
    assert state.advantages.abs().sum() > 0  # the check is not vacuous


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="grpo.level_choice"):
        grpo.GRPOConfig(level_choice="mode")
    with pytest.raises(ValueError, match="grpo.reward"):
        grpo.GRPOConfig(reward="neg_kl")
