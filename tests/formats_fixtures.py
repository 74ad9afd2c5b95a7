"""Small fixture datasets written in each public dataset's *original* layout, with real photo bytes.

Each builder `write_<format>(root, variant)` writes a tiny dataset under `root` and returns a `Fixture` with the
`--src` path and the expected outcome. `variant` is "ok", "bad" (one malformed record) or "missing" (one record's
image is missing or its bytes are unusable); for the last two the fixture says which error message to expect and
what remains after `--skip-bad`.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "camera", "cat", "immunohistochemistry", "hubble_deep_field")


@lru_cache(maxsize=None)
def photo(i: int, size: int = 32) -> Image.Image:
    """A real photo from skimage.data, downsized (grayscale ones stay mode L)."""
    import skimage.data

    arr = getattr(skimage.data, _PHOTOS[i % len(_PHOTOS)])()
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8))
    return im.resize((size, size), Image.Resampling.BILINEAR)


def enc(i: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    im = photo(i)
    if fmt == "JPEG" and im.mode not in ("RGB", "L"):
        im = im.convert("RGB")
    im.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def save(path: Path, i: int, fmt: str = "JPEG") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(enc(i, fmt))
    return path.name


@dataclass
class Fixture:
    src: Path
    n_images: int
    n_pairs: int
    error: str | None = None  # regex the RecordError message must match ("bad"/"missing" variants)
    n_images_skip: int | None = None  # counts after --skip-bad
    n_pairs_skip: int | None = None


def _write_parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


# ------------------------------------------------------------------------------------------------ HPDv2


def write_hpdv2(root: Path, variant: str = "ok") -> Fixture:
    d = root / "HPD"
    names = ["00001.jpg", "00002.jpg", "00003.jpg", "00004.png", "00005.png"]
    for k, n in enumerate(names):
        if not (variant == "missing" and n == "00005.png"):
            save(d / "test" / n, k, "PNG" if n.endswith("png") else "JPEG")
    recs = [
        {"prompt": "an astronaut with a cat", "image_path": names[:3], "rank": [1, 2, 3],
         "raw_annotations": [{"rank": [1, 2, 3], "user_hash": "u1"}, {"rank": [2, 1, 3], "user_hash": "u2"},
                             {"rank": [1, 3, 2], "user_hash": "u3"}, {"rank": [2, 1, 3], "user_hash": "u4"}]},
        {"prompt": "a cup of coffee", "image_path": names[3:], "rank": [2, 1]},
    ]
    if variant == "bad":
        recs[1]["rank"] = "first"
    (d / "test.json").write_text(json.dumps(recs))
    if variant == "ok":
        return Fixture(d / "test.json", 5, 4)
    err = r"test\.json:record 1: rank: expected a list of 2 ranks" if variant == "bad" else \
        r"test\.json:record 1: image_path\[1\]: expected an existing image file, not found: .*00005\.png"
    return Fixture(d / "test.json", 5, 4, err, 3, 3)


# ------------------------------------------------------------------------------------------------ HPDv3


def write_hpdv3(root: Path, variant: str = "ok") -> Fixture:
    d = root / "HPDv3"
    save(d / "images" / "a.jpg", 0)
    save(d / "images" / "b.jpg", 1)
    if variant != "missing":
        save(d / "images" / "c.png", 2, "PNG")
    recs = [
        {"prompt": "an astronaut", "path1": "images/a.jpg", "path2": "images/b.jpg", "model1": "flux",
         "model2": "sd15", "confidence": 0.9, "choice_dist": [5, 2]},
        {"prompt": "an astronaut", "path1": "images/a.jpg", "path2": "images/c.png", "choice_dist": None},
    ]
    if variant == "bad":
        recs[1]["choice_dist"] = [1, 4]
    (d / "train.json").write_text(json.dumps(recs))
    if variant == "ok":
        return Fixture(d / "train.json", 3, 2)
    err = r"train\.json:record 1: choice_dist: expected more votes for path1" if variant == "bad" else \
        r"train\.json:record 1: path2: expected an existing image file, not found: .*c\.png"
    return Fixture(d / "train.json", 3, 2, err, 2, 1)


# ------------------------------------------------------------------------------------------------ Pick-a-Pic


def write_pickapic(root: Path, variant: str = "ok") -> Fixture:
    def row(cap, i0, i1, l0, l1, u0, u1, **kw):
        return {"caption": cap, "jpg_0": enc(i0), "jpg_1": enc(i1), "label_0": l0, "label_1": l1,
                "image_0_uid": u0, "image_1_uid": u1, "model_0": "m0", "model_1": "m1", "has_label": True,
                "are_different": True, **kw}
    rows = [row("a cat", 0, 1, 1.0, 0.0, "u0", "u1"),
            row("a cat", 0, 2, 0.5, 0.5, "u0", "u2"),
            row("a rocket", 3, 4, 0.0, 0.0, "u5", "u6", has_label=False),
            row("a rocket", 3, 5, 0.0, 1.0, "u3", "u4")]
    if variant == "bad":
        rows[3]["label_0"], rows[3]["label_1"] = 0.3, 0.7
    if variant == "missing":
        rows[3]["jpg_1"] = rows[3]["jpg_1"][: len(rows[3]["jpg_1"]) // 2]  # truncated JPEG: unusable bytes
    src = _write_parquet(root / "pickapic" / "train-00000-of-00001.parquet", rows)
    if variant == "ok":
        return Fixture(src, 5, 3)
    err = r"\.parquet:row 3: label_0/label_1: expected \(1, 0\), \(0, 1\) or \(0\.5, 0\.5\)" if variant == "bad" \
        else r"\.parquet:row 3: jpg_1: image <\d+ bytes>: expected a (readable|complete) .*JPEG"
    return Fixture(src, 5, 3, err, 3, 2)


# ------------------------------------------------------------------------------------------------ ImageRewardDB


def write_imagerewarddb(root: Path, variant: str = "ok") -> Fixture:
    d = root / "ImageRewardDB"
    rows = []
    spec = [("000001-0001", 1, (7, 5, 6)), ("000001-0001", 2, (4, 4, 4)), ("000001-0001", 2, (1, 2, 3)),
            ("000002-0002", 2, (3, 3, 3)), ("000002-0002", 1, (6, 6, 6))]
    for k, (pid, rank, (ov, al, fi)) in enumerate(spec):
        rel = f"images/train/train_1/img{k}.webp"
        if not (variant == "missing" and k == 4):
            save(d / rel, k, "WEBP")
        rows.append({"image_path": rel, "prompt_id": pid, "prompt": f"prompt {pid}", "classification": "Art",
                     "image_amount_in_total": 3, "rank": rank, "overall_rating": ov,
                     "image_text_alignment_rating": al, "fidelity_rating": fi})
    if variant == "bad":
        rows[4]["overall_rating"] = 9
    src = _write_parquet(d / "metadata-train.parquet", rows)
    if variant == "ok":
        return Fixture(src, 5, 3)
    err = r"metadata-train\.parquet:row 4: overall_rating: expected a number in \[1\.0, 7\.0\], got 9" \
        if variant == "bad" else r"metadata-train\.parquet:row 4: image_path: expected an existing image file"
    return Fixture(src, 5, 3, err, 4, 2)


def write_imagereward_bench(root: Path, variant: str = "ok") -> Fixture:
    """ImageReward's data/test.json as the repository ships it; images in data/test_images/<id>/<k>.webp."""
    d = root / "ImageReward" / "data"
    recs = [{"id": "000864-0061", "prompt": "a red fox in the snow",
             "generations": ["000864-0061/0.webp", "000864-0061/1.webp", "000864-0061/2.webp"], "ranking": [1, 2, 2]},
            {"id": "001007-0012", "prompt": "a lighthouse at dusk",
             "generations": ["001007-0012/0.webp", "001007-0012/1.webp"], "ranking": [2, 1]}]
    for k, g in enumerate(g for r in recs for g in r["generations"]):
        if not (variant == "missing" and g == "001007-0012/1.webp"):
            save(d / "test_images" / g, k, "WEBP")
    if variant == "bad":
        recs[1]["ranking"] = [2]
    (d / "test.json").write_text(json.dumps(recs, indent=4))
    if variant == "ok":
        return Fixture(d / "test.json", 5, 4)
    err = r"test\.json:record 1: ranking: expected a list of 2 integer ranks" if variant == "bad" else \
        r"test\.json:record 1: generations\[1\]: expected an existing image file, not found: .*test_images/001007"
    return Fixture(d / "test.json", 5, 4, err, 3, 3)


