"""ImageReward's benchmark test set (Xu et al. 2023, https://github.com/THUDM/ImageReward, `data/test.json`) →
images + pairs.

Field layout, as the repository ships the file (466 prompts): a JSON list of
`{"id", "prompt", "generations": [relative image paths], "ranking": [ints, 1 = best, equal ranks = tie]}`.
- Images: ImageReward's evaluation script (`test.py`) opens `os.path.join(img_prefix, g)` for each generation `g`,
  with `--img_prefix data/test_images` beside `--source_path data/test.json` (the unzipped `test_images.zip` of
  `scripts/test.sh`). So a generation path is resolved against `<dir of test.json>/test_images/`, then the json's
  own directory; `--images-root` overrides both. Images are keyed by that relative path.
- Pairs: every pair (i < j) of generations within a prompt, the ones `test.py` compares; the lower rank is
  preferred, equal ranks are kept as ties (label "tie"; `test.py` leaves ties out of its accuracy, our pairwise
  metrics report them separately). Pairs have dim "overall"; images carry no per-image labels.
- Refused (naming record and field): fewer than 2 generations, repeated paths, a ranking that is not one integer
  ≥ 1 per generation.
`zreward data convert --format imagerewarddb` also reads this file (it is detected by its `generations` and
`ranking` fields), as does `--format imagereward_bench`.
"""
from __future__ import annotations

import json
from pathlib import Path

from zreward.data.formats._common import Sink, as_dict, bad, need, read_json_list
from zreward.data.records import DIMS

DIMS = list(DIMS)  # no per-image labels; pairs are "overall"
EXTRA = {"labels": "pairwise overall preference from ImageReward's benchmark ranking (1 = best); every pair "
                   "within a prompt, equal ranks kept as ties",
         "images": "generations resolved against <dir of test.json>/test_images/ as ImageReward's test.py does"}


def is_benchmark_file(src: Path) -> bool:
    """True for a JSON array whose first record has `generations` and `ranking` (the benchmark layout)."""
    if not (src.is_file() and src.suffix.lower() == ".json"):
        return False
    try:
        obj = json.loads(src.read_bytes())
    except (ValueError, RecursionError):
        return False
    return (isinstance(obj, list) and bool(obj) and isinstance(obj[0], dict)
            and "generations" in obj[0] and "ranking" in obj[0])


def _ranking(rec: dict, n: int, where: str) -> list[int]:
    r = need(rec, "ranking", where, list, f"a list of {n} ranks (1 = best)")
    if len(r) != n or not all(isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= 10_000 for x in r):
        raise bad(where, "ranking", f"a list of {n} integer ranks ≥ 1 (one per generation, 1 = best)", r)
    return r


def run(src: Path, sink: Sink) -> None:
    bases = [src.parent / "test_images", src.parent]
    for where, raw in sink.take(read_json_list(src)):
        with sink.record(where):
            rec = as_dict(raw, where)
            prompt = need(rec, "prompt", where, str, "a non-empty prompt string")
            gens = need(rec, "generations", where, list, "a list of at least 2 image paths")
            if len(gens) < 2 or not all(isinstance(g, str) and g.strip() for g in gens):
                raise bad(where, "generations", "a list of at least 2 non-empty image paths", gens)
            if len(set(gens)) != len(gens):
                raise bad(where, "generations", "distinct image paths", gens)
            rank = _ranking(rec, len(gens), where)
            # load (and validate) every new image before writing anything for this record
            imgs = {g: (None if sink.has(g) else sink.load_path(sink.resolve(g, bases), where, f"generations[{k}]"))
                    for k, g in enumerate(gens)}
            meta = {"prompt_id": str(rec.get("id", "")), "source": "ImageReward benchmark"}
            ids = [sink.add_image(g, imgs[g], prompt, meta={**meta, "rank": rank[k], "source_path": g})
                   for k, g in enumerate(gens)]
            for i in range(len(gens)):
                for j in range(i + 1, len(gens)):
                    lab = "a" if rank[i] < rank[j] else "b" if rank[i] > rank[j] else "tie"
                    sink.add_pair(ids[i], ids[j], lab)
