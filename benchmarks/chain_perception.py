"""How right are a reasoning scorer's own greedy alignment chains: the 'describe' part and the 'compare' part.

    python benchmarks/chain_perception.py MODEL_DIR SPLIT_DIR [N]

A describe-then-compare alignment rationale (`zreward.data.shapes_world.rationales`) is "<object list>. want ...";
this greedily generates the alignment chain of the first N images of a ShapesWorld split and compares, with the
true rationale of each image: the object list (exact), the comparison after it (exact), the comparison where the
list was right, and the whole chain; and, where the list was right, how often each part of the comparison is wrong
(`want`: the prompt groups with their counts, `relation`: the `left` / `right` / `on` verdict, `extra`), over the
chains whose true or generated comparison has that part. Prints one JSON line.
"""
from __future__ import annotations

import json
import sys

import numpy as np

from zreward import load_scorer
from zreward.data.records import read_split
from zreward.data.shapes_world.oracle import oracle_facts
from zreward.data.shapes_world.rationales import rationales
from zreward.trainers.data import load_train_data


PARTS = {"want": ("want ",), "relation": ("left:", "right:", "on:"), "extra": ("extra:",)}


def comparison_parts(comparison: str) -> dict[str, list[str]]:
    """The sentences of an alignment comparison ("want ...: see N. left: no. extra: none.") by part, in order."""
    sentences = [x.strip() for x in ("want " + comparison).split(". ") if x.strip()]
    return {part: [x.rstrip(".") for x in sentences if x.startswith(heads)] for part, heads in PARTS.items()}


def part_errors(pairs: list[tuple[str, str]]) -> dict[str, float | None]:
    """Per part, the share of (true, generated) comparisons holding it on either side whose sentences differ."""
    wrong: dict[str, list[bool]] = {part: [] for part in PARTS}
    for true, gen in pairs:
        t, g = comparison_parts(true), comparison_parts(gen)
        for part in PARTS:
            if t[part] or g[part]:
                wrong[part].append(t[part] != g[part])
    return {f"{part}_wrong_where_list_right": float(np.mean(w)) if w else None for part, w in wrong.items()}


def main(argv: list[str]) -> int:
    model, split_dir, n = argv[0], argv[1], int(argv[2]) if len(argv) > 2 else 200
    sc = load_scorer(model)
    sc.model.eval()
    data = load_train_data(split_dir, max_images=n)
    recs = read_split(split_dir).images[:n]
    lists, comps, right_pairs = [], [], []
    for s in range(0, len(recs), 32):
        idx = np.arange(s, min(s + 32, len(recs)))
        cb = sc.generate_chains([data.prompts[i] for i in idx], data.image_batch(idx), ["alignment"], samples=1,
                                do_sample=False)
        for j, text in zip(idx, cb.texts):
            true = rationales(oracle_facts(recs[j].scene, recs[j].prompt_spec), recs[j].scene)["alignment"]
            head_t, _, rest_t = true.partition(". want ")
            head_g, _, rest_g = text.strip().partition(". want ")
            lists.append(head_g == head_t)
            comps.append(rest_g == rest_t)
            if head_g == head_t:
                right_pairs.append((rest_t, rest_g))
    right = [c for o, c in zip(lists, comps) if o]
    print(json.dumps({"n": len(lists), "object_list_exact": float(np.mean(lists)),
                      "comparison_exact": float(np.mean(comps)),
                      "comparison_exact_where_list_right": float(np.mean(right)) if right else None,
                      "chain_exact": float(np.mean([o and c for o, c in zip(lists, comps)])),
                      **part_errors(right_pairs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