# ------------------------------------------------------------------------------------------------ GenAI-Bench


def write_genai_bench(root: Path, variant: str = "ok") -> Fixture:
    votes = ["leftvote", "rightvote", "tievote", "bothbad_vote"]
    rows = [{"prompt": f"prompt {k}", "left_model": "A", "right_model": "B", "vote_type": v,
             "left_image": {"bytes": enc(2 * k), "path": None}, "right_image": {"bytes": enc(2 * k + 1, "PNG"),
                                                                                 "path": None}}
            for k, v in enumerate(votes)]
    if variant == "bad":
        rows[2]["vote_type"] = "maybe"
    if variant == "missing":
        rows[2]["right_image"] = {"bytes": None, "path": "gone/right.png"}
    src = _write_parquet(root / "GenAI-Bench" / "image_generation" / "test-00000.parquet", rows)
    if variant == "ok":
        return Fixture(src, 8, 4)
    err = r"\.parquet:row 2: vote_type: expected one of .*got \"maybe\"" if variant == "bad" else \
        r"\.parquet:row 2: right_image: expected an existing image file, not found: .*gone/right\.png"
    return Fixture(src, 8, 4, err, 6, 3)


def write_genai_bench_ratings(root: Path, variant: str = "ok") -> Fixture:
    ratings = [{"DALLE_3": [5, 4, 4], "SDXL_Turbo": [2, 3, 1]}, {"DALLE_3": [3, 3, 3], "SDXL_Turbo": [2, 4, 3]},
               {"DALLE_3": [1, 1, 2], "SDXL_Turbo": [5, 5, 5]}]
    rows = [{"Index": k, "Prompt": f"prompt {k}", "Tags": {"basic": ["attribute"], "advanced": []},
             "HumanRatings": r, "DALLE_3": {"bytes": enc(2 * k), "path": None},
             "SDXL_Turbo": {"bytes": enc(2 * k + 1), "path": None}} for k, r in enumerate(ratings)]
    if variant == "bad":
        rows[1]["HumanRatings"] = {"DALLE_3": [3, 3, 3], "SDXL_Turbo": [2, 6, 3]}
    if variant == "missing":
        rows[1]["SDXL_Turbo"] = {"bytes": b"not an image", "path": None}
    src = _write_parquet(root / "GenAI-Bench-1600" / "data" / "train-00000.parquet", rows)
    if variant == "ok":
        return Fixture(src, 6, 3)
    err = r"\.parquet:row 1: HumanRatings\.SDXL_Turbo: expected a number in \[1\.0, 5\.0\], got 6" \
        if variant == "bad" else r"\.parquet:row 1: SDXL_Turbo: image <12 bytes>: expected a PNG, JPEG or WebP"
    return Fixture(src, 6, 3, err, 4, 2)


