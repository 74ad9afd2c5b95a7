"""GSB (Good / Same / Bad) comparison of two generators judged by raters, with a bootstrap interval.

Implemented: each judgement compares generator A (the candidate) with generator B (the baseline) on one prompt:
+1 Good (A better), 0 Same, −1 Bad (A worse). Net GSB = (G − B)/(G + S + B) ∈ [−1, 1], the figure Z-Reward reports
(+41.3% over the SFT generator). The interval is the percentile bootstrap resampling whole prompts (several
raters of one prompt move together), see `zreward.eval.bootstrap`.
"""
from __future__ import annotations

import numpy as np

from zreward.eval.bootstrap import bootstrap_ci
from zreward.metrics.arrays import as_weights, finish, ternary_codes

__all__ = ["gsb_codes", "gsb_net", "gsb"]

_GSB_CODE = {"good": 1, "g": 1, "same": 0, "s": 0, "bad": -1, "b": -1}


def gsb_codes(judgements) -> np.ndarray:
    """Judgements → (N,) int64 in {+1, 0, −1}.

    Args:
        judgements: (N,) numbers in {+1, 0, −1} or strings "good"/"same"/"bad" (or "G"/"S"/"B", any case).
    """
    return ternary_codes(judgements, _GSB_CODE, "gsb", "judgements", "+1/0/-1 or 'good'/'same'/'bad'",
                         fold_case=True)


def gsb_net(judgements, weights=None):
    """Net GSB (G − B)/(G + S + B).

    Args:
        judgements: (N,) +1/0/−1 or "good"/"same"/"bad".
        weights: None, (N,) or (R, N) multiplicities.

    Returns:
        float (or (R,)) in [−1, 1]; NaN with no judgement.
    """
    c = gsb_codes(judgements).astype(np.float64)
    w, squeeze = as_weights(weights, c.shape[0], "gsb_net")
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        net = np.where(tot > 0, (w @ c) / np.where(tot > 0, tot, 1.0), np.nan)
    return finish(net, squeeze)


def gsb(judgements, groups=None, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Counts, net GSB and its bootstrap interval.

    Args:
        judgements: (N,) +1/0/−1 or "good"/"same"/"bad".
        groups: (N,) prompt id per judgement, or None (each judgement its own group).
        n_boot, alpha, seed: see `bootstrap_ci`.

    Returns:
        {"good", "same", "bad", "n": counts, "net": (G − B)/N, "net_lo", "net_hi": the (1 − alpha) interval}.
    """
    c = gsb_codes(judgements)
    if c.shape[0] == 0:
        raise ValueError("gsb: no judgements")
    g = c.shape[0] if groups is None else groups
    if groups is not None and np.shape(groups) != c.shape:
        raise ValueError(f"gsb: groups has shape {np.shape(groups)}, expected {c.shape}")
    ci = bootstrap_ci(lambda w: gsb_net(c, weights=w), g, n_boot=n_boot, alpha=alpha, seed=seed)
    return {"good": int((c == 1).sum()), "same": int((c == 0).sum()), "bad": int((c == -1).sum()),
            "n": int(c.shape[0]), "net": ci.point, "net_lo": ci.lo, "net_hi": ci.hi}
