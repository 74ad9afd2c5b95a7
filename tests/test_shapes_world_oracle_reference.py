"""The ShapesWorld oracle against the one reference implementation in the tests.

`reference_oracle` is written from the spec text alone (docs/shapes-world.md, "The oracle (normative)"), as plain
loops over objects and pairs, and must agree exactly with `zreward.data.shapes_world.oracle.oracle_scores` on:
random scenes on a 0.25-px grid, sampler candidates, and a coarse-grid fuzz — so that the exact threshold cases
(touching boxes, 1-px resting tolerance, 1/3 overlap, 2-px gaps and interpenetration, halves rounding) occur often.
"""
from __future__ import annotations

import math

import numpy as np

from zreward.data.shapes_world.oracle import oracle_scores
from zreward.data.shapes_world.prompts import sample_spec
from zreward.data.shapes_world.sampler import sample_candidates
PAL = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 40),
       "purple": (150, 60, 180), "orange": (240, 130, 30)}
SHAPES = ("circle", "square", "triangle")
ALL = [(c, s) for c in PAL for s in SHAPES]  # every (color, shape) combo, in the spec's palette order


def _q(v):
    return math.floor(2 * min(max(v, 1.0), 5.0) + 0.5) / 2


def _box(o):
    h = o["size"] / 2
    return o["x"] - h, o["x"] + h, o["y"] - h, o["y"] + h  # left, right, top, bottom


def _lum(c):
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255


def _rests_on(o, p):
    if o is p:
        return False
    ol, orr, _, ob = _box(o)
    pl, pr, pt, _ = _box(p)
    return abs(ob - pt) <= 1 and (min(orr, pr) - max(ol, pl)) >= min(o["size"], p["size"]) / 3


def reference_oracle(scene, spec):
    objs, canvas, gy = scene["objects"], scene["canvas"], scene["ground_y"]
    groups, rel = spec["groups"], spec["relation"]
    # alignment
    match = [[o for o in objs if o["shape"] == g["shape"] and o["color"] == g["color"]] for g in groups]
    sat, tot = 0, 0
    for g, m in zip(groups, match):
        tot += 2
        sat += (len(m) >= 1) + (len(m) == g["count"])
    if rel is not None:
        tot += 1
        ma, mb = match
        ok = False
        if ma and mb:
            if rel == "left":
                ok = max(o["x"] for o in ma) < min(o["x"] for o in mb)
            elif rel == "right":
                ok = min(o["x"] for o in ma) > max(o["x"] for o in mb)
            else:
                ok = all(any(_rests_on(o, p) for p in mb) for o in ma)
        sat += ok
    extras = sum(1 for o in objs if not any(o["shape"] == g["shape"] and o["color"] == g["color"] for g in groups))
    alignment = 1.0 if not objs else _q(1 + 4 * sat / tot - 0.5 * extras)
    # realism
    max_warp = max([o.get("warp", 0.0) for o in objs], default=0.0)
    realism = _q(5 - 8 * scene["noise"] - 1.0 * scene["blur"] - 2.0 * max_warp)
    # aesthetics
    cut = sum(1 for o in objs if _box(o)[0] < 0 or _box(o)[1] > canvas or _box(o)[2] < 0 or _box(o)[3] > canvas)
    low = sum(1 for o in objs if abs(_lum(PAL[o["color"]]) - _lum(scene["background"])) < 0.15)
    crowd = 0
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            a, b = objs[i], objs[j]
            if _rests_on(a, b) or _rests_on(b, a):
                continue
            al, ar, at, ab = _box(a)
            bl, br, bt, bb = _box(b)
            gap = max(max(al, bl) - min(ar, br), max(at, bt) - min(ab, bb))
            if gap < 2:
                crowd = 1
    unbalanced = 1 if objs and abs(sum(o["x"] for o in objs) / len(objs) - canvas / 2) > canvas / 4 else 0
    aesthetics = _q(5 - 1.0 * cut - 0.75 * low - 0.5 * crowd - 0.5 * unbalanced)
    # plausibility
    on_ground = [abs(_box(o)[3] - gy) <= 1 for o in objs]
    floating = sum(1 for k, o in enumerate(objs) if not (on_ground[k] or any(_rests_on(o, p) for p in objs)))
    clash = 0
    for i in range(len(objs)):
        for j in range(i + 1, len(objs)):
            al, ar, at, ab = _box(objs[i])
            bl, br, bt, bb = _box(objs[j])
            if min(ar, br) - max(al, bl) >= 2 and min(ab, bb) - max(at, bt) >= 2:
                clash += 1
    unstable = sum(1 for k, o in enumerate(objs) if not on_ground[k]
                   and any(_rests_on(o, p) and p["shape"] in ("circle", "triangle") for p in objs))
    plausibility = _q(5 - 1.0 * floating - 1.0 * clash - 0.5 * unstable)
    return {"alignment": alignment, "realism": realism, "aesthetics": aesthetics, "plausibility": plausibility}


