"""ShapesWorld rationales: the perceptual facts behind each oracle score, describe-then-compare.

Implements the rationale style documented in `docs/shapes-world.md` ("Rationales"). One short text per dimension,
ending just before the score (the score itself is never stated). A rationale first *describes* what the captioning
pretraining taught the base model to say about the image (`zreward.data.shapes_world.captions`: the same words, in
the same order), then *compares* that description with the prompt or states the dimension's facts:

- alignment:    "3 objects: blue square, blue square, green circle. want 2 blue square: see 2.
                 want 1 yellow triangle: see 0. left: no. extra: 1 green circle."
                (the caption's object list; then one "want/see" per prompt group; the relation (left / right / on)
                when the prompt has one; extras grouped by (color, shape) with counts, in caption order — left to
                right — so their order is derivable from the description; "extra: none." when there are none)
- realism:      "noise: 0.10. blur: 0.5. warp: 0.30."   (noise std, blur radius px, maximum warp: the caption's
                own quality facts)
- aesthetics:   "cut: 1. low contrast: 0. crowded: no. unbalanced: yes."   (the caption's facts)
- plausibility: "2 objects: red square floating, blue circle on red square. floating: 1. clash: 0. unstable: 0."
                (the caption's object list, whose supports the counts are read from)
"""
from __future__ import annotations

from collections import Counter

from zreward.data.shapes_world.captions import caption_order, object_list
from zreward.data.shapes_world.oracle import OracleFacts
from zreward.data.shapes_world.scene import Scene, parse_scene


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def rationales(f: OracleFacts, scene: dict | Scene) -> dict[str, str]:
    """Rationale text per dimension from the oracle facts of `scene` (see the module docstring)."""
    sc = parse_scene(scene)
    described = object_list(sc)
    parts = [described] + [f"want {g.count} {g.color} {g.shape}: see {g.seen}." for g in f.groups]
    if f.relation is not None:
        parts.append(f"{f.relation}: {_yn(bool(f.relation_ok))}.")
    counts = Counter(f.extras)
    order = dict.fromkeys((o.color, o.shape) for o in caption_order(sc) if (o.color, o.shape) in counts)
    extra = ", ".join(f"{counts[k]} {k[0]} {k[1]}" for k in order)
    parts.append(f"extra: {extra or 'none'}.")
    return {
        "alignment": " ".join(parts),
        "realism": f"noise: {f.noise:.2f}. blur: {f.blur:.1f}. warp: {f.max_warp:.2f}.",
        "aesthetics": (f"cut: {f.cut}. low contrast: {f.low_contrast}. crowded: {_yn(bool(f.crowd))}. "
                       f"unbalanced: {_yn(bool(f.unbalanced))}."),
        "plausibility": f"{described} floating: {f.floating}. clash: {f.clash}. unstable: {f.unstable}.",
    }
