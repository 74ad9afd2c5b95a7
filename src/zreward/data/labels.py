"""Label helpers: the one implementation of score-distribution bookkeeping over the rubric levels.

What is implemented (all vectorised numpy; leading batch dimensions are allowed where shapes say `...`):
- `hist_to_dist` / `dist_to_hist`: counts ↔ probabilities over the K levels (largest-remainder rounding back).
- `ratings_to_hist`: raw ratings on the level scale snapped to the nearest level (exact midpoints go *up*, as the
  ShapesWorld quantiser q(v) does); a rating outside [levels[0], levels[-1]] is an error, not clipped.
- `mos_std` (from ratings; population std, ddof=0, unless asked) and `dist_mean_std` (from a distribution).
- `gaussian_dist`: DeQA-Score soft labels from MOS+std (You et al., "Teaching LMMs to regress accurate image
  quality scores using score distribution", CVPR 2025, https://arxiv.org/abs/2501.11561), following the released
  label-building script: Gaussian density at each level ("pdf", default) or its mass on the level's bin ("cdf",
  bins split half-way between levels, end bins half a step wide beyond the end levels); then the affine fix
  p' = max(α·p + β, 0) with α, β chosen so that Σp' = 1 and Σ p'·level = MOS. Deviations: after clipping we
  *renormalise* (DeQA leaves the clipped vector unnormalised); at the degenerate point where the Gaussian's mean
  already equals the levels' centre (α undetermined, 0/0) we keep the normalised Gaussian (DeQA's +1e-9 makes that
  case a uniform distribution). Fallback to the **two-neighbour split** (`two_point_dist`: mass on the two levels
  around the MOS, linear weights, mean exact) when the normalised std < `tiny_std` (0.2) or the fixed mean misses
  the MOS by more than `max_mean_err` (0.1). "Normalised std" is DeQA's `std_norm`: the std expressed on the
  1–5 score scale (i.e. after `rescale_std` from the dataset's own scale), not in units of the level spacing.
- `rescale` / `rescale_std` / `rescale_z`: affine maps of another scale (1–7, 0–10, 0–100, or z-scores with
  stated bounds) onto 1–5; out-of-range values are an error except for `rescale_z`, which clips to the bounds.
- `label_dist`: the distribution for one `DimLabel`, from `hist` if present, else `ratings`, else `mos`/`std`
  (MOS without std → the two-neighbour split: no spread is known, so the narrowest distribution with that mean).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from zreward.data.records import LEVELS, DimLabel



def _ndtr(x: np.ndarray) -> np.ndarray:
    """Standard normal CDF (numpy only: scipy is a test dependency, not a runtime one)."""
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(x / math.sqrt(2.0)))


def levels_array(levels: Sequence[float] = LEVELS) -> np.ndarray:
    """The levels as a float64 array (K,), checked to be strictly increasing with K >= 2."""
    lv = np.asarray(levels, dtype=np.float64)
    if lv.ndim != 1 or lv.size < 2 or not np.all(np.isfinite(lv)) or np.any(np.diff(lv) <= 0):
        raise ValueError(f"levels: expected a strictly increasing 1-D sequence of >= 2 numbers, got {levels!r}")
    return lv


def hist_to_dist(hist) -> np.ndarray:
    """Counts (or unnormalised weights) → probabilities.

    Args:
        hist: (..., K) non-negative, finite, each row with a positive total.
    Returns:
        (..., K) float64 rows summing to 1.
    """
    h = np.asarray(hist, dtype=np.float64)
    if h.ndim == 0:
        raise ValueError("hist: expected an array of shape (..., K), got a scalar")
    if not np.all(np.isfinite(h)) or np.any(h < 0):
        bad = h[~np.isfinite(h) | (h < 0)]
        raise ValueError(f"hist: expected non-negative finite counts, found {bad.size} bad values, "
                         f"e.g. {bad[:3].tolist()!r}")
    tot = h.sum(axis=-1, keepdims=True)
    if np.any(tot <= 0):
        raise ValueError("hist: expected every histogram to have a positive total, found an all-zero one")
    return h / tot


def dist_to_hist(dist, n: int) -> np.ndarray:
    """Probabilities → integer counts summing to `n` (largest remainder; ties go to the lower level).

    Args:
        dist: (..., K) probabilities (normalised here, so any non-negative weights work).
        n: total count per row, >= 0.
    Returns:
        (..., K) int64 counts, each row summing to n.
    """
    if int(n) != n or n < 0:
        raise ValueError(f"n: expected a non-negative integer, got {n!r}")
    p = hist_to_dist(dist)
    exact = p * n
    base = np.floor(exact).astype(np.int64)
    short = n - base.sum(axis=-1, keepdims=True)  # (..., 1), in [0, K)
    rem = exact - base
    # rank remainders descending, stable so that equal remainders favour lower indices
    order = np.argsort(-rem, axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(p.shape[-1]).reshape((1,) * (p.ndim - 1) + (-1,)), axis=-1)
    return base + (rank < short).astype(np.int64)


def snap_to_levels(x, levels: Sequence[float] = LEVELS, *, tol: float = 1e-6) -> np.ndarray:
    """Index of the nearest level for each value (midpoints go up); error if a value is off the scale.

    Args:
        x: (...,) values on the levels' scale.
    Returns:
        (...,) int64 level indices.
    """
    lv = levels_array(levels)
    v = np.asarray(x, dtype=np.float64)
    bad = ~np.isfinite(v) | (v < lv[0] - tol) | (v > lv[-1] + tol)
    if np.any(bad):
        raise ValueError(f"ratings: expected values in [{lv[0]}, {lv[-1]}] (the level scale; rescale other "
                         f"scales first), got {np.atleast_1d(v)[np.atleast_1d(bad)].tolist()!r}")
    mids = (lv[1:] + lv[:-1]) / 2
    return np.searchsorted(mids, v, side="right").astype(np.int64)


def ratings_to_hist(ratings, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Raw ratings → histogram (K,) of counts after snapping each rating to its nearest level."""
    r = np.asarray(ratings, dtype=np.float64).ravel()
    if r.size == 0:
        raise ValueError("ratings: expected at least one rating, got none")
    idx = snap_to_levels(r, levels)
    return np.bincount(idx, minlength=len(levels)).astype(np.int64)


