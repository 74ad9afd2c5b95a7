"""Evaluation metrics for reward models: pairwise preference accuracy, distribution quality, rank correlation.

Implemented (pure functions; numpy / torch / lists in, floats out; float64 inside; no scipy):
- `pairwise_accuracy`: accuracy on the pairs humans did not tie. A pair is predicted "a" when score_a > score_b.
  **A predicted tie (score_a == score_b) counts as half correct** (the expected accuracy of a coin flip), so a
  scorer that returns a constant gets 0.5, not 0 or 1.
- `accuracy_with_ties`: mt-metrics-eval's `acc_23` with tie calibration (Deutsch, Foster & Freitag 2023,
  https://arxiv.org/abs/2305.14324): for a threshold ε ≥ 0 a pair is predicted a tie when |Δ| ≤ ε (Δ = score_a −
  score_b), else the side with the higher score; accuracy = (concordant + both-tied) / all pairs, human ties
  included; maximised over ε ∈ {0} ∪ {distinct |Δ|}. All pairs sharing one |Δ| switch to "tie" together at that ε
  (a popular copy evaluates every sorted position, i.e. half-switched groups, which inflates the value when rubric
  scores make equal |Δ| common). The smallest maximising ε is returned. One global ε over all pairs (the original
  averages per-item rows; our pairs are flat).
- `accuracy_by_dim`: both accuracies per dimension of per-dimension pairs.
- `kl`, `js`, `w1`: per-row KL(p_target ‖ q_pred) and JS divergence (nats), and the 1-Wasserstein distance on the
  score levels (**score points**; on the 9 levels spaced 0.5 it is 0.5·Σ_k |CDF_p − CDF_q|_k), then the mean over
  labelled rows. Rows are normalised to sum 1 (so histogram counts are accepted); a row is unlabelled when mask is
  False or its target is all NaN.
- `srcc` (Spearman with average ranks for ties) and `plcc` (Pearson), e.g. of predicted means vs MOS.
(Means/stds of the predicted distributions for SRCC/PLCC and Thurstone: `zreward.data.labels.dist_mean_std`.)

Every metric takes `weights` (N,) or (R, N) item multiplicities and then returns one value per row (see
`zreward.eval.bootstrap`); a metric with no usable item (all weight zero) is NaN.
"""
from __future__ import annotations

import numpy as np
import torch

from zreward.data.records import LEVELS
from zreward.metrics.arrays import as_array, as_weights, finish, ternary_codes
from zreward.losses.distribution import kl_rows

__all__ = [
    "label_signs",
    "pairwise_accuracy",
    "accuracy_with_ties",
    "accuracy_by_dim",
    "kl",
    "js",
    "w1",
    "srcc",
    "plcc",
]

_LABEL_SIGN = {"a": 1, "b": -1, "tie": 0}


def label_signs(labels, what: str = "labels") -> np.ndarray:
    """Human pair labels → signs: "a"/+1 → +1 (a preferred), "b"/−1 → −1, "tie"/0 → 0.

    Args:
        labels: (N,) strings in {"a", "b", "tie"} or numbers in {+1, −1, 0}.
        what: metric name for errors.

    Returns:
        (N,) int64 array in {−1, 0, +1}.
    """
    return ternary_codes(labels, _LABEL_SIGN, what, "labels", "'a', 'b', 'tie' or +1/-1/0")


