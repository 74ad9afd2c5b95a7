"""RL reward functions (losses.rewards) and masked advantages on hand-computed numbers, without a model."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zreward.losses import distribution_rewards, masked_advantages, pair_outcome_rewards, sampled_level_rewards

LEVELS = torch.tensor([1.0, 2.0, 3.0])


def _logits(*rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_distribution_rewards_hand_values():
    lg = _logits([0.5, 0.5, 1e-12], [0.0 + 1e-12, 0.0 + 1e-12, 1.0])  # μ = 1.5 and 3.0
    mos = torch.tensor([2.0, 2.5])
    assert torch.allclose(distribution_rewards(lg, LEVELS, mos, kind="neg_abs"), torch.tensor([-0.5, -0.5]), atol=1e-5)
    assert torch.allclose(distribution_rewards(lg, LEVELS, mos, kind="neg_sq"), torch.tensor([-0.25, -0.25]), atol=1e-5)
    target = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]])
    # KL([.5,.5,0] ‖ [.5,.5,0]) = 0; KL([0,.5,.5] ‖ [0,0,1]) = .5·log(.5/1e-12) + .5·log(.5/1) (1e-12 floor)
    kl2 = 0.5 * math.log(0.5 / 1e-12) + 0.5 * math.log(0.5)
    r = distribution_rewards(lg, LEVELS, mos, target, kind="neg_kl")
    assert r[0].item() == pytest.approx(0.0, abs=1e-5) and r[1].item() == pytest.approx(-kl2, rel=1e-3)
    with pytest.raises(ValueError, match="needs the target"):
        distribution_rewards(lg, LEVELS, mos, kind="neg_kl")
    with pytest.raises(ValueError, match="reward kind"):
        distribution_rewards(lg, LEVELS, mos, kind="bogus")


def test_distribution_rewards_carry_no_gradient():
    lg = torch.zeros(2, 3, requires_grad=True)
    assert not distribution_rewards(lg, LEVELS, torch.tensor([1.0, 2.0])).requires_grad


def test_sampled_level_rewards_argmax_and_exact():
    lg = _logits([0.1, 0.7, 0.2], [0.6, 0.3, 0.1])  # argmax levels 2.0 and 1.0
    mos = torch.tensor([2.2, 2.0])
    r, idx = sampled_level_rewards(lg, LEVELS, mos, mode="argmax")
    assert idx.tolist() == [1, 0]
    assert torch.allclose(r, torch.tensor([-0.2, -1.0]))
    r, _ = sampled_level_rewards(lg, LEVELS, mos, mode="argmax", kind="exact", tol=0.25)
    assert r.tolist() == [1.0, 0.0]


def test_sampled_level_rewards_sample_follows_distribution():
    lg = _logits([1e-9, 1.0 - 2e-9, 1e-9], [0.5, 1e-9, 0.5])
    gen = torch.Generator().manual_seed(0)
    counts = torch.zeros(3)
    for _ in range(200):
        _, idx = sampled_level_rewards(lg, LEVELS, torch.tensor([2.0, 2.0]), generator=gen)
        assert idx[0].item() == 1 and idx[1].item() in (0, 2)
        counts[idx[1]] += 1
    assert 60 < counts[0] < 140  # both outer levels drawn about equally


def test_masked_advantages_zero_for_unlabelled_groups():
    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 9.0, 1.0])
    labelled = torch.tensor([True, True, True, False, False, False])
    adv = masked_advantages(rewards, labelled, group_size=3)
    # group 1: mean 2, Bessel std 1 → (−1, 0, 1)/(1 + 1e-4); group 2 unlabelled → 0
    exp = torch.tensor([-1.0, 0.0, 1.0]) / (1 + 1e-4)
    assert torch.allclose(adv[:3], exp) and adv[3:].eq(0).all()


def test_pair_outcome_rewards_hand_values():
    # one prompt group of 3 images (0, 1, 2) and a singleton (3); one dim; G = 2 chains
    mu = torch.tensor([[[3.0, 1.5]], [[2.0, 2.0]], [[1.0, 3.0]], [[4.0, 1.0]]])
    mos = torch.tensor([[3.0], [2.0], [1.0], [5.0]])
    lab = torch.ones(4, 1, dtype=torch.bool)
    r = pair_outcome_rewards(mu, mos, lab, np.array([0, 0, 0, 1]))
    # partner means: image 0 → 2.25, image 1 → 2.0, image 2 → 2.0
    # image 0 (MOS 3 > both): chain 3.0 beats 2.0 and 2.0 → 1; chain 1.5 loses to both → 0
    assert r[0, 0].tolist() == [1.0, 0.0]
    # image 1 (MOS 2): above image 2 (mean 2.0), below image 0 (mean 2.25). Chains 2.0: tie vs image 2 (½),
    # correct vs image 0 (1) → 0.75
    assert r[1, 0].tolist() == [0.75, 0.75]
    # image 2 (MOS 1, below both): chain 1.0 below 2.25 and 2.0 → 1; chain 3.0 above both → 0
    assert r[2, 0].tolist() == [1.0, 0.0]
    assert r[3, 0].tolist() == [0.0, 0.0]  # no partner: 0


def test_pair_outcome_rewards_skip_unlabelled_and_tied_partners():
    mu = torch.tensor([[[3.0, 1.0]], [[2.0, 2.0]], [[9.0, 9.0]]])
    mos = torch.tensor([[3.0], [3.0], [1.0]])
    lab = torch.tensor([[True], [True], [False]])
    r = pair_outcome_rewards(mu, mos, lab, [0, 0, 0])
    # image 0's partners: image 1 has the same MOS (no outcome), image 2 is unlabelled → no pair → 0
    assert r.eq(0).all()
    with pytest.raises(ValueError, match="group_ids"):
        pair_outcome_rewards(mu, mos, lab, [0, 0])
    assert not pair_outcome_rewards(mu.requires_grad_(), mos, lab, [0, 0, 0]).requires_grad


def test_std_floor_keeps_advantages_proportional_to_reward_differences():
    # near-flat group (spread 0.002) and an informative one (spread 1): TRL's std + eps blows both to unit size
    r = torch.tensor([0.0, 0.002, 0.0, 1.0], dtype=torch.float64)
    trl = masked_advantages(r, torch.ones(4, dtype=torch.bool), 2)
    floor = masked_advantages(r, torch.ones(4, dtype=torch.bool), 2, std_floor=0.1)
    s1, s2 = math.sqrt(2) * 0.001, math.sqrt(2) * 0.5  # Bessel std of each group
    assert trl[1].item() == pytest.approx(0.001 / (s1 + 1e-4)) and trl[1].item() > 0.6  # 1/√2 at zero eps
    assert floor.tolist() == pytest.approx([-0.001 / 0.1, 0.001 / 0.1, -0.5 / (s2 + 1e-4), 0.5 / (s2 + 1e-4)])
    dr = masked_advantages(r, torch.ones(4, dtype=torch.bool), 2, scale="none")  # Dr. GRPO: r − mean
    assert dr.tolist() == pytest.approx([-0.001, 0.001, -0.5, 0.5])
    # batch scale: floor on the batch std (here std ≈ 0.5 > floor: unchanged)
    b = masked_advantages(r, torch.ones(4, dtype=torch.bool), 2, scale="batch", std_floor=0.1)
    sb = r.std().item()
    d = sb + 1e-4
    assert b.tolist() == pytest.approx([-0.001 / d, 0.001 / d, -0.5 / d, 0.5 / d])
    with pytest.raises(ValueError, match="std_floor"):
        masked_advantages(r, torch.ones(4, dtype=torch.bool), 2, std_floor=-1.0)
