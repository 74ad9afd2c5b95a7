"""Pick-a-Pic v2 (Kirstain et al. 2023, https://huggingface.co/datasets/yuvalkirstain/pickapic_v2) → pairs.

Field layout (HF parquet shards): one row per user judgement with `caption` (the prompt), `jpg_0`/`jpg_1` (encoded
image bytes), `label_0`/`label_1` ((1, 0) = image 0 preferred, (0, 1) = image 1, (0.5, 0.5) = tie), and usually
`image_0_uid`/`image_1_uid`, `model_0`/`model_1`, `has_label`, `are_different`, `ranking_id`, `user_id`.
- Label pairs other than the three above are bad records.
- Rows with `has_label == false` (no judgement) and rows with `are_different == false` or equal uids (the same
  image twice) are dropped and counted as "dropped by protocol", not errors.
- Images are keyed by their uid when present (an image shared by several rows is stored once), else by row.
- `votes` is {"a": 1} / {"b": 1} / {"tie": 1}: each row is a single user's judgement.
`--src`: one parquet file or a directory of shards (read in small batches; images are never all in memory).
"""
from __future__ import annotations

from pathlib import Path

from zreward.data.formats._common import Sink, bad, iter_parquet, need, number
from zreward.data.records import DIMS

DIMS = list(DIMS)
EXTRA = {"labels": "pairwise overall preference only (no per-image labels)",
         "pair_votes": "one user judgement per row; (0.5, 0.5) labels are ties"}
_LABELS = {(1.0, 0.0): "a", (0.0, 1.0): "b", (0.5, 0.5): "tie"}


def run(src: Path, sink: Sink) -> None:
    for n, (where, row) in enumerate(sink.take(iter_parquet(src))):
        with sink.record(where):
            if row.get("has_label") is False:
                sink.note("unlabeled row (has_label=false)")
                continue
            prompt = need(row, "caption", where, str, "a non-empty caption (the prompt)")
            lab = (number(row.get("label_0"), where, "label_0"), number(row.get("label_1"), where, "label_1"))
            if lab not in _LABELS:
                raise bad(where, "label_0/label_1", "(1, 0), (0, 1) or (0.5, 0.5)", list(lab))
            u0, u1 = row.get("image_0_uid"), row.get("image_1_uid")
            if row.get("are_different") is False or (u0 is not None and u0 == u1):
                sink.note("identical images (are_different=false)")
                continue
            keys = [u if isinstance(u, str) and u else f"row{n}_{k}" for k, u in enumerate((u0, u1))]
            imgs = [None if sink.has(k) else sink.load_bytes(row.get(f"jpg_{i}"), where, f"jpg_{i}")
                    for i, k in enumerate(keys)]
            ids = []
            for i, (k, im) in enumerate(zip(keys, imgs)):
                meta = {m: row[f] for m, f in (("model", f"model_{i}"), ("uid", f"image_{i}_uid")) if row.get(f)}
                ids.append(sink.add_image(k, im, prompt, meta=meta))
            label = _LABELS[lab]
            sink.add_pair(ids[0], ids[1], label, votes={label: 1})
