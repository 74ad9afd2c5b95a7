"""HPDv2 (Human Preference Dataset v2, Wu et al. 2023, https://github.com/tgxs002/HPSv2) → canonical pairs.

Field layout (from the HPSv2 README / HF dataset card and its data loaders):
- `train.json`: list of {"prompt", "image_path" (HF release) or "file_path" (README): [str, ...],
  "human_preference": [int, ...] (1 = the preferred image), "user_hash"}. We require 0/1 values with exactly one 1
  and emit (preferred, other) pairs with label "a" for every other image (one pair for the usual 2 images).
- `test.json`: list of {"prompt", "image_path": [str, ...], "rank": [int, ...] (averaged rank, lower = better),
  "raw_annotations" (card) or "raw_annotation" (README): [{"rank": [int, ...], "user_hash"}, ...]}. For every
  image pair (i < j) we count the annotators who ranked i better (votes "a"), j better ("b") or equal ("tie");
  the label is the side with more votes, "tie" when equal. Without raw annotations (the pre-2023-08 test.json)
  the label comes from the averaged `rank` and `votes` is omitted.
- Image names are relative to `<dir of json>/<train|test>/` (the unzipped layout), falling back to the json's
  directory; `--images-root` overrides. Images are keyed by their relative path (shared images stored once).
HPDv2 has no per-image rubric labels: images carry no labels, pairs have dim "overall".
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zreward.data.formats._common import Sink, as_dict, bad, need, number, read_json_list
from zreward.data.records import DIMS

DIMS = list(DIMS)  # no per-image labels; pairs are "overall"
EXTRA = {"labels": "pairwise overall preference only (no per-image labels)",
         "pair_votes": "test.json: per-annotator rank comparisons; train.json: single annotator choice"}


def _paths(rec: dict, where: str) -> tuple[str, list[str]]:
    key = "image_path" if "image_path" in rec else "file_path"
    paths = need(rec, key, where, list, "a list of at least 2 image paths")
    if len(paths) < 2 or not all(isinstance(p, str) and p for p in paths):
        raise bad(where, key, "a list of at least 2 non-empty image paths", paths)
    if len(set(paths)) != len(paths):
        raise bad(where, key, "distinct image paths", paths)
    return key, paths


def _ranks(v, n: int, where: str, fld: str) -> np.ndarray:
    if not isinstance(v, list) or len(v) != n:
        raise bad(where, fld, f"a list of {n} ranks (one per image)", v)
    return np.array([number(x, where, fld) for x in v])


def _pair_votes(ranks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vote counts from annotator rankings.

    Args:
        ranks: (A, n) ranks of n images by A annotators (lower = better).
    Returns:
        (a, b, tie), each (n, n): a[i, j] = #annotators ranking i above j, b = below, tie = equal.
    """
    ri, rj = ranks[:, :, None], ranks[:, None, :]
    return (ri < rj).sum(0), (ri > rj).sum(0), (ri == rj).sum(0)


def run(src: Path, sink: Sink) -> None:
    split = src.stem.lower()
    bases = [src.parent / split, src.parent] if split in ("train", "test") else [src.parent]
    for where, raw in sink.take(read_json_list(src)):
        with sink.record(where):
            rec = as_dict(raw, where)
            prompt = need(rec, "prompt", where, str, "a non-empty prompt string")
            key, paths = _paths(rec, where)
            n = len(paths)
            pairs: list[tuple[int, int, str, dict | None]] = []
            if "human_preference" in rec:  # train.json
                pref = rec["human_preference"]
                if (not isinstance(pref, list) or len(pref) != n or not all(p in (0, 1) for p in pref)
                        or sum(pref) != 1):
                    raise bad(where, "human_preference", f"a list of {n} values 0/1 with exactly one 1", pref)
                best = pref.index(1)
                pairs = [(best, j, "a", None) for j in range(n) if j != best]
            else:  # test.json
                ann = rec.get("raw_annotations", rec.get("raw_annotation"))
                afld = "raw_annotations" if "raw_annotations" in rec else "raw_annotation"
                if ann:
                    if not isinstance(ann, list) or not all(isinstance(a, dict) for a in ann):
                        raise bad(where, afld, "a list of {rank, user_hash} objects", type(ann).__name__)
                    r = np.stack([_ranks(a.get("rank"), n, where, f"{afld}[{k}].rank") for k, a in enumerate(ann)])
                    va, vb, vt = _pair_votes(r)
                    for i in range(n):
                        for j in range(i + 1, n):
                            lab = "a" if va[i, j] > vb[i, j] else "b" if vb[i, j] > va[i, j] else "tie"
                            pairs.append((i, j, lab, {"a": int(va[i, j]), "b": int(vb[i, j]), "tie": int(vt[i, j])}))
                elif "rank" in rec:
                    r = _ranks(rec["rank"], n, where, "rank")
                    for i in range(n):
                        for j in range(i + 1, n):
                            pairs.append((i, j, "a" if r[i] < r[j] else "b" if r[i] > r[j] else "tie", None))
                else:
                    raise bad(where, "human_preference/rank/raw_annotations",
                              "train.json's human_preference or test.json's rank/raw_annotations")
            # load (and validate) every new image before writing anything for this record
            imgs = {p: (None if sink.has(p) else sink.load_path(sink.resolve(p, bases), where, f"{key}[{k}]"))
                    for k, p in enumerate(paths)}
            ids = [sink.add_image(p, imgs[p], prompt, meta={"source_path": p}) for p in paths]
            for i, j, lab, votes in pairs:
                sink.add_pair(ids[i], ids[j], lab, votes=votes)
