"""RewardDance yes/no cross-entropy on hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zreward.losses import yes_no_ce, yes_probability

YES, NO = 2, 1


def _vocab_logits() -> torch.Tensor:
    # softmax = [.1, .2, .3, .4]: P(yes) = .3, P(no) = .2 under the full softmax; .6 / .4 restricted
    return torch.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=torch.float64).log()


def test_full_vocab_is_next_token_ce():
    logits = _vocab_logits()
    full = yes_no_ce(logits, torch.tensor([1.0]), YES, NO)
    assert abs(full.item() - (-math.log(0.3))) < 1e-12
    torch.testing.assert_close(full, F.cross_entropy(logits, torch.tensor([YES])))
    soft = yes_no_ce(logits, torch.tensor([0.25]), YES, NO)
    assert abs(soft.item() - (-(0.25 * math.log(0.3) + 0.75 * math.log(0.2)))) < 1e-12


def test_restricted_hand_values():
    logits = _vocab_logits()
    r = yes_no_ce(logits, torch.tensor([1.0]), YES, NO, normalize="restricted")
    assert abs(r.item() - (-math.log(0.6))) < 1e-12
    two = torch.tensor([[math.log(3.0), 0.0]] * 3, dtype=torch.float64)  # (yes, no): P(yes) = .75
    per = yes_no_ce(two, torch.tensor([1.0, 0.0, 0.5]), normalize="restricted", reduction="none")
    l1, l0 = -math.log(0.75), -math.log(0.25)
    torch.testing.assert_close(per, torch.tensor([l1, l0, 0.5 * (l1 + l0)], dtype=torch.float64))
    torch.testing.assert_close(yes_probability(two), torch.full((3,), 0.75, dtype=torch.float64))
    torch.testing.assert_close(yes_probability(logits, YES, NO), torch.tensor([0.6], dtype=torch.float64))
    torch.testing.assert_close(yes_probability(logits, YES, NO, normalize="full"),
                               torch.tensor([0.3], dtype=torch.float64))


def test_gradients_full_vs_restricted():
    logits = _vocab_logits().requires_grad_(True)
    yes_no_ce(logits, torch.tensor([1.0]), YES, NO).backward()
    # full: grad = softmax − onehot(yes) -> pushes down the other tokens too
    torch.testing.assert_close(logits.grad, torch.tensor([[0.1, 0.2, -0.7, 0.4]], dtype=torch.float64))
    logits.grad = None
    yes_no_ce(logits, torch.tensor([1.0]), YES, NO, normalize="restricted").backward()
    # restricted: only the two logits move: d/dl_yes = σ(d) − 1 = −.4, d/dl_no = +.4
    torch.testing.assert_close(logits.grad, torch.tensor([[0.0, 0.4, -0.4, 0.0]], dtype=torch.float64))


def test_mask_and_errors():
    logits = torch.zeros(2, 5, requires_grad=True)
    loss = yes_no_ce(logits, torch.tensor([1.0, float("nan")]), 0, 1, mask=torch.tensor([True, False]))
    assert abs(loss.item() - math.log(5)) < 1e-6
    loss.backward()
    assert torch.equal(logits.grad[1], torch.zeros(5))
    none = yes_no_ce(logits, torch.ones(2), 0, 1, mask=torch.zeros(2, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad
    with pytest.raises(ValueError, match="only allow normalize='restricted'"):
        yes_no_ce(torch.zeros(2, 2), torch.ones(2))
    with pytest.raises(ValueError, match=r"target\[1\] = 2.0"):
        yes_no_ce(logits, torch.tensor([1.0, 2.0]), 0, 1)
    with pytest.raises(ValueError, match="two different ids"):
        yes_no_ce(logits, torch.ones(2), 0, 7)
    with pytest.raises(ValueError, match="give both"):
        yes_no_ce(logits, torch.ones(2), 0)
