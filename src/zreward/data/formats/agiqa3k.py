"""AGIQA-3K (Li et al. 2023, "AGIQA-3K: an open database for AI-generated image quality assessment",
https://github.com/lcysyzxdxc/AGIQA-3k-Database) → per-image score distributions.

Field layout (data.csv): `name` (image file name), `prompt`, `adj1`, `adj2`, `style`, `mos_quality`,
`std_quality`, `mos_align`, `std_align`.
- Assumed MOS bounds: [0, 5] for both MOS columns (`SCALE`): per the paper, 21 raters per image scored on a
  continuous 0–5 scale (0.1 steps) and the MOS were z-scored and mapped back to that range. They are rescaled to
  1–5 (1 + 4·x/5) and the stds by 4/5 (`labels.rescale_std`); a MOS outside the bounds or a negative std is a
  bad record.
- Dims: "quality" (perceptual quality; it is not one of the rubric dims realism/aesthetics, so it keeps its own
  name) and "alignment". Each label stores `mos`, `std` and `hist` = the DeQA-Score-style discretised Gaussian
  (`labels.gaussian_dist`, pdf, two-neighbour split when the 1–5 std < 0.2), computed for all rows at once;
  dataset.json says so. No pairs (AGIQA-3K is a rating dataset).
- Images: `name` relative to the CSV's directory, then `<dir>/images/`; `--images-root` overrides.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from zreward.data.formats._common import Sink, bad, need, number, read_csv
from zreward.data.labels import gaussian_dist, rescale, rescale_std
from zreward.data.records import DimLabel, RecordError

DIMS = ["alignment", "quality"]
SCALE = (0.0, 5.0)
COLUMNS = {"quality": ("mos_quality", "std_quality"), "alignment": ("mos_align", "std_align")}
EXTRA = {"labels": "mos/std rescaled from the assumed [0, 5] MOS range to 1-5; hist derived DeQA-style "
                   "(discretised Gaussian, mean fixed to the MOS, two-level split for std < 0.2)",
         "mos_scale": list(SCALE)}


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent, src.parent / "images"]
    rows = read_csv(src)
    if rows and not {"name", "prompt", "mos_quality"} <= set(rows[0][1]):
        raise bad(f"{src}:1", "header", "AGIQA-3K columns name, prompt, mos_quality, std_quality, mos_align, "
                                        "std_align", sorted(rows[0][1]))
    # pass 1: parse numbers per row (bad rows skipped or fatal), pass 2: all distributions at once
    parsed: list[tuple[str, dict, dict[str, tuple[float, float]]]] = []
    for where, row in rows:
        if sink.opts.limit is not None and len(parsed) >= sink.opts.limit:
            break
        try:
            vals = {d: (number(row.get(m), where, m, *SCALE), number(row.get(s), where, s, 0.0))
                    for d, (m, s) in COLUMNS.items()}
            need(row, "name", where, str, "the image file name")
            need(row, "prompt", where, str, "a non-empty prompt string")
        except RecordError:
            with sink.record(where):  # counts the record and applies the skip/raise policy
                raise
            continue
        parsed.append((where, row, vals))
    if not parsed:
        return
    dists = {}
    for d in COLUMNS:
        mos = rescale(np.array([v[d][0] for _, _, v in parsed]), *SCALE)
        std = rescale_std(np.array([v[d][1] for _, _, v in parsed]), *SCALE)
        dists[d] = (mos, std, gaussian_dist(mos, std))
    for k, (where, row, _) in enumerate(parsed):
        with sink.record(where):
            if sink.has(row["name"]):
                raise bad(where, "name", "each image listed once", row["name"])
            img = sink.load_path(sink.resolve(row["name"], bases), where, "name")
            labels = {d: DimLabel(hist=[round(float(x), 6) for x in dists[d][2][k]],
                                  mos=round(float(dists[d][0][k]), 6), std=round(float(dists[d][1][k]), 6))
                      for d in COLUMNS}
            meta = {"source_name": row["name"], **{c: row[c] for c in ("adj1", "adj2", "style") if row.get(c)}}
            sink.add_image(row["name"], img, row["prompt"], labels=labels, meta=meta)
