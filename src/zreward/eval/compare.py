"""`zreward eval compare`: paired differences between models scored in separate `zreward eval` runs on one split.

    zreward eval compare --eval DIR [--eval DIR ...] [--n-boot R] [--seed S] [--out FILE.json]

Each DIR is the output of a `zreward eval` run (report.json + predictions/<name>.npz). Every model of every DIR
must have been scored on the same images of the same split (same `data`, same image ids, in the same order); the
command refuses otherwise and names the DIR. For every two models it prints accuracy(a) − accuracy(b) on the same
headline non-tie pairs with the paired 95% prompt-bootstrap CI (`zreward.eval.model_metrics.paired_differences`),
the comparison `zreward eval` itself reports for the models of one run.

Predictions written since the `mean` / `overall` fields were added hold the scores the report was computed from;
older ones hold only `probs`: their per-dim mean is recomputed as the expectation over the levels and `overall`
with the reward weights of the model's zreward.json (`model_dir` in report.json) — the same numbers for direct and
reasoning models (a reasoning model's distribution is already the average over its chains).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from zreward.eval.model_metrics import paired_differences
from zreward.eval.runner import ModelScores, load_eval_data
from zreward.models.scorer_config import ScorerConfig


class CompareError(ValueError):
    """An eval directory that cannot be compared; the message names it and the field."""


def _weights(rep: dict, name: str, dims: list[str], where: Path) -> np.ndarray:
    model_dir = rep.get("model_dir")
    if not model_dir or not (Path(model_dir) / "zreward.json").is_file():
        raise CompareError(f"{where}: models.{name}.model_dir: {model_dir!r} has no zreward.json, and the "
                           "predictions file predates the stored `overall` (re-run zreward eval)")
    return np.asarray(ScorerConfig.load(model_dir).weights_for(dims), np.float64)


def load_scores(eval_dir: str | Path) -> tuple[dict, dict[str, tuple[ModelScores, list[str]]]]:
    """(report.json, {model name: (ModelScores with the scores the report was computed from, image ids)}) of one
    eval run."""
    d = Path(eval_dir)
    rep_path = d / "report.json"
    if not rep_path.is_file():
        raise CompareError(f"--eval {d}: no report.json (expected the output directory of `zreward eval`)")
    try:
        report = json.loads(rep_path.read_text())
    except json.JSONDecodeError as e:
        raise CompareError(f"{rep_path}: not valid JSON ({e})") from e
    if not isinstance(report.get("models"), dict) or "data" not in report:
        raise CompareError(f"{rep_path}: expected the `models` and `data` fields of a zreward eval report")
    out = {}
    for name, mrep in report["models"].items():
        f = d / "predictions" / f"{name}.npz"
        if not f.is_file():
            raise CompareError(f"{rep_path}: models.{name}: predictions file {f} is missing")
        with np.load(f, allow_pickle=False) as z:
            probs, dims, levels, ids = z["probs"].astype(np.float64), [str(x) for x in z["dims"]], z["levels"], z["ids"]
            mean = z["mean"] if "mean" in z.files else probs @ levels
            overall = z["overall"] if "overall" in z.files else None
        weights = _weights(mrep, name, dims, rep_path)
        if overall is None:
            overall = mean @ (weights / weights.sum())
        std = np.sqrt(np.maximum(probs @ levels ** 2 - (probs @ levels) ** 2, 0.0))
        out[name] = (ModelScores(probs, mean, std, overall, dims, weights, mrep.get("mode") == "reasoning",
                                 int(mrep.get("samples") or 1), float("nan"), float("nan"), 0, "n/a"),
                     [str(x) for x in ids])
    return report, out


def compare(eval_dirs: list[str | Path], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Paired differences of every two models over the given eval runs (model names must be unique across them)."""
    reports, scores, ids = [], {}, {}
    for d in eval_dirs:
        rep, sc = load_scores(d)
        if reports and (rep["data"], rep.get("n_images")) != (reports[0]["data"], reports[0].get("n_images")):
            raise CompareError(f"--eval {d}: scored {rep.get('n_images')} images of {rep['data']}, the first run "
                               f"{reports[0].get('n_images')} of {reports[0]['data']}: not the same pairs")
        for name, (s, i) in sc.items():
            if name in scores:
                raise CompareError(f"--eval {d}: model name {name!r} appears in two runs; rename one")
            scores[name], ids[name] = s, i
        reports.append(rep)
    if len(scores) < 2:
        raise CompareError("--eval: need at least two models in all")
    data = load_eval_data(reports[0]["data"], max_images=reports[0].get("n_images"))
    for name in scores:
        if ids[name] != list(data.ids):
            raise CompareError(f"model {name!r}: its predictions' image ids differ from the split's first "
                               f"{len(data.ids)} images (another split or order)")
    return {"data": reports[0]["data"], "n_images": len(data.ids), "n_boot": n_boot, "seed": seed,
            "paired": paired_differences(data, scores, n_boot=n_boot, seed=seed)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zreward eval compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", action="append", required=True, metavar="DIR", help="a zreward eval output directory")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    ap.add_argument("--out", default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    if args.n_boot < 1:
        ap.error("--n-boot must be >= 1")
    try:
        res = compare(args.eval, n_boot=args.n_boot, seed=args.seed)
    except (CompareError, ValueError, FileNotFoundError) as e:
        print(f"zreward eval compare: error: {e}", file=sys.stderr)
        return 1
    print(f"{res['n_images']} images of {res['data']}; a − b accuracy in points, paired 95% CI")
    for p in res["paired"]:
        print(f"  {p['a']} − {p['b']}: {100 * p['diff']:+.1f} [{100 * p['diff_ci'][0]:+.1f}, "
              f"{100 * p['diff_ci'][1]:+.1f}] ({p['diff_n']} pairs)")
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    return 0
