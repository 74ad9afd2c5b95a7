"""ShapesWorld prompt grammar: generate, render to text, parse.

Implements the spec grammar exactly:
```
prompt := group | group " " relation " " group
group  := count " " color " " shape[s]        count in {a|an|one -> 1, two -> 2, three -> 3}
relation in {"to the left of", "to the right of", "on top of"}
```
A parsed prompt ("spec") is `{"groups": [{"count": 2, "color": "blue", "shape": "square"}, ...],
"relation": "left" | "right" | "on" | None}`. Text is generated with "a"/"an" for count 1 (by the next word's
initial vowel) and a plural "s" for counts 2 and 3; the parser accepts a/an/one and singular or plural nouns.
Parsing is whitespace- and case-tolerant; errors name the offending text.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from zreward.data.shapes_world.scene import COLORS, SHAPES

RELATIONS: dict[str, str] = {"left": "to the left of", "right": "to the right of", "on": "on top of"}
_COUNT_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3}
_NUM_WORDS = {2: "two", 3: "three"}


class PromptError(ValueError):
    """A prompt text or spec does not follow the grammar; the message quotes the offending text."""


def group_text(count: int, color: str, shape: str) -> str:
    if count == 1:
        return f"{'an' if color[0] in 'aeiou' else 'a'} {color} {shape}"
    return f"{_NUM_WORDS[count]} {color} {shape}s"


def spec_to_text(spec: dict) -> str:
    """Canonical text of a (validated) spec."""
    spec = validate_spec(spec)
    parts = [group_text(g["count"], g["color"], g["shape"]) for g in spec["groups"]]
    if spec["relation"] is None:
        return parts[0]
    return f"{parts[0]} {RELATIONS[spec['relation']]} {parts[1]}"


def _parse_group(words: list[str], text: str) -> dict:
    if len(words) != 3:
        raise PromptError(f"prompt {text!r}: group {' '.join(words)!r}: expected '<count> <color> <shape>'")
    cw, color, noun = words
    if cw not in _COUNT_WORDS:
        raise PromptError(f"prompt {text!r}: count {cw!r}: expected one of {sorted(_COUNT_WORDS)}")
    if color not in COLORS:
        raise PromptError(f"prompt {text!r}: color {color!r}: expected one of {list(COLORS)}")
    shape = noun[:-1] if noun.endswith("s") and noun[:-1] in SHAPES else noun
    if shape not in SHAPES:
        raise PromptError(f"prompt {text!r}: shape {noun!r}: expected one of {list(SHAPES)} (or plural)")
    return {"count": _COUNT_WORDS[cw], "color": color, "shape": shape}


def parse_prompt(text: str) -> dict:
    """Parse prompt text into its spec.

    Raises:
        PromptError: naming the offending word or phrase.
    """
    if not isinstance(text, str) or not text.strip():
        raise PromptError(f"prompt {text!r}: expected a non-empty string")
    words = text.strip().lower().rstrip(".").split()
    for rel, phrase in RELATIONS.items():
        pw = phrase.split()
        for i in range(len(words) - len(pw) + 1):
            if words[i:i + len(pw)] == pw:
                return {"groups": [_parse_group(words[:i], text), _parse_group(words[i + len(pw):], text)],
                        "relation": rel}
    if len(words) > 3:
        raise PromptError(f"prompt {text!r}: expected one group or 'group <relation> group' with relation one of "
                          f"{list(RELATIONS.values())}")
    return {"groups": [_parse_group(words, text)], "relation": None}


def validate_spec(spec: Any, where: str = "prompt") -> dict:
    """Check a spec dict (groups/relation) and return a normalised copy."""
    if not isinstance(spec, dict) or "groups" not in spec:
        raise PromptError(f"{where}: expected an object with 'groups' (and 'relation'), got {spec!r}")
    groups, rel = spec["groups"], spec.get("relation")
    if not isinstance(groups, list) or len(groups) not in (1, 2):
        raise PromptError(f"{where}.groups: expected a list of 1 or 2 groups, got {groups!r}")
    out = []
    for i, g in enumerate(groups):
        w = f"{where}.groups[{i}]"
        if not isinstance(g, dict):
            raise PromptError(f"{w}: expected an object with count, color, shape, got {g!r}")
        c = g.get("count")
        if isinstance(c, bool) or c not in (1, 2, 3):
            raise PromptError(f"{w}.count: expected 1, 2 or 3, got {c!r}")
        if g.get("color") not in COLORS:
            raise PromptError(f"{w}.color: expected one of {list(COLORS)}, got {g.get('color')!r}")
        if g.get("shape") not in SHAPES:
            raise PromptError(f"{w}.shape: expected one of {list(SHAPES)}, got {g.get('shape')!r}")
        out.append({"count": int(c), "color": g["color"], "shape": g["shape"]})
    if rel is not None and rel not in RELATIONS:
        raise PromptError(f"{where}.relation: expected one of {list(RELATIONS)} or null, got {rel!r}")
    if (rel is None) != (len(out) == 1):
        raise PromptError(f"{where}: expected a relation exactly when there are 2 groups, got "
                          f"{len(out)} group(s) and relation {rel!r}")
    return {"groups": out, "relation": rel}


def resolve_prompt(prompt: Any, where: str = "prompt") -> tuple[str, dict]:
    """Accept text, or an object with `text` and/or `groups`/`relation`; return (text, spec).

    When both text and a parsed spec are given, the spec wins for scoring (it is the structured truth).
    """
    if isinstance(prompt, str):
        return prompt, parse_prompt(prompt)
    if isinstance(prompt, dict):
        if "groups" in prompt:
            spec = validate_spec(prompt, where)
            text = prompt.get("text")
            return (text if isinstance(text, str) else spec_to_text(spec)), spec
        if isinstance(prompt.get("text"), str):
            return prompt["text"], parse_prompt(prompt["text"])
    raise PromptError(f"{where}: expected prompt text or an object with 'text' and/or 'groups', got {prompt!r}")


def sample_spec(rng: np.random.Generator, combos: list[tuple[str, str]], *,
                must_use: list[tuple[str, str]] | None = None, p_relation: float = 0.6) -> dict:
    """Draw a random prompt spec whose groups use only `combos` ((color, shape) pairs).

    Args:
        rng: numpy generator (the only randomness).
        combos: allowed (color, shape) pairs for the groups.
        must_use: if given, at least one group uses one of these pairs (used for the ood split).
        p_relation: probability of a two-group prompt.
    The two groups of a relational prompt always differ in (color, shape), so they can be told apart.
    """
    two = rng.random() < p_relation
    counts = rng.choice([1, 2, 3], size=2, p=[0.55, 0.3, 0.15])
    first = [combos[i] for i in rng.permutation(len(combos))]
    if must_use:
        forced = must_use[int(rng.integers(len(must_use)))]
        rest = [c for c in first if c != forced]
        order = [forced, rest[0]] if rng.random() < 0.5 or not two else [rest[0], forced]
    else:
        order = first[:2]
    if not two:
        return {"groups": [{"count": int(counts[0]), "color": order[0][0], "shape": order[0][1]}], "relation": None}
    rel = ("left", "right", "on")[int(rng.integers(3))]
    groups = [{"count": int(counts[i]), "color": order[i][0], "shape": order[i][1]} for i in range(2)]
    if rel == "on":  # a stack of >1 on >1 is hard to lay out legibly on small canvases; keep B single
        groups[1]["count"] = 1
        groups[0]["count"] = min(groups[0]["count"], 2)
    return {"groups": groups, "relation": rel}
