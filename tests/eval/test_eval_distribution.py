from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import jensenshannon

from zreward.data.records import LEVELS
from zreward.metrics import js, kl, plcc, srcc, w1


def _onehot(k: int, n_levels: int = 9) -> np.ndarray:
    v = np.zeros(n_levels)
    v[k] = 1.0
    return v


def _random_dists(rng, n, n_levels=9):
    x = rng.gamma(0.7, size=(n, n_levels))
    return x / x.sum(axis=1, keepdims=True)


def test_kl_js_w1_hand_computed():
    p = _onehot(0)[None]
    q = np.full((1, 9), 0.0)
    q[0, :2] = 0.5
    assert kl(p, q) == pytest.approx(math.log(2))            # 1·log(1/0.5)
    assert js(_onehot(0)[None], _onehot(8)[None]) == pytest.approx(math.log(2))  # disjoint supports
    assert js(p, p) == pytest.approx(0.0, abs=1e-15) and kl(p, p) == pytest.approx(0.0, abs=1e-15)
    # W1 in score points: one level = 0.5; level 1.0 → 5.0 = 4.0
    assert w1(_onehot(3)[None], _onehot(4)[None]) == pytest.approx(0.5)
    assert w1(_onehot(0)[None], _onehot(8)[None]) == pytest.approx(4.0)
    # half the mass at 1.0 and half at 1.5 vs all at 5.0: 0.5·4.0 + 0.5·3.5
    p2 = np.zeros((1, 9))
    p2[0, :2] = 0.5
    assert w1(p2, _onehot(8)[None]) == pytest.approx(3.75)


def test_kl_zero_predicted_mass_is_large_but_finite():
    v = kl(_onehot(0)[None], _onehot(1)[None])
    assert np.isfinite(v) and v == pytest.approx(-math.log(1e-12))


def test_distribution_metrics_match_scipy_on_random_data():
    rng = np.random.default_rng(0)
    p, q = _random_dists(rng, 50), _random_dists(rng, 50)
    levels = np.array(LEVELS)
    ref_kl = np.array([stats.entropy(p[i], q[i]) for i in range(50)])
    ref_js = np.array([jensenshannon(p[i], q[i]) ** 2 for i in range(50)])
    ref_w1 = np.array([stats.wasserstein_distance(levels, levels, p[i], q[i]) for i in range(50)])
    np.testing.assert_allclose(kl(p, q, reduction="none"), ref_kl, rtol=1e-10)
    np.testing.assert_allclose(js(p, q, reduction="none"), ref_js, rtol=1e-10)
    np.testing.assert_allclose(w1(p, q, reduction="none"), ref_w1, rtol=1e-10)
    assert kl(p, q) == pytest.approx(ref_kl.mean()) and w1(p, q) == pytest.approx(ref_w1.mean())
    # non-uniform levels
    lv = np.array([0.0, 1.0, 3.0, 7.0])
    p4, q4 = _random_dists(rng, 5, 4), _random_dists(rng, 5, 4)
    np.testing.assert_allclose(w1(p4, q4, levels=lv, reduction="none"),
                               [stats.wasserstein_distance(lv, lv, p4[i], q4[i]) for i in range(5)], rtol=1e-10)


def test_histogram_counts_are_normalised_and_torch_accepted():
    counts = np.array([[0, 0, 2, 2, 0, 0, 0, 0, 0]], dtype=float)
    probs = counts / 4
    q = torch.softmax(torch.randn(1, 9, generator=torch.Generator().manual_seed(0)), dim=-1)
    assert kl(counts, q) == pytest.approx(kl(probs, q.numpy()))
    assert w1(counts, q) == pytest.approx(w1(probs, q.numpy()))


def test_unlabelled_rows_are_masked():
    rng = np.random.default_rng(1)
    p, q = _random_dists(rng, 4), _random_dists(rng, 4)
    p_nan = p.copy()
    p_nan[1] = np.nan                                        # no label for row 1
    per_row = kl(p, q, reduction="none")
    assert kl(p_nan, q) == pytest.approx(per_row[[0, 2, 3]].mean())
    assert kl(p, q, mask=[True, False, True, False]) == pytest.approx(per_row[[0, 2]].mean())
    got = js(p_nan, q, reduction="none")
    assert np.isnan(got[1]) and np.all(np.isfinite(got[[0, 2, 3]]))
    assert np.isnan(w1(p, q, mask=[False] * 4))
    # weights: (R, N) multiplicities, masked rows stay out
    out = kl(p_nan, q, weights=np.array([[1, 5, 0, 0], [0, 0, 2, 1]]))
    np.testing.assert_allclose(out, [per_row[0], (2 * per_row[2] + per_row[3]) / 3])


def test_bad_rows_name_the_row():
    p = np.tile(_onehot(2), (3, 1))
    bad = p.copy()
    bad[2, 0] = -0.5
    with pytest.raises(ValueError, match="p_target row 2"):
        kl(bad, p)
    zero = p.copy()
    zero[1] = 0.0
    with pytest.raises(ValueError, match="q_pred row 1"):
        w1(p, zero)
    with pytest.raises(ValueError, match="levels"):
        w1(p, p, levels=[1.0, 2.0])


def test_srcc_plcc_match_scipy_with_ties():
    rng = np.random.default_rng(2)
    x = rng.integers(0, 8, 200) / 2.0                       # many ties
    y = x + rng.normal(0, 1.0, 200)
    y[:20] = 3.0                                             # ties on the other side too
    assert srcc(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-10)
    assert plcc(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-10)
    # weights = the correlation of the expanded sample (ties created by duplicates get average ranks)
    w = rng.integers(0, 4, size=(3, 200)).astype(float)
    s, p = srcc(x, y, weights=w), plcc(x, y, weights=w)
    for r in range(3):
        rep = w[r].astype(int)
        xe, ye = np.repeat(x, rep), np.repeat(y, rep)
        assert s[r] == pytest.approx(stats.spearmanr(xe, ye).statistic, rel=1e-10)
        assert p[r] == pytest.approx(stats.pearsonr(xe, ye).statistic, rel=1e-10)
    m = np.arange(200) % 3 != 0
    assert srcc(x, y, mask=m) == pytest.approx(stats.spearmanr(x[m], y[m]).statistic, rel=1e-10)


def test_correlation_edge_cases():
    assert srcc([1, 2, 3, 4], [10, 20, 30, 100]) == pytest.approx(1.0)
    assert srcc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(plcc([1, 2, 3], [5, 5, 5])) and np.isnan(srcc([1, 2, 3], [5, 5, 5]))
    with pytest.raises(ValueError, match="item 1"):
        plcc([1.0, np.nan, 2.0], [1.0, 2.0, 3.0])
    assert plcc([1.0, np.nan, 2.0, 4.0], [1.0, 2.0, 3.0, 4.5], mask=[1, 0, 1, 1]) == pytest.approx(
        stats.pearsonr([1.0, 2.0, 4.0], [1.0, 3.0, 4.5]).statistic)


def test_eval_package_does_not_import_scipy():
    # scipy is a test-only dependency: the metric implementations must work without it.
    import subprocess
    import sys
    code = ("import sys; import zreward.metrics, zreward.eval.calibration, zreward.eval.bootstrap, "
            "zreward.eval.gsb, zreward.eval.cost; print('scipy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
