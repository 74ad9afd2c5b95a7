"""Every metric of one model on one split, assembled from the pure functions (used by `zreward.eval.runner`).

Implemented (no new maths here — `metrics`, `calibration`, `bootstrap` do it):
- `compute_metrics(data, scores)`: headline pairs = the split's `overall` pairs scored by the model's `overall`, or,
  without overall pairs, every per-dimension pair scored by its dimension's mean; non-tie accuracy and acc_23 (with
  ties); per-dimension accuracy from the pairs with that `dim`, else from **MOS-derived pairs** (`mos_pairs`: every
  two images of one prompt both labelled on the dimension, label = the higher MOS, tie when equal); KL / JS / W1
  on labelled (image, dim) rows of the dims both have; SRCC / PLCC of predicted mean vs MOS per dimension, then
  averaged over dimensions; ECE of the Thurstone P(a ≻ b) vs the rater vote share on the headline pairs, with
  overall σ = √Σ_d (w_d/Σw)²σ_d² (dims treated as independent). Each number has a 95% bootstrap CI resampling
  prompts and its n; `flatten` turns {"point", "ci", "n"} into `x`, `x_ci`, `x_n` keys.
- `paired_differences(data, scores)`: accuracy of a minus b for every two models on the same headline pairs, with
  the paired prompt-bootstrap CI (one resample, both models).
- `ceiling_metrics(data)`: the ShapesWorld annotator ceiling (oracle mean-weight overall on non-tie human pairs,
  oracle ties half right — the dataset card's definition) with its CI.
"""
from __future__ import annotations

import warnings

import numpy as np

from zreward.data.shapes_world.oracle import MEAN_WEIGHTS

from zreward.eval.bootstrap import bootstrap_ci
from zreward.eval.calibration import Calibration, calibration, ece, thurstone_prob
from zreward.metrics import accuracy_with_ties, js, kl, pairwise_accuracy, plcc, srcc, w1

__all__ = ["compute_metrics", "ceiling_metrics", "headline", "mos_pairs", "paired_differences", "flatten"]


def _ci(stat_fn, groups, n: int, n_boot: int, seed: int) -> dict:
    ci = bootstrap_ci(stat_fn, groups, n_boot=n_boot, seed=seed, n=n)
    return {"point": ci.point, "ci": [ci.lo, ci.hi], "n": ci.n}


def _pair_block(sa, sb, labels, groups, n_boot: int, seed: int) -> dict:
    """Non-tie accuracy and acc_23 (with CIs) of one set of pairs."""
    n_non_tie = int((labels != "tie").sum())
    out = {"n_pairs": int(len(labels)), "n_non_tie": n_non_tie}
    if n_non_tie:
        out["accuracy"] = _ci(lambda w: pairwise_accuracy(sa, sb, labels, weights=w), groups, n_non_tie, n_boot, seed)
    if len(labels):
        acc23, eps = accuracy_with_ties(sa, sb, labels, return_threshold=True)
        out["accuracy_ties"] = _ci(lambda w: accuracy_with_ties(sa, sb, labels, weights=w), groups, len(labels),
                                   n_boot, seed)
        out["tie_threshold"] = eps
    return out


