"""Evaluation reports: `report.json` + a readable `report.md` with PNG plots (matplotlib Agg canvas, no pyplot).

Implemented:
- `write_eval_report(out, data, results, cals, scores, meta)`: what `zreward eval` writes — report.json (per model
  name under `models`, plus split facts, ceiling, settings, software, command), report.md (accuracy, per-dimension,
  distribution/calibration and cost tables; every number with its 95% CI and n), reliability diagrams per model,
  accuracy vs cost, an example grid, and `predictions/<name>.npz` (ids, dims, levels, probs, mean, overall) for
  later plots and `zreward eval compare`.
- Plot helpers shared with `zreward demo`: `plot_acc_vs_cost`, `plot_training_curves` (from metrics.jsonl),
  `plot_examples` (test images with each model's level distribution next to the annotator histogram).
- `software_versions()`: python / torch / transformers / numpy / ... versions for the report.
"""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import numpy as np

from zreward.eval.calibration import plot_reliability
from zreward.eval.model_metrics import paired_differences
from zreward.eval.runner import EvalData, ModelScores, json_clean

__all__ = ["software_versions", "fmt", "fmt_ci", "plot_acc_vs_cost", "plot_training_curves", "plot_examples",
           "model_tables", "write_eval_report", "read_metrics_jsonl"]


