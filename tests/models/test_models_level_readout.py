"""Level readout maths on hand-computed values."""
from __future__ import annotations

import math

import torch

from zreward.models import level_readout


def test_readout_hand_computed():
    levels = torch.tensor([1.0, 3.0, 5.0])
    # Full vocab of 5 tokens; levels are ids 4, 1, 2. Level weights 1:2:1, the non-level token 0 has weight 4.
    full = torch.log(torch.tensor([4.0, 2.0, 1.0, 1e-30, 1.0]))
    out = level_readout.readout(full, [4, 1, 2], levels)
    assert torch.allclose(out.probs, torch.tensor([0.25, 0.5, 0.25]), atol=1e-6)
    assert math.isclose(out.mean.item(), 3.0, abs_tol=1e-6)
    assert math.isclose(out.std.item(), math.sqrt(2.0), abs_tol=1e-5)  # var = .25·4 + .25·4
    assert math.isclose(out.in_level_mass.item(), 0.5, abs_tol=1e-6)  # 4 / (4 + 4)


def test_readout_batched_shapes_and_validity():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 9, generator=g) * 3
    levels = torch.linspace(1, 5, 9)
    out = level_readout.readout_from_level_logits(logits, levels)
    assert out.probs.shape == (3, 4, 9) and out.mean.shape == (3, 4)
    assert torch.allclose(out.probs.sum(-1), torch.ones(3, 4), atol=1e-6)
    assert (out.mean >= 1).all() and (out.mean <= 5).all()
    ref_std = ((out.probs * (levels - out.mean.unsqueeze(-1)) ** 2).sum(-1)).sqrt()
    assert torch.allclose(out.std, ref_std, atol=1e-5)


def test_mean_gradient_direction_and_one_hot_edge():
    levels = torch.linspace(1, 5, 9)
    logits = torch.zeros(9, requires_grad=True)
    level_readout.readout_from_level_logits(logits, levels).mean.backward()
    # d mean / d logit_k = p_k (level_k - mean): negative below the mean (3.0), positive above.
    assert (logits.grad[:4] < 0).all() and (logits.grad[5:] > 0).all() and abs(logits.grad[4]) < 1e-7
    one_hot = torch.full((9,), -1e4)
    one_hot[8] = 0
    one_hot.requires_grad_(True)
    out = level_readout.readout_from_level_logits(one_hot, levels)
    out.std.backward()
    assert math.isclose(out.mean.item(), 5.0, abs_tol=1e-5) and out.std.item() < 1e-5
    assert torch.isfinite(one_hot.grad).all()


def test_reward_weights_and_uncertainty():
    mean = torch.tensor([[3.0, 1.0]])
    std = torch.tensor([[1.0, 0.0]])
    w = torch.tensor([3.0, 1.0])  # normalised to 0.75 / 0.25
    assert torch.allclose(level_readout.reward_from_readout(mean, std, w), torch.tensor([2.5]))
    assert torch.allclose(level_readout.reward_from_readout(mean, std, w, 0.5), torch.tensor([0.75 * 2.5 + 0.25 * 1.0]))
