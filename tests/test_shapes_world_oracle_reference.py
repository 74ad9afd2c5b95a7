"""A second, independently written (vectorised numpy) implementation of the spec's oracle formulas, checked
against `oracle_scores` on sampler candidates and on fuzzed scenes whose coordinates lie on a coarse grid, so that
the exact thresholds (touching boxes, 1 px resting, 1/3 overlap, 2 px interpenetration) are hit often.

Written from the spec text only (docs/shapes-world.md, "Oracle: the four rubric dimensions (normative)").
"""
from __future__ import annotations

import numpy as np

from zreward.data.shapes_world.oracle import oracle_scores
from zreward.data.shapes_world.prompts import sample_spec
from zreward.data.shapes_world.sampler import sample_candidates
from zreward.data.shapes_world.scene import COLORS, PALETTE, SHAPES

ALL = [(c, s) for c in COLORS for s in SHAPES]


def _q(v):
    return np.floor(2 * np.clip(v, 1, 5) + 0.5) / 2


def _lum(rgb):
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255


def reference(scene: dict, spec: dict) -> dict:
    objs = scene["objects"]
    n = len(objs)
    s = np.array([o["size"] for o in objs], dtype=float)
    x = np.array([o["x"] for o in objs], dtype=float)
    y = np.array([o["y"] for o in objs], dtype=float)
    lft, rgt, top, bot = x - s / 2, x + s / 2, y - s / 2, y + s / 2
    key = [(o["color"], o["shape"]) for o in objs]
    # pairwise matrices (i, j)
    ow = np.minimum(rgt[:, None], rgt[None]) - np.maximum(lft[:, None], lft[None])  # horizontal overlap
    oh = np.minimum(bot[:, None], bot[None]) - np.maximum(top[:, None], top[None])  # vertical overlap
    eye = np.eye(n, dtype=bool)
    on = (np.abs(bot[:, None] - top[None]) <= 1) & (ow >= np.minimum(s[:, None], s[None]) / 3) & ~eye
    ground = np.abs(bot - scene["ground_y"]) <= 1
    upper = np.triu(np.ones((n, n), dtype=bool), 1)

    groups = spec["groups"]
    masks = [np.array([k == (g["color"], g["shape"]) for k in key], dtype=bool) for g in groups]
    sat = sum(int(m.sum() >= 1) + int(m.sum() == g["count"]) for m, g in zip(masks, groups))
    tot = 2 * len(groups)
    if spec.get("relation"):
        tot += 1
        ma, mb = masks
        if ma.any() and mb.any():
            rel = spec["relation"]
            if rel == "left":
                sat += int(x[ma].max() < x[mb].min())
            elif rel == "right":
                sat += int(x[ma].min() > x[mb].max())
            else:
                sat += int(on[np.ix_(ma, mb)].any(axis=1).all())
    extras = n - int(np.logical_or.reduce(masks).sum()) if n else 0
    align = 1.0 if n == 0 else float(_q(1 + 4 * sat / tot - 0.5 * extras))

    max_warp = max([o.get("warp", 0.0) for o in objs], default=0.0)
    real = float(_q(5 - 8 * scene["noise"] - 1.0 * scene["blur"] - 2.0 * max_warp))

    c = scene["canvas"]
    cut = int(((lft < 0) | (rgt > c) | (top < 0) | (bot > c)).sum())
    bl = _lum(scene["background"])
    low = sum(abs(_lum(PALETTE[o["color"]]) - bl) < 0.15 for o in objs)
    gap = np.maximum(-ow, -oh)
    crowd = int(((gap < 2) & ~(on | on.T) & upper).any())
    unbal = int(n > 0 and abs(x.mean() - c / 2) > c / 4)
    aes = float(_q(5 - 1.0 * cut - 0.75 * low - 0.5 * crowd - 0.5 * unbal))

    floating = int((~(ground | on.any(axis=1))).sum())
    clash = int(((ow >= 2) & (oh >= 2) & upper).sum())
    round_base = np.array([o["shape"] in ("circle", "triangle") for o in objs], dtype=bool)
    unstable = int(((on & round_base[None]).any(axis=1) & ~ground).sum())
    pl = float(_q(5 - 1.0 * floating - 1.0 * clash - 0.5 * unstable))
    return {"alignment": align, "realism": real, "aesthetics": aes, "plausibility": pl}


def test_reference_agrees_on_sampler_candidates():
    rng = np.random.default_rng(11)
    n = 0
    for _ in range(300):
        spec = sample_spec(rng, ALL)
        for cand in sample_candidates(spec, 4, int(rng.choice([48, 64, 96])), rng, ALL):
            assert oracle_scores(cand.scene, spec) == reference(cand.scene, spec), (spec, cand.scene)
            n += 1
    assert n == 1200


def test_reference_agrees_on_grid_fuzz():
    rng = np.random.default_rng(12)
    hits = {"alignment": set(), "aesthetics": set(), "plausibility": set()}
    for _ in range(3000):
        spec = sample_spec(rng, ALL[:6])  # few combos: matches, counts and relations happen often
        k = int(rng.integers(0, 6))
        objs = []
        for _ in range(k):
            color, shape = ALL[int(rng.integers(6))] if rng.random() < 0.8 else ALL[int(rng.integers(18))]
            size = float(rng.choice([3.0, 6.0, 9.0, 12.0]))  # thirds land on the 0.5 grid or exactly
            objs.append({"shape": shape, "color": color, "size": size,
                         "x": float(rng.integers(0, 129)) / 2, "y": 52 - size / 2 - float(rng.integers(-2, 30)) / 2,
                         "warp": float(rng.choice([0.0, 0.0, 0.25, 0.5]))})
        sc = {"canvas": 64, "ground_y": 52, "background": [int(v) for v in rng.choice([226, 229, 240], 3)],
              "objects": objs, "noise": float(rng.choice([0.0, 0.05, 0.1])), "blur": float(rng.choice([0, 0.5, 1]))}
        got = oracle_scores(sc, spec)
        assert got == reference(sc, spec), (spec, sc)
        for d in hits:
            hits[d].add(got[d])
    assert all(len(v) >= 6 for v in hits.values()), hits  # the fuzz covers many levels
