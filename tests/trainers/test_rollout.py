"""Shared RL stages (zreward.trainers.rollout): rewards, advantages, score token, moments, batching — hand-computed."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zreward.trainers import rollout as R

LEVELS = torch.tensor([1.0, 2.0, 3.0])


def _logits(*rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_distribution_rewards_hand_values():
    lg = _logits([0.5, 0.5, 1e-12], [0.0 + 1e-12, 0.0 + 1e-12, 1.0])  # μ = 1.5 and 3.0
    mos = torch.tensor([2.0, 2.5])
    r_abs, r_sq = (R.distribution_rewards(lg, LEVELS, mos, kind=k) for k in ("neg_abs", "neg_sq"))
    assert torch.allclose(r_abs, torch.tensor([-0.5, -0.5]), atol=1e-5)
    assert torch.allclose(r_sq, torch.tensor([-0.25, -0.25]), atol=1e-5)
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    # KL([.5,.5,0] ‖ [.5,.5,0]) = 0; KL([0,.5,.5] ‖ [0,0,1]) = .5·log(.5/1e-12) + .5·log(.5/1) (1e-12 floor)
    kl2 = 0.5 * math.log(0.5 / 1e-12) + 0.5 * math.log(0.5)
    r = R.distribution_rewards(lg, LEVELS, mos, target, kind="neg_kl")
    assert r[0].item() == pytest.approx(0.0, abs=1e-5) and r[1].item() == pytest.approx(-kl2, rel=1e-3)
    with pytest.raises(ValueError, match="needs the target"):
        R.distribution_rewards(lg, LEVELS, mos, kind="neg_kl")
    with pytest.raises(ValueError, match="reward kind"):
        R.distribution_rewards(lg, LEVELS, mos, kind="bogus")


def test_distribution_rewards_carry_no_gradient():
    lg = torch.zeros(2, 3, requires_grad=True)
    assert not R.distribution_rewards(lg, LEVELS, torch.tensor([1.0, 2.0])).requires_grad


def test_sampled_level_rewards_argmax_and_exact():
    lg = _logits([0.1, 0.7, 0.2], [0.6, 0.3, 0.1])  # argmax levels 2.0 and 1.0
    mos = torch.tensor([2.2, 2.0])
    r, idx = R.sampled_level_rewards(lg, LEVELS, mos, mode="argmax")
    assert idx.tolist() == [1, 0]
    assert torch.allclose(r, torch.tensor([-0.2, -1.0]))
    r, _ = R.sampled_level_rewards(lg, LEVELS, mos, mode="argmax", kind="exact", tol=0.25)
    assert r.tolist() == [1.0, 0.0]


def test_sampled_level_rewards_sample_follows_distribution():
    lg = _logits([1e-9, 1.0 - 2e-9, 1e-9], [0.5, 1e-9, 0.5])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(200):
        _, idx = R.sampled_level_rewards(lg, LEVELS, torch.tensor([2.0, 2.0]), generator=gen)
        assert idx[0].item() == 1 and idx[1].item() in (0, 2)
        counts[idx[1]] += 1
    assert 60 < counts[0] < 140  # both outer levels drawn about equally


def test_masked_advantages_zero_for_unlabelled_groups():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 9.0, 1.0])
    labelled = torch.tensor([True, True, True, False, False, False])
    adv = R.masked_advantages(rewards, labelled, group_size=3)
    # group 1: mean 2, Bessel std 1 → (−1, 0, 1)/(1 + 1e-4); group 2 unlabelled → 0
    exp = torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-4)
    assert torch.allclose(adv[:3], exp) and adv[3:].eq(0).all()


def test_with_score_token_appends_level_logprob_and_its_gradient():
    tok = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    lg = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]], requires_grad=True)
    logp, m = R.with_score_token(tok, mask, lg, torch.tensor([2, 0]))
    lsm = torch.log_softmax(lg.detach(), -1)
    assert logp.shape == (2, 3) and m.tolist() == [[1, 1, 1], [1, 0, 1]]
    assert torch.allclose(logp[:, :2], tok)
    assert torch.allclose(logp[:, 2], torch.stack([lsm[0, 2], lsm[1, 0]]))
    logp[0, 2].backward()  # d log p_k / d logits = onehot_k − p
    assert torch.allclose(lg.grad[0], torch.tensor([0.0, 0.0, 1.0]) - lsm[0].exp())
    assert lg.grad[1].eq(0).all()


def test_group_moments_hand_values():
    # 1 image, 2 dims, G = 2: dim 0 chains μ = 1 and 3 → 2; dim 1 chains μ = 2 and 2 → 2 with std 0 and 1
    lg = _logits([1, 1e-12, 1e-12], [1e-12, 1e-12, 1], [1e-12, 1, 1e-12], [0.5, 1e-12, 0.5])
    mu, sd = R.group_moments(lg, LEVELS, n_images=1, n_dims=2, group_size=2)
    assert torch.allclose(mu, torch.tensor([[2.0, 2.0]]), atol=1e-5)
    assert torch.allclose(sd, torch.tensor([[0.0, 0.5]]), atol=1e-4)


def test_micro_batches_keep_prompt_groups_whole():
    groups = np.array([7, 7, 3, 3, 3, 9])
    parts = R.micro_batches(groups, 2)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3, 4], [5]]
    assert [p.tolist() for p in R.micro_batches(groups, None)] == [[0, 1, 2, 3, 4, 5]]


def test_step_dims_is_seeded_subset():
    dims = ["a", "b", "c", "d"]
    assert R.step_dims(dims, None, 0, 5) == dims
    s = R.step_dims(dims, 2, 0, 5)
    assert len(s) == 2 and set(s) <= set(dims) and s == R.step_dims(dims, 2, 0, 5)
    assert len({tuple(R.step_dims(dims, 1, 0, k)) for k in range(30)}) > 1


def test_labels_per_chain_order():
    lab = R.Labels(mos=torch.tensor([[1.0, 2.0], [3.0, 4.0]]), std=torch.zeros(2, 2),
                   target=torch.eye(2).expand(2, 2, 2).clone(), mask=torch.tensor([[True, False], [True, True]]))
    mos, target, mask = lab.per_chain(2)
    assert mos.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert mask.tolist() == [True, True, False, False, True, True, True, True]
    assert target.shape == (8, 2) and target[2].tolist() == [0.0, 1.0]


def test_rollout_order_and_subset(tiny_scorer_dir):
    from zreward.models.scorer import load_scorer

    sc = load_scorer(tiny_scorer_dir)
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    ro = R.rollout(sc, ["a red circle", "a blue square", "two green stars"], images, ["alignment", "realism"],
                   group_size=2, max_new_tokens=5, temperature=1.0)
    assert len(ro.chains.chain_ids) == 3 * 2 * 2 and ro.n_images == 3
    assert ro.chains.image_index == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert ro.chains.dim_index == [0, 0, 1, 1] * 3
    assert all(len(c) <= 5 for c in ro.chains.chain_ids)
    sub, rows = R.subset(ro, np.array([2]))
    assert rows.tolist() == [8, 9, 10, 11] and sub.chains.image_index == [2, 2, 2, 2]
    assert sub.chains.chain_ids == ro.chains.chain_ids[8:]
    cf = R.score_chains(sc, sub)
    assert cf.level_logits.shape == (4, 9) and cf.token_logprobs.shape[0] == 4


@pytest.fixture(scope="module")
def tiny_scorer_dir(tmp_path_factory):
    from zreward.models.tiny import init_tiny

    out = tmp_path_factory.mktemp("tiny_rollout")
    init_tiny("qwen2_vl", out, preset="tiny", seed=0)
    return out
