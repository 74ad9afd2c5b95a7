"""ShapesWorld dataset build and the `zreward world` CLI (render / oracle / build), run in-process."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from zreward.data.records import LEVELS, read_split
from zreward.data.shapes_world import HELD_OUT, build_world, oracle_scores, render_array, render_png
from zreward.data.shapes_world.cli import main
from zreward.data.shapes_world.prompts import parse_prompt

SCENE = {"canvas": 64, "background": [235, 230, 220], "ground_y": 52, "noise": 0.02, "blur": 0.0,
         "objects": [{"shape": "square", "color": "blue", "size": 10, "x": 20, "y": 47},
                     {"shape": "triangle", "color": "yellow", "size": 12, "x": 44, "y": 46, "warp": 0.2}]}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory.mktemp("sw") / "world", prompts=16, candidates=3, seed=1, workers=1)


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------- build


def test_build_writes_readable_splits(world):
    card = json.loads((world / "card.json").read_text())
    assert set(card["splits"]) == {"train", "val", "test", "ood"} and (world / "card.md").is_file()
    assert (world / "hist.png").stat().st_size > 1000
    for name, n_prompts in (("train", 16), ("val", 2), ("test", 2), ("ood", 2)):
        split = read_split(world / name)
        assert len(split.images) == 3 * n_prompts == card["splits"][name]["images"]
        overall = [p for p in split.pairs if p.dim == "overall"]
        assert len(overall) == 3 * n_prompts  # all 3 pairs of 3 candidates
        assert len(split.pairs) == 5 * len(overall)  # + one per dimension
        prompt_of = {r.id: r.prompt for r in split.images}
        assert all(prompt_of[p.a] == prompt_of[p.b] for p in split.pairs)
        assert all(sum(p.votes.values()) == 7 for p in split.pairs)
        assert 0.0 <= card["ceiling"][name] <= 1.0


def test_build_records_match_oracle_renderer_and_raters(world):
    split = read_split(world / "test")
    for rec in split.images:
        assert rec.meta["oracle"] == oracle_scores(rec.scene, rec.prompt_spec)
        assert parse_prompt(rec.prompt) == rec.prompt_spec  # stored both as text and as its parsed spec
        img = np.asarray(Image.open(split.image_path(rec)).convert("RGB"))
        assert np.array_equal(img, render_array(rec.scene, rec.scene["seed"]))
        for d, lab in rec.labels.items():
            assert len(lab.hist) == len(LEVELS) and sum(lab.hist) == 7 == len(lab.ratings)
            assert lab.mos == pytest.approx(np.mean(lab.ratings), abs=1e-4)
            assert lab.std == pytest.approx(np.std(lab.ratings), abs=1e-4)
            assert lab.hist == [lab.ratings.count(v) for v in LEVELS]
        assert set(rec.rationales) == {"alignment", "realism", "aesthetics", "plausibility"}


def test_ood_combos_held_out(world):
    held = {tuple(c) for c in HELD_OUT}
    for name in ("train", "val", "test"):
        for rec in read_split(world / name).images:
            assert not {(g["color"], g["shape"]) for g in rec.prompt_spec["groups"]} & held
            assert not {(o["color"], o["shape"]) for o in rec.scene["objects"]} & held
    for rec in read_split(world / "ood").images:
        assert {(g["color"], g["shape"]) for g in rec.prompt_spec["groups"]} & held
    assert [tuple(c) for c in json.loads((world / "card.json").read_text())["held_out_combos"]] == list(HELD_OUT)


def test_build_is_deterministic_across_worker_counts(world, tmp_path):
    again = build_world(tmp_path / "w2", prompts=16, candidates=3, seed=1, workers=2)
    for name in ("train", "ood"):
        assert (again / name / "images.jsonl").read_bytes() == (world / name / "images.jsonl").read_bytes()
        assert (again / name / "pairs.jsonl").read_bytes() == (world / name / "pairs.jsonl").read_bytes()
    first = sorted((world / "train" / "images").iterdir())[5]
    assert (again / "train" / "images" / first.name).read_bytes() == first.read_bytes()


def test_build_refuses_non_empty_dir(world):
    with pytest.raises(FileExistsError, match="not empty"):
        build_world(world, prompts=2, candidates=2)
    assert (world / "card.json").is_file()  # untouched


def test_cli_build_and_overwrite(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["build", "--out", str(out), "--prompts", "4", "--candidates", "2", "--raters", "3",
                 "--canvas", "48", "--workers", "1", "--no-dim-pairs"]) == 0
    split = read_split(out / "val")
    assert all(p.dim == "overall" for p in split.pairs) and split.images[0].scene["canvas"] == 48
    assert len(split.images[0].labels["realism"].ratings) == 3
    assert main(["build", "--out", str(out), "--prompts", "4"]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["build", "--out", str(out), "--prompts", "4", "--candidates", "2", "--workers", "1",
                 "--overwrite"]) == 0
    assert len(read_split(out / "train").images) == 8


# --------------------------------------------------------------------------------------------- render / oracle


def test_cli_render_ids_and_seeds(tmp_path):
    src = _write_jsonl(tmp_path / "s.jsonl", [{"scene": SCENE, "id": "mine", "extra": 1}, "",
                                              {"scene": dict(SCENE, seed=11)}])
    assert main(["render", str(src), "--out", str(tmp_path / "png")]) == 0
    assert (tmp_path / "png" / "mine.png").read_bytes() == render_png(SCENE, 0)
    assert (tmp_path / "png" / "000002.png").read_bytes() == render_png(SCENE, 11)  # line index, scene seed
    assert main(["render", str(src), "--out", str(tmp_path / "p2"), "--seed", "5"]) == 0
    assert (tmp_path / "p2" / "000002.png").read_bytes() == render_png(SCENE, 5)
    img = Image.open(io.BytesIO((tmp_path / "p2" / "mine.png").read_bytes()))
    assert img.size == (64, 64) and img.format == "PNG"


def test_cli_oracle_prints_scores_in_order(tmp_path, capsys):
    spec = {"groups": [{"count": 1, "color": "blue", "shape": "square"},
                       {"count": 1, "color": "yellow", "shape": "triangle"}], "relation": "left"}
    src = _write_jsonl(tmp_path / "o.jsonl", [
        {"scene": SCENE, "prompt": "a blue square to the left of a yellow triangle", "junk": [1]},
        {"scene": SCENE, "prompt": {"groups": spec["groups"], "relation": "right"}},
        {"scene": SCENE, "prompt": {"text": "two blue squares"}}])
    assert main(["oracle", str(src)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    # realism: 5 - 0.16 - 0.4 = 4.44 -> 4.5; relation right fails: 4/5 -> 4.0; 2 blue: 1/2 atoms + extra -> 2.5
    assert lines == [{"alignment": 5.0, "realism": 4.5, "aesthetics": 5.0, "plausibility": 5.0},
                     {"alignment": 4.0, "realism": 4.5, "aesthetics": 5.0, "plausibility": 5.0},
                     {"alignment": 2.5, "realism": 4.5, "aesthetics": 5.0, "plausibility": 5.0}]


@pytest.mark.parametrize("bad,needle", [
    ("{not json", "o.jsonl:2: line: expected valid JSON"),
    (json.dumps({"prompt": "a red circle"}), "o.jsonl:2: scene: expected"),
    (json.dumps({"scene": SCENE}), "o.jsonl:2: prompt: expected"),
    (json.dumps({"scene": SCENE, "prompt": "a pink circle"}), "o.jsonl:2: prompt 'a pink circle': color 'pink'"),
    (json.dumps({"scene": {"objects": [{"shape": "star"}]}, "prompt": "a red circle"}),
     "o.jsonl:2: scene.objects[0].shape: expected"),
])
def test_cli_oracle_malformed_line_is_named(tmp_path, capsys, bad, needle):
    src = _write_jsonl(tmp_path / "o.jsonl", [{"scene": SCENE, "prompt": "a red circle"}, bad])
    assert main(["oracle", str(src)]) == 2
    cap = capsys.readouterr()
    assert needle in cap.err and cap.out == ""  # nothing printed before the whole file validated


def test_cli_render_malformed_line_is_named(tmp_path, capsys):
    src = _write_jsonl(tmp_path / "r.jsonl", [{"scene": SCENE}, {"scene": SCENE, "id": "../x"}])
    assert main(["render", str(src), "--out", str(tmp_path / "png")]) == 2
    assert "r.jsonl:2: id: expected a file-name-safe string" in capsys.readouterr().err
    assert not (tmp_path / "png").exists()


@pytest.mark.parametrize("sub", ["build", "render", "oracle"])
def test_cli_help(sub, capsys):
    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0 and "usage: zreward world" in capsys.readouterr().out


def test_default_test_split_ceiling_in_target_band():
    # the default demo dataset's test split (250 prompts x 4 candidates, seed 0), computed without writing files
    from zreward.data.shapes_world.annotators import RaterPool, ceiling
    from zreward.data.shapes_world.build import WorldConfig, _prompt_item

    cfg = WorldConfig()
    pool = RaterPool.create(cfg.raters, cfg.seed)
    items = [_prompt_item(cfg, pool, "test", i) for i in range(cfg.split_prompts()["test"])]
    ta = np.concatenate([it["true"][it["ia"]] for it in items])
    tb = np.concatenate([it["true"][it["ib"]] for it in items])
    labels = [p[3] for it in items for p in it["pairs"] if p[2] == "overall"]
    acc, n = ceiling(ta, tb, labels)
    assert n > 1200 and 0.85 <= acc <= 0.92, acc
    # a realistic mix: some clearly separated pairs and some close ones
    d = np.abs((ta - tb) @ np.array([0.4, 0.2, 0.2, 0.2]))
    assert 0.3 < (d >= 0.5).mean() < 0.7 and 0.1 < ((d > 0) & (d <= 0.1)).mean() < 0.4


@pytest.mark.slow
def test_default_build_card(tmp_path):
    out = build_world(tmp_path / "world")
    card = json.loads((out / "card.json").read_text())
    assert 0.85 <= card["ceiling"]["test"] <= 0.92
    assert card["splits"]["train"]["images"] == 8000 and card["settings"]["canvas"] == 64
