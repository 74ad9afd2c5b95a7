"""MMRB2 text-to-image task (Multimodal RewardBench 2, Hu et al. 2025, https://github.com/facebookresearch/MMRB2,
benchmark/t2i.json) → canonical pairs.

Field layout (the released t2i.json): {"pairs": [{"id", "prompt_content": [["text", str], ...],
"response_a": {"model_name", "response_content": [["image", "images/<...>.jpg"]]}, "response_b": {...},
"chosen": "A" | "B", "human_annotations": [int, ...], "prompt_source", "prompt_metadata"}, ...]}.
- The prompt is the concatenation of the text parts of `prompt_content` (a plain string is accepted too); a
  prompt with no text is a bad record. Each response must contain exactly one image part.
- Label from `chosen` (the benchmark's ground truth: A → "a", B → "b"); anything else is a bad record.
  `human_annotations` are kept raw in both image records' meta (their scale is not documented; we do not turn
  them into votes). Pair id, side and model name are kept in meta too (pair records have no meta field).
- Image paths are relative to the JSON file's directory; `--images-root` overrides. Keyed by path.
"""
from __future__ import annotations

from pathlib import Path

from zreward.data.formats._common import Sink, as_dict, bad, need, read_json_list
from zreward.data.records import DIMS

DIMS = list(DIMS)
EXTRA = {"labels": "pairwise overall preference only (no per-image labels); label from 'chosen'",
         "human_annotations": "kept raw in image meta, not converted to votes"}


def _prompt(rec: dict, where: str) -> str:
    pc = rec.get("prompt_content")
    if isinstance(pc, str) and pc.strip():
        return pc
    if isinstance(pc, list):
        texts = [p[1] for p in pc if isinstance(p, (list, tuple)) and len(p) == 2 and p[0] == "text"
                 and isinstance(p[1], str)]
        if texts and "".join(texts).strip():
            return "\n".join(texts)
    raise bad(where, "prompt_content", "a list of [\"text\", str] parts with some text", pc)


def _image_path(resp, where: str, fld: str) -> tuple[str, str | None]:
    if not isinstance(resp, dict) or not isinstance(resp.get("response_content"), list):
        raise bad(where, fld, "an object with response_content [[\"image\", path]]", resp)
    imgs = [p[1] for p in resp["response_content"] if isinstance(p, (list, tuple)) and len(p) == 2
            and p[0] == "image"]
    if len(imgs) != 1 or not isinstance(imgs[0], str) or not imgs[0]:
        raise bad(where, f"{fld}.response_content", "exactly one [\"image\", path] part", resp["response_content"])
    return imgs[0], resp.get("model_name")


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent]
    for where, raw in sink.take(read_json_list(src, key="pairs")):
        with sink.record(where):
            rec = as_dict(raw, where)
            pid = need(rec, "id", where, (str, int), "a pair id")
            prompt = _prompt(rec, where)
            chosen = rec.get("chosen")
            if chosen not in ("A", "B"):
                raise bad(where, "chosen", "'A' or 'B'", chosen)
            (pa, ma), (pb, mb) = _image_path(rec.get("response_a"), where, "response_a"), \
                _image_path(rec.get("response_b"), where, "response_b")
            if pa == pb:
                raise bad(where, "response_b", "a different image than response_a", pb)
            imgs = [None if sink.has(p) else sink.load_path(sink.resolve(p, bases), where, f)
                    for p, f in ((pa, "response_a"), (pb, "response_b"))]
            ids = []
            for p, img, side, model in ((pa, imgs[0], "A", ma), (pb, imgs[1], "B", mb)):
                meta = {"pair_id": pid, "side": side, "source_path": p, "prompt_source": rec.get("prompt_source"),
                        "model": model, "human_annotations": rec.get("human_annotations")}
                ids.append(sink.add_image(p, img, prompt, meta={k: v for k, v in meta.items() if v is not None}))
            sink.add_pair(ids[0], ids[1], "a" if chosen == "A" else "b")
