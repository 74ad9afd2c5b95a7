"""GenAI-Bench, TIGER-Lab vote format (Jiang et al. 2024, https://huggingface.co/datasets/TIGER-Lab/GenAI-Bench,
config `image_generation`) → canonical pairs.

Field layout (HF parquet; GenAI-Bench inference.py): rows with `prompt`, `left_image`, `right_image` (HF Image
structs {bytes, path}; raw bytes or path strings are accepted too), `left_model`, `right_model` and `vote_type` ∈
{leftvote, rightvote, tievote, bothbad_vote}. Mapping: leftvote → "a", rightvote → "b", tievote and bothbad_vote →
"tie" (GenAI-Bench's own scoring treats both as A=B, split into good/bad). Because pair records have no meta field,
the raw `vote_type` is kept in both image records' meta (with side and model), so the four-way label can be
recovered. Any other vote_type is a bad record. `votes` = {label: 1} (one arena vote per row).
`--src`: the parquet file or directory (or a JSON/JSONL file whose image fields are paths relative to it).
Images are keyed per row and side (the arena re-samples images, there are no uids).
"""
from __future__ import annotations

from pathlib import Path

from zreward.data.formats._common import Sink, as_dict, bad, iter_table, need
from zreward.data.records import DIMS

DIMS = list(DIMS)
VOTES = {"leftvote": "a", "rightvote": "b", "tievote": "tie", "bothbad_vote": "tie"}
EXTRA = {"labels": "pairwise overall preference only (no per-image labels)",
         "vote_mapping": VOTES, "raw_vote_type": "image meta 'vote_type'"}


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent] if src.is_file() else [src]
    for n, (where, raw) in enumerate(sink.take(iter_table(src))):
        with sink.record(where):
            rec = as_dict(raw, where)
            prompt = need(rec, "prompt", where, str, "a non-empty prompt string")
            vt = rec.get("vote_type")
            if vt not in VOTES:
                raise bad(where, "vote_type", f"one of {sorted(VOTES)}", vt)
            imgs = []
            for side in ("left", "right"):
                if rec.get(f"{side}_image") is None:
                    raise bad(where, f"{side}_image", "an image (bytes, {bytes, path} or a path)")
                imgs.append(sink.load_cell(rec[f"{side}_image"], where, f"{side}_image", bases))
            ids = []
            for side, img in zip(("left", "right"), imgs):
                meta = {"side": side, "vote_type": vt, "row": n}
                if rec.get(f"{side}_model") is not None:
                    meta["model"] = rec[f"{side}_model"]
                ids.append(sink.add_image(f"row{n}_{side}", img, prompt, meta=meta))
            label = VOTES[vt]
            sink.add_pair(ids[0], ids[1], label, votes={label: 1})