def _pair_inputs(score_a, score_b, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    a = as_array(score_a, what, "score_a")
    b = as_array(score_b, what, "score_b")
    h = label_signs(labels, what)
    if a.ndim != 1 or a.shape != b.shape or a.shape != h.shape:
        raise ValueError(f"{what}: score_a {a.shape}, score_b {b.shape}, labels {h.shape}: expected equal (N,)")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        i = int(np.flatnonzero(~(np.isfinite(a) & np.isfinite(b)))[0])
        raise ValueError(f"{what}: pair {i}: score_a={a[i]}, score_b={b[i]}, expected finite scores")
    return a - b, h


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def pairwise_accuracy(score_a, score_b, labels, weights=None):
    """Preference accuracy on non-tie pairs; a predicted tie (score_a == score_b) counts 0.5.

    Args:
        score_a, score_b: (N,) predicted scores (`overall`, or one dimension's mean for per-dimension pairs).
        labels: (N,) human labels ("a"/"b"/"tie" or +1/−1/0); human ties are ignored.
        weights: None, (N,) or (R, N) item multiplicities.

    Returns:
        float (or (R,) for 2-D weights) in [0, 1]; NaN when there is no non-tie pair.
    """
    d, h = _pair_inputs(score_a, score_b, labels, "pairwise_accuracy")
    w, squeeze = as_weights(weights, d.shape[0], "pairwise_accuracy")
    correct = np.where(h == 0, 0.0, np.where(d == 0, 0.5, (np.sign(d) == h).astype(np.float64)))
    non_tie = (h != 0).astype(np.float64)
    return finish(_ratio(w @ correct, w @ non_tie), squeeze)


def accuracy_with_ties(score_a, score_b, labels, weights=None, *, threshold: float | None = None,
                       return_threshold: bool = False):
    """acc_23: pairwise accuracy over all pairs with tie calibration (maximised over the tie threshold ε).

    Args:
        score_a, score_b: (N,) predicted scores.
        labels: (N,) human labels ("a"/"b"/"tie" or +1/−1/0).
        weights: None, (N,) or (R, N) item multiplicities; ε is re-optimised for every weight row, so a bootstrap
            interval includes the variance of choosing ε.
        threshold: evaluate at this fixed ε ≥ 0 (e.g. tuned on a dev split) instead of maximising.
        return_threshold: also return the ε used (float, or (R,) array).

    Returns:
        acc, or (acc, ε) when `return_threshold`. acc is a float, or (R,) for 2-D weights; NaN with no weight.
    """
    d, h = _pair_inputs(score_a, score_b, labels, "accuracy_with_ties")
    n = d.shape[0]
    w, squeeze = as_weights(weights, n, "accuracy_with_ties")
    ad = np.abs(d)
    order = np.argsort(ad, kind="stable")
    ad_s, h_s, d_s = ad[order], h[order], d[order]
    ws = w[:, order]
    # Once predicted tie (|Δ| ≤ ε) a pair is correct iff humans tied; otherwise iff the signs agree.
    zero = np.zeros((w.shape[0], 1))
    cum_tie = np.concatenate([zero, np.cumsum(ws * (h_s == 0), axis=1)], axis=1)           # (R, N+1)
    cum_con = np.concatenate([zero, np.cumsum(ws * ((h_s != 0) & (np.sign(d_s) == h_s)), axis=1)], axis=1)
    total = w.sum(axis=1)
    if threshold is not None:
        if not threshold >= 0:
            raise ValueError(f"accuracy_with_ties: threshold={threshold}, expected a number >= 0")
        cand = np.array([float(threshold)])
    else:
        cand = np.unique(np.concatenate([[0.0], ad_s]))                                       # (K,)
    # Number of pairs with |Δ| ≤ ε for each candidate: every pair with an equal |Δ| switches at once.
    k_end = np.searchsorted(ad_s, cand, side="right")                                         # (K,)
    correct = cum_tie[:, k_end] + (cum_con[:, -1:] - cum_con[:, k_end])                       # (R, K)
    acc = _ratio(correct, total[:, None])
    best = np.argmax(np.nan_to_num(acc, nan=-1.0), axis=1)                                    # first max = smallest ε
    acc_best = acc[np.arange(acc.shape[0]), best]
    if return_threshold:
        return finish(acc_best, squeeze), finish(cand[best], squeeze)
    return finish(acc_best, squeeze)


def accuracy_by_dim(score_a, score_b, labels, dims) -> dict[str, dict[str, float]]:
    """Both pairwise accuracies per dimension.

    Args:
        score_a, score_b: (N,) scores of each pair's own dimension (that dimension's mean for per-dim pairs).
        labels: (N,) human labels.
        dims: (N,) dimension name per pair (e.g. PairRecord.dim).

    Returns:
        {dim: {"n": pairs, "n_non_tie": non-tie pairs, "accuracy": non-tie accuracy,
        "accuracy_with_ties": acc_23, "tie_threshold": its ε}} in sorted dim order.
    """
    d, h = _pair_inputs(score_a, score_b, labels, "accuracy_by_dim")
    dims = np.asarray(dims)
    if dims.shape != d.shape:
        raise ValueError(f"accuracy_by_dim: dims has shape {dims.shape}, expected {d.shape}")
    zeros = np.zeros_like(d)
    out: dict[str, dict[str, float]] = {}
    for dim in sorted(set(dims.tolist())):  # a handful of dimensions, each metric vectorised inside
        m = dims == dim
        acc23, eps = accuracy_with_ties(d[m], zeros[m], h[m], return_threshold=True)
        out[str(dim)] = {"n": int(m.sum()), "n_non_tie": int((h[m] != 0).sum()),
                         "accuracy": pairwise_accuracy(d[m], zeros[m], h[m]),
                         "accuracy_with_ties": acc23, "tie_threshold": eps}
    return out


# ---------------------------------------------------------------------------------------------- distributions

def _levels(levels, n_levels: int, what: str) -> np.ndarray:
    x = np.asarray(LEVELS if levels is None else as_array(levels, what, "levels"), dtype=np.float64)
    if x.shape != (n_levels,) or np.any(np.diff(x) <= 0):
        raise ValueError(f"{what}: levels {x.tolist()} must be {n_levels} strictly increasing values")
    return x


def _rows(p, what: str, field: str, mask, labelled_from_nan: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validated, row-normalised (N, L) distributions and the (N,) bool mask of usable rows."""
    x = as_array(p, what, field)
    if x.ndim != 2:
        raise ValueError(f"{what}: {field} has shape {x.shape}, expected (N, L) distributions over the levels")
    m = np.ones(x.shape[0], dtype=bool)
    if mask is not None:
        mk = as_array(mask, what, "mask", dtype=bool)
        if mk.shape != m.shape:
            raise ValueError(f"{what}: mask has shape {mk.shape}, expected ({x.shape[0]},)")
        m &= mk
    if labelled_from_nan:
        m &= ~np.all(np.isnan(x), axis=1)  # an all-NaN target row means "no label"
    s = x.sum(axis=1)
    bad = m & (~np.all(np.isfinite(x), axis=1) | np.any(x < 0, axis=1) | ~(s > 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: {field} row {i} = {x[i].tolist()}, expected finite non-negative values "
                         "with a positive sum (or mask it / all-NaN target for no label)")
    x = np.where(m[:, None], x, 1.0)  # placeholder rows keep the arithmetic finite; they get weight 0
    return x / x.sum(axis=1, keepdims=True), m


def _dist_pair(p_target, q_pred, mask, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ps, qs = np.shape(p_target), np.shape(q_pred)
    if ps != qs:
        raise ValueError(f"{what}: p_target {ps} and q_pred {qs} must have the same shape (N, L)")
    p, m = _rows(p_target, what, "p_target", mask, labelled_from_nan=True)
    q, mq = _rows(q_pred, what, "q_pred", m, labelled_from_nan=False)  # only labelled rows are validated
    return p, q, m & mq


def _row_mean(per_row: np.ndarray, m: np.ndarray, weights, reduction: str, what: str):
    if reduction == "none":
        return np.where(m, per_row, np.nan)
    if reduction != "mean":
        raise ValueError(f"{what}: reduction={reduction!r}, expected 'mean' or 'none'")
    w, squeeze = as_weights(weights, per_row.shape[0], what)
    w = w * m
    return finish(_ratio(w @ np.where(m, per_row, 0.0), w.sum(axis=1)), squeeze)


def _kl_rows(p: np.ndarray, q: np.ndarray, eps: float) -> np.ndarray:
    """Per-row KL(p ‖ q) through the one KL formula (`zreward.losses.kl_rows`), in float64.

    q is floored at eps so a zero predicted mass gives a large finite value, not inf; where p = 0 the term is 0.
    """
    logq = np.log(np.where(p > 0, np.maximum(q, eps), 1.0))
    return kl_rows(torch.from_numpy(p), torch.from_numpy(logq)).numpy()


def kl(p_target, q_pred, mask=None, weights=None, eps: float = 1e-12, reduction: str = "mean"):
    """KL(p_target ‖ q_pred) in nats per row, then the mean over labelled rows.

    Args:
        p_target: (N, L) target distributions or histogram counts; an all-NaN row = no label.
        q_pred: (N, L) predicted distributions.
        mask: (N,) bool or None; False = no label.
        weights: None, (N,) or (R, N) row multiplicities (reduction="mean" only).
        eps: floor for q inside the log.
        reduction: "mean" → float (or (R,)); "none" → (N,) with NaN on unlabelled rows.
    """
    p, q, m = _dist_pair(p_target, q_pred, mask, "kl")
    return _row_mean(_kl_rows(p, q, eps), m, weights, reduction, "kl")


def js(p_target, q_pred, mask=None, weights=None, reduction: str = "mean"):
    """Jensen–Shannon divergence ½KL(p‖m) + ½KL(q‖m), m = (p + q)/2, in nats (≤ log 2), per row then mean.

    Args: as `kl` (no eps needed: m ≥ p/2).
    """
    p, q, m = _dist_pair(p_target, q_pred, mask, "js")
    mid = 0.5 * (p + q)
    per_row = 0.5 * _kl_rows(p, mid, 0.0) + 0.5 * _kl_rows(q, mid, 0.0)
    return _row_mean(per_row, m, weights, reduction, "js")


def w1(p_target, q_pred, levels=None, mask=None, weights=None, reduction: str = "mean"):
    """1-Wasserstein distance on the score levels in score points: Σ_k |CDF_p − CDF_q|_k · (x_{k+1} − x_k).

    Args:
        p_target, q_pred, mask, weights, reduction: as `kl`.
        levels: (L,) increasing level values; default the 9 levels 1.0..5.0 (then W1 = 0.5·Σ|ΔCDF|).

    Returns:
        float (or (R,) / (N,)); a point mass moved by one level gives 0.5.
    """
    p, q, m = _dist_pair(p_target, q_pred, mask, "w1")
    x = _levels(levels, p.shape[1], "w1")
    cdf_gap = np.abs(np.cumsum(p - q, axis=1))[:, :-1]  # the last CDF entry is 1 − 1 = 0
    return _row_mean(cdf_gap @ np.diff(x), m, weights, reduction, "w1")


# ----------------------------------------------------------------------------------------------- correlations

def _xy(x, y, mask, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a, b = as_array(x, what, "x"), as_array(y, what, "y")
    if a.ndim != 1 or a.shape != b.shape:
        raise ValueError(f"{what}: x {a.shape} and y {b.shape}, expected equal (N,)")
    m = np.ones(a.shape, dtype=bool) if mask is None else as_array(mask, what, "mask", dtype=bool)
    if m.shape != a.shape:
        raise ValueError(f"{what}: mask has shape {m.shape}, expected {a.shape}")
    bad = m & ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: item {i}: x={a[i]}, y={b[i]}, expected finite values (or mask it)")
    return np.where(m, a, 0.0), np.where(m, b, 0.0), m


def _weighted_pearson(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """x, y: (R, N) or (N,); w: (R, N). Returns (R,) Pearson r of the weighted sample; NaN if a variance is 0."""
    tot = w.sum(axis=1, keepdims=True)
    safe = np.where(tot > 0, tot, 1.0)
    xc = x - (w * x).sum(axis=1, keepdims=True) / safe
    yc = y - (w * y).sum(axis=1, keepdims=True) / safe
    cov = (w * xc * yc).sum(axis=1)
    vx, vy = (w * xc * xc).sum(axis=1), (w * yc * yc).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(vx * vy)
    # Variances that are rounding noise relative to the data scale mean "constant input": undefined.
    tiny = 1e-24 * np.maximum((w * x * x).sum(axis=1), 1e-300) * np.maximum((w * y * y).sum(axis=1), 1e-300)
    return np.where((vx * vy > tiny) & (tot[:, 0] > 0), np.clip(r, -1.0, 1.0), np.nan)


def _weighted_ranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) of x inside the sample where item i appears w[r, i] times. Returns (R, N)."""
    order = np.argsort(x, kind="stable")
    xs = x[order]
    _, first, inv = np.unique(xs, return_index=True, return_inverse=True)        # equal values form one group
    ws = w[:, order]
    cw = np.cumsum(ws, axis=1)
    last = np.concatenate([first[1:], [xs.shape[0]]]) - 1
    before = cw[:, first] - ws[:, first]                                        # (R, G) weight below the group
    count = cw[:, last] - before                                                 # (R, G) copies in the group
    ranks_sorted = (before + (count + 1.0) / 2.0)[:, inv]
    ranks = np.empty_like(ranks_sorted)
    ranks[:, order] = ranks_sorted
    return ranks


def srcc(x, y, mask=None, weights=None):
    """Spearman rank correlation (average ranks for ties), e.g. predicted mean vs MOS.

    Args:
        x, y: (N,) values.
        mask: (N,) bool or None; masked items are left out.
        weights: None, (N,) or (R, N) item multiplicities (ranks are those of the expanded sample).

    Returns:
        float (or (R,)); NaN when either side is constant.
    """
    a, b, m = _xy(x, y, mask, "srcc")
    w, squeeze = as_weights(weights, a.shape[0], "srcc")
    w = w * m
    return finish(_weighted_pearson(_weighted_ranks(a, w), _weighted_ranks(b, w), w), squeeze)


def plcc(x, y, mask=None, weights=None):
    """Pearson linear correlation (no logistic fitting), e.g. predicted mean vs MOS.

    Args: as `srcc`.

    Returns:
        float (or (R,)); NaN when either side is constant.
    """
    a, b, m = _xy(x, y, mask, "plcc")
    w, squeeze = as_weights(weights, a.shape[0], "plcc")
    w = w * m
    return finish(_weighted_pearson(a[None, :], b[None, :], w), squeeze)
