"""Pairwise losses on hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from zreward.losses import (bradley_terry, pair_target_thurstone, pair_target_win_prob, score_gap_huber,
                            thurstone_fidelity)

PHI1 = 0.5 * (1 + math.erf(1 / math.sqrt(2)))  # Φ(1) = 0.8413447...


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_fidelity_hand_values_including_tie():
    s = math.sqrt(0.5)  # σa² + σb² = 1 -> z = Δμ = 1
    loss = thurstone_fidelity(_t(1.0, 1.0, 1.0, 2.0), _t(s, s, s, 0.3), _t(0.0, 0.0, 0.0, 2.0), _t(s, s, s, 0.4),
                              _t(1.0, 0.0, 0.5, 0.5), var_eps=0.0, reduction="none")
    assert abs(PHI1 - 0.8413447460685429) < 1e-12
    expected = _t(1 - math.sqrt(PHI1),                                      # P = 1
                  1 - math.sqrt(1 - PHI1),                                  # P = 0
                  1 - math.sqrt(0.5 * PHI1) - math.sqrt(0.5 * (1 - PHI1)),  # tie
                  0.0)                                                      # tie, equal means: P̂ = .5
    torch.testing.assert_close(loss, expected)
    assert abs(expected[0].item() - 0.0827524) < 1e-6 and abs(expected[2].item() - 0.0697553) < 1e-6


def test_fidelity_gradient_direction_and_saturation():
    mu_a = _t(1.0, 0.0, 40.0).requires_grad_(True)
    mu_b = _t(0.0, 0.0, 0.0)
    sig = _t(0.5, 0.5, 0.5).requires_grad_(True)
    p = _t(1.0, 0.0, 1.0)  # row 2: P̂ = Φ(56) == 1 exactly and P = 1 -> √0 terms must not give NaN
    thurstone_fidelity(mu_a, sig, mu_b, _t(0.5, 0.5, 0.5), p).backward()
    assert torch.isfinite(mu_a.grad).all() and torch.isfinite(sig.grad).all()
    assert mu_a.grad[0] < 0 < mu_a.grad[1]  # a should win row 0 more clearly, lose row 1
    assert sig.grad[0] > 0  # shrinking σ sharpens the right preference
    assert mu_a.grad[2] == 0.0


def test_fidelity_zero_sigma_and_mask():
    zero = _t(0.0, 0.0)
    loss = thurstone_fidelity(_t(3.0, 1.0), zero, _t(3.0, 0.0), zero, _t(0.5, float("nan")),
                              mask=torch.tensor([True, False]))
    assert abs(loss.item()) < 1e-12  # equal means, σ = 0 (var_eps keeps z = 0 finite), tie target
    with pytest.raises(ValueError, match=r"p_target\[\(1,\)\] = 1.5"):
        thurstone_fidelity(zero, zero + 1, zero, zero + 1, _t(0.5, 1.5))


def test_bradley_terry_hand_values():
    sa, sb = _t(1.0, 1.0, 1.0, 1.0), _t(0.0, 0.0, 0.0, 0.0)
    loss = bradley_terry(sa, sb, _t(1.0, 0.0, 0.5, 1.0), reduction="none")
    l1, l0 = math.log1p(math.exp(-1)), math.log1p(math.e)  # 0.3133, 1.3133
    torch.testing.assert_close(loss, _t(l1, l0, 0.5 * (l1 + l0), l1))
    # bool labels, per-pair margin: -log σ(1 - .5)
    m = bradley_terry(sa[:2], sb[:2], torch.tensor([True, True]), margin=_t(0.5, 0.0), reduction="none")
    torch.testing.assert_close(m, _t(math.log1p(math.exp(-0.5)), l1))


def test_bradley_terry_gradients_tie_and_direction():
    sa = _t(0.0, 0.0, 2.0).requires_grad_(True)
    sb = _t(0.0, 0.0, 2.0)
    bradley_terry(sa, sb, _t(1.0, 0.0, 0.5), margin=1.0, reduction="sum").backward()
    assert sa.grad[0] < 0 < sa.grad[1]
    assert abs(sa.grad[2].item()) < 1e-12  # tie: minimum at sa == sb even with a margin


def test_bradley_terry_all_masked_and_errors():
    sa = torch.zeros(3, requires_grad=True)
    loss = bradley_terry(sa, torch.zeros(3), torch.ones(3), mask=torch.zeros(3, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(sa.grad, torch.zeros(3))
    with pytest.raises(ValueError, match="share one shape"):
        bradley_terry(torch.zeros(3), torch.zeros(2), torch.ones(3))


def test_score_gap_huber_hand_values_and_grad():
    pred = _t(3.0, 1.5, 0.0).requires_grad_(True)
    target = _t(1.0, 1.0, float("nan"))
    loss = score_gap_huber(pred, target, delta=1.0, mask=torch.tensor([True, True, False]), reduction="none")
    torch.testing.assert_close(loss, _t(1.5, 0.125, 0.0))  # 1·(2 − .5), .5·.25, masked
    loss.sum().backward()
    torch.testing.assert_close(pred.grad, _t(1.0, 0.5, 0.0))  # clipped slope δ, then x
    with pytest.raises(ValueError, match="delta"):
        score_gap_huber(pred, target, delta=0.0)


def test_pair_targets_hand_values_and_they_differ():
    # win prob: a = 1.0 w.p. ½ / 2.0 w.p. ½, b = 1.0 surely: P(a > b) = ½, P(tie) = ½ -> ½ + ¼ = 0.75
    pa, pb = torch.tensor([[0.5, 0.5], [1.0, 0.0]]), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    assert torch.allclose(pair_target_win_prob(pa, pb), torch.tensor([0.75, 0.5]))
    assert torch.allclose(pair_target_win_prob(pb, pa), torch.tensor([0.25, 0.5]))  # swapping a, b gives 1 − P
    # Thurstone on the same labels' moments: MOS 1.5 vs 1.0, std 0.5 vs 0 -> Φ(0.5 / √(0.25 + ε)) ≈ Φ(1)
    t = pair_target_thurstone(torch.tensor([1.5]), torch.tensor([0.5]), torch.tensor([1.0]), torch.tensor([0.0]))
    assert t.item() == pytest.approx(PHI1, abs=1e-5)
    assert abs(t.item() - 0.75) > 0.05  # the two targets are different quantities
    # point masses with equal MOS: a tie, 0.5 (var_eps keeps it finite)
    assert pair_target_thurstone(*(torch.tensor([3.0]), torch.tensor([0.0])) * 2).item() == 0.5


def test_pair_target_win_prob_stays_a_probability_under_round_off():
    # two float32 histograms whose product sums to 1.0000001 before the clamp (a real training crash)
    ha = torch.tensor([0, 0, 0, 0, 0, 6, 0, 1, 5.0])
    hb = torch.tensor([1, 5, 0, 1, 4, 0, 0, 0, 0.0])
    p = pair_target_win_prob(ha / ha.sum(), hb / hb.sum())
    assert float(p) == 1.0


def test_pair_target_win_prob_hand_values():
    eye = torch.eye(9)
    assert float(pair_target_win_prob(eye[2], eye[1])) == pytest.approx(1.0)
    assert float(pair_target_win_prob(eye[1], eye[2])) == pytest.approx(0.0)
    assert float(pair_target_win_prob(eye[4], eye[4])) == pytest.approx(0.5)
    pa = 0.5 * (eye[0] + eye[1])  # a is below b half the time and ties b half the time
    assert float(pair_target_win_prob(pa, eye[1])) == pytest.approx(0.25)
