"""Perception of a captioning VLM on ShapesWorld: how much of a scene its greedy caption gets right.

A caption (`zreward.data.shapes_world.captions`) is

    "3 objects: blue square, yellow triangle on blue square, red circle floating. noise: 0.10. blur: 0.5.
     warp: 0.30. cut: 0. low contrast: 1. crowded: no. unbalanced: no. clash: 0."

`parse_caption` reads one back into facts; `perception_metrics` compares generated captions with the reference
captions of the same images, fact by fact (per image, then the mean over images):

- `object_list_exact`: the object list (everything before the first quality fact) is reproduced exactly;
- `count`: the number of objects; `colors` / `shapes`: the multiset of object colours / shapes;
- `support`: the multiset of support annotations ("on <color> <shape>", "floating", or nothing = on the ground);
- `noise`, `blur`, `warp`: the same severity band as the reference — none (0), mild or severe, with the sampler's
  band edges (noise 0.07, blur 0.6, warp 0.25; `zreward.data.shapes_world.sampler`): the values are continuous;
- `cut`, `low_contrast`, `clash`: the exact count; `crowded`, `unbalanced`: the yes/no;
- `caption_exact`: the whole caption.

A generated caption that does not parse counts as wrong on every fact. Each fact also gets its `baseline`: the
accuracy of always answering the reference's most common value (most images are clean, so "noise: 0.00" alone is
right on ~90% of them) — a fact is only perceived where the accuracy is clearly above its baseline; and its
`accuracy_uncommon`: the accuracy on the images whose reference value is *not* the most common one (e.g. the noisy
images for noise), with their number `n_uncommon`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from zreward.models.scorer import load_scorer
from zreward.trainers.caption import CaptionConfig, caption_images, load_caption_data

QUALITY_KEYS = ("noise", "blur", "warp", "cut", "low contrast", "crowded", "unbalanced", "clash")
BANDS = {"noise": 0.07, "blur": 0.6, "warp": 0.25}  # mild/severe edge of each graded fact (the sampler's)
FACTS = ("object_list_exact", "count", "colors", "shapes", "support", "noise", "blur", "warp", "cut",
         "low_contrast", "crowded", "unbalanced", "clash", "caption_exact")

_HEAD = re.compile(r"^\s*(\d+) objects?(?:: (.*?))?\.\s+noise:")
_OBJ = re.compile(r"^(\w+) (\w+)(?: (on \w+ \w+|floating))?$")


def parse_caption(text: str) -> dict | None:
    """Facts of one caption: {"objects": [(color, shape, support)], "noise": float, ..., "clash": int}.

    `support` is "" (on the ground), "on <color> <shape>" or "floating". Returns None when the text is not a caption
    of the documented form (a wrong object count is still a caption; a missing fact is not).
    """
    m = _HEAD.match(text)
    if m is None:
        return None
    objects = []
    if m.group(2):
        for part in m.group(2).split(", "):
            o = _OBJ.match(part.strip())
            if o is None:
                return None
            objects.append((o.group(1), o.group(2), o.group(3) or ""))
    facts: dict = {"objects": objects, "n": int(m.group(1))}
    rest = text[m.end() - len("noise:"):]
    for key in QUALITY_KEYS:
        f = re.search(rf"(?:^|\. ){key}: ([\w.]+?)\.(?:\s|$)", rest)
        if f is None:
            return None
        value = f.group(1)
        try:
            if key in ("crowded", "unbalanced"):
                if value not in ("yes", "no"):
                    return None
                facts[key] = value == "yes"
            elif key in BANDS:
                facts[key] = float(value)
            else:
                facts[key.replace(" ", "_")] = int(value)
        except ValueError:
            return None
    return facts


def band(fact: str, value: float) -> int:
    """0 = none, 1 = mild, 2 = severe, by the sampler's band edge of `fact` (noise, blur or warp)."""
    return 0 if value <= 0 else (1 if value <= BANDS[fact] else 2)


def _fact_values(f: dict, text: str) -> dict:
    """The comparable value of every fact of one parsed caption."""
    objs = f["objects"]
    return {"object_list_exact": text.split(". noise:")[0].strip(), "count": f["n"],
            "colors": tuple(sorted(o[0] for o in objs)), "shapes": tuple(sorted(o[1] for o in objs)),
            "support": tuple(sorted(o[2] for o in objs)),
            **{k: band(k, f[k]) for k in BANDS},
            "cut": f["cut"], "low_contrast": f["low_contrast"], "crowded": f["crowded"],
            "unbalanced": f["unbalanced"], "clash": f["clash"], "caption_exact": text.strip()}


