from __future__ import annotations

import json

import numpy as np
import pytest

from zreward.data.records import LEVELS, RecordError
from zreward.trainers.common import DataConfig
from zreward.trainers.data import concat_splits, group_batch, load_train_data, within_group_pairs


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


def test_extra_train_keeps_labels_renames_taken_ids_and_its_pairs(small_world):
    """Two ShapesWorld splits share the id scheme (p000000_c0 ...): the extra split's ids are prefixed with its
    config key, its pair votes follow, and each split keeps its own prompt groups."""
    a = load_train_data(small_world / "train", max_images=8)
    b = load_train_data(small_world / "val", max_images=8)
    assert set(a.ids) & set(b.ids)
    u = DataConfig(train=str(small_world / "train"), max_images=8, extra_train=[str(small_world / "val")]).load_train()
    nb = len(load_train_data(small_world / "val"))
    assert len(u) == 8 + nb and u.ids[:8] == a.ids and u.ids[8] == f"data.extra_train[0]/{b.ids[0]}"
    np.testing.assert_array_equal(u.target[8:16], b.target)
    np.testing.assert_array_equal(u.mos[8:16], b.mos)
    assert u.mask.all() and u.rationales[8] == b.rationales[0]
    assert len(u.groups) == len(a.groups) + len(load_train_data(small_world / "val").groups)
    assert not set(u.group[:8].tolist()) & set(u.group[8:].tolist())
    for (x, y), v in b.pair_votes.items():
        assert u.pair_votes[(f"data.extra_train[0]/{x}", f"data.extra_train[0]/{y}")] == v
    assert {k: v for k, v in u.pair_votes.items() if not k[0].startswith("data.")} == a.pair_votes
    pos = {i: k for k, i in enumerate(u.ids)}  # what RewardDance / val_pairs build: ids stay unique
    assert len(pos) == len(u)
    # unlabelled (RISD's extra_unlabelled): labels and votes dropped
    v = concat_splits(a, b, keep_labels=False, what="data.extra_unlabelled")
    assert v.ids[8:] == [f"data.extra_unlabelled/{i}" for i in b.ids]
    assert not v.mask[8:].any() and v.pair_votes == a.pair_votes
    with pytest.raises(ValueError, match=r"data.extra_train\[0\]: dims/levels"):
        b.dims = b.dims[:2]
        concat_splits(a, b, keep_labels=True, what="data.extra_train[0]")


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


# ------------------------------------------------------------------------------- lazy images (issue 14, item 5)


def _eager_images(split_dir, n=None) -> list:
    """What the former `load_train_data` held: every image decoded up front into a uint8 tensor."""
    import torch

    from zreward.data.images import image_to_tensor, load_image
    from zreward.data.records import read_split

    split = read_split(split_dir)
    recs = split.images[:n] if n else split.images
    return [(image_to_tensor(load_image(split.image_path(r))) * 255.0).round_().to(torch.uint8) for r in recs]


def test_lazy_batches_equal_the_eager_cache(small_world, tiny_vlm):
    import dataclasses

    import torch

    from zreward.models.scorer import load_scorer
    from zreward.trainers import sft

    lazy = load_train_data(small_world / "train", max_images=48)
    eager = dataclasses.replace(lazy, images=_eager_images(small_world / "train", 48))
    for step in range(4):  # same records, same batch order: the batches are bitwise the tensors the cache held
        idx = group_batch(lazy, 3, step, seed=7)
        assert torch.equal(lazy.image_batch(idx), eager.image_batch(idx))
    cfg = sft.Config()
    cfg.sft.pair_weight = 0.5
    scorer = load_scorer(tiny_vlm)
    idx = group_batch(lazy, 2, step=1, seed=7)
    norms = {"rows": 8.0, "pairs": 4.0, "ce": 1.0, "caption": 1.0}
    with torch.no_grad():
        a = sft.step_losses(cfg, scorer, lazy, idx, lazy.dims, norms, "cpu")
        b = sft.step_losses(cfg, scorer, eager, idx, eager.dims, norms, "cpu")
    assert a.keys() == b.keys() == {"kl", "pair"}
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_loading_decodes_nothing_and_a_rank_decodes_only_its_shard(small_world, monkeypatch):
    from zreward.data.image_store import ImageStore

    seen: list[int] = []
    real = ImageStore.load
    monkeypatch.setattr(ImageStore, "load", lambda self, i: seen.append(i) or real(self, i))
    data = load_train_data(small_world / "train")
    assert seen == []  # no decode-everything step
    mine = group_batch(data, 4, step=2, seed=3, rank=1, world_size=2)
    data.image_batch(mine)
    assert sorted(seen) == sorted(mine.tolist())


def test_decode_workers_keep_order_and_prefetch_the_next_batch(small_world):
    import torch

    one = load_train_data(small_world / "train", max_images=16)
    four = load_train_data(small_world / "train", max_images=16, decode_workers=4)
    idx = [5, 0, 11, 3, 3]
    assert torch.equal(four.image_batch(idx), one.image_batch(idx))
    b0 = group_batch(four, 2, step=0, seed=5)
    assert np.array_equal(b0, group_batch(one, 2, step=0, seed=5))  # same indices with or without workers
    b1 = group_batch(one, 2, step=1, seed=5)
    assert sorted(four.images._ahead) == sorted(b1.tolist())  # step 1's images are being decoded already
    assert torch.equal(four.image_batch(b1), one.image_batch(b1))


def test_max_pixels_caps_the_decoded_size(small_world, tiny_vlm, tmp_path):
    from zreward.trainers import sft
    from zreward.trainers.config import ConfigError, load_config

    cfg = load_config(sft.Config, None, [f"data.train={small_world / 'train'}", "data.max_pixels=1000",
                                         "data.max_images=4"])
    data = cfg.data.load_train()  # the trainers' own loading path: the setting reaches the decoder
    assert data.images[0].shape == (3, 31, 31)  # 64x64 = 4096 px → s = sqrt(1000/4096): 31x31 = 961 <= 1000
    assert load_train_data(small_world / "train", max_images=4, max_pixels=4096).images[0].shape == (3, 64, 64)
    with pytest.raises(ConfigError, match="data.max_pixels must be a positive pixel count"):
        load_config(sft.Config, None, ["data.max_pixels=0"])
    with pytest.raises(ConfigError, match="data.decode_workers must be >= 0"):
        load_config(sft.Config, None, ["data.decode_workers=-1"])


def test_unreadable_image_names_the_record_when_decoded(small_world, tmp_path):
    import shutil

    from zreward.data.images import ImageLoadError

    d = tmp_path / "split"
    shutil.copytree(small_world / "val", d)
    data = load_train_data(d, max_images=4)
    with open(data.images.paths[2], "wb") as f:
        f.write(b"not an image")
    with pytest.raises(ImageLoadError, match=rf"images.jsonl \(id {data.ids[2]}\)"):
        data.image_batch([0, 2])