def _random_case(rng):
    canvas = 64
    gy = 52.0
    n_groups = rng.integers(1, 3)
    combos = [(c, s) for c in PAL for s in SHAPES]
    picks = rng.choice(len(combos), size=n_groups, replace=False)
    groups = [{"count": int(rng.integers(1, 4)), "color": combos[p][0], "shape": combos[p][1]} for p in picks]
    relation = None if n_groups == 1 else ["left", "right", "on"][rng.integers(0, 3)]
    objs = []
    for _ in range(rng.integers(0, 6)):
        if rng.random() < 0.7:
            g = groups[rng.integers(0, n_groups)]
            color, shape = g["color"], g["shape"]
        else:
            color, shape = combos[rng.integers(0, len(combos))]
        size = float(rng.choice([6, 8, 9, 12, 15]))
        x = float(rng.integers(-8, 290)) * 0.25
        if rng.random() < 0.5:  # stack on ground or on a previous object, with jitter around the 1-px tolerance
            base = gy if not objs or rng.random() < 0.5 else objs[-1]["y"] - objs[-1]["size"] / 2
            y = base - size / 2 + float(rng.choice([-1.25, -1.0, -0.75, 0.0, 0.75, 1.0, 1.25]))
            if objs and rng.random() < 0.5:
                x = objs[-1]["x"] + float(rng.choice([-1, 1])) * (objs[-1]["size"] + size) / 2 \
                    * float(rng.choice([0.5, 2 / 3, 1.0]))
        else:
            y = float(rng.integers(-8, 260)) * 0.25
        objs.append({"shape": shape, "color": color, "size": size, "x": x, "y": y,
                     "warp": float(rng.choice([0.0, 0.0, 0.1, 0.25, 0.5]))})
    bg = [int(v) for v in rng.integers(0, 256, size=3)]
    scene = {"canvas": canvas, "background": bg, "ground_y": gy, "objects": objs,
             "noise": float(rng.choice([0.0, 0.0625, 0.125, 0.3])), "blur": float(rng.choice([0.0, 0.5, 1.0, 2.0]))}
    return scene, {"groups": groups, "relation": relation}


def test_reference_agrees_on_random_scenes():
    rng = np.random.default_rng(1234)
    checked = 0
    for _ in range(3000):
        scene, spec = _random_case(rng)
        want = reference_oracle(scene, spec)
        got = oracle_scores(scene, spec)
        assert got == want, (scene, spec, got, want)
        checked += 1
    assert checked == 3000


def test_reference_agrees_on_sampler_candidates():
    rng = np.random.default_rng(11)
    n = 0
    for _ in range(300):
        spec = sample_spec(rng, ALL)
        for cand in sample_candidates(spec, 4, int(rng.choice([48, 64, 96])), rng, ALL):
            assert oracle_scores(cand.scene, spec) == reference_oracle(cand.scene, spec), (spec, cand.scene)
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
        assert got == reference_oracle(sc, spec), (spec, sc)
        for d in hits:
            hits[d].add(got[d])
    assert all(len(v) >= 6 for v in hits.values()), hits  # the fuzz covers many levels
