"""ShapesWorld oracle: the four normative rubric scores of a scene for a prompt.

Implements "Oracle: the four rubric dimensions (normative)" of the spec `docs/shapes-world.md` exactly:
alignment (present / count / relation atoms, extras), realism (noise, blur, max warp), aesthetics (cut, low
contrast, crowd, unbalanced) and plausibility (floating, clash, unstable), each quantised by
q(v) = floor(2 * clip(v, 1, 5) + 0.5) / 2 onto the nine levels 1.0, 1.5, ..., 5.0.

Floating-point conventions (so that an independent implementation agrees bit for bit): box edges are
x -/+ size/2 and y -/+ size/2; each score is evaluated left to right exactly as written in the spec, e.g.
realism = ((5 - 8*noise) - 1.0*blur) - 2.0*max_warp; thresholds use the spec's comparisons (<= 1 for resting,
>= min(s)/3 for horizontal overlap, >= 2 for interpenetration, < 2 for crowding, < 0.15 for contrast, > canvas/4
for balance). "Pairs" are unordered pairs of distinct objects. An object that rests on another object counts as
"unstable" when any object it rests on is a circle or a triangle and it does not rest on the ground.

`oracle_facts` returns every intermediate fact (used for rationales); `oracle_scores` returns just the 4 floats.
The oracle is pure: no randomness, no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from zreward.data.shapes_world.prompts import resolve_prompt
from zreward.data.shapes_world.scene import PALETTE, Scene, SceneObject, luminance, parse_scene

DIMS: tuple[str, ...] = ("alignment", "realism", "aesthetics", "plausibility")
MEAN_WEIGHTS: tuple[float, ...] = (0.4, 0.2, 0.2, 0.2)


def q(v: float) -> float:
    """Spec quantiser: clip to [1, 5], round to the nearest 0.5 with halves going up."""
    return math.floor(2 * min(max(v, 1.0), 5.0) + 0.5) / 2


# ---------------------------------------------------------------------------------------------- predicates


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    """Length of the intersection of [a0, a1] and [b0, b1] (negative = separation)."""
    return min(a1, b1) - max(a0, b0)


def rests_on_ground(o: SceneObject, ground_y: float) -> bool:
    return abs(o.bottom - ground_y) <= 1


def rests_on(o: SceneObject, p: SceneObject) -> bool:
    """o rests on p: o is not p, bottom(o) within 1 px of top(p), horizontal overlap >= min(s_o, s_p)/3."""
    if o is p:
        return False
    return (abs(o.bottom - p.top) <= 1
            and _overlap(o.left, o.right, p.left, p.right) >= min(o.size, p.size) / 3)


def interpenetrate(a: SceneObject, b: SceneObject) -> bool:
    return (_overlap(a.left, a.right, b.left, b.right) >= 2 and _overlap(a.top, a.bottom, b.top, b.bottom) >= 2)


def box_gap(a: SceneObject, b: SceneObject) -> float:
    """max of horizontal and vertical separations of the boxes (negative when they intersect)."""
    return max(-_overlap(a.left, a.right, b.left, b.right), -_overlap(a.top, a.bottom, b.top, b.bottom))


def is_cut(o: SceneObject, canvas: int) -> bool:
    return o.left < 0 or o.right > canvas or o.top < 0 or o.bottom > canvas


# ---------------------------------------------------------------------------------------------- facts


@dataclass
class GroupFacts:
    count: int
    color: str
    shape: str
    seen: int


@dataclass
class OracleFacts:
    """Every fact the oracle used. Scores are in `scores` (dimension -> level)."""

    groups: list[GroupFacts]
    relation: str | None
    relation_ok: bool | None
    extras: list[tuple[str, str]]  # (color, shape) of objects matching no group
    satisfied: int
    total: int
    noise: float
    blur: float
    max_warp: float
    cut: int
    low_contrast: int
    crowd: int
    unbalanced: int
    floating: int
    clash: int
    unstable: int
    n_objects: int
    scores: dict[str, float] = field(default_factory=dict)


def _relation_ok(rel: str, ma: list[SceneObject], mb: list[SceneObject]) -> bool:
    if not ma or not mb:
        return False
    if rel == "left":
        return max(o.x for o in ma) < min(o.x for o in mb)
    if rel == "right":
        return min(o.x for o in ma) > max(o.x for o in mb)
    return all(any(rests_on(o, p) for p in mb) for o in ma)


def oracle_facts(scene: dict | Scene, prompt: Any) -> OracleFacts:
    """Compute all oracle facts and the four scores.

    Args:
        scene: scene dict (validated) or `Scene`.
        prompt: prompt text, or an object with `text` and/or the parsed `groups`/`relation`.
    """
    sc = parse_scene(scene)
    _, spec = resolve_prompt(prompt)
    objs, n = sc.objects, len(sc.objects)

    # 1. alignment
    matches = [[o for o in objs if o.shape == g["shape"] and o.color == g["color"]] for g in spec["groups"]]
    groups = [GroupFacts(g["count"], g["color"], g["shape"], len(m)) for g, m in zip(spec["groups"], matches)]
    satisfied = sum((gf.seen >= 1) + (gf.seen == gf.count) for gf in groups)
    total = 2 * len(groups)
    rel_ok = None
    if spec["relation"] is not None:
        rel_ok = _relation_ok(spec["relation"], matches[0], matches[1])
        satisfied += rel_ok
        total += 1
    wanted = {(g["color"], g["shape"]) for g in spec["groups"]}
    extras = [(o.color, o.shape) for o in objs if (o.color, o.shape) not in wanted]
    alignment = 1.0 if n == 0 else q(1 + 4 * satisfied / total - 0.5 * len(extras))

    # 2. realism
    max_warp = max((o.warp for o in objs), default=0.0)
    realism = q(5 - 8 * sc.noise - 1.0 * sc.blur - 2.0 * max_warp)

    # pairwise relations, computed once: on[i][j] = objs[i] rests on objs[j]
    on = [[rests_on(a, b) for b in objs] for a in objs]

    # 3. aesthetics
    cut = sum(is_cut(o, sc.canvas) for o in objs)
    bg_l = luminance(sc.background)
    low_contrast = sum(abs(luminance(PALETTE[o.color]) - bg_l) < 0.15 for o in objs)
    crowd = int(any(box_gap(objs[i], objs[j]) < 2 for i in range(n) for j in range(i + 1, n)
                    if not (on[i][j] or on[j][i])))
    unbalanced = int(n > 0 and abs(sum(o.x for o in objs) / n - sc.canvas / 2) > sc.canvas / 4)
    aesthetics = q(5 - 1.0 * cut - 0.75 * low_contrast - 0.5 * crowd - 0.5 * unbalanced)

    # 4. plausibility
    grounded = [rests_on_ground(o, sc.ground_y) for o in objs]
    floating = sum(not (grounded[i] or any(on[i])) for i in range(n))
    clash = sum(interpenetrate(objs[i], objs[j]) for i in range(n) for j in range(i + 1, n))
    unstable = sum(not grounded[i] and any(on[i][j] and objs[j].shape in ("circle", "triangle") for j in range(n))
                   for i in range(n))
    plausibility = q(5 - 1.0 * floating - 1.0 * clash - 0.5 * unstable)

    return OracleFacts(groups=groups, relation=spec["relation"], relation_ok=rel_ok, extras=extras,
                       satisfied=int(satisfied), total=total, noise=sc.noise, blur=sc.blur, max_warp=max_warp,
                       cut=cut, low_contrast=low_contrast, crowd=crowd, unbalanced=unbalanced, floating=floating,
                       clash=clash, unstable=unstable, n_objects=n,
                       scores={"alignment": alignment, "realism": realism, "aesthetics": aesthetics,
                               "plausibility": plausibility})


def oracle_scores(scene: dict | Scene, prompt: Any) -> dict[str, float]:
    """The four oracle scores `{"alignment": .., "realism": .., "aesthetics": .., "plausibility": ..}`."""
    return dict(oracle_facts(scene, prompt).scores)


def oracle_overall(scores: dict[str, float]) -> float:
    """Mean-weight overall score sum_d mean_w_d * true_d (the spec's ceiling comparator)."""
    return sum(w * scores[d] for w, d in zip(MEAN_WEIGHTS, DIMS))
