"""`zreward gen label`: a generator's own images as a labelled split (perceived scene -> oracle -> raters)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zreward.align.cli import main as gen_main
from zreward.align.gen_label import LabelConfig, generator_seed, label_generator
from zreward.align.generator import load_generator
from zreward.align.perceive import perceive_scene
from zreward.align.tune import prompts_of
from zreward.data.records import read_split
from zreward.data.shapes_world.oracle import DIMS, oracle_facts
from zreward.trainers.data import load_train_data


@pytest.fixture(scope="module")
def labelled(tiny_gen_dir, small_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("gl") / "gen_train"
    summary = label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(small_world), out=str(out),
                                          prompts=3, per_prompt=3, seed=5))
    return out, summary


def test_split_contents_follow_the_perceived_oracle(labelled, tiny_gen_dir, small_world):
    out, summary = labelled
    split = read_split(out)
    prompts = prompts_of(small_world, "train")[:3]
    assert [r.prompt for r in split.images] == [p for p in prompts for _ in range(3)]
    assert summary["images"] == 9 and summary["prompts"] == 3
    # image j of prompt i of the train split (index 0) has generator seed generator_seed(5, 0, i, j); perception
    # of those pixels gives the record
    gen = load_generator(tiny_gen_dir).eval()
    rec = split.images[4]  # prompt 1, image 1
    assert rec.id == "g000001_s1" and rec.meta["generator_seed"] == generator_seed(5, 0, 1, 1)
    assert len({r.meta["generator_seed"] for r in split.images}) == 9
    with torch.no_grad():
        img = gen.generate([prompts[1]], [rec.meta["generator_seed"]])[0]
    scene = perceive_scene(img)
    assert rec.scene == json.loads(json.dumps(scene))
    assert rec.meta["oracle"] == dict(oracle_facts(scene, prompts[1]).scores)
    world = json.loads((small_world / "train" / "dataset.json").read_text())["settings"]
    for r in split.images:
        for d in DIMS:
            lab = r.labels[d]
            assert sum(lab.hist) == len(lab.ratings) == world["raters"]
            assert lab.mos == pytest.approx(np.mean(lab.ratings), abs=1e-4)
        assert set(r.rationales) == set(DIMS)
    # 3 within-prompt pairs per prompt, overall + 4 dims, none across prompts
    assert len(split.pairs) == 3 * 3 * 5
    by_id = {r.id: r.prompt for r in split.images}
    assert all(by_id[p.a] == by_id[p.b] for p in split.pairs)
    stored = load_train_data(out).image_batch([0])
    assert stored.shape == (1, 3, world["canvas"], world["canvas"])  # stored at the world's canvas


def test_deterministic_and_atomic(labelled, tiny_gen_dir, small_world, tmp_path):
    out, _ = labelled
    again = tmp_path / "again"
    label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(small_world), out=str(again), prompts=3,
                                per_prompt=3, seed=5))
    assert (again / "images.jsonl").read_bytes() == (out / "images.jsonl").read_bytes()
    assert (again / "pairs.jsonl").read_bytes() == (out / "pairs.jsonl").read_bytes()
    with pytest.raises(FileExistsError):  # an existing split is never overwritten unless asked
        label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(small_world), out=str(again), prompts=3))


def test_bad_inputs_are_named(tiny_gen_dir, small_world, tmp_path):
    with pytest.raises(ValueError, match="--per-prompt"):
        LabelConfig(generator="g", data="d", out="o", per_prompt=1)
    with pytest.raises(ValueError, match="--split"):
        LabelConfig(generator="g", data="d", out="o", split="dev")
    for out in (small_world / "val", tiny_gen_dir, small_world):  # never written over a split, the generator, the world
        with pytest.raises(ValueError, match="--out"):
            LabelConfig(generator=str(tiny_gen_dir), data=str(small_world), out=str(out), overwrite=True)
    # a split directory as --data would take its prompts for any --split: refused
    with pytest.raises(ValueError, match="the dataset directory, not one of its splits"):
        label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(small_world / "train"), split="val",
                                    out=str(tmp_path / "z")))
    with pytest.raises(ValueError, match="asked for 10000"):
        label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(small_world), out=str(tmp_path / "x"),
                                    prompts=10000))
    assert not (tmp_path / "x").exists()
    fake = tmp_path / "fake" / "train"
    fake.mkdir(parents=True)
    (fake / "dataset.json").write_text(json.dumps({"name": "other", "levels": [1.0], "dims": ["a"]}))
    (fake / "images.jsonl").write_text("")
    with pytest.raises(ValueError, match="settings: expected the ShapesWorld build settings"):
        label_generator(LabelConfig(generator=str(tiny_gen_dir), data=str(tmp_path / "fake"), out=str(tmp_path / "y")))


def test_cli_and_training_on_the_labels(tiny_gen_dir, small_world, tmp_path, capsys):
    out = tmp_path / "val_gen"
    assert gen_main(["label", "--generator", str(tiny_gen_dir), "--data", str(small_world), "--split", "val",
                     "--prompts", "2", "--per-prompt", "2", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 4
    data = load_train_data(out)
    assert data.mask.all() and len(data.groups) == 2
    # val prompt 0 does not reuse train prompt 0's generator seeds or rating noise
    seeds = [r.meta["generator_seed"] for r in read_split(out).images]
    assert seeds[:2] == [generator_seed(0, 1, 0, 0), generator_seed(0, 1, 0, 1)]
    assert not set(seeds) & {generator_seed(0, 0, 0, j) for j in range(2)}
