"""GenAI-Bench human alignment ratings (Li, Lin et al. 2024, https://huggingface.co/datasets/BaiqiL/GenAI-Bench,
also BaiqiL/GenAI-Bench-1600) → per-image rating histograms (+ derived pairs).

Field layout (dataset card): one row per prompt with `Index` (or `id`), `Prompt` (or `prompt`), one image column
per model (DALLE_3, DeepFloyd_I_XL_v1, Midjourney_6, SDXL_2_1, SDXL_Base, SDXL_Turbo; HF Image structs) and the
1-to-5 Likert alignment ratings either as a `HumanRatings` struct {model: [int, ...]} (current card) or as
`<model>_HumanRating` columns holding a list or its JSON string (older revision). The models are whatever the
ratings name; each needs its image column.
- Per image: dim "alignment" with `ratings` (raw), `hist` (counts over the 9 levels; integer ratings land on
  1.0, 2.0, ..., 5.0), `mos` and `std` (population std). A rating outside 1–5 is a bad record.
- Derived pairs (documented in dataset.json): within a prompt, every model pair on dim "alignment", the higher
  MOS preferred, equal MOS a tie; no votes (they are not pairwise judgements).
A bad field or a missing/undecodable image rejects the whole row (prompt).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from zreward.data.formats._common import Sink, as_dict, bad, iter_table, need, number
from zreward.data.labels import mos_std, ratings_to_hist
from zreward.data.records import DimLabel

DIMS = ["alignment"]
EXTRA = {"labels": "alignment: raw 1-5 Likert ratings, their histogram over the levels, MOS and std",
         "pairs": "derived: every model pair within a prompt, higher alignment MOS preferred, equal MOS = tie"}


def _ratings(rec: dict, where: str) -> dict[str, list[float]]:
    if isinstance(rec.get("HumanRatings"), dict):
        raw = {m: (v, f"HumanRatings.{m}") for m, v in rec["HumanRatings"].items()}
    else:
        raw = {k[: -len("_HumanRating")]: (v, k) for k, v in rec.items() if k.endswith("_HumanRating")}
    if not raw:
        raise bad(where, "HumanRatings", "a HumanRatings struct or <model>_HumanRating columns")
    out = {}
    for model, (v, fld) in sorted(raw.items()):
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                raise bad(where, fld, "a list of 1-5 ratings (or its JSON string)", v) from None
        if not isinstance(v, list) or not v:
            raise bad(where, fld, "a non-empty list of 1-5 ratings", v)
        out[model] = [number(x, where, fld, 1.0, 5.0) for x in v]
    return out


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent] if src.is_file() else [src]
    for n, (where, raw) in enumerate(sink.take(iter_table(src))):
        with sink.record(where):
            rec = as_dict(raw, where)
            pkey = "Prompt" if "Prompt" in rec else "prompt"
            prompt = need(rec, pkey, where, str, "a non-empty prompt string")
            rid = rec.get("Index", rec.get("id", n))
            ratings = _ratings(rec, where)
            imgs = {}
            for model in ratings:
                if rec.get(model) is None:
                    raise bad(where, model, f"the image of model {model} (its ratings are present)")
                imgs[model] = sink.load_cell(rec[model], where, model, bases)
            ids, moses = [], []
            for model, r in ratings.items():
                m, s = mos_std(r)
                label = DimLabel(hist=[int(c) for c in ratings_to_hist(r)], mos=round(m, 6), std=round(s, 6),
                                 ratings=r)
                ids.append(sink.add_image(f"p{rid}_{model}", imgs[model], prompt, labels={"alignment": label},
                                          meta={"model": model, "prompt_index": rid}))
                moses.append(m)
            mo = np.asarray(moses)
            for i in range(len(ids)):
                for j in range(i + 1, len(ids)):
                    lab = "a" if mo[i] > mo[j] else "b" if mo[i] < mo[j] else "tie"
                    sink.add_pair(ids[i], ids[j], lab, dim="alignment")
