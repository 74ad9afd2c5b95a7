"""Tests for zreward.data.labels on hand-computed numbers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from zreward.data.labels import (dist_mean_std, dist_to_hist, gaussian_dist, hist_to_dist, label_dist, levels_array,
                                 mos_std, ratings_to_hist, rescale, rescale_std, rescale_z, two_point_dist)
from zreward.data.records import LEVELS, DimLabel


def test_levels_array():
    lv = levels_array()
    assert lv.tolist() == [1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]
    with pytest.raises(ValueError, match="increasing"):
        levels_array([1, 1, 2])


def test_hist_to_dist_and_errors():
    assert hist_to_dist([1, 1, 2]).tolist() == [0.25, 0.25, 0.5]
    np.testing.assert_allclose(hist_to_dist([[2, 0], [1, 3]]), [[1, 0], [0.25, 0.75]])
    with pytest.raises(ValueError, match="non-negative"):
        hist_to_dist([1, -1, 2])
    with pytest.raises(ValueError, match="positive total"):
        hist_to_dist([[1, 0], [0, 0]])


def test_dist_to_hist_largest_remainder():
    # 0.1/0.2/0.7 of 10 is exact; 1/3 each of 10 -> 3.33 each, the one spare count goes to the lowest level
    out = dist_to_hist([[0.1, 0.2, 0.7], [1 / 3, 1 / 3, 1 / 3]], 10)
    assert out.tolist() == [[1, 2, 7], [4, 3, 3]]
    # 7 * [0.45, 0.45, 0.1] = [3.15, 3.15, 0.7] -> floors [3, 3, 0], spare goes to largest remainder (0.7)
    assert dist_to_hist([0.45, 0.45, 0.1], 7).tolist() == [3, 3, 1]
    assert dist_to_hist(hist_to_dist([2, 5, 0, 1]), 8).tolist() == [2, 5, 0, 1]


def test_ratings_to_hist_snaps_and_rejects_off_scale():
    # 1.25 is a midpoint -> goes up to 1.5; 3.74 -> 3.5; 3.76 -> 4.0
    h = ratings_to_hist([1.25, 3.74, 3.76, 5.0, 1.0])
    assert h.tolist() == [1, 1, 0, 0, 0, 1, 1, 0, 1]
    with pytest.raises(ValueError, match=r"\[1.0, 5.0\].*5.3"):
        ratings_to_hist([3.0, 5.3])
    with pytest.raises(ValueError, match="0.9"):
        ratings_to_hist([0.9])
    with pytest.raises(ValueError, match="at least one"):
        ratings_to_hist([])


def test_mos_std():
    m, s = mos_std([3, 4, 5])
    assert m == 4.0 and s == pytest.approx(math.sqrt(2 / 3))
    assert mos_std([3, 4, 5], ddof=1)[1] == pytest.approx(1.0)


def test_dist_mean_std():
    m, s = dist_mean_std([0, 0, 0, 0, 0.5, 0.5, 0, 0, 0])
    assert float(m) == pytest.approx(3.25) and float(s) == pytest.approx(0.25)
    m, s = dist_mean_std([[1, 0, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 2]])
    np.testing.assert_allclose(m, [3.0, 5.0])
    np.testing.assert_allclose(s, [2.0, 0.0])


def test_two_point_dist():
    d = two_point_dist([3.3, 5.0, 1.0, 2.5])
    exp = np.zeros((4, 9))
    exp[0, 4], exp[0, 5] = 0.4, 0.6   # 3.3 = 0.4*3.0 + 0.6*3.5
    exp[1, 8] = 1.0
    exp[2, 0] = 1.0
    exp[3, 3] = 1.0
    np.testing.assert_allclose(d, exp, atol=1e-12)
    with pytest.raises(ValueError, match="mos"):
        two_point_dist(5.2)


def _deqa_reference(mos: float, std: float, levels: list[float]) -> list[float]:
    """Scalar transcription of DeQA-Score's label script (pdf density, alpha/beta on the raw densities),
    plus our renormalisation after clipping."""
    probs = [math.exp(-0.5 * ((x - mos) / std) ** 2) / (std * math.sqrt(2 * math.pi)) for x in levels]
    A = sum(probs)
    B = sum(p * x for p, x in zip(probs, levels))
    c = sum(levels) / len(levels)
    alpha = (mos - c) / (B - c * A)
    beta = (1 - alpha * A) / len(levels)
    q = [max(alpha * p + beta, 0.0) for p in probs]
    return [v / sum(q) for v in q]


def test_gaussian_dist_hand_computed_three_levels():
    # levels 1,2,3; MOS 2.5, std 1: densities ∝ [e^-1.125, e^-0.125, e^-0.125] = [0.32465, 0.88250, 0.88250]
    # normalised [0.15536, 0.42232, 0.42232], mean 2.26696; a = 0.5/0.26696 = 1.87294, b = (1-a)/3 = -0.29098
    # -> q = [0.00000, 0.5, 0.5]
    d = gaussian_dist(2.5, 1.0, levels=[1.0, 2.0, 3.0])
    np.testing.assert_allclose(d, [0.0, 0.5, 0.5], atol=2e-5)


def test_gaussian_dist_matches_deqa_script_and_keeps_mean():
    mos = np.array([3.2, 2.1, 4.4, 3.8])
    std = np.array([0.6, 0.9, 0.5, 1.2])
    d = gaussian_dist(mos, std)
    assert d.shape == (4, 9)
    for i in range(4):
        np.testing.assert_allclose(d[i], _deqa_reference(mos[i], std[i], list(LEVELS)), atol=1e-12)
    m, s = dist_mean_std(d)
    np.testing.assert_allclose(m, mos, atol=0.1)
    assert m[0] == pytest.approx(3.2, abs=1e-9)  # nothing clipped for 3.2 +- 0.6: the mean is exact
    assert d[1, 7] == 0.0 and d[1, 8] == 0.0  # 2.1 +- 0.9: negative mass at 4.5, 5.0 clipped; mean off < 0.1
    assert s[3] > s[0]  # wider std -> wider distribution


def test_gaussian_dist_tiny_std_and_far_mean_use_split():
    d = gaussian_dist([3.3, 3.3, 4.9], [0.1, 0.0, 0.5])
    np.testing.assert_allclose(d[0], two_point_dist(3.3))
    np.testing.assert_allclose(d[1], two_point_dist(3.3))
    # MOS 4.9 with std 0.5: the fixed Gaussian needs negative mass, mean misses by > 0.1 -> split 0.2/0.8
    np.testing.assert_allclose(d[2], two_point_dist(4.9))
    assert d[2, 7] == pytest.approx(0.2) and d[2, 8] == pytest.approx(0.8)


def test_gaussian_dist_cdf_density_and_centre():
    d = gaussian_dist(3.0, 0.5, density="cdf")
    # symmetric about the centre; degenerate affine fix keeps the normalised Gaussian (bin 2.75..3.25 mass)
    np.testing.assert_allclose(d, d[::-1], atol=1e-12)
    assert float(dist_mean_std(d)[0]) == pytest.approx(3.0)
    from scipy.stats import norm
    mass = norm.cdf(0.5) - norm.cdf(-0.5)
    total = norm.cdf(4.5) - norm.cdf(-4.5)  # 0.75..5.25 in std units of 0.5
    assert d[4] == pytest.approx(mass / total)
    with pytest.raises(ValueError, match="density"):
        gaussian_dist(3.0, 0.5, density="bogus")


def test_rescale_family():
    np.testing.assert_allclose(rescale([1, 4, 7], 1, 7), [1.0, 3.0, 5.0])
    np.testing.assert_allclose(rescale([0, 2.5, 10], 0, 10), [1.0, 2.0, 5.0])
    with pytest.raises(ValueError, match=r"\[0, 10\].*11"):
        rescale([11], 0, 10)
    assert rescale_std(1.5, 1, 7) == pytest.approx(1.0)
    np.testing.assert_allclose(rescale_z([-4, -2, 0, 1, 3], -2, 2), [1.0, 1.0, 3.0, 4.0, 5.0])


def test_label_dist_priority():
    hist = [0, 0, 0, 0, 1, 1, 0, 0, 0]
    # hist wins over ratings and mos
    d = label_dist(DimLabel(hist=hist, mos=1.0, std=0.1, ratings=[5.0]))
    np.testing.assert_allclose(d, [0, 0, 0, 0, 0.5, 0.5, 0, 0, 0])
    d = label_dist(DimLabel(ratings=[5.0, 4.0, 4.1], mos=1.0))
    np.testing.assert_allclose(d, [0, 0, 0, 0, 0, 0, 2 / 3, 0, 1 / 3])
    np.testing.assert_allclose(label_dist(DimLabel(mos=3.2, std=0.6)), gaussian_dist(3.2, 0.6))
    np.testing.assert_allclose(label_dist(DimLabel(mos=3.3)), two_point_dist(3.3))
    with pytest.raises(ValueError, match="at least one"):
        label_dist(DimLabel())
