"""Distribution losses on hand-computed numbers (L = 3 levels unless stated)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from zreward.losses import cross_entropy_levels, emd_levels, expected_score_loss, js_levels, kl_div_levels

LN2 = math.log(2.0)


def _logits(*probs: float) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def test_kl_and_ce_hand_values():
    logits = torch.stack([_logits(0.5, 0.25, 0.25), _logits(0.5, 0.25, 0.25)])
    target = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]], dtype=torch.float64)
    per_row = kl_div_levels(logits, target, reduction="none")
    # KL([1,0,0] || p) = -log 0.5; KL([.5,.5,0] || p) = .5 log(.5/.5) + .5 log(.5/.25) = .5 log 2
    torch.testing.assert_close(per_row, torch.tensor([LN2, 0.5 * LN2], dtype=torch.float64))
    torch.testing.assert_close(kl_div_levels(logits, target), torch.tensor(0.75 * LN2, dtype=torch.float64))
    torch.testing.assert_close(kl_div_levels(logits, target, reduction="sum"),
                               torch.tensor(1.5 * LN2, dtype=torch.float64))
    # CE = KL + H(target): H = 0 and log 2
    ce = cross_entropy_levels(logits, target, reduction="none")
    torch.testing.assert_close(ce, torch.tensor([LN2, 1.5 * LN2], dtype=torch.float64))


@pytest.mark.parametrize("fn", [kl_div_levels, cross_entropy_levels])
def test_kl_ce_gradient_is_p_minus_target(fn):
    logits = _logits(0.5, 0.25, 0.25).unsqueeze(0).requires_grad_(True)
    target = torch.tensor([[0.2, 0.3, 0.5]], dtype=torch.float64)
    fn(logits, target).backward()
    torch.testing.assert_close(logits.grad, torch.tensor([[0.3, -0.05, -0.25]], dtype=torch.float64))
    # a gradient step lowers the loss
    with torch.no_grad():
        stepped = logits - 0.5 * logits.grad
    assert fn(stepped, target) < fn(logits.detach(), target)


def test_kl_uses_log_softmax_for_extreme_logits():
    logits = torch.tensor([[1000.0, 0.0, -1000.0]])
    target = torch.tensor([[0.0, 0.0, 1.0]])
    loss = kl_div_levels(logits, target)
    assert torch.isfinite(loss) and abs(loss.item() - 2000.0) < 1e-2


def test_mask_3d_nan_target_and_all_masked():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, requires_grad=True)
    target = torch.softmax(torch.randn(2, 4, 3), -1)
    mask = torch.tensor([[True, False, True, True], [False, False, True, False]])
    target_nan = target.clone()
    target_nan[~mask] = float("nan")  # missing labels
    for fn in (kl_div_levels, cross_entropy_levels, emd_levels, js_levels):
        full = fn(logits, target, reduction="none")
        loss = fn(logits, target_nan, mask=mask)
        torch.testing.assert_close(loss, full[mask].mean())
        zero = fn(logits, target_nan, mask=torch.zeros(2, 4, dtype=torch.bool))
        assert zero.item() == 0.0 and zero.requires_grad
        zero.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))
        logits.grad = None


def test_bad_target_and_shapes_raise():
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"row \(1,\).*not a probability distribution"):
        kl_div_levels(logits, torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="expected the logits shape"):
        kl_div_levels(logits, torch.ones(2, 4) / 4)
    with pytest.raises(ValueError, match="mask has shape"):
        kl_div_levels(logits, torch.ones(2, 3) / 3, mask=torch.ones(3, dtype=torch.bool))
    # a bad row that is masked out is fine
    kl_div_levels(logits, torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 0.0]]), mask=torch.tensor([True, False]))


def test_emd_hand_values_and_per_sample_root():
    logits = torch.stack([_logits(0.5, 0.25, 0.25), _logits(0.5, 0.25, 0.25)]).requires_grad_(True)
    target = torch.tensor([[0.0, 0.0, 1.0], [0.5, 0.25, 0.25]], dtype=torch.float64)
    # CDF diffs row 0: [0.5, 0.75, 0]; row 1: all 0
    r2 = math.sqrt((0.25 + 0.5625 + 0.0) / 3)
    torch.testing.assert_close(emd_levels(logits, target, reduction="none"),
                               torch.tensor([r2, 0.0], dtype=torch.float64))
    loss = emd_levels(logits, target)
    # NIMA: root per sample, then mean (sqrt(mean over all) would be sqrt(0.8125/6) = 0.368)
    assert abs(loss.item() - r2 / 2) < 1e-12
    torch.testing.assert_close(emd_levels(logits, target, r=1.0, reduction="none"),
                               torch.tensor([1.25 / 3, 0.0], dtype=torch.float64))
    loss.backward()  # row 1 has pred == target: the root's gradient must not be NaN
    assert torch.isfinite(logits.grad).all()
    assert torch.equal(logits.grad[1], torch.zeros(3, dtype=torch.float64))
    # gradient direction: target mass on the top level -> top logit must go up
    assert logits.grad[0, 2] < 0 and logits.grad[0, 0] > 0


def test_emd_orders_by_distance_unlike_kl():
    # EMD sees level distance: mass one level off is closer than mass two levels off; KL does not.
    target = torch.tensor([[1.0, 0.0, 0.0]])
    near, far = torch.tensor([[0.0, 5.0, 0.0]]), torch.tensor([[0.0, 0.0, 5.0]])
    assert emd_levels(near, target) < emd_levels(far, target)
    torch.testing.assert_close(kl_div_levels(near, target), kl_div_levels(far, target))


def test_js_hand_value_bounds_and_scipy():
    logits = _logits(0.5, 0.5).unsqueeze(0)
    target = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # m = [.75, .25]; KL(p||m) = .5 log(4/3); KL(t||m) = log(4/3)
    assert abs(js_levels(logits, target).item() - 0.75 * math.log(4 / 3)) < 1e-12
    assert js_levels(_logits(0.3, 0.7).unsqueeze(0), torch.tensor([[0.3, 0.7]], dtype=torch.float64)).abs() < 1e-12
    disjoint = js_levels(torch.tensor([[60.0, -60.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]],
                                                                                          dtype=torch.float64))
    assert abs(disjoint.item() - LN2) < 1e-9
    g = torch.Generator().manual_seed(1)
    lg = torch.randn(5, 9, generator=g, dtype=torch.float64)
    tg = torch.softmax(torch.randn(5, 9, generator=g, dtype=torch.float64), -1)
    tg[0, :4] = 0.0
    tg[0] /= tg[0].sum()
    ref = jensenshannon(torch.softmax(lg, -1).numpy(), tg.numpy(), axis=-1) ** 2
    np.testing.assert_allclose(js_levels(lg, tg, reduction="none").numpy(), ref, rtol=1e-9, atol=1e-12)


def test_js_gradient_direction():
    logits = torch.zeros(1, 3, requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 1.0]])
    js_levels(logits, target).backward()
    assert logits.grad[0, 2] < 0 and logits.grad[0, 0] > 0 and torch.isfinite(logits.grad).all()


def test_expected_score_loss_hand_values_and_grad():
    levels = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    logits = _logits(0.5, 0.25, 0.25).unsqueeze(0).requires_grad_(True)
    target = torch.tensor([2.75], dtype=torch.float64)  # E = 1.75, error -1
    assert abs(expected_score_loss(logits, target, levels).item() - 1.0) < 1e-12
    # Huber delta .5: |x| = 1 >= .5 -> .5 * (1 - .25)
    assert abs(expected_score_loss(logits, target, levels, kind="huber", delta=0.5).item() - 0.375) < 1e-12
    assert abs(expected_score_loss(logits, torch.tensor([1.85], dtype=torch.float64), levels,
                                   kind="huber").item() - 0.5 * 0.01) < 1e-12
    loss = expected_score_loss(logits, target, levels)
    loss.backward()
    # dE/dz_k = p_k (s_k - E); dL/dz = 2 (E - y) p (s - E) = -2 * [.5*-.75, .25*.25, .25*1.25]
    torch.testing.assert_close(logits.grad, torch.tensor([[0.75, -0.125, -0.625]], dtype=torch.float64))


def test_expected_score_mask_and_errors():
    levels = torch.tensor([1.0, 2.0, 3.0])
    logits = torch.zeros(2, 3, requires_grad=True)
    y = torch.tensor([3.0, float("nan")])
    loss = expected_score_loss(logits, y, levels, mask=torch.tensor([True, False]))
    assert abs(loss.item() - 1.0) < 1e-6  # only row 0: (2 - 3)^2
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.equal(logits.grad[1], torch.zeros(3))
    with pytest.raises(ValueError, match="levels has shape"):
        expected_score_loss(logits, y, torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="target_mean has shape"):
        expected_score_loss(logits, torch.zeros(3), levels)
