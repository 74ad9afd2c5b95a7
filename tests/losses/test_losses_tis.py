"""Truncated importance sampling (engine/trainer log-prob mismatch) on hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from zreward.losses import clipped_pg_loss, truncated_is_weights

NAN = float("nan")
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]], dtype=torch.float64)
ENGINE = torch.tensor([[-1.5, -1.0, NAN], [-3.0, -1.0, -9.0]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool)


def test_weights_hand_values():
    w, st = truncated_is_weights(OLD, ENGINE, MASK, cap=2.0)
    # row 0: e^0.5, e^-1, NaN engine log-prob → 1;  row 1: e^2 = 7.39 → capped at 2, e^0 = 1, masked → 1
    want = torch.tensor([[math.exp(0.5), math.exp(-1.0), 1.0], [2.0, 1.0, 1.0]], dtype=torch.float64)
    torch.testing.assert_close(w, want)
    assert st["tis_weight_mean"].item() == pytest.approx((math.exp(0.5) + math.exp(-1) + 1 + 2 + 1) / 5)
    assert st["tis_capped_frac"].item() == pytest.approx(1 / 5)
    assert st["tis_logp_diff_abs"].item() == pytest.approx((0.5 + 1.0 + 2.0 + 0.0) / 4)  # NaN and masked excluded
    assert not w.requires_grad


def test_equal_logprobs_give_unit_weights_and_the_plain_loss():
    logp = OLD.clone().requires_grad_(True)
    w, st = truncated_is_weights(OLD, OLD.clone(), MASK, cap=2.0)
    assert torch.equal(w, torch.ones_like(w)) and st["tis_capped_frac"].item() == 0.0
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    plain, _ = clipped_pg_loss(logp, OLD, adv, MASK)
    weighted, _ = clipped_pg_loss(logp, OLD, adv, MASK, is_weights=w)
    assert weighted.item() == plain.item()


def test_weighted_loss_and_gradient_hand_values():
    w, _ = truncated_is_weights(OLD, ENGINE, MASK, cap=2.0)
    logp = OLD.clone().requires_grad_(True)  # on-policy: ratio 1, unclipped
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, _ = clipped_pg_loss(logp, OLD, adv, MASK, is_weights=w, aggregation="seq_mean")
    # seq_mean: row 0 −(w00 + w01 + w02)/3, row 1 +(w10 + w11)/2, averaged over the 2 rows
    row0 = -(math.exp(0.5) + math.exp(-1) + 1) / 3
    row1 = (2.0 + 1.0) / 2
    assert loss.item() == pytest.approx((row0 + row1) / 2)
    loss.backward()
    # d/dlogp of −A·w·exp(logp − old) at logp = old: −A·w / (len · B); masked token: 0; the step favours a higher
    # log-prob for the positive-advantage row and a lower one for the negative-advantage row
    want = torch.tensor([[-math.exp(0.5) / 6, -math.exp(-1) / 6, -1 / 6], [2.0 / 4, 1.0 / 4, 0.0]],
                        dtype=torch.float64)
    torch.testing.assert_close(logp.grad, want)


def test_kl_term_is_not_weighted():
    w, _ = truncated_is_weights(OLD, ENGINE, MASK, cap=2.0)
    ref = OLD - 0.3
    adv = torch.zeros(2, dtype=torch.float64)  # no PG term: the loss is the KL term alone
    loss_w, st = clipped_pg_loss(OLD, OLD, adv, MASK, ref_logp=ref, kl_coef=0.5, is_weights=w)
    loss_1, _ = clipped_pg_loss(OLD, OLD, adv, MASK, ref_logp=ref, kl_coef=0.5)
    k3 = math.exp(-0.3) + 0.3 - 1
    assert loss_w.item() == pytest.approx(loss_1.item()) == pytest.approx(0.5 * k3)


def test_all_masked_and_bad_input():
    w, st = truncated_is_weights(OLD, ENGINE, torch.zeros_like(MASK), cap=2.0)
    assert torch.equal(w, torch.ones_like(w)) and st["tis_weight_mean"].item() == 0.0
    with pytest.raises(ValueError, match="cap"):
        truncated_is_weights(OLD, ENGINE, MASK, cap=0.0)
    with pytest.raises(ValueError, match="engine_logp"):
        truncated_is_weights(OLD, ENGINE[:, :2], MASK, cap=2.0)
    with pytest.raises(ValueError, match="is_weights"):
        clipped_pg_loss(OLD, OLD, torch.zeros(2), MASK, is_weights=torch.ones(2, 2))
