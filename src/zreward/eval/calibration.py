"""Calibration of pairwise preference probabilities: Thurstone P(a ≻ b), ECE, reliability diagram.

Implemented:
- `thurstone_prob`: Thurstone Case V P̂(a ≻ b) = Φ((μa − μb)/√(σa² + σb² + var_eps)) from the predicted score
  distributions' means and stds (the same probability `zreward.losses.pairwise.thurstone_fidelity` trains,
  same var_eps default).
- `pair_outcome`: the empirical outcome per pair: the human vote share for a (votes a / (a + b), ties
  split half-half when a "tie" count is given) or, from a label, a → 1, b → 0, tie → 0.5.
- `calibration` / `ece`: expected calibration error (Naeini et al. 2015, https://ojs.aaai.org/index.php/AAAI/
  article/view/9602; Guo et al. 2017) with B equal-width bins over the predicted probability on [0, 1] (bin b holds
  p ∈ [b/B, (b+1)/B), the last bin also holds p = 1): ECE = Σ_b (n_b/N)·|acc_b − conf_b| where conf_b is the mean
  predicted P̂ and acc_b the mean outcome in bin b. Swapping a and b maps P̂ → 1 − P̂ and outcome → 1 − outcome,
  which mirrors the bins, so ECE does not depend on pair orientation (except for P̂ exactly on a bin edge).
- `plot_reliability`: reliability diagram (per-bin outcome vs confidence, bin counts) written as a PNG with the
  matplotlib Agg canvas (no global backend switch).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from zreward.metrics.arrays import as_array, as_weights, finish
from zreward.metrics import label_signs

__all__ = ["Calibration", "thurstone_prob", "pair_outcome", "calibration", "ece", "plot_reliability"]


def thurstone_prob(mu_a, sigma_a, mu_b, sigma_b, var_eps: float = 1e-6) -> np.ndarray:
    """P̂(a ≻ b) = Φ((μa − μb)/√(σa² + σb² + var_eps)).

    Args:
        mu_a, mu_b: (N,) predicted mean scores.
        sigma_a, sigma_b: (N,) predicted score stds (≥ 0).
        var_eps: keeps two point masses (σ = 0) from dividing by zero.

    Returns:
        (N,) float64 probabilities.
    """
    arrs = [as_array(v, "thurstone_prob", f) for v, f in
            ((mu_a, "mu_a"), (sigma_a, "sigma_a"), (mu_b, "mu_b"), (sigma_b, "sigma_b"))]
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(f"thurstone_prob: shapes {[a.shape for a in arrs]}, expected one shape (N,)")
    ma, sa, mb, sb = arrs
    if np.any(sa < 0) or np.any(sb < 0):
        raise ValueError("thurstone_prob: sigma_a / sigma_b must be >= 0")
    z = (ma - mb) / np.sqrt(sa * sa + sb * sb + var_eps)
    return torch.special.ndtr(torch.from_numpy(np.ascontiguousarray(z))).numpy()


def pair_outcome(labels=None, votes_a=None, votes_b=None, votes_tie=None) -> np.ndarray:
    """Empirical P(a ≻ b) per pair, from vote counts when given, else from labels.

    Args:
        labels: (N,) "a"/"b"/"tie" or +1/−1/0 (→ 1, 0, 0.5).
        votes_a, votes_b: (N,) vote counts; outcome = (a + ½·tie) / (a + b + tie).
        votes_tie: (N,) tie votes or None.

    Returns:
        (N,) float64 in [0, 1].
    """
    if votes_a is None and votes_b is None:
        if labels is None:
            raise ValueError("pair_outcome: give labels or votes_a and votes_b")
        return (label_signs(labels, "pair_outcome") + 1) / 2.0
    if votes_a is None or votes_b is None:
        raise ValueError("pair_outcome: votes_a and votes_b must be given together")
    va, vb = as_array(votes_a, "pair_outcome", "votes_a"), as_array(votes_b, "pair_outcome", "votes_b")
    vt = np.zeros_like(va) if votes_tie is None else as_array(votes_tie, "pair_outcome", "votes_tie")
    if not (va.shape == vb.shape == vt.shape):
        raise ValueError(f"pair_outcome: votes shapes {va.shape}, {vb.shape}, {vt.shape} must be equal")
    tot = va + vb + vt
    bad = ~(tot > 0) | (va < 0) | (vb < 0) | (vt < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"pair_outcome: pair {i}: votes a={va[i]}, b={vb[i]}, tie={vt[i]}, "
                         "expected non-negative counts with a positive total")
    return (va + 0.5 * vt) / tot


@dataclass
class Calibration:
    """ECE and the per-bin data of a reliability diagram.

    Attributes:
        ece: expected calibration error (probability units).
        edges: (B + 1,) bin edges on [0, 1].
        conf: (B,) mean predicted probability per bin (NaN for an empty bin).
        acc: (B,) mean empirical outcome per bin (NaN for an empty bin).
        count: (B,) number of pairs per bin.
        n: number of pairs.
    """
    ece: float
    edges: np.ndarray
    conf: np.ndarray
    acc: np.ndarray
    count: np.ndarray
    n: int


def _binned(p_pred, outcome, n_bins: int, weights, what: str):
    p = as_array(p_pred, what, "p_pred")
    o = as_array(outcome, what, "outcome")
    if p.ndim != 1 or p.shape != o.shape:
        raise ValueError(f"{what}: p_pred {p.shape} and outcome {o.shape}, expected equal (N,)")
    for arr, field in ((p, "p_pred"), (o, "outcome")):
        bad = ~(np.isfinite(arr) & (arr >= 0) & (arr <= 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{what}: {field}[{i}] = {arr[i]}, expected a probability in [0, 1]")
    if n_bins < 1:
        raise ValueError(f"{what}: n_bins={n_bins}, expected >= 1")
    w, squeeze = as_weights(weights, p.shape[0], what)
    idx = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    onehot = np.zeros((p.shape[0], n_bins))
    onehot[np.arange(p.shape[0]), idx] = 1.0
    count = w @ onehot                                                          # (R, B)
    sum_conf = w @ (onehot * p[:, None])
    sum_acc = w @ (onehot * o[:, None])
    total = w.sum(axis=1)
    # (n_b/N)|acc_b − conf_b| = |Σ_b outcome − Σ_b p̂| / N
    with np.errstate(invalid="ignore", divide="ignore"):
        e = np.where(total > 0, np.abs(sum_acc - sum_conf).sum(axis=1) / np.where(total > 0, total, 1.0), np.nan)
    return e, count, sum_conf, sum_acc, squeeze


def ece(p_pred, outcome, n_bins: int = 10, weights=None):
    """Expected calibration error with equal-width bins.

    Args:
        p_pred: (N,) predicted P(a ≻ b) in [0, 1].
        outcome: (N,) empirical outcome in [0, 1] (see `pair_outcome`).
        n_bins: number of bins B.
        weights: None, (N,) or (R, N) multiplicities.

    Returns:
        float (or (R,)); NaN with no weight.
    """
    e, *_, squeeze = _binned(p_pred, outcome, n_bins, weights, "ece")
    return finish(e, squeeze)


def calibration(p_pred, outcome, n_bins: int = 10) -> Calibration:
    """ECE plus the per-bin reliability data (see `ece` for the arguments)."""
    e, count, sum_conf, sum_acc, _ = _binned(p_pred, outcome, n_bins, None, "calibration")
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count[0] > 0, sum_conf[0] / count[0], np.nan)
        acc = np.where(count[0] > 0, sum_acc[0] / count[0], np.nan)
    return Calibration(ece=float(e[0]), edges=np.linspace(0.0, 1.0, n_bins + 1), conf=conf, acc=acc,
                       count=count[0].astype(np.int64), n=int(count[0].sum()))


def plot_reliability(cal: Calibration, path: str | Path, title: str | None = None) -> Path:
    """Writes a reliability diagram PNG: outcome vs confidence per bin (top) and pairs per bin (bottom).

    Args:
        cal: result of `calibration`.
        path: output .png path (parent directories are created).
        title: optional title; the ECE and n are always shown.

    Returns:
        The written path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4.5, 5.5))
    FigureCanvasAgg(fig)
    ax, ax_n = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    centers = 0.5 * (cal.edges[:-1] + cal.edges[1:])
    width = np.diff(cal.edges)
    ok = cal.count > 0
    ax.bar(centers[ok], cal.acc[ok], width=width[ok], edgecolor="black", color="tab:blue", alpha=0.7,
           label="empirical P(a ≻ b)")
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.plot(cal.conf[ok], cal.acc[ok], "o", color="tab:red", markersize=4, label="bin mean confidence")
    ax.set_ylim(0, 1)
    ax.set_ylabel("outcome")
    ax.legend(loc="upper left", fontsize=7)
    head = f"{title}\n" if title else ""
    ax.set_title(f"{head}ECE = {cal.ece:.4f}  (n = {cal.n})", fontsize=9)
    ax_n.bar(centers, cal.count, width=width, edgecolor="black", color="gray")
    ax_n.set_xlim(0, 1)
    ax_n.set_xlabel("predicted Thurstone P(a ≻ b)")
    ax_n.set_ylabel("pairs")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path
