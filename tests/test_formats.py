"""Tests for the public-dataset loaders (`zreward data convert`) on fixtures written in the original formats."""
from __future__ import annotations

import json

import numpy as np
import pytest

from formats_fixtures import BUILDERS, write_hpdv2
from zreward.data.convert import FORMATS, convert, main
from zreward.data.formats._common import ConvertOptions, safe_id
from zreward.data.images import load_image
from zreward.data.labels import gaussian_dist, label_dist, two_point_dist
from zreward.data.records import RecordError, read_split

ALL = sorted(BUILDERS)


def test_every_registered_format_has_a_fixture():
    assert sorted(FORMATS) == ALL


def _convert(fmt, fx, out, **kw):
    return convert(fmt, fx.src, out, opts=ConvertOptions(**kw))


@pytest.mark.parametrize("fmt", ALL)
def test_converts_fixture(fmt, tmp_path):
    fx = BUILDERS[fmt](tmp_path / "src")
    out = tmp_path / "out"
    counts, skipped = _convert(fmt, fx, out)
    assert skipped == []
    assert (counts["images"], counts["pairs"]) == (fx.n_images, fx.n_pairs)
    split = read_split(out)
    assert (len(split.images), len(split.pairs)) == (fx.n_images, fx.n_pairs)
    info = json.loads((out / "dataset.json").read_text())
    assert info["format"] == fmt and info["conversion"]["images"] == fx.n_images
    for rec in split.images:  # self-contained: every image inside the split and decodable
        p = split.image_path(rec)
        assert p.parent == out / "images"
        assert load_image(p).size == (32, 32)


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("variant", ["bad", "missing"])
def test_bad_record_fails_clearly_and_atomically(fmt, variant, tmp_path):
    fx = BUILDERS[fmt](tmp_path / "src", variant)
    out = tmp_path / "out"
    with pytest.raises(RecordError, match=fx.error):
        _convert(fmt, fx, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no temp dir left behind


@pytest.mark.parametrize("fmt", ALL)
@pytest.mark.parametrize("variant", ["bad", "missing"])
def test_skip_bad_skips_and_reports(fmt, variant, tmp_path):
    fx = BUILDERS[fmt](tmp_path / "src", variant)
    out = tmp_path / "out"
    counts, skipped = _convert(fmt, fx, out, skip_bad=True)
    assert len(skipped) == 1 and counts["skipped_bad"] == 1
    assert skipped[0].startswith(str(fx.src)) or str(fx.src.parent) in skipped[0]
    assert (counts["images"], counts["pairs"]) == (fx.n_images_skip, fx.n_pairs_skip)
    split = read_split(out)
    assert len(split.images) == fx.n_images_skip
    info = json.loads((out / "dataset.json").read_text())
    assert info["conversion"]["skipped_bad"] == 1 and sum(info["conversion"]["skip_reasons"].values()) == 1


def _pairs_by_prompt(split):
    by = split.by_id()
    return {(by[p.a].prompt, by[p.a].meta.get("source_path"), by[p.b].meta.get("source_path")): p for p in split.pairs}


def test_hpdv2_votes_from_raw_annotations(tmp_path):
    fx = write_hpdv2(tmp_path / "src")
    _convert("hpdv2", fx, tmp_path / "out")
    pairs = _pairs_by_prompt(read_split(tmp_path / "out"))
    p = "an astronaut with a cat"
    # annotator ranks [1,2,3], [2,1,3], [1,3,2], [2,1,3]
    assert pairs[(p, "00001.jpg", "00002.jpg")].votes == {"a": 2, "b": 2, "tie": 0}
    assert pairs[(p, "00001.jpg", "00002.jpg")].label == "tie"
    assert pairs[(p, "00001.jpg", "00003.jpg")].votes == {"a": 4, "b": 0, "tie": 0}
    assert pairs[(p, "00002.jpg", "00003.jpg")].votes == {"a": 3, "b": 1, "tie": 0}
    assert pairs[(p, "00002.jpg", "00003.jpg")].label == "a"
    # averaged rank [2, 1] without raw annotations: image b better, no votes
    q = pairs[("a cup of coffee", "00004.png", "00005.png")]
    assert q.label == "b" and q.votes is None


def test_hpdv2_train_json_human_preference(tmp_path):
    d = tmp_path / "HPD"
    from formats_fixtures import save
    for k, n in enumerate(["x.jpg", "y.jpg", "z.jpg"]):
        save(d / "train" / n, k)
    recs = [{"prompt": "p", "image_path": ["x.jpg", "y.jpg"], "human_preference": [0, 1], "user_hash": "h"},
            {"prompt": "q", "file_path": ["z.jpg", "x.jpg"], "human_preference": [1, 0]},
            {"prompt": "r", "image_path": ["x.jpg", "z.jpg"], "human_preference": [1, 1]}]
    (d / "train.json").write_text(json.dumps(recs))
    counts, skipped = convert("hpdv2", d / "train.json", tmp_path / "out", opts=ConvertOptions(skip_bad=True))
    assert counts["images"] == 3 and counts["pairs"] == 2  # x, y, z stored once each
    assert "record 2: human_preference: expected a list of 2 values 0/1 with exactly one 1" in skipped[0]
    split = read_split(tmp_path / "out")
    by = split.by_id()
    got = {(by[p.a].meta["source_path"], by[p.b].meta["source_path"], p.label) for p in split.pairs}
    assert got == {("y.jpg", "x.jpg", "a"), ("z.jpg", "x.jpg", "a")}


def test_hpdv3_votes_shared_images_and_confidence(tmp_path):
    fx = BUILDERS["hpdv3"](tmp_path / "src")
    _convert("hpdv3", fx, tmp_path / "out")
    split = read_split(tmp_path / "out")
    by = split.by_id()
    assert [p.label for p in split.pairs] == ["a", "a"]
    assert split.pairs[0].votes == {"a": 5, "b": 2} and split.pairs[1].votes is None
    assert split.pairs[0].a == split.pairs[1].a  # images/a.jpg stored once, used twice
    assert by[split.pairs[0].a].meta == {"source_path": "images/a.jpg", "model": "flux", "pair_confidence": 0.9}


def test_pickapic_labels_ties_unlabeled_and_dedup(tmp_path):
    fx = BUILDERS["pickapic"](tmp_path / "src")
    counts, _ = _convert("pickapic", fx, tmp_path / "out")
    assert counts["dropped_by_protocol"] == {"unlabeled row (has_label=false)": 1}
    split = read_split(tmp_path / "out")
    by = split.by_id()
    got = [(by[p.a].meta["uid"], by[p.b].meta["uid"], p.label, p.votes) for p in split.pairs]
    assert got == [("u0", "u1", "a", {"a": 1}), ("u0", "u2", "tie", {"tie": 1}), ("u3", "u4", "b", {"b": 1})]
    # bytes are copied as they are (JPEG), not re-encoded
    assert all(r.image.endswith(".jpg") for r in split.images)


def test_imagerewarddb_rescaled_ratings_and_rank_pairs(tmp_path):
    fx = BUILDERS["imagerewarddb"](tmp_path / "src")
    counts, _ = _convert("imagerewarddb", fx, tmp_path / "out")
    assert counts["dropped_by_protocol"] == {"equal rank within prompt_id (skipped, as in ImageReward)": 1}
    split = read_split(tmp_path / "out")
    recs = {r.meta["source_path"].split("/")[-1]: r for r in split.images}
    r0 = recs["img0.webp"]  # overall 7, alignment 5, fidelity 6 on 1-7
    assert r0.labels["overall_rating"].mos == 5.0
    assert r0.labels["alignment"].mos == pytest.approx(1 + 4 * 4 / 6, abs=1e-6)
    assert r0.labels["fidelity"].mos == pytest.approx(1 + 4 * 5 / 6, abs=1e-6)
    assert r0.meta["ratings_1to7"] == {"alignment": 5.0, "fidelity": 6.0, "overall_rating": 7.0}
    # mos without std -> two-level split keeping the mean
    np.testing.assert_allclose(label_dist(r0.labels["alignment"]), two_point_dist(1 + 4 * 4 / 6), atol=1e-6)
    by = split.by_id()
    got = {(by[p.a].meta["source_path"][-9:], by[p.b].meta["source_path"][-9:], p.label) for p in split.pairs}
    assert got == {("img0.webp", "img1.webp", "a"), ("img0.webp", "img2.webp", "a"), ("img3.webp", "img4.webp", "b")}


def test_genai_bench_vote_mapping(tmp_path):
    fx = BUILDERS["genai_bench"](tmp_path / "src")
    _convert("genai_bench", fx, tmp_path / "out")
    split = read_split(tmp_path / "out")
    by = split.by_id()
    assert [p.label for p in split.pairs] == ["a", "b", "tie", "tie"]
    assert [by[p.a].meta["vote_type"] for p in split.pairs] == ["leftvote", "rightvote", "tievote", "bothbad_vote"]
    assert by[split.pairs[0].b].image.endswith(".png") and by[split.pairs[0].a].image.endswith(".jpg")


def test_genai_bench_ratings_histograms_and_pairs(tmp_path):
    fx = BUILDERS["genai_bench_ratings"](tmp_path / "src")
    _convert("genai_bench_ratings", fx, tmp_path / "out")
    split = read_split(tmp_path / "out")
    by = split.by_id()
    lab = by["p0_DALLE_3"].labels["alignment"]  # ratings 5, 4, 4
    assert lab.hist == [0, 0, 0, 0, 0, 0, 2, 0, 1]
    assert lab.mos == pytest.approx(13 / 3, abs=1e-6) and lab.std == pytest.approx(np.std([5, 4, 4]), abs=1e-6)
    assert lab.ratings == [5.0, 4.0, 4.0]
    got = [(p.a, p.b, p.dim, p.label) for p in split.pairs]
    assert got == [("p0_DALLE_3", "p0_SDXL_Turbo", "alignment", "a"),
                   ("p1_DALLE_3", "p1_SDXL_Turbo", "alignment", "tie"),
                   ("p2_DALLE_3", "p2_SDXL_Turbo", "alignment", "b")]


def test_agiqa3k_rescaled_deqa_distributions(tmp_path):
    fx = BUILDERS["agiqa3k"](tmp_path / "src")
    _convert("agiqa3k", fx, tmp_path / "out")
    split = read_split(tmp_path / "out")
    assert split.info.dims == ["alignment", "quality"]
    a = {r.meta["source_name"]: r for r in split.images}["a.jpg"]
    q, al = a.labels["quality"], a.labels["alignment"]
    assert q.mos == pytest.approx(3.0) and q.std == pytest.approx(0.4)  # 1 + 0.8*2.5, 0.8*0.5
    np.testing.assert_allclose(q.hist, gaussian_dist(3.0, 0.4), atol=1e-6)
    # alignment 4.0 +- 0.1 -> 4.2 +- 0.08 on 1-5: std < 0.2 -> split 0.6 at 4.0, 0.4 at 4.5
    np.testing.assert_allclose(al.hist, [0, 0, 0, 0, 0, 0, 0.6, 0.4, 0], atol=1e-6)
    assert "DeQA" in json.loads((tmp_path / "out" / "dataset.json").read_text())["labels"]


def test_mmrb2_chosen_and_meta(tmp_path):
    fx = BUILDERS["mmrb2"](tmp_path / "src")
    _convert("mmrb2", fx, tmp_path / "out")
    split = read_split(tmp_path / "out")
    by = split.by_id()
    assert [p.label for p in split.pairs] == ["b", "a", "a"]
    a0 = by[split.pairs[0].a]
    assert a0.prompt == "prompt number 0" and a0.meta["human_annotations"] == [2, 2, 1]
    assert a0.meta["side"] == "A" and a0.meta["model"] == "m1"


def test_limit_and_overwrite(tmp_path):
    fx = BUILDERS["genai_bench"](tmp_path / "src")
    out = tmp_path / "out"
    counts, _ = _convert("genai_bench", fx, out, limit=2)
    assert (counts["source_records"], counts["pairs"]) == (2, 2)
    with pytest.raises(FileExistsError):
        _convert("genai_bench", fx, out)
    counts, _ = convert("genai_bench", fx.src, out, opts=ConvertOptions(), overwrite=True)
    assert counts["pairs"] == 4


def test_bomb_limit_applies_to_loaders(tmp_path):
    fx = BUILDERS["mmrb2"](tmp_path / "src")
    with pytest.raises(RecordError, match=r"record 0: response_a: image .*expected at most 100 pixels"):
        _convert("mmrb2", fx, tmp_path / "out", max_pixels=100)


def test_safe_id():
    assert safe_id("images/train/a b.webp") == "images__train__a_b"
    assert safe_id("../x.png") == "__x"
    assert safe_id("u-1.2") == "u-1.2"


def test_cli(tmp_path, capsys):
    fx = BUILDERS["hpdv3"](tmp_path / "src", "bad")
    out = tmp_path / "out"
    rc = main(["convert", "--format", "hpdv3", "--src", str(fx.src), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "record 1: choice_dist" in err and "--skip-bad" in err and not out.exists()
    rc = main(["convert", "--format", "hpdv3", "--src", str(fx.src), "--out", str(out), "--skip-bad"])
    text = capsys.readouterr().out
    assert rc == 0 and "skipped 1 bad records" in text and "choice_dist" in text
    assert main(["formats"]) == 0 and "genai_bench_ratings" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    helptext = capsys.readouterr().out
    assert all(name in helptext for name in FORMATS)
    rc = main(["convert", "--format", "hpdv2", "--src", str(tmp_path / "nope.json"), "--out", str(tmp_path / "o")])
    assert rc == 1 and "nope.json: src: expected an existing file" in capsys.readouterr().err


def test_jsonl_source_bad_line_and_id_collision(tmp_path):
    from formats_fixtures import save
    d = tmp_path / "HPDv3"
    save(d / "images" / "a b.jpg", 0)   # sanitises to "images__a_b" ...
    save(d / "images" / "a_b.jpg", 1)   # ... as does this one: the second id gets a hash suffix
    save(d / "images" / "c.png", 2, "PNG")
    lines = [json.dumps({"prompt": "p", "path1": "images/a b.jpg", "path2": "images/a_b.jpg"}),
             "{not json",
             json.dumps({"prompt": "p", "path1": "images/c.png", "path2": "images/a b.jpg", "choice_dist": [3, 3]})]
    (d / "test.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=r"test\.jsonl:2: line: expected valid JSON"):
        convert("hpdv3", d / "test.jsonl", tmp_path / "o1")
    counts, skipped = convert("hpdv3", d / "test.jsonl", tmp_path / "o2", opts=ConvertOptions(skip_bad=True))
    assert counts["pairs"] == 2 and counts["images"] == 3 and len(skipped) == 1
    split = read_split(tmp_path / "o2")
    ids = sorted(r.id for r in split.images)
    assert ids[0] == "images__a_b" and ids[1].startswith("images__a_b-") and ids[2] == "images__c"
    assert split.pairs[1].votes == {"a": 3, "b": 3} and split.pairs[1].b == split.pairs[0].a


@pytest.mark.parametrize("fmt", ["imagereward_bench", "imagerewarddb"])
def test_imagereward_benchmark_test_json_all_pairs_ties_and_image_prefix(fmt, tmp_path):
    # ImageReward's own data/test.json, read under both names; images resolved as its test.py does
    fx = BUILDERS["imagereward_bench"](tmp_path / "src")
    counts, _ = _convert(fmt, fx, tmp_path / "out")
    assert (counts["images"], counts["pairs"]) == (5, 4)
    split = read_split(tmp_path / "out")
    by = split.by_id()
    got = {(by[p.a].meta["source_path"], by[p.b].meta["source_path"]): p.label for p in split.pairs}
    assert got == {("000864-0061/0.webp", "000864-0061/1.webp"): "a",
                   ("000864-0061/0.webp", "000864-0061/2.webp"): "a",
                   ("000864-0061/1.webp", "000864-0061/2.webp"): "tie",
                   ("001007-0012/0.webp", "001007-0012/1.webp"): "b"}
    assert all(p.dim == "overall" for p in split.pairs)
    # the stored bytes are the files under data/test_images/ (the prefix ImageReward's test.py uses)
    src_img = fx.src.parent / "test_images" / "001007-0012" / "1.webp"
    rec = next(r for r in split.images if r.meta["source_path"] == "001007-0012/1.webp")
    assert split.image_path(rec).read_bytes() == src_img.read_bytes()
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["format"] == fmt and "test_images" in info["images"]