def software_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("zreward", "torch", "transformers", "accelerate", "peft", "trl", "numpy", "scipy", "matplotlib"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def fmt(v, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{digits}f}"


def fmt_ci(rep: dict, key: str, digits: int = 3, pct: bool = False) -> str:
    """`0.812 [0.790, 0.833] (n=1348)` from rep[key], rep[key_ci], rep[key_n]; percent points when pct."""
    v = rep.get(key)
    if v is None or not np.isfinite(v):
        return "–"
    k = 100.0 if pct else 1.0
    d = 1 if pct else digits
    ci = rep.get(f"{key}_ci") or [None, None]
    lo, hi = ci
    s = f"{v * k:.{d}f}"
    if lo is not None and hi is not None and np.isfinite(lo) and np.isfinite(hi):
        s += f" [{lo * k:.{d}f}, {hi * k:.{d}f}]"
    n = rep.get(f"{key}_n")
    return s + (f" (n={n})" if n is not None else "")


# ------------------------------------------------------------------------------------------------------ plots

def plot_acc_vs_cost(results: dict[str, dict], path: str | Path, ceiling: float | None = None,
                     title: str = "accuracy vs cost") -> Path:
    """Non-tie pairwise accuracy (± 95% CI) against images/s (log scale), one point per model."""
    fig = _figure(6, 4.2)
    ax = fig.subplots()
    for i, (name, r) in enumerate(results.items()):
        acc, ips = r.get("accuracy"), r.get("img_per_s")
        if acc is None or ips is None or not (np.isfinite(acc) and ips > 0):
            continue
        lo, hi = r.get("accuracy_ci") or [acc, acc]
        ax.errorbar([ips], [acc], yerr=[[acc - lo], [hi - acc]], fmt="o", capsize=3, color=f"C{i % 10}",
                    label=f"{name} ({r.get('mode', '?')})")
        ax.annotate(name, (ips, acc), textcoords="offset points", xytext=(5, 4), fontsize=7)
    if ceiling is not None:
        ax.axhline(ceiling, ls="--", color="gray", label=f"annotator ceiling {ceiling:.3f}")
    ax.axhline(0.5, ls=":", color="lightgray", label="chance")
    ax.set_xscale("log")
    ax.set_xlabel("images / s (log; this machine, same run)")
    ax.set_ylabel("pairwise accuracy (non-tie)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=100)
    return path


def read_metrics_jsonl(path: str | Path) -> list[dict]:
    """The JSON lines of a trainer's metrics.jsonl (unparseable lines are an error naming file and line)."""
    rows = []
    for k, line in enumerate(Path(path).read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{k}: not valid JSON: {e}") from e
    return rows


def plot_training_curves(curves: dict[str, list[dict]], path: str | Path) -> Path:
    """One panel per method: its main loss (`loss`) per step and held-out `val_acc` (right axis) where logged."""
    names = [n for n, rows in curves.items() if rows]
    cols = min(3, max(1, len(names)))
    rows_n = max(1, -(-len(names) // cols))
    fig = _figure(4.2 * cols, 3.0 * rows_n)
    axes = np.atleast_1d(fig.subplots(rows_n, cols)).ravel()
    for ax, name in zip(axes, names):
        rows = curves[name]
        step = np.array([r.get("step", i) for i, r in enumerate(rows)], dtype=float)
        loss = np.array([r.get("loss", np.nan) for r in rows], dtype=float)
        ok = np.isfinite(loss)
        ax.plot(step[ok], loss[ok], color="C0", lw=1, label="loss")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("loss", fontsize=8, color="C0")
        acc = np.array([r.get("val_acc", np.nan) for r in rows], dtype=float)
        if np.isfinite(acc).any():
            ax2 = ax.twinx()
            m = np.isfinite(acc)
            ax2.plot(step[m], acc[m], "o-", color="C3", ms=3, lw=1)
            ax2.set_ylabel("val acc", fontsize=8, color="C3")
            ax2.set_ylim(0.3, 1.0)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=90)
    return path


def example_indices(data: EvalData, k: int = 6) -> np.ndarray:
    """k images from distinct prompts spread over the range of the first dim's MOS (deterministic)."""
    first = np.unique(data.prompt_code, return_index=True)[1]
    mos = data.mos[first, 0] if data.mos.shape[1] else np.zeros(len(first))
    order = first[np.argsort(np.nan_to_num(mos, nan=-1.0), kind="stable")]
    return order[np.linspace(0, len(order) - 1, min(k, len(order))).round().astype(int)]


def plot_examples(data: EvalData, scores: dict[str, ModelScores], path: str | Path, k: int = 6) -> Path:
    """Grid: one row per example image; the image, then one panel per split dim with the annotator histogram
    (bars) and each model's predicted level distribution (lines)."""
    idx = example_indices(data, k)
    dims = data.dims
    fig = _figure(2.0 + 2.6 * len(dims), 2.1 * len(idx))
    axes = np.atleast_2d(fig.subplots(len(idx), 1 + len(dims), squeeze=False))
    lv = np.asarray(data.levels)
    for r, i in enumerate(idx):
        ax = axes[r, 0]
        ax.imshow(np.asarray(data.images[i]))
        ax.set_axis_off()
        ax.set_title(data.prompts[i][:40], fontsize=6)
        for c, dim in enumerate(dims):
            ax = axes[r, c + 1]
            t = data.target[i, c]
            if np.isfinite(t).all():
                ax.bar(lv, t, width=0.4, color="lightgray", edgecolor="gray", label="annotators")
            for m, (name, s) in enumerate(scores.items()):
                if dim in s.dims:
                    ax.plot(lv, s.probs[i, s.dims.index(dim)], "o-", ms=2, lw=1, color=f"C{m % 10}", label=name)
            ax.set_ylim(0, 1)
            ax.tick_params(labelsize=6)
            if r == 0:
                ax.set_title(dim, fontsize=8)
    axes[0, -1].legend(fontsize=6, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=80)
    return path


# ----------------------------------------------------------------------------------------------- markdown

def model_tables(results: dict[str, dict], dims: list[str]) -> list[str]:
    """The accuracy, per-dimension, distribution/calibration and cost tables (markdown lines)."""
    L = ["### Pairwise accuracy (non-tie, and acc_23 with ties; 95% CI by prompt)", "",
         "| model | mode | pairs | accuracy | with ties (acc_23) | tie ε |", "|---|---|---|---|---|---|"]
    for n, r in results.items():
        mode = r.get("mode", "?") + (f", M={r['samples']}" if r.get("mode") == "reasoning" else "")
        L.append(f"| {n} | {mode} | {r.get('pairs_used', '–')} ({r.get('n_pairs', 0)}) | "
                 f"{fmt_ci(r, 'accuracy')} | {fmt_ci(r, 'accuracy_ties')} | {fmt(r.get('tie_threshold'))} |")
    L += ["", "### Per-dimension accuracy (non-tie; source: the split's per-dimension pairs, or MOS-derived pairs)", "",
          "| model | " + " | ".join(dims) + " |", "|---|" + "---|" * len(dims)]
    for n, r in results.items():
        det = r.get("per_dim_detail", {})
        cells = []
        for d in dims:
            e = det.get(d) or {}
            cell = fmt_ci(e, "accuracy") if e.get("accuracy") is not None else "–"
            cells.append(cell + (" *mos*" if e.get("source") == "mos" else ""))
        L.append(f"| {n} | " + " | ".join(cells) + " |")
    L += ["", "### Distribution quality and calibration", "",
          "| model | KL ↓ | JS ↓ | W1 ↓ (score points) | SRCC ↑ | PLCC ↑ | ECE ↓ |", "|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        L.append(f"| {n} | {fmt_ci(r, 'kl')} | {fmt_ci(r, 'js')} | {fmt_ci(r, 'w1')} | {fmt_ci(r, 'srcc')} | "
                 f"{fmt_ci(r, 'plcc')} | {fmt_ci(r, 'ece')} |")
    L += ["", "### Cost (this machine, one process, models one after another)", "",
          "| model | images/s | generated tokens / image | peak memory (MiB) | scoring time (s) |",
          "|---|---|---|---|---|"]
    for n, r in results.items():
        L.append(f"| {n} | {fmt(r.get('img_per_s'), 2)} | {fmt(r.get('tokens_per_image'), 1)} | "
                 f"{fmt(r.get('peak_memory_mb'), 0)} ({r.get('memory_kind', '?')}) | "
                 f"{fmt(r.get('score_seconds'), 1)} |")
    return L


def write_eval_report(out: str | Path, data: EvalData, results: dict, cals: dict, scores: dict[str, ModelScores],
                      meta: dict, *, ceiling: dict | None = None, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write report.json, report.md, PNGs and predictions/ under `out`. Returns the report.json content.

    With two or more models, report.json's `paired` lists a − b accuracy for every two of them on the same pairs,
    with the paired bootstrap CI (`n_boot` resamples, `seed`)."""
    out = Path(out)
    (out / "predictions").mkdir(parents=True, exist_ok=True)
    plots = {}
    for name, cal in cals.items():
        if cal is not None:
            plots[f"reliability_{name}"] = plot_reliability(cal, out / f"reliability_{name}.png", title=name).name
    ceil_acc = ceiling["accuracy"] if ceiling else None
    plots["accuracy_vs_cost"] = plot_acc_vs_cost(results, out / "accuracy_vs_cost.png", ceil_acc).name
    if scores:
        plots["examples"] = plot_examples(data, scores, out / "examples.png").name
    for name, s in scores.items():
        np.savez_compressed(out / "predictions" / f"{name}.npz", ids=np.array(data.ids), dims=np.array(s.dims),
                            levels=np.asarray(data.levels), probs=s.probs.astype(np.float32), mean=s.mean,
                            overall=s.overall)
    report = json_clean({
        "data": str(data.split.root), "dataset": data.split.info.name, "n_images": len(data.ids),
        "n_prompts": int(data.prompt_code.max() + 1), "pairs": data.pair_counts(), "dims": data.dims,
        "ceiling": ceiling, "models": results, "paired": paired_differences(data, scores, n_boot=n_boot, seed=seed),
        "plots": plots, **meta, "software": software_versions()})
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    L = [f"# zreward eval — {data.split.info.name} `{data.split.root}`", "",
         f"{len(data.ids)} images, {report['n_prompts']} prompts, pairs per dim: {data.pair_counts() or 'none'}.",
         f"Command: `{meta.get('command', '')}`", ""]
    if ceiling:
        ceil = fmt_ci(ceiling | {"accuracy_n": ceiling["n_non_tie"]}, "accuracy")
        L += [f"Annotator ceiling (ShapesWorld oracle on the overall pairs): {ceil}", ""]
    L += model_tables(results, sorted({d for r in results.values() for d in r.get("per_dim", {})},
                                      key=lambda d: (d not in data.dims, d)))
    if report["paired"]:
        L += ["", "### Paired differences (accuracy of a − b in points on the same non-tie pairs; 95% CI by prompt, "
              "both models on each resample)", "", "| a | b | a − b | pairs |", "|---|---|---|---|"]
        L += [f"| {p['a']} | {p['b']} | {100 * p['diff']:+.1f} [{100 * p['diff_ci'][0]:+.1f}, "
              f"{100 * p['diff_ci'][1]:+.1f}] | {p['diff_n']} |" for p in report["paired"]]
    L += ["", "## Plots", "", "![accuracy vs cost](accuracy_vs_cost.png)", ""]
    L += [f"![reliability {n}](reliability_{n}.png)" for n in cals if cals[n] is not None]
    if scores:
        L += ["", "Examples (annotator histogram = grey bars, models = lines):", "", "![examples](examples.png)"]
    L += ["", "## Notes", "",
          "- Headline pairs: the split's `overall` pairs scored by the model's `overall` (weighted dims); without "
          "overall pairs, every per-dimension pair scored by its dimension's mean.",
          "- A predicted tie counts half; human ties are excluded from the non-tie accuracy and included in acc_23.",
          "- ECE: Thurstone P(a ≻ b) from (μ, σ) (overall σ from per-dim σ assuming independent dims) vs the rater "
          "vote share, 10 equal-width bins.",
          "- KL/JS in nats, W1 in score points, over labelled (image, dim) rows; SRCC/PLCC of the predicted mean vs "
          "MOS per dimension, averaged over dimensions.",
          f"- Software: {', '.join(f'{k} {v}' for k, v in report['software'].items())}."]
    (out / "report.md").write_text("\n".join(L) + "\n")
    return report
