"""Does the GDSO reward point the policy gradient at right chains? (a reasoning scorer on a ShapesWorld split)

    python benchmarks/pg_signal.py MODEL_DIR SPLIT_DIR [--images N] [--dim alignment] [--samples G]
                                   [--temperature T] [--reward neg_abs] [--seed S]

Samples G chains per image for one dimension at temperature T (as a GDSO rollout does), reads the score
distribution after each (`Scorer.chain_forward`), computes each chain's GDSO reward (`losses.distribution_rewards`,
the trainer's own definition) and compares every chain with the image's true rationale (the split's `rationales`,
as the cold start reads them). Prints one JSON line: the share of exact chains, the mean reward of exact and of
wrong chains, the share of groups that hold both ("mixed": the only groups whose group-relative advantages can
prefer a right chain) and of groups of wrong chains only (no push towards the right one), and over the mixed groups
the mean reward gap exact − wrong and the share where it is > 0. A reward that cannot tell right from wrong chains
gives the PG term nothing to learn from; one that can, but whose updates still do not make the chains more exact,
points the search elsewhere (issue 12).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from zreward import load_scorer
from zreward.losses import distribution_rewards
from zreward.trainers.data import load_train_data


def summarise(rew: np.ndarray, exact: np.ndarray) -> dict:
    """rew: (n, G) rewards of G chains per image; exact: (n, G) bool, chain == the true rationale."""
    mixed = exact.any(1) & ~exact.all(1)
    gaps = np.array([rew[i][exact[i]].mean() - rew[i][~exact[i]].mean() for i in np.flatnonzero(mixed)])
    return {"exact_chain_share": float(exact.mean()),
            "reward_exact": float(rew[exact].mean()) if exact.any() else None,
            "reward_wrong": float(rew[~exact].mean()) if (~exact).any() else None,
            "mixed_group_share": float(mixed.mean()), "all_wrong_group_share": float((~exact).all(1).mean()),
            "mixed_gap_mean": float(gaps.mean()) if gaps.size else None,
            "mixed_gap_positive_share": float((gaps > 0).mean()) if gaps.size else None}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("split")
    ap.add_argument("--images", type=int, default=160)
    ap.add_argument("--dim", default="alignment")
    ap.add_argument("--samples", type=int, default=4, help="G chains per image")
    ap.add_argument("--temperature", type=float, default=1.0, help="the rollout temperature (GDSO's default 1.0)")
    ap.add_argument("--reward", default="neg_abs")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.manual_seed(a.seed)
    sc = load_scorer(a.model)
    sc.model.eval()
    data = load_train_data(a.split, max_images=a.images)
    di = data.dim_index([a.dim])[0]
    g, rewards, exact, has_rationale = a.samples, [], [], []
    with torch.no_grad():
        for s in range(0, len(data.ids), 16):
            idx = np.arange(s, min(s + 16, len(data.ids)))
            pixels = sc.prepare_images(data.image_batch(idx))
            cb = sc.generate_chains([data.prompts[i] for i in idx], pixels, [a.dim], samples=g, do_sample=True,
                                    temperature=a.temperature)
            logits = sc.chain_forward(cb, pixels).level_logits
            rep = np.repeat(idx, g)
            r = distribution_rewards(logits, sc.levels, torch.as_tensor(data.mos[rep, di]),
                                     torch.as_tensor(data.target[rep, di]), a.reward)
            rewards.append(r.view(len(idx), g).numpy())
            for k, j in enumerate(idx):
                true = data.rationales[j].get(a.dim) or ""  # what the cold start and the guides train on
                has_rationale.append(bool(true))
                exact.append([t.strip() == true for t in cb.texts[k * g:(k + 1) * g]])
    rew, ex = np.concatenate(rewards), np.array(exact)
    # labelled (image, dim) rows with a rationale only: the others get no reward in training / nothing to match
    keep = data.mask[: len(ex), di] & np.array(has_rationale)
    print(json.dumps({"images": int(keep.sum()), "dim": a.dim, "samples": g, "temperature": a.temperature,
                      "reward": a.reward, **summarise(rew[keep], ex[keep])}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
