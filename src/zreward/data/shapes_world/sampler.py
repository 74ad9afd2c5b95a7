"""ShapesWorld candidate sampler: scenes that look like a text-to-image generator's outputs for a prompt.

This is implementation-defined (the spec fixes only the oracle). What is implemented:
1. `base_scene`: an on-prompt, clean layout. Objects stand in one row on the ground (group A before B for
   "left", after B for "right"), with >= 2.5 px gaps (so no crowding), centred within +-canvas/8, on a light
   background (L >= 0.9, so every palette colour has contrast). For "on", each A object sits on a B object
   (B widened to hold its A objects side by side). All coordinates are multiples of 0.25 px and sizes of 0.5 px,
   so contact tests are exact in floating point.
2. `sample_candidates`: each candidate gets 0..3 mutations drawn from a fixed mix, each at a mild or severe
   severity: alignment mistakes (count, color, shape, relation, extra objects, a missing group), artifacts
   (noise, blur, warp), composition problems (cut, low contrast, crowd, unbalanced) and physics violations
   (floating/sunk, clash, unstable stacking). The mutation mix sets how many pairs are easy or hard and hence
   the annotator ceiling (tuned to ~0.85-0.92 on test at the default settings; see the dataset card).
Colour/shape changes and extra objects use only `allowed` (color, shape) pairs, so held-out ood combos never
appear in in-distribution images. Randomness comes only from the passed numpy Generator.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from zreward.data.shapes_world.scene import PALETTE, Scene, SceneObject, luminance

MUTATIONS: dict[str, float] = {  # kind -> relative frequency
    "count": 0.10, "color": 0.06, "shape": 0.06, "relation": 0.06, "extra": 0.08, "missing": 0.03,
    "noise": 0.08, "blur": 0.08, "warp": 0.08,
    "cut": 0.06, "low_contrast": 0.05, "crowd": 0.06, "unbalanced": 0.04,
    "floating": 0.08, "clash": 0.05, "unstable": 0.03,
}
N_MUTATIONS_P: tuple[float, ...] = (0.40, 0.40, 0.15, 0.05)  # P(0), P(1), P(2), P(3 mutations)
P_MILD = 0.75  # probability that a graded mutation (noise, blur, warp, floating) is mild
MIN_GAP = 2.5  # px between neighbours in a clean row (crowding starts below 2)


@dataclass
class Candidate:
    scene: dict
    kinds: list[str]


def _snap(v: float, step: float = 0.25) -> float:
    return round(v / step) * step


def _light_background(rng: np.random.Generator) -> tuple[int, int, int]:
    while True:
        bg = tuple(int(c) for c in rng.integers(215, 256, size=3))
        if luminance(bg) >= 0.9:
            return bg  # type: ignore[return-value]


def _row(sizes: list[float], canvas: int, rng: np.random.Generator) -> list[float]:
    """Left edges for boxes of `sizes` in a row with random gaps >= MIN_GAP, centred +- canvas/8."""
    gaps = [max(MIN_GAP, _snap(canvas * rng.uniform(0.04, 0.12))) for _ in sizes[1:]]
    room = canvas - 4 - sum(sizes) - MIN_GAP * len(gaps)  # spare px for gaps beyond the minimum
    extra = sum(g - MIN_GAP for g in gaps)
    if extra > room:  # shrink the gaps (never below MIN_GAP) so the row stays inside the canvas
        f = max(0.0, room) / extra
        gaps = [MIN_GAP + math.floor((g - MIN_GAP) * f * 4) / 4 for g in gaps]
    width = sum(sizes) + sum(gaps)
    slack = max(0.0, min(canvas - 4 - width, canvas / 4))
    x = _snap((canvas - width) / 2 + rng.uniform(-slack / 2, slack / 2))
    lefts = []
    for i, s in enumerate(sizes):
        lefts.append(x)
        x += s + (gaps[i] if i < len(gaps) else 0)
    return lefts


def _fit_sizes(sizes: list[float], canvas: int) -> list[float]:
    """Shrink sizes so the row (with minimal gaps) fits inside the canvas with 2 px margins."""
    room = canvas - 4 - MIN_GAP * (len(sizes) - 1)
    total = sum(sizes)
    if total <= room:
        return sizes
    f = room / total
    return [max(2.0, math.floor(s * f * 2) / 2) for s in sizes]


def base_scene(spec: dict, canvas: int, rng: np.random.Generator) -> Scene:
    """A clean, on-prompt scene for a validated prompt spec."""
    ground = float(round(0.8 * canvas) + int(rng.integers(-2, 3)))
    sc = Scene(canvas=canvas, background=_light_background(rng), ground_y=ground, objects=[])
    groups, rel = spec["groups"], spec["relation"]
    size = lambda lo, hi: _snap(canvas * rng.uniform(lo, hi), 0.5)  # noqa: E731
    if rel == "on":
        a, b = groups
        per_b = [0] * b["count"]
        for i in range(a["count"]):
            per_b[i % b["count"]] += 1
        sa = size(0.11, 0.17)
        sb = [max(size(0.17, 0.26), k * sa + (k - 1) * 3 + 1) for k in per_b]
        fitted = _fit_sizes(sb, canvas)
        sa = _snap(sa * min(f / s for f, s in zip(fitted, sb)), 0.5)
        for left, s, k in zip(_row(fitted, canvas, rng), fitted, per_b):
            base = SceneObject(b["shape"], b["color"], s, left + s / 2, ground - s / 2)
            sc.objects.append(base)
            span = k * sa + (k - 1) * 3
            for j in range(k):
                x = base.x - span / 2 + sa / 2 + j * (sa + 3)
                sc.objects.append(SceneObject(a["shape"], a["color"], sa, _snap(x), base.top - sa / 2))
        return sc
    order = list(groups) if rel in (None, "left") else [groups[1], groups[0]]
    kinds = [(g["color"], g["shape"]) for g in order for _ in range(g["count"])]
    sizes = _fit_sizes([size(0.14, 0.24) for _ in kinds], canvas)
    for (color, shape), s, left in zip(kinds, sizes, _row(sizes, canvas, rng)):
        sc.objects.append(SceneObject(shape, color, s, left + s / 2, ground - s / 2))
    return sc


# ------------------------------------------------------------------------------------------------ mutations


def _free_x(sc: Scene, s: float, rng: np.random.Generator) -> float:
    """An x for a new ground object of size s that keeps >= MIN_GAP from others if possible."""
    for _ in range(20):
        x = _snap(rng.uniform(s / 2 + 1, sc.canvas - s / 2 - 1))
        if all(abs(x - o.x) >= (s + o.size) / 2 + MIN_GAP for o in sc.objects):
            return x
    return x


def _on_top_of(sc: Scene, o: SceneObject) -> list[SceneObject]:
    return [p for p in sc.objects if p is not o and abs(p.bottom - o.top) <= 1
            and min(p.right, o.right) - max(p.left, o.left) > 0]


def _new_object(sc: Scene, color: str, shape: str, rng: np.random.Generator) -> SceneObject:
    s = _snap(sc.canvas * rng.uniform(0.12, 0.2), 0.5)
    return SceneObject(shape, color, s, _free_x(sc, s, rng), sc.ground_y - s / 2)


def _clamp_shift(objs: list[SceneObject], dx: float, canvas: int) -> float:
    """Limit a horizontal shift so every object keeps >= 60% of its width on the canvas (an invisible object
    would still count for the oracle, which no viewer could check)."""
    hi = min(canvas + 0.4 * o.size - o.right for o in objs)
    lo = max(-0.4 * o.size - o.left for o in objs)
    return _snap(min(max(dx, lo), hi))


def _severity(rng: np.random.Generator, mild: tuple[float, float], severe: tuple[float, float]) -> float:
    lo, hi = mild if rng.random() < P_MILD else severe
    return round(float(rng.uniform(lo, hi)), 2)


def mutate(sc: Scene, spec: dict, kind: str, rng: np.random.Generator, allowed: list[tuple[str, str]]) -> str:
    """Apply one mutation in place; returns the kind actually applied (some fall back when inapplicable)."""
    objs, groups = sc.objects, spec["groups"]
    wanted = {(g["color"], g["shape"]) for g in groups}
    if kind == "count":
        g = groups[int(rng.integers(len(groups)))]
        match = [o for o in objs if (o.color, o.shape) == (g["color"], g["shape"])]
        if match and (rng.random() < 0.5 or g["count"] >= 3):
            victim = match[int(rng.integers(len(match)))]
            for p in _on_top_of(sc, victim):  # what stood on it now stands on the ground
                p.y = sc.ground_y - p.size / 2
            objs.remove(victim)
        else:
            objs.append(_new_object(sc, g["color"], g["shape"], rng))
    elif kind in ("color", "shape"):
        if not objs:
            return mutate(sc, spec, "extra", rng, allowed)
        o = objs[int(rng.integers(len(objs)))]
        opts = [(c, s) for c, s in allowed if (s == o.shape if kind == "color" else c == o.color)
                and (c, s) != (o.color, o.shape)]
        if not opts:
            return mutate(sc, spec, "extra", rng, allowed)
        o.color, o.shape = opts[int(rng.integers(len(opts)))]
    elif kind == "relation":
        if spec["relation"] in ("left", "right"):
            for o in objs:  # mirror: the order of the groups flips
                o.x = sc.canvas - o.x
        elif spec["relation"] == "on":
            a = groups[0]
            for o in [o for o in objs if (o.color, o.shape) == (a["color"], a["shape"])]:
                o.x, o.y = _free_x(sc, o.size, rng), sc.ground_y - o.size / 2
        else:
            return mutate(sc, spec, "extra", rng, allowed)
    elif kind == "extra":
        opts = [c for c in allowed if c not in wanted] or allowed
        for _ in range(1 if rng.random() < 0.7 else 2):
            color, shape = opts[int(rng.integers(len(opts)))]
            objs.append(_new_object(sc, color, shape, rng))
    elif kind == "missing":
        if len(groups) < 2:
            return mutate(sc, spec, "count", rng, allowed)
        g = groups[int(rng.integers(2))]
        sc.objects = [o for o in objs if (o.color, o.shape) != (g["color"], g["shape"])]
        for o in sc.objects:  # anything left standing on a removed base falls to the ground
            if o.bottom < sc.ground_y - 1 and not any(abs(o.bottom - p.top) <= 1 for p in sc.objects):
                o.y = sc.ground_y - o.size / 2
    elif kind == "noise":
        sc.noise = max(sc.noise, _severity(rng, (0.01, 0.07), (0.07, 0.3)))
    elif kind == "blur":
        sc.blur = max(sc.blur, _severity(rng, (0.1, 0.6), (0.6, 2.0)))
    elif kind == "warp":
        if not objs:
            return kind
        targets = objs if rng.random() < 0.3 else [objs[int(rng.integers(len(objs)))]]
        w = _severity(rng, (0.03, 0.25), (0.25, 1.0))
        for o in targets:
            o.warp = max(o.warp, w)
    elif kind == "cut":
        if not objs:
            return kind
        right = rng.random() < 0.5
        o = max(objs, key=lambda p: p.right) if right else min(objs, key=lambda p: p.left)
        over = _snap(rng.uniform(0.5, 0.5 * o.size))
        dx = _clamp_shift(objs, (sc.canvas - o.right + over) if right else (-o.left - over), sc.canvas)
        for p in objs:
            p.x += dx
    elif kind == "low_contrast":
        if not objs:
            return kind
        c = np.asarray(PALETTE[objs[int(rng.integers(len(objs)))].color], dtype=float)
        g = luminance(tuple(c)) * 255  # grey of equal luminance keeps L(bg) close to L(colour)
        bg = np.clip(np.round(0.55 * c + 0.45 * g + rng.integers(-12, 13, size=3)), 0, 255).astype(int)
        sc.background = (int(bg[0]), int(bg[1]), int(bg[2]))
    elif kind == "crowd":
        ground = sorted([o for o in objs if abs(o.bottom - sc.ground_y) <= 1], key=lambda o: o.x)
        if len(ground) < 2:
            return mutate(sc, spec, "extra", rng, allowed) if len(ground) == 1 else kind
        i = int(rng.integers(len(ground) - 1))
        a, b = ground[i], ground[i + 1]
        gap = _snap(rng.uniform(-1.5, 1.75))
        dx = (a.right + gap + b.size / 2) - b.x
        for p in [b] + _on_top_of(sc, b):
            p.x += dx
    elif kind == "unbalanced":
        if not objs:
            return kind
        mean = sum(o.x for o in objs) / len(objs)
        side = 1 if rng.random() < 0.5 else -1
        dx = sc.canvas / 2 + side * (sc.canvas / 4 + rng.uniform(0.5, 6)) - mean
        dx = _clamp_shift(objs, dx, sc.canvas)
        for o in objs:
            o.x = _snap(o.x + dx)
    elif kind == "floating":
        if not objs:
            return kind
        o = objs[int(rng.integers(len(objs)))]
        dy = -_severity(rng, (1.5, 4), (4, 14)) if rng.random() < 0.8 else _snap(rng.uniform(1.5, 4))
        for p in [o] + _on_top_of(sc, o):
            p.y = _snap(p.y + dy)
    elif kind == "clash":
        if len(objs) < 2:
            return mutate(sc, spec, "extra", rng, allowed)
        i, j = rng.choice(len(objs), size=2, replace=False)
        a, b = objs[int(i)], objs[int(j)]
        ov = _snap(rng.uniform(2, max(2.0, 0.6 * min(a.size, b.size))))
        b.x = a.x + (1 if b.x >= a.x else -1) * ((a.size + b.size) / 2 - ov)
        if min(a.bottom, b.bottom) - max(a.top, b.top) < 2:  # e.g. b was lifted: bring it to a's level
            b.y = a.bottom - b.size / 2
    elif kind == "unstable":
        bases = [p for p in objs if p.shape in ("circle", "triangle")]
        movers = [o for o in objs if not _on_top_of(sc, o)]
        if not bases or len(objs) < 2:
            return mutate(sc, spec, "floating", rng, allowed)
        p = bases[int(rng.integers(len(bases)))]
        movers = [o for o in movers if o is not p] or [o for o in objs if o is not p]
        o = movers[int(rng.integers(len(movers)))]
        o.x, o.y = _snap(p.x + rng.uniform(-p.size / 4, p.size / 4)), p.top - o.size / 2
    else:
        raise ValueError(f"mutation kind: expected one of {list(MUTATIONS)}, got {kind!r}")
    return kind


def sample_candidates(spec: dict, k: int, canvas: int, rng: np.random.Generator,
                      allowed: list[tuple[str, str]]) -> list[Candidate]:
    """K candidate scenes for one prompt spec (each from its own fresh base layout)."""
    kinds, p = list(MUTATIONS), np.asarray(list(MUTATIONS.values()))
    p = p / p.sum()
    out = []
    for _ in range(k):
        sc = base_scene(spec, canvas, rng)
        n_mut = int(rng.choice(len(N_MUTATIONS_P), p=N_MUTATIONS_P))
        applied = [mutate(sc, spec, kinds[int(rng.choice(len(kinds), p=p))], rng, allowed) for _ in range(n_mut)]
        out.append(Candidate(scene=sc.to_json(), kinds=applied or ["clean"]))
    return out
