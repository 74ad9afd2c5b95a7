from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.eval.calibration import calibration, ece, pair_outcome, plot_reliability, thurstone_prob


def test_thurstone_prob_hand_computed():
    p = thurstone_prob([3.0, 4.0, 2.0], [0.5, np.sqrt(0.5), 0.0], [3.0, 3.0, 2.5], [0.5, np.sqrt(0.5), 0.0],
                       var_eps=1e-30)
    # Δμ = 0 → 0.5; Δμ = 1 with σa² + σb² = 1 → Φ(1); two point masses, a lower → Φ(−huge) = 0
    np.testing.assert_allclose(p, [0.5, 0.8413447460685429, 0.0], atol=1e-12)
    # the default var_eps keeps equal point masses at exactly 0.5 (no 0/0)
    assert thurstone_prob([2.0], [0.0], [2.0], [0.0])[0] == 0.5
    # torch inputs (as a Scorer would give them)
    assert thurstone_prob(torch.tensor([4.0]), torch.tensor([0.6]), torch.tensor([3.0]), torch.tensor([0.8]),
                          var_eps=0.0)[0] == pytest.approx(0.8413447460685429)
    with pytest.raises(ValueError, match="sigma"):
        thurstone_prob([1.0], [-1.0], [1.0], [1.0])


def test_pair_outcome_from_labels_and_votes():
    np.testing.assert_allclose(pair_outcome(["a", "b", "tie"]), [1.0, 0.0, 0.5])
    np.testing.assert_allclose(pair_outcome(votes_a=[3, 0, 1], votes_b=[1, 2, 1], votes_tie=[0, 2, 2]),
                               [0.75, 0.25, 0.5])
    with pytest.raises(ValueError, match="pair 1"):
        pair_outcome(votes_a=[1, 0], votes_b=[1, 0])


def test_ece_hand_computed_with_bins():
    p = [0.05, 0.15, 0.95, 0.95, 1.0]
    o = [0.0, 0.0, 1.0, 0.0, 1.0]
    # bin0: conf .05 acc 0; bin1: conf .15 acc 0; bin9 (1.0 included): conf (0.95+0.95+1)/3, acc 2/3
    # ECE = (0.05 + 0.15 + 3·|2/3 − 0.9666…|) / 5 = (0.05 + 0.15 + 0.9) / 5 = 0.22
    cal = calibration(p, o, n_bins=10)
    assert cal.ece == pytest.approx(0.22)
    assert ece(p, o) == pytest.approx(0.22)
    assert cal.n == 5 and cal.count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 3]
    assert cal.conf[9] == pytest.approx(2.9 / 3) and cal.acc[9] == pytest.approx(2 / 3)
    assert np.isnan(cal.acc[4]) and np.isnan(cal.conf[4])
    np.testing.assert_allclose(cal.edges, np.linspace(0, 1, 11))
    # bin0 outcome 0.2: |0.2 − 0.05| = 0.15 → (0.15 + 0.15 + 0.9) / 5 = 0.24,
    # while with one bin the signs cancel: |2.2 − 3.1| / 5 = 0.18
    o2 = [0.2, 0.0, 1.0, 0.0, 1.0]
    assert ece(p, o2) == pytest.approx(0.24)
    assert ece(p, o2, n_bins=1) == pytest.approx(0.18)


def test_ece_properties():
    rng = np.random.default_rng(0)
    p = rng.uniform(0.01, 0.99, 20000)
    o = (rng.uniform(size=p.shape) < p).astype(float)        # calibrated by construction
    assert ece(p, o) < 0.02
    assert ece(p, 1 - o) > 0.3                               # anti-calibrated
    # swapping a and b mirrors the bins (values exactly on an edge excluded by construction)
    p_small = rng.uniform(0.001, 0.999, 500)
    p_small = p_small[np.abs(p_small * 10 - np.round(p_small * 10)) > 1e-6]
    o_small = rng.uniform(size=p_small.shape)
    assert ece(1 - p_small, 1 - o_small) == pytest.approx(ece(p_small, o_small), rel=1e-9)
    # weights are multiplicities
    w = rng.integers(0, 3, size=p_small.shape).astype(float)
    rep = w.astype(int)
    assert ece(p_small, o_small, weights=w) == pytest.approx(ece(np.repeat(p_small, rep), np.repeat(o_small, rep)))
    assert ece(p_small, o_small, weights=np.stack([w, w])).shape == (2,)
    with pytest.raises(ValueError, match=r"p_pred\[1\] = 1.2"):
        ece([0.5, 1.2], [1.0, 0.0])


def test_plot_reliability_writes_png(tmp_path):
    rng = np.random.default_rng(0)
    p = rng.uniform(size=300)
    cal = calibration(p, (rng.uniform(size=300) < p).astype(float))
    out = plot_reliability(cal, tmp_path / "sub" / "rel.png", title="tiny model")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image as mpimg
    img = mpimg.imread(out)
    assert img.shape[0] == 550 and img.shape[1] == 450      # 4.5 × 5.5 in at 100 dpi
    assert img[..., :3].std() > 0.05                        # something was drawn
