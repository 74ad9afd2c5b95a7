"""ShapesWorld rationales: the perceptual facts behind each oracle score, in a fixed small vocabulary.

Implements "Rationales" of the spec `docs/shapes-world.md`. One short text per dimension, ending just before the
score (the score itself is never stated):
- alignment:    "want 2 blue square: see 2. want 1 yellow triangle: see 0. left: no. extra: 1 green circle."
                (relation words: left / right / on; "extra: none." when there are no extras; extras are listed
                by (color, shape) with counts, in first-seen order)
- realism:      "noise: 0.10. blur: 0.5. warp: 0.30."   (noise std, blur radius px, maximum warp)
- aesthetics:   "cut: 1. low contrast: 0. crowded: no. unbalanced: yes."
- plausibility: "floating: 1. clash: 0. unstable: 0."
"""
from __future__ import annotations

from zreward.data.shapes_world.oracle import OracleFacts


def _yn(b: bool) -> str:
    return "yes" if b else "no"


def rationales(f: OracleFacts) -> dict[str, str]:
    """Rationale text per dimension from the oracle facts."""
    parts = [f"want {g.count} {g.color} {g.shape}: see {g.seen}." for g in f.groups]
    if f.relation is not None:
        parts.append(f"{f.relation}: {_yn(bool(f.relation_ok))}.")
    counts: dict[tuple[str, str], int] = {}
    for e in f.extras:
        counts[e] = counts.get(e, 0) + 1
    extra = ", ".join(f"{n} {c} {s}" for (c, s), n in counts.items())
    parts.append(f"extra: {extra or 'none'}.")
    return {
        "alignment": " ".join(parts),
        "realism": f"noise: {f.noise:.2f}. blur: {f.blur:.1f}. warp: {f.max_warp:.2f}.",
        "aesthetics": (f"cut: {f.cut}. low contrast: {f.low_contrast}. crowded: {_yn(bool(f.crowd))}. "
                       f"unbalanced: {_yn(bool(f.unbalanced))}."),
        "plausibility": f"floating: {f.floating}. clash: {f.clash}. unstable: {f.unstable}.",
    }
