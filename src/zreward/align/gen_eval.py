"""Generator evaluation: Good / Same / Bad by the simulated ShapesWorld raters, oracle means, side-by-side grid.

What is implemented (`zreward gen eval --a GEN --b GEN --prompts N --out DIR`):
- the first N distinct prompts of the dataset's *test* split (held out from pretraining and tuning); both
  generators sample each prompt from the same seed (`seed·1_000_003 + i`), same steps and guidance;
- each image is read back into a scene by `perceive.py` and scored by the normative oracle;
- the spec's simulated raters (the dataset's rater pool: `RaterPool.create(raters, pool_seed)`, bias + noise +
  Dirichlet weights) rate both images; each rater votes on the weighted overall (tie when |Δ| < 0.25) and the
  majority decides the prompt's judgement: Good (A better) / Same / Bad (A worse). Rating noise comes from
  `default_rng([seed, 11])`, drawn for both sides at once;
- net GSB = (G − B)/N with a 95% percentile-bootstrap interval over prompts (`zreward.eval.gsb`), the mean
  perceived-oracle score per dimension for each generator, and `side_by_side.png`.
Convention: A is the candidate (tuned), B the baseline (SFT), so the report's `oracle_tuned` is A's and
`oracle_sft` is B's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from zreward.align.generator import load_generator
from zreward.align.perceive import perceived_scores
from zreward.align.pretrain import save_grid
from zreward.align.tune import prompts_of
from zreward.data.shapes_world.annotators import RaterPool, pair_labels
from zreward.data.shapes_world.oracle import DIMS
from zreward.eval.gsb import gsb

GOAL_NET_GSB = 0.413  # the paper's figure


def rater_judgements(true_a: np.ndarray, true_b: np.ndarray, pool: RaterPool, rng: np.random.Generator
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt Good/Same/Bad of A vs B by the simulated raters.

    Args:
        true_a, true_b: (N, 4) oracle scores of A's and B's image per prompt.
        pool: the raters.  rng: rating noise.

    Returns:
        (N,) int judgements (+1 Good = A preferred by the majority, 0 Same, −1 Bad) and (N, 3) vote counts
        [A, B, tie].
    """
    ratings = pool.rate(np.concatenate([true_a, true_b]), rng)  # (2N, R, 4)
    n = true_a.shape[0]
    votes = pool.votes(ratings[:n], ratings[n:])  # (N, R)
    labels, counts = pair_labels(votes)
    code = {"a": 1, "b": -1, "tie": 0}
    return np.array([code[lab] for lab in labels], dtype=np.int64), counts


def side_by_side(a: torch.Tensor, b: torch.Tensor, prompts: list[str], judg: np.ndarray, path: Path,
                 n: int = 8) -> Path:
    """Grid: for each of the first n prompts, B (baseline) then A (candidate), with the raters' verdict."""
    n = min(n, len(prompts))
    verdict = {1: "Good", 0: "Same", -1: "Bad"}
    imgs = torch.stack([t for i in range(n) for t in (b[i], a[i])])
    caps = [c for i in range(n) for c in (f"B: {prompts[i]}", f"A ({verdict[int(judg[i])]}): {prompts[i]}")]
    return save_grid(imgs, caps, path, cols=4)


def evaluate_gsb(a_dir: str | Path, b_dir: str | Path, n_prompts: int, out: str | Path, seed: int = 0,
                 data: str | Path = "runs/shapes_world", raters: int = 7, pool_seed: int = 0,
                 steps: int | None = None, guidance: float | None = None) -> dict:
    """Compare generator A (candidate) with B (baseline) on held-out prompts; writes `gsb.json` and a grid.

    Returns:
        {"net_gsb", "net_gsb_ci": [lo, hi], "n_prompts", "good", "same", "bad", "oracle_tuned": {dim: mean of A},
         "oracle_sft": {dim: mean of B}, "oracle_delta", "goal_met", "a_dir", "b_dir", ...}.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = prompts_of(data, "test")
    if n_prompts > len(prompts):
        raise ValueError(f"prompts: asked for {n_prompts}, the test split of {data} has {len(prompts)}")
    prompts = prompts[:n_prompts]
    seeds = [seed * 1_000_003 + i for i in range(n_prompts)]
    imgs = {}
    for name, d in (("a", a_dir), ("b", b_dir)):
        gen = load_generator(d).eval()
        imgs[name] = gen.generate(prompts, seeds, steps=steps, guidance=guidance)
    true_a, true_b = perceived_scores(imgs["a"], prompts), perceived_scores(imgs["b"], prompts)
    pool = RaterPool.create(raters, pool_seed)
    judg, counts = rater_judgements(true_a, true_b, pool, np.random.default_rng([seed, 11]))
    g = gsb(judg, n_boot=1000, seed=seed)
    oa = {d: round(float(true_a[:, j].mean()), 4) for j, d in enumerate(DIMS)}
    ob = {d: round(float(true_b[:, j].mean()), 4) for j, d in enumerate(DIMS)}
    report = {"net_gsb": g["net"], "net_gsb_ci": [g["net_lo"], g["net_hi"]], "n_prompts": n_prompts,
              "good": g["good"], "same": g["same"], "bad": g["bad"], "oracle_tuned": oa, "oracle_sft": ob,
              "oracle_delta": {d: round(oa[d] - ob[d], 4) for d in DIMS},
              "goal_met": bool(g["net"] >= GOAL_NET_GSB and all(oa[d] >= ob[d] for d in DIMS)),
              "a_dir": str(a_dir), "b_dir": str(b_dir), "seed": seed, "raters": raters,
              "judge": "perceived scene -> ShapesWorld oracle -> simulated raters (majority of votes)"}
    side_by_side(imgs["a"], imgs["b"], prompts, judg, out / "side_by_side.png")
    report["grid"] = str(out / "side_by_side.png")
    (out / "gsb.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = []
    for p, sd, j, c, ta, tb in zip(prompts, seeds, judg, counts, true_a, true_b):
        lines.append(json.dumps({"prompt": p, "seed": sd, "judgement": int(j),
                                 "votes": {"a": int(c[0]), "b": int(c[1]), "tie": int(c[2])},
                                 "oracle_a": dict(zip(DIMS, ta.tolist())), "oracle_b": dict(zip(DIMS, tb.tolist()))}))
    (out / "judgements.jsonl").write_text("\n".join(lines) + "\n")
    return report
