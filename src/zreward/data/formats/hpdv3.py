"""HPDv3 (HPSv3, Ma et al. ICCV 2025, https://huggingface.co/datasets/MizzenAI/HPDv3) → canonical pairs.

Field layout (HPSv3 data handlers; the dataset card): a JSON array or JSON-lines file of
{"prompt", "path1" (the **preferred** image), "path2", "model1", "model2", "confidence", "choice_dist", ...}.
Assumptions, stated because the card does not spell them out:
- `choice_dist` is [votes for path1, votes for path2] (two non-negative integers) when present; it becomes
  `votes` {"a", "b"}. A record whose counts favour path2 contradicts "path1 preferred" and is rejected as bad.
  Records without `choice_dist` (or null) get no votes.
- `confidence` (a number in [0, 1] when present) is validated and kept in the image records' meta
  (`pair_confidence` on the preferred image), since pair records have no meta field.
- `path1`/`path2` are relative to the JSON file's directory (`--images-root` overrides); images are keyed by that
  relative path, so an image used in several pairs is stored once.
Every pair: a = path1, b = path2, label "a", dim "overall". No per-image labels.
"""
from __future__ import annotations

from pathlib import Path

from zreward.data.formats._common import Sink, as_dict, bad, need, number, read_json_list
from zreward.data.records import DIMS

DIMS = list(DIMS)
EXTRA = {"labels": "pairwise overall preference only (no per-image labels)",
         "pair_votes": "choice_dist taken as [votes for path1, votes for path2]"}


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent]
    for where, raw in sink.take(read_json_list(src)):
        with sink.record(where):
            rec = as_dict(raw, where)
            prompt = need(rec, "prompt", where, str, "a non-empty prompt string")
            p1 = need(rec, "path1", where, str, "the preferred image's path")
            p2 = need(rec, "path2", where, str, "the other image's path")
            if p1 == p2:
                raise bad(where, "path2", "a different image than path1", p2)
            votes = None
            cd = rec.get("choice_dist")
            if cd is not None:
                if (not isinstance(cd, list) or len(cd) != 2
                        or not all(isinstance(c, int) and not isinstance(c, bool) and c >= 0 for c in cd)):
                    raise bad(where, "choice_dist", "[votes for path1, votes for path2] (two non-negative ints)", cd)
                if cd[1] > cd[0]:
                    raise bad(where, "choice_dist", "more votes for path1 (the preferred image) than path2", cd)
                votes = {"a": cd[0], "b": cd[1]}
            conf = rec.get("confidence")
            if conf is not None:
                conf = number(conf, where, "confidence", 0.0, 1.0)
            imgs = [None if sink.has(p) else sink.load_path(sink.resolve(p, bases), where, f)
                    for p, f in ((p1, "path1"), (p2, "path2"))]
            meta1 = {"source_path": p1, "model": rec.get("model1")}
            if conf is not None:
                meta1["pair_confidence"] = conf
            a = sink.add_image(p1, imgs[0], prompt, meta={k: v for k, v in meta1.items() if v is not None})
            b = sink.add_image(p2, imgs[1], prompt,
                               meta={k: v for k, v in {"source_path": p2, "model": rec.get("model2")}.items()
                                     if v is not None})
            sink.add_pair(a, b, "a", votes=votes)
