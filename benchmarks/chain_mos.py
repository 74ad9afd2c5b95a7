"""How well a reasoning scorer's score follows MOS after its own chains, and after the true rationales.

    python benchmarks/chain_mos.py MODEL_DIR SPLIT_DIR [--images N] [--samples M] [--temperature T] [--n-boot R]

Per dimension, over the first N labelled images of a split: the Pearson (PLCC) and Spearman (SRCC) correlation with
the label mean (MOS) of the expected score E_p[level]
  - `own`: after the model's own chains (M sampled at T and their distributions averaged, as `zreward eval` reads
    a reasoning model; M = 1 is greedy), and
  - `true`: after the split's true rationale (teacher-forced, as the cold start trains the head).
`own` well below `true` means the chains, not the head, limit the scorer. With M = 1 (greedy) each dimension also gets
`by_chain`: the share of chains that equal the true rationale exactly and, for those and for the others, the PLCC
of `own` with MOS and the mean |own − true| — how the head reads a wrong chain (as if it were right, or hedging
toward the image). 95% CIs resample whole prompts. Prints one JSON object.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from zreward import load_scorer
from zreward.eval.bootstrap import bootstrap_ci
from zreward.metrics import plcc, srcc
from zreward.trainers.data import load_train_data
from zreward.trainers.sft import rationale_forward, tokenize_rationales


def expected_scores(scorer, data, idx: np.ndarray, dims: list[str], samples: int, batch: int) -> tuple:
    """((N, D) after own chains, (N, D) after the true rationales, N lists of the D·M chain texts) for the images
    `idx`."""
    own, true, texts = [], [], []
    with torch.no_grad():
        for s in range(0, len(idx), batch):
            part = idx[s: s + batch]
            prompts, images = [data.prompts[i] for i in part], data.image_batch(part)
            out = scorer.score(prompts, images, dims, reasoning=True, samples=samples)
            own.append(out.mean.float().numpy())
            texts += out.chains
            chains = tokenize_rationales(scorer.tokenizer, data, part, dims, max_tokens=scorer.config.max_new_tokens)
            _, _, ro = rationale_forward(scorer, prompts, images, dims, chains)
            true.append(ro.mean.float().numpy())
    return np.concatenate(own), np.concatenate(true), texts


def exact_chains(texts: list[list[str]], rationales: list[dict], rows: np.ndarray, k: int, dim: str) -> np.ndarray:
    """(N,) whether image rows[n]'s chain for dimension `dim` (the k-th of its texts, greedy M = 1) equals its true
    rationale, whitespace at the ends aside; an image without a rationale for `dim` never matches."""
    return np.array([t[k].strip() == (rationales[i].get(dim) or "\0").strip() for t, i in zip(texts, rows)])


def by_chain(own: np.ndarray, true: np.ndarray, mos: np.ndarray, exact: np.ndarray) -> dict:
    """One dimension's readings split by whether the (greedy) chain equals the true rationale: the exact share, and
    per part its size, the PLCC of `own` with MOS (None under 3 images) and the mean |own − true|."""
    out: dict = {"exact_share": round(float(exact.mean()), 4)}
    for name, m in (("exact", exact), ("wrong", ~exact)):
        out[name] = {"n": int(m.sum()), "plcc_own": round(float(plcc(own[m], mos[m])), 4) if m.sum() >= 3 else None,
                     "mean_abs_own_minus_true": round(float(np.abs(own[m] - true[m]).mean()), 4) if m.any() else None}
    return out


def correlations(pred: np.ndarray, mos: np.ndarray, groups: np.ndarray, n_boot: int) -> dict:
    """PLCC and SRCC of one dimension's predictions with MOS, each with a prompt-bootstrap 95% CI."""
    out = {}
    for name, fn in (("plcc", plcc), ("srcc", srcc)):
        ci = bootstrap_ci(lambda w, fn=fn: fn(pred, mos, weights=w), groups, n_boot=n_boot)
        out[name] = [round(ci.point, 4), round(ci.lo, 4), round(ci.hi, 4)]
    return out


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("split")
    ap.add_argument("--images", type=int, default=400)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=None, help="default: the model's zreward.json value")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--n-boot", type=int, default=1000)
    args = ap.parse_args(argv)
    scorer = load_scorer(args.model)
    scorer.model.eval()
    if args.temperature is not None:
        scorer.config.temperature = args.temperature
    data = load_train_data(args.split, max_images=args.images)
    dims = [d for d in scorer.dims if d in data.dims]
    if not dims:
        raise SystemExit(f"chain_mos: the model's dims {scorer.dims} and the split's {data.dims} share none")
    di = data.dim_index(dims)
    rows = np.flatnonzero(data.mask[:, di].all(1))
    own, true, texts = expected_scores(scorer, data, rows, dims, args.samples, args.batch)
    result = {"model": args.model, "split": args.split, "images": int(len(rows)), "samples": args.samples,
              "temperature": scorer.config.temperature if args.samples > 1 else "greedy", "dims": {}}
    for k, (d, j) in enumerate(zip(dims, di)):
        mos, groups = data.mos[rows, j], data.group[rows]
        result["dims"][d] = {"own": correlations(own[:, k], mos, groups, args.n_boot),
                             "true": correlations(true[:, k], mos, groups, args.n_boot)}
        if args.samples == 1:
            exact = exact_chains(texts, data.rationales, rows, k, d)
            result["dims"][d]["by_chain"] = by_chain(own[:, k], true[:, k], mos, exact)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
