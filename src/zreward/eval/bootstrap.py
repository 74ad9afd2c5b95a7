"""Bootstrap confidence intervals resampled by group (prompt).

Implemented:
- `bootstrap_ci`: the percentile bootstrap (Efron & Tibshirani 1993, ch. 13) with *cluster* resampling: the G
  groups (e.g. prompt ids) are drawn with replacement G times and every item of a drawn group enters the resample
  (all its pairs/images together), because items of one prompt are correlated and item-level resampling would
  give intervals that are too narrow. The interval is [q(α/2), q(1 − α/2)] of the resampled statistics (NaN
  resamples, e.g. a resample without any non-tie pair, are dropped; the number dropped is not reported).
- Resamples are represented as **item weights**: weight w_i = how many times item i's group was drawn. Every
  metric in `zreward.eval` accepts `weights` of shape (N,) or (R, N) and then returns one value per weight row,
  which is exactly the metric of the expanded (duplicated) sample. So R = 1000 resamples are one vectorised call
  (chunked to bound memory), not 1000 Python calls.
(The array helpers every metric shares, `as_array` / `as_weights` / `finish`, live in `zreward.metrics.arrays`.)
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci", "resample_weights"]

# Largest (resamples × items) weight block materialised at once (float64: 32 MB).
_MAX_BLOCK = 4_000_000


class BootstrapCI(NamedTuple):
    """A point estimate with its percentile-bootstrap interval.

    Attributes:
        point: the statistic on the full sample (every item weight 1).
        lo, hi: the (1 − alpha) interval bounds.
        n: number of items the statistic is computed on (reported next to every number).
    """
    point: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        return f"{self.point:.4f} [{self.lo:.4f}, {self.hi:.4f}] (n={self.n})"


def resample_weights(codes: np.ndarray, n_groups: int, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Item weights for `n_resamples` cluster-bootstrap resamples.

    Args:
        codes: (N,) int group index of each item, in [0, n_groups).
        n_groups: G.
        n_resamples: R.
        rng: numpy Generator.

    Returns:
        (R, N) float64: w[r, i] = number of times item i's group was drawn in resample r (draws: G with
        replacement).
    """
    draws = rng.integers(0, n_groups, size=(n_resamples, n_groups))
    # One bincount over offset indices counts every resample at once.
    flat = (draws + (np.arange(n_resamples) * n_groups)[:, None]).ravel()
    counts = np.bincount(flat, minlength=n_resamples * n_groups).reshape(n_resamples, n_groups)
    return counts[:, codes].astype(np.float64)


def bootstrap_ci(stat_fn: Callable[[np.ndarray], np.ndarray], groups: Sequence | np.ndarray | int,
                 n_boot: int = 1000, alpha: float = 0.05, seed: int = 0, *, n: int | None = None) -> BootstrapCI:
    """Percentile bootstrap CI of a statistic, resampling whole groups with replacement.

    Args:
        stat_fn: maps item weights (R, N) to statistics (R,) — e.g.
            ``lambda w: pairwise_accuracy(sa, sb, labels, weights=w)``. It must treat weights as multiplicities.
        groups: (N,) group id per item (prompt ids; any hashable, sortable values) or an int N meaning every
            item is its own group.
        n_boot: number of resamples R (> 0).
        alpha: 1 − coverage, e.g. 0.05 for a 95% interval.
        seed: seed of the numpy Generator (same seed → same interval).
        n: the count to report; defaults to N (pass e.g. the number of non-tie pairs for non-tie accuracy).

    Returns:
        BootstrapCI(point, lo, hi, n). With a single group the interval collapses to the point.

    Example:
        >>> import numpy as np
        >>> from zreward.metrics import pairwise_accuracy
        >>> sa, sb = np.array([3.0, 2.0, 4.0, 1.0]), np.array([1.0, 2.5, 3.5, 2.0])
        >>> labels, prompts = ["a", "a", "a", "b"], ["p0", "p0", "p1", "p2"]
        >>> ci = bootstrap_ci(lambda w: pairwise_accuracy(sa, sb, labels, weights=w), prompts, n_boot=200)
        >>> print(ci.point, ci.n, 0.0 <= ci.lo <= ci.point <= ci.hi <= 1.0)
        0.75 4 True
    """
    if isinstance(groups, (int, np.integer)):
        codes = np.arange(int(groups))
    else:
        g = np.asarray(groups)
        if g.ndim != 1:
            raise ValueError(f"bootstrap_ci: groups has shape {g.shape}, expected (N,) group ids")
        _, codes = np.unique(g, return_inverse=True)
    n_items = int(codes.shape[0])
    if n_items == 0:
        raise ValueError("bootstrap_ci: no items (groups is empty)")
    if n_boot < 1 or not 0 < alpha < 1:
        raise ValueError(f"bootstrap_ci: n_boot={n_boot}, alpha={alpha}; expected n_boot >= 1 and 0 < alpha < 1")
    n_groups = int(codes.max()) + 1

    point = np.asarray(stat_fn(np.ones((1, n_items))), dtype=np.float64).reshape(-1)
    if point.shape != (1,):
        raise ValueError(f"bootstrap_ci: stat_fn returned shape {point.shape} for weights (1, {n_items}), "
                         "expected (1,) — it must return one value per weight row")
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, _MAX_BLOCK // n_items))
    stats = []
    for start in range(0, n_boot, chunk):
        w = resample_weights(codes, n_groups, min(chunk, n_boot - start), rng)
        s = np.asarray(stat_fn(w), dtype=np.float64).reshape(-1)
        if s.shape != (w.shape[0],):
            raise ValueError(f"bootstrap_ci: stat_fn returned shape {s.shape} for weights {w.shape}, "
                             f"expected ({w.shape[0]},)")
        stats.append(s)
    stats = np.concatenate(stats)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        lo = hi = float("nan")
    else:
        lo, hi = (float(v) for v in np.quantile(stats, [alpha / 2, 1 - alpha / 2]))
    return BootstrapCI(float(point[0]), lo, hi, n_items if n is None else int(n))