# ------------------------------------------------------------------------------------------------ AGIQA-3K


def write_agiqa3k(root: Path, variant: str = "ok") -> Fixture:
    d = root / "AGIQA-3K"
    rows = [("a.jpg", "an astronaut", 2.5, 0.5, 4.0, 0.1), ("b.jpg", "a cat", 1.0, 0.9, 2.0, 0.6),
            ("c.png", "coffee", 4.5, 0.6, 3.3, 0.7)]
    for k, r in enumerate(rows):
        if not (variant == "missing" and k == 2):
            save(d / r[0], k, "PNG" if r[0].endswith("png") else "JPEG")
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "data.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "prompt", "adj1", "adj2", "style", "mos_quality", "std_quality", "mos_align",
                    "std_align"])
        for k, (n, p, mq, sq, ma, sa) in enumerate(rows):
            if variant == "bad" and k == 2:
                mq = "abc"
            w.writerow([n, p, "red", "", "anime", mq, sq, ma, sa])
    if variant == "ok":
        return Fixture(d / "data.csv", 3, 0)
    err = r"data\.csv:4: mos_quality: expected a number, got \"abc\"" if variant == "bad" else \
        r"data\.csv:4: name: expected an existing image file, not found: .*c\.png"
    return Fixture(d / "data.csv", 3, 0, err, 2, 0)


# ------------------------------------------------------------------------------------------------ MMRB2


def write_mmrb2(root: Path, variant: str = "ok") -> Fixture:
    d = root / "MMRB2" / "benchmark"
    pairs = []
    for k, chosen in enumerate(("B", "A", "A")):
        pa_, pb_ = f"images/p{k}_0.jpg", f"images/p{k}_1.jpg"
        save(d / pa_, 2 * k)
        if not (variant == "missing" and k == 1):
            save(d / pb_, 2 * k + 1)
        pairs.append({"id": f"src_{k}", "response_a": {"model_name": "m1", "response_content": [["image", pa_]]},
                      "response_b": {"model_name": "m2", "response_content": [["image", pb_]]},
                      "chosen": chosen, "human_annotations": [2, 2, 1], "prompt_source": "oneigbench",
                      "prompt_metadata": {"id": str(k)}, "prompt_content": [["text", f"prompt number {k}"]]})
    if variant == "bad":
        pairs[1]["chosen"] = "C"
    (d / "t2i.json").write_text(json.dumps({"pairs": pairs}))
    if variant == "ok":
        return Fixture(d / "t2i.json", 6, 3)
    err = r"t2i\.json:record 1: chosen: expected 'A' or 'B', got \"C\"" if variant == "bad" else \
        r"t2i\.json:record 1: response_b: expected an existing image file, not found: .*p1_1\.jpg"
    return Fixture(d / "t2i.json", 6, 3, err, 4, 2)


BUILDERS = {"hpdv2": write_hpdv2, "hpdv3": write_hpdv3, "pickapic": write_pickapic,
            "imagerewarddb": write_imagerewarddb, "imagereward_bench": write_imagereward_bench,
            "genai_bench": write_genai_bench,
            "genai_bench_ratings": write_genai_bench_ratings, "agiqa3k": write_agiqa3k, "mmrb2": write_mmrb2}
