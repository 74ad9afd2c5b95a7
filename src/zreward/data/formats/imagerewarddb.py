"""ImageRewardDB (Xu et al. 2023, https://huggingface.co/datasets/THUDM/ImageRewardDB) → images + pairs.

Field layout (dataset card): one row per image in `metadata-<split>.parquet` (or the per-part JSON files, same
schema): `image_path` (relative to the dataset repo root, e.g. images/train/train_1/<uuid>.webp), `prompt_id`,
`prompt`, `classification`, `image_amount_in_total`, `rank` (within the prompt, 1 = best, equal ranks = tie),
`overall_rating`, `image_text_alignment_rating`, `fidelity_rating` (expert ratings on a 1–7 scale).
- Per-image labels: the three ratings rescaled 1–7 → 1–5 (`labels.rescale`, 1 + 4·(r − 1)/6) and stored as `mos`
  of dims "alignment", "fidelity" and "overall_rating" (one expert rating each, so no std; `label_dist` turns a
  MOS without std into the two-level split). Raw 1–7 ratings are kept in meta. Ratings outside [1, 7] are bad.
- Pairs: within each prompt_id, every pair of images (in file order) with different ranks, the lower rank
  preferred; equal ranks are skipped, as in ImageReward's rank_pair_dataset.py (counted, not errors).
- `image_path` is resolved against the source file's directory and up to three parents (the per-part JSONs live
  in images/<split>/); `--images-root` overrides. Images are keyed by image_path.
- ImageReward's *benchmark* file (`data/test.json` of the ImageReward repository: ranked `generations` per prompt)
  is detected and read by `zreward.data.formats.imagereward_bench`.
"""
from __future__ import annotations

from pathlib import Path

from zreward.data.formats import imagereward_bench
from zreward.data.formats._common import Sink, as_dict, bad, iter_table, need, number
from zreward.data.labels import rescale
from zreward.data.records import DimLabel

DIMS = ["alignment", "fidelity", "overall_rating"]
RATING_FIELDS = {"alignment": "image_text_alignment_rating", "fidelity": "fidelity_rating",
                 "overall_rating": "overall_rating"}
SCALE = (1.0, 7.0)
EXTRA = {"labels": "expert ratings rescaled from 1-7 to 1-5 (mos only, one rater); pairs from rank within "
                   "prompt_id, equal ranks skipped as in ImageReward",
         "rating_scale": list(SCALE)}


def run(src: Path, sink: Sink) -> None:
    if imagereward_bench.is_benchmark_file(src):
        sink.w.info.extra = {"format": sink.w.info.extra.get("format"), **imagereward_bench.EXTRA}
        imagereward_bench.run(src, sink)
        return
    bases = [src.parent, *list(src.parents)[1:4]]
    groups: dict[str, list[tuple[str, float]]] = {}  # prompt_id -> [(image id, rank)] in file order
    for where, raw in sink.take(iter_table(src)):
        with sink.record(where):
            rec = as_dict(raw, where)
            path = need(rec, "image_path", where, str, "the image path")
            pid = need(rec, "prompt_id", where, (str, int), "a prompt id")
            prompt = need(rec, "prompt", where, str, "a non-empty prompt string")
            rank = number(need(rec, "rank", where, (int, float), "a rank (1 = best)"), where, "rank", 1.0)
            raw_r = {d: number(need(rec, f, where, (int, float), "a rating on the 1-7 scale"), where, f, *SCALE)
                     for d, f in RATING_FIELDS.items()}
            if sink.has(path):
                raise bad(where, "image_path", "each image listed once", path)
            img = sink.load_path(sink.resolve(path, bases), where, "image_path")
            labels = {d: DimLabel(mos=round(float(rescale(v, *SCALE)), 6)) for d, v in raw_r.items()}
            meta = {"prompt_id": str(pid), "rank": rank, "ratings_1to7": raw_r, "source_path": path}
            if rec.get("classification") is not None:
                meta["classification"] = rec["classification"]
            iid = sink.add_image(path, img, prompt, labels=labels, meta=meta)
            groups.setdefault(str(pid), []).append((iid, rank))
    for items in groups.values():
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                (a, ra), (b, rb) = items[i], items[j]
                if ra == rb:
                    sink.note("equal rank within prompt_id (skipped, as in ImageReward)")
                    continue
                sink.add_pair(a, b, "a" if ra < rb else "b")