def perception_metrics(generated: list[str], reference: list[str]) -> dict:
    """Per-fact accuracy of `generated` captions against the `reference` captions of the same images.

    Returns:
        {"n": images, "parsed": fraction of generated captions that parse, "accuracy": {fact: float},
         "baseline": {fact: float}, "accuracy_uncommon": {fact: float | None}, "n_uncommon": {fact: int}} over
        `FACTS`.

    Raises:
        ValueError: the lists differ in length, are empty, or a reference caption does not parse.
    """
    if len(generated) != len(reference) or not reference:
        raise ValueError(f"expected equal non-empty lists, got {len(generated)} generated and {len(reference)} "
                         "reference captions")
    refs = []
    for i, r in enumerate(reference):
        f = parse_caption(r)
        if f is None:
            raise ValueError(f"reference caption {i} is not a ShapesWorld caption: {r!r}")
        refs.append(_fact_values(f, r))
    hits = {k: [] for k in FACTS}
    parsed = 0
    for g, ref in zip(generated, refs):
        f = parse_caption(g)
        parsed += f is not None
        got = _fact_values(f, g) if f is not None else None
        for k in FACTS:
            hits[k].append(got is not None and got[k] == ref[k])
    common = {k: Counter(r[k] for r in refs).most_common(1)[0] for k in FACTS}
    rare = {k: [h for h, r in zip(hits[k], refs) if r[k] != common[k][0]] for k in FACTS}
    return {"n": len(refs), "parsed": parsed / len(refs),
            "accuracy": {k: float(np.mean(v)) for k, v in hits.items()},
            "baseline": {k: common[k][1] / len(refs) for k in FACTS},
            "accuracy_uncommon": {k: float(np.mean(v)) if v else None for k, v in rare.items()},
            "n_uncommon": {k: len(v) for k, v in rare.items()}}


def caption_split(scorer, split_dir: str | Path, max_images: int | None = None, batch_size: int = 64,
                  instruction: str = CaptionConfig.instruction, max_tokens: int = CaptionConfig.max_tokens
                  ) -> tuple[list[str], list[str], list[str]]:
    """Greedy captions of a split's images with their references: (ids, generated, reference)."""
    data = load_caption_data(split_dir, max_images=max_images)
    generated: list[str] = []
    for s in range(0, len(data), batch_size):
        idx = range(s, min(s + batch_size, len(data)))
        generated += caption_images(scorer, data.image_batch(idx), instruction, max_tokens + 1)
    return list(data.ids), generated, list(data.captions)


def main(argv: list[str] | None = None) -> int:
    """`zreward eval perception --model DIR --data SPLIT [--max-images N] [--out FILE]`: per-fact accuracy (JSON)."""
    ap = argparse.ArgumentParser(prog="zreward eval perception",
                                 description="Caption a split greedily and score each fact of the captions.")
    ap.add_argument("--model", required=True, help="a Scorer directory (captioning-pretrained)")
    ap.add_argument("--data", required=True, help="a canonical split whose records have meta.caption or a scene")
    ap.add_argument("--max-images", type=int, default=None, help="only the first N images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--out", default=None, help="also write the metrics and the captions to this JSON file")
    args = ap.parse_args(argv)
    if (args.max_images is not None and args.max_images < 1) or args.batch_size < 1:
        print("zreward eval perception: --max-images and --batch-size must be >= 1", file=sys.stderr)
        return 2
    try:
        scorer = load_scorer(args.model, add_level_tokens=False)
        scorer.model.eval()
        ids, gen, ref = caption_split(scorer, args.data, args.max_images, args.batch_size)
        metrics = perception_metrics(gen, ref)
    except (ValueError, FileNotFoundError) as e:
        print(f"zreward eval perception: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics, indent=2))
    if args.out:
        samples = [{"id": i, "generated": g, "reference": r} for i, g, r in zip(ids, gen, ref)]
        Path(args.out).write_text(json.dumps({"metrics": metrics, "samples": samples}, indent=1) + "\n")
    return 0
