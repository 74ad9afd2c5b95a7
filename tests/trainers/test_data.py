from __future__ import annotations

import json

import numpy as np
import pytest

from zreward.data.records import LEVELS, RecordError
from zreward.trainers.data import group_batch, load_train_data, within_group_pairs


def test_load_train_data_targets_and_groups(small_world):
    data = load_train_data(small_world / "train")
    n = len(data)
    assert n == 160 and data.target.shape == (n, 4, 9) and data.mask.all()
    np.testing.assert_allclose(data.target.sum(-1), 1.0, atol=1e-6)
    # the first record's alignment histogram, normalised, is its target; MOS is the target's mean
    rec = json.loads((small_world / "train" / "images.jsonl").read_text().splitlines()[0])
    hist = np.array(rec["labels"]["alignment"]["hist"], float)
    np.testing.assert_allclose(data.target[0, 0], hist / hist.sum(), atol=1e-6)
    assert data.mos[0, 0] == pytest.approx(rec["labels"]["alignment"]["mos"], abs=1e-3)
    # groups partition the images by prompt
    assert sorted(np.concatenate(data.groups).tolist()) == list(range(n))
    for g in data.groups:
        assert len({data.prompts[i] for i in g}) == 1
    assert data.images[0].shape == (3, 64, 64) and data.image_batch([0, 1]).max() <= 1.0
    assert len(data.pair_votes) == 240 and all(0.0 <= v <= 1.0 for v in data.pair_votes.values())


def test_group_batch_is_deterministic_and_sharded(small_world):
    data = load_train_data(small_world / "train", max_images=80)
    b = group_batch(data, 4, step=3, seed=1)
    assert np.array_equal(b, group_batch(data, 4, step=3, seed=1))
    assert len({data.group[i] for i in b}) == 4
    r0 = group_batch(data, 4, step=3, seed=1, rank=0, world_size=2)
    r1 = group_batch(data, 4, step=3, seed=1, rank=1, world_size=2)
    assert np.array_equal(np.concatenate([r0, r1]), b)
    assert len(group_batch(data, 4, step=0, seed=0, max_per_prompt=2)) == 8


def test_within_group_pairs():
    ia, ib = within_group_pairs(np.array([0, 0, 1, 0, 1, 2]))
    assert list(zip(ia.tolist(), ib.tolist())) == [(0, 1), (0, 3), (1, 3), (2, 4)]


def test_bad_label_names_record(tmp_path, small_world):
    import shutil

    d = tmp_path / "split"
    shutil.copytree(small_world / "val", d)
    lines = (d / "images.jsonl").read_text().splitlines()
    obj = json.loads(lines[0])
    obj["labels"]["realism"] = {"ratings": [7.0]}  # off the 1-5 scale
    lines[0] = json.dumps(obj)
    (d / "images.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RecordError, match=rf"id {obj['id']}\): labels.realism"):
        load_train_data(d)
    assert LEVELS[0] == 1.0


def test_groups_are_prompt_instances_not_texts(small_world):
    data = load_train_data(small_world / "train")
    # 40 prompt instances x 4 candidates, even where two instances share the same prompt text
    assert len(data.groups) == 40 and all(len(g) == 4 for g in data.groups)
    for g in data.groups:
        assert len({data.ids[i].split("_c")[0] for i in g}) == 1