def mos_std(ratings, *, ddof: int = 0) -> tuple[float, float]:
    """Mean opinion score and standard deviation of raw ratings (population std by default)."""
    r = np.asarray(ratings, dtype=np.float64).ravel()
    if r.size == 0 or r.size <= ddof or not np.all(np.isfinite(r)):
        raise ValueError(f"ratings: expected more than {ddof} finite ratings, got {r.tolist()!r}")
    return float(r.mean()), float(r.std(ddof=ddof))


def dist_mean_std(dist, levels: Sequence[float] = LEVELS) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of distributions over the levels.

    Args:
        dist: (..., K) probabilities (normalised here).
    Returns:
        (mean (...,), std (...,)).
    """
    lv = levels_array(levels)
    p = hist_to_dist(dist)
    if p.shape[-1] != lv.size:
        raise ValueError(f"dist: expected last dimension {lv.size} (number of levels), got {p.shape[-1]}")
    mean = p @ lv
    var = p @ (lv**2) - mean**2
    return mean, np.sqrt(np.clip(var, 0.0, None))


def two_point_dist(mos, levels: Sequence[float] = LEVELS) -> np.ndarray:
    """Split mass between the two levels bracketing each MOS so that the mean is exact.

    Args:
        mos: (...,) scores in [levels[0], levels[-1]].
    Returns:
        (..., K) distributions with at most two adjacent non-zero entries.
    """
    lv = levels_array(levels)
    m = np.asarray(mos, dtype=np.float64)
    if not np.all(np.isfinite(m)) or np.any((m < lv[0] - 1e-9) | (m > lv[-1] + 1e-9)):
        raise ValueError(f"mos: expected values in [{lv[0]}, {lv[-1]}], got {np.atleast_1d(m).tolist()!r}")
    m = np.clip(m, lv[0], lv[-1])
    lo = np.clip(np.searchsorted(lv, m, side="right") - 1, 0, lv.size - 2)
    w = (m - lv[lo]) / (lv[lo + 1] - lv[lo])
    out = np.zeros(m.shape + (lv.size,))
    np.put_along_axis(out, lo[..., None], (1.0 - w)[..., None], axis=-1)
    np.put_along_axis(out, lo[..., None] + 1, w[..., None], axis=-1)
    return out


def gaussian_dist(mos, std, levels: Sequence[float] = LEVELS, *, tiny_std: float = 0.2,
                  max_mean_err: float = 0.1, density: str = "pdf") -> np.ndarray:
    """DeQA-style discretised Gaussian soft label with the mean fixed to the MOS (see module docstring).

    Args:
        mos: (...,) MOS on the levels' scale (1–5).
        std: (...,) std on the same scale (broadcast against mos), >= 0.
        tiny_std: below this normalised std use the two-neighbour split.
        max_mean_err: if the affine-fixed, clipped and renormalised mean misses the MOS by more, use the split.
        density: "pdf" (density at the levels) or "cdf" (mass on each level's bin).
    Returns:
        (..., K) distributions whose mean equals the MOS (exactly for the split, within max_mean_err otherwise).
    """
    lv = levels_array(levels)
    m, s = np.broadcast_arrays(np.asarray(mos, dtype=np.float64), np.asarray(std, dtype=np.float64))
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"std: expected non-negative finite values, got {np.atleast_1d(s).tolist()!r}")
    split = two_point_dist(m, lv)  # also validates mos
    s_safe = np.where(s > 0, s, 1.0)[..., None]
    z = (lv - m[..., None]) / s_safe
    if density == "pdf":
        p = np.exp(-0.5 * z**2)
    elif density == "cdf":
        edges = np.concatenate([[1.5 * lv[0] - 0.5 * lv[1]], (lv[1:] + lv[:-1]) / 2, [1.5 * lv[-1] - 0.5 * lv[-2]]])
        ze = (edges - m[..., None]) / s_safe
        p = _ndtr(ze[..., 1:]) - _ndtr(ze[..., :-1])
    else:
        raise ValueError(f"density: expected 'pdf' or 'cdf', got {density!r}")
    a_sum = p.sum(axis=-1)
    p_hat = p / np.where(a_sum > 0, a_sum, 1.0)[..., None]
    centre = lv.mean()
    mu_hat = p_hat @ lv
    denom = mu_hat - centre
    degenerate = np.abs(denom) < 1e-12
    # normalised form of DeQA's alpha*p + beta: q = a*p_hat + b with sum(q) = 1 and sum(q*levels) = MOS
    a = np.where(degenerate, 1.0, (m - centre) / np.where(degenerate, 1.0, denom))
    b = (1.0 - a) / lv.size
    q = np.clip(a[..., None] * p_hat + b[..., None], 0.0, None)
    q_sum = q.sum(axis=-1, keepdims=True)
    q = q / np.where(q_sum > 0, q_sum, 1.0)
    err = np.abs(q @ lv - m)
    use_split = (s < tiny_std) | (err > max_mean_err) | (a_sum <= 0) | (q_sum[..., 0] <= 0)
    return np.where(use_split[..., None], split, q)


def rescale(x, lo: float, hi: float, *, clip: bool = False, tol: float = 1e-9) -> np.ndarray:
    """Affine map of values on [lo, hi] onto [1, 5]: 1 + 4·(x − lo)/(hi − lo).

    Raises:
        ValueError: hi <= lo, or (unless clip) a value outside [lo, hi].
    """
    if not hi > lo:
        raise ValueError(f"rescale: expected hi > lo, got lo={lo}, hi={hi}")
    v = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise ValueError(f"rescale: expected finite values, got {np.atleast_1d(v).tolist()!r}")
    if clip:
        v = np.clip(v, lo, hi)
    elif np.any((v < lo - tol) | (v > hi + tol)):
        raise ValueError(f"rescale: expected values in the stated scale [{lo}, {hi}], "
                         f"got {np.atleast_1d(v)[np.atleast_1d((v < lo - tol) | (v > hi + tol))].tolist()!r}")
    return np.clip(1.0 + 4.0 * (v - lo) / (hi - lo), 1.0, 5.0)


def rescale_std(std, lo: float, hi: float) -> np.ndarray:
    """A std on the [lo, hi] scale expressed on the 1–5 scale: std·4/(hi − lo)."""
    if not hi > lo:
        raise ValueError(f"rescale_std: expected hi > lo, got lo={lo}, hi={hi}")
    s = np.asarray(std, dtype=np.float64)
    if not np.all(np.isfinite(s)) or np.any(s < 0):
        raise ValueError(f"rescale_std: expected non-negative finite values, got {np.atleast_1d(s).tolist()!r}")
    return s * 4.0 / (hi - lo)


def rescale_z(z, z_lo: float = -3.0, z_hi: float = 3.0) -> np.ndarray:
    """z-scores onto 1–5 with stated bounds: z_lo → 1, z_hi → 5, values beyond the bounds clipped."""
    return rescale(z, z_lo, z_hi, clip=True)


def label_dist(label: DimLabel, levels: Sequence[float] = LEVELS, **gaussian_kw) -> np.ndarray:
    """Distribution (K,) for one label: hist, else ratings, else MOS(+std) (see module docstring).

    Raises:
        ValueError: the label has none of hist, ratings, mos, or a field is malformed.
    """
    lv = levels_array(levels)
    if label.hist is not None:
        h = np.asarray(label.hist, dtype=np.float64)
        if h.shape != lv.shape:
            raise ValueError(f"hist: expected {lv.size} entries (one per level), got {h.size}")
        return hist_to_dist(h)
    if label.ratings is not None:
        return hist_to_dist(ratings_to_hist(label.ratings, lv))
    if label.mos is not None:
        if label.std is None:
            return two_point_dist(label.mos, lv)
        return gaussian_dist(label.mos, label.std, lv, **gaussian_kw)
    raise ValueError("label: expected at least one of hist, ratings, mos")