def mos_pairs(data, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Within-prompt pairs of images both labelled on split dim j; label = higher MOS ("tie" when equal)."""
    lab = np.flatnonzero(np.isfinite(data.mos[:, j]))
    code = data.prompt_code[lab]
    ii, jj = np.triu_indices(len(lab), k=1)
    keep = code[ii] == code[jj]
    a, b = lab[ii[keep]], lab[jj[keep]]
    d = np.round(data.mos[a, j] - data.mos[b, j], 9)
    return a, b, np.where(d > 0, "a", np.where(d < 0, "b", "tie")).astype(object)


def headline(data, s) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The headline pairs of one model and, per pair of the split, the score it is judged by and that score's σ.

    Returns:
        (indices of the headline pairs: the split's overall pairs, or without them every per-dimension pair of a
        dimension the model scores; μ_a, μ_b, σ_a, σ_b: (P,) over all the split's pairs — `overall` and its σ
        for overall pairs, the pair's dimension's mean and std otherwise).
    """
    col = {d: k for k, d in enumerate(s.dims)}
    wn = s.weights / s.weights.sum()
    sigma_overall = np.sqrt((s.std ** 2) @ (wn ** 2))
    known = np.array([d == "overall" or d in col for d in data.pdim], dtype=bool)
    is_overall = data.pdim == "overall"
    idx_dim = np.array([col.get(d, 0) for d in data.pdim], np.int64)
    mu_a = np.where(is_overall, s.overall[data.pa], s.mean[data.pa, idx_dim])
    mu_b = np.where(is_overall, s.overall[data.pb], s.mean[data.pb, idx_dim])
    sd_a = np.where(is_overall, sigma_overall[data.pa], s.std[data.pa, idx_dim])
    sd_b = np.where(is_overall, sigma_overall[data.pb], s.std[data.pb, idx_dim])
    return np.flatnonzero(is_overall if is_overall.any() else known), mu_a, mu_b, sd_a, sd_b


def paired_differences(data, scores: dict, *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """Accuracy of model a minus model b on the same headline non-tie pairs, for every two models (in the order
    given), with a 95% CI from one prompt bootstrap: both accuracies are computed on the same resampled prompts, so
    the interval is the paired one (narrower than the two separate intervals suggest when the models agree).

    Returns:
        [{"a", "b", "diff", "diff_ci", "diff_n"}]: accuracy points as fractions (0.05 = 5 points); n = non-tie pairs.
    """
    heads = {name: headline(data, s) for name, s in scores.items()}
    names, out = list(scores), []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            (ha, aa, ab, _, _), (hb, ba, bb, _, _) = heads[a], heads[b]
            h = np.intersect1d(ha, hb)
            lab = data.plabel[h]
            n = int((lab != "tie").sum())
            if not n:
                continue
            ci = _ci(lambda w: pairwise_accuracy(aa[h], ab[h], lab, weights=w)
                     - pairwise_accuracy(ba[h], bb[h], lab, weights=w),
                     data.prompt_code[data.pa[h]], n, n_boot, seed)
            out.append({"a": a, "b": b, "diff": ci["point"], "diff_ci": ci["ci"], "diff_n": ci["n"]})
    return out


def compute_metrics(data, s, *, n_boot: int = 1000, seed: int = 0) -> tuple[dict, Calibration | None]:
    """Every metric of one model on one split (see the module docstring).

    Args:
        data: `runner.EvalData`.  s: `runner.ModelScores`.  n_boot / seed: bootstrap resamples and seed.

    Returns:
        (report dict, Calibration of the headline pairs or None).
    """
    mdims = s.dims
    col = {d: k for k, d in enumerate(mdims)}
    h, mu_a, mu_b, sd_a, sd_b = headline(data, s)
    is_overall = data.pdim == "overall"
    known = np.array([d == "overall" or d in col for d in data.pdim], dtype=bool)
    rep: dict = {"pairs_used": "overall" if is_overall.any() else "per-dimension",
                 "pairs_skipped_unknown_dim": int((~known).sum())}
    groups = data.prompt_code[data.pa[h]]
    rep.update(_pair_block(mu_a[h], mu_b[h], data.plabel[h], groups, n_boot, seed))
    cal = None
    if len(h):
        p_hat = thurstone_prob(mu_a[h], sd_a[h], mu_b[h], sd_b[h])
        cal = calibration(p_hat, data.outcome[h])
        rep["ece"] = _ci(lambda w: ece(p_hat, data.outcome[h], weights=w), groups, len(h), n_boot, seed)

    per_dim = {}
    for dim in mdims:
        sel = np.flatnonzero(data.pdim == dim)
        if len(sel):
            src, a, b, lab = "pairs", data.pa[sel], data.pb[sel], data.plabel[sel]
        elif dim in data.dims and np.isfinite(data.mos[:, data.dims.index(dim)]).any():
            src, (a, b, lab) = "mos", mos_pairs(data, data.dims.index(dim))
        else:
            per_dim[dim] = {"source": None, "n_pairs": 0}
            continue
        k = col[dim]
        per_dim[dim] = {"source": src, **_pair_block(s.mean[a, k], s.mean[b, k], lab, data.prompt_code[a],
                                                     n_boot, seed)}
    rep["per_dim"] = per_dim

    common = [d for d in mdims if d in data.dims]
    if common:
        sj, mj = [data.dims.index(d) for d in common], [col[d] for d in common]
        t = data.target[:, sj].reshape(-1, data.target.shape[-1])
        q = s.probs[:, mj].reshape(-1, s.probs.shape[-1])
        mask = ~np.isnan(t).all(axis=1)
        n_rows = int(mask.sum())
        rep["n_labelled_rows"] = n_rows
        if q.shape[-1] != t.shape[-1]:
            raise ValueError(f"model has {q.shape[-1]} levels but the split {data.split.root} has {t.shape[-1]}")
        if n_rows:
            row_groups = np.repeat(data.prompt_code, len(common))
            for name, fn in (("kl", kl), ("js", js)):
                rep[name] = _ci(lambda w, fn=fn: fn(t, q, mask=mask, weights=w), row_groups, n_rows, n_boot, seed)
            rep["w1"] = _ci(lambda w: w1(t, q, levels=data.levels, mask=mask, weights=w), row_groups, n_rows,
                            n_boot, seed)
        corr_dims = [(d, data.dims.index(d), col[d]) for d in common
                     if np.isfinite(data.mos[:, data.dims.index(d)]).sum() >= 3]
        for name, fn in (("srcc", srcc), ("plcc", plcc)):
            if not corr_dims:
                continue
            for d, j, k in corr_dims:
                m = np.isfinite(data.mos[:, j])
                per_dim.setdefault(d, {})[name] = fn(s.mean[:, k], np.nan_to_num(data.mos[:, j]), mask=m)

            def avg(w, fn=fn):
                vals = np.stack([np.atleast_1d(fn(s.mean[:, k], np.nan_to_num(data.mos[:, j]),
                                                  mask=np.isfinite(data.mos[:, j]), weights=w))
                                 for _, j, k in corr_dims])
                with warnings.catch_warnings():  # a resample where every dim is constant: NaN, dropped later
                    warnings.simplefilter("ignore", RuntimeWarning)
                    return np.nanmean(vals, axis=0)
            rep[name] = _ci(avg, data.prompt_code, len(data.ids), n_boot, seed)
    rep["img_per_s"] = s.reported_img_per_s
    rep["img_per_s_total"] = s.img_per_s
    rep["tokens_per_image"] = s.tokens_per_image
    rep["peak_memory_mb"] = s.peak_memory_bytes / 2**20
    rep["memory_kind"] = s.memory_kind
    rep["score_seconds"] = s.seconds
    rep["mode"] = "reasoning" if s.reasoning else "direct"
    rep["samples"] = s.samples
    return flatten(rep), cal


def flatten(rep: dict) -> dict:
    """{"accuracy": {"point", "ci", "n"}} → accuracy, accuracy_ci, accuracy_n (also inside per_dim entries);
    adds `per_dim` = {dim: accuracy} and keeps the details under `per_dim_detail`."""
    def flat(d: dict) -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict) and set(v) == {"point", "ci", "n"}:
                out[k], out[f"{k}_ci"], out[f"{k}_n"] = v["point"], v["ci"], v["n"]
            else:
                out[k] = v
        return out
    out = flat(rep)
    detail = {d: flat(v) for d, v in rep["per_dim"].items()}
    out["per_dim"] = {d: v.get("accuracy") for d, v in detail.items()}
    out["per_dim_detail"] = detail
    for key in ("accuracy", "accuracy_ci", "accuracy_ties", "kl", "js", "w1", "srcc", "plcc", "ece"):
        out.setdefault(key, None)
    return out


def ceiling_metrics(data, *, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """Annotator ceiling on the overall pairs (ShapesWorld oracle available), else None."""
    if data.oracle is None or not (data.pdim == "overall").any():
        return None
    h = np.flatnonzero(data.pdim == "overall")
    d = np.round((data.oracle[data.pa[h]] - data.oracle[data.pb[h]]) @ np.asarray(MEAN_WEIGHTS), 9)
    lab = data.plabel[h]
    zeros = np.zeros_like(d)
    n_non_tie = int((lab != "tie").sum())
    if not n_non_tie:
        return None
    ci = bootstrap_ci(lambda w: pairwise_accuracy(d, zeros, lab, weights=w), data.prompt_code[data.pa[h]],
                      n_boot=n_boot, seed=seed, n=n_non_tie)
    return {"accuracy": ci.point, "accuracy_ci": [ci.lo, ci.hi], "n_non_tie": n_non_tie}
