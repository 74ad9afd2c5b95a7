"""RewardDance trainer: two-image batches, pair targets, answer tokens, learning run, yes/no Scorer, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zreward.models import yesno
from zreward.trainers import rewarddance as rd
from zreward.trainers.run_utils import read_metrics


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from zreward.models.scorer import load_scorer

    return load_scorer(tiny_model)


def _cfg(tiny_model, world, out, **over) -> rd.Config:
    cfg = rd.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(world / "train"), str(world / "val")
    cfg.data.val_max_images = 24
    cfg.rewarddance.pairs_per_batch = 8
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_steps = str(out), False, 8
    cfg.optim.lr, cfg.optim.warmup_steps = 3e-3, 0
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_two_images_per_item_are_gathered_in_text_order(scorer):
    """encode_items with [a, b] per item: both image-token runs, pixels of a then b; single-image items unchanged."""
    torch.manual_seed(0)
    pix = scorer.prepare_images(torch.rand(3, 3, 64, 64))
    yn = yesno.YesNoConfig()
    text = yesno.pair_prompt(scorer, yn, "a red circle")
    batch, _ = scorer.encode_items([text, text], [[2, 0], [1, 2]], pix)
    n = pix.n_tokens[0]
    assert (batch.inputs["input_ids"] == scorer.image_token_id).sum(1).tolist() == [2 * n, 2 * n]
    want = torch.cat([pix.values[j] for j in (2, 0, 1, 2)])
    assert torch.equal(batch.inputs["pixel_values"], want)
    assert batch.inputs["image_grid_thw"].shape[0] == 4
    single, _ = scorer.encode_items([scorer.direct_prompt("x", "realism")], [1], pix)
    assert torch.equal(single.inputs["pixel_values"], pix.values[1])
    with pytest.raises(ValueError, match="expected 1 image placeholder"):
        scorer.encode_items([text], [0], pix)


def test_pair_logits_depend_on_which_image_is_first(scorer):
    torch.manual_seed(0)
    pix = scorer.prepare_images(torch.rand(2, 3, 64, 64))
    with torch.no_grad():
        lg = yesno.pair_logits(scorer, yesno.YesNoConfig(), ["p", "p", "p"], pix, [0, 1, 0], [1, 0, 1])
    assert lg.shape == (3, scorer.model.config.text_config.vocab_size)
    assert torch.allclose(lg[0], lg[2], atol=1e-5)  # same question → same answer, whatever the batch mates
    assert not torch.allclose(lg[0], lg[1], atol=1e-4)


def test_answer_tokens_are_added_once_and_single(tiny_model):
    from zreward.models.scorer import load_scorer

    sc = load_scorer(tiny_model)
    n0 = len(sc.tokenizer)
    yes0, no0 = yesno.answer_token_ids(sc, yesno.YesNoConfig())
    assert len(sc.tokenizer) == n0  # the tiny tokenizer already has single " yes" / " no" tokens: nothing added
    assert sc.tokenizer.convert_ids_to_tokens([yes0, no0]) == ["Ġyes", "Ġno"]
    yn = yesno.YesNoConfig(yes=" Affirm", no=" Deny")  # not single tokens of the tiny tokenizer
    yes, no = yesno.answer_token_ids(sc, yn)
    assert len(sc.tokenizer) == n0 + 2
    pre = sc.tokenizer.encode(yn.answer_prefix, add_special_tokens=False)
    assert sc.tokenizer.encode(yn.answer_prefix + yn.yes, add_special_tokens=False) == pre + [yes]
    assert yesno.answer_token_ids(sc, yn) == (yes, no) and len(sc.tokenizer) == n0 + 2
    with pytest.raises(ValueError, match="not single tokens"):
        yesno.answer_token_ids(sc, yesno.YesNoConfig(yes=" maybe yes"), add_tokens=False)


def _fake_data(votes):
    ids = ["i0", "i1", "i2"]
    return rd.TrainData(ids=ids, prompts=["p"] * 3, images=[], target=np.zeros((3, 1, 9), np.float32),
                        mask=np.ones((3, 1), bool), mos=np.array([[2.0], [3.0], [4.0]], np.float32),
                        group=np.zeros(3, np.int64), groups=[np.arange(3)], rationales=[{}] * 3, dims=["x"],
                        levels=[1.0 + 0.5 * i for i in range(9)], pair_votes=votes)


def test_labelled_pairs_targets_hard_and_votes():
    data = _fake_data({("i0", "i1"): 5 / 7, ("i2", "i0"): 0.5, ("i1", "i2"): 1 / 7})
    ia, ib, t = rd.labelled_pairs(data, "hard")
    assert ia.tolist() == [0, 2, 1] and ib.tolist() == [1, 0, 2]
    assert t.tolist() == [1.0, 0.5, 0.0]  # a wins, tie → 0.5 soft target, b wins
    _, _, tv = rd.labelled_pairs(data, "votes")
    assert np.allclose(tv, [5 / 7, 0.5, 1 / 7])


def test_pair_batch_both_orders_and_positions():
    ia, ib, t = np.array([0, 5, 7]), np.array([5, 7, 9]), np.array([1.0, 0.0, 0.5], np.float32)
    images, a, b, tt = rd.pair_batch((ia, ib, t), 3, 0, 0, both_orders=True)
    assert images.tolist() == [0, 5, 7, 9]
    got = sorted(zip(images[a].tolist(), images[b].tolist(), tt.tolist()))
    assert got == sorted([(0, 5, 1.0), (5, 7, 0.0), (7, 9, 0.5), (5, 0, 0.0), (7, 5, 1.0), (9, 7, 0.5)])
    # a pure function of (seed, step): same batch again, shards of 2 ranks partition the global batch
    assert np.array_equal(rd.pair_batch((ia, ib, t), 2, 1, 0, False)[0], rd.pair_batch((ia, ib, t), 2, 1, 0, False)[0])


def test_pick_reference_median_and_blank():
    data = _fake_data({})
    data.images = [torch.full((3, 4, 4), v, dtype=torch.uint8) for v in (10, 20, 30)]
    assert torch.allclose(rd.pick_reference(data, "median", [1.0]), torch.full((3, 4, 4), 20 / 255))
    assert torch.allclose(rd.pick_reference(data, "blank", [1.0]), torch.full((3, 4, 4), 128 / 255))
    png = yesno.encode_png(torch.full((3, 4, 4), 20, dtype=torch.uint8))
    assert torch.allclose(yesno.decode_png(png), torch.full((3, 4, 4), 20 / 255))


def test_training_learns_and_final_dir_is_a_yesno_scorer(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer

    cfg = _cfg(tiny_model, small_world, tmp_path / "run", run__max_steps=12)
    final = rd.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [e["step"] for e in logs] == list(range(1, 13))
    for key in ("loss", "train_pair_acc", "lr", "grad_norm", "step_time"):
        assert key in logs[0]
    assert np.mean([e["loss"] for e in logs[-3:]]) < 0.5 * logs[0]["loss"]  # learns (mostly: answer yes/no)
    for key in ("val_acc", "val_acc_group", "val_acc_pair"):
        assert 0.0 <= logs[-1][key] <= 1.0
    zr = json.loads((final / "zreward.json").read_text())
    assert zr["mode"] == "yesno" and {"yes_id", "no_id", "reference_png", "question"} <= set(zr["yesno"])

    sc = load_scorer(final)
    torch.manual_seed(1)
    ims = torch.rand(3, 3, 64, 64)
    out = sc.score(["a red circle", "two blue squares", "a star"], ims, batch_size=2)
    p = (out.overall - 1) / 4
    assert out.probs.shape == (3, 4, 9) and torch.all((p > 0) & (p < 1))
    assert torch.allclose(out.probs[..., 0], 1 - p[:, None]) and torch.allclose(out.probs[..., -1], p[:, None])
    assert torch.allclose(out.mean, 1 + 4 * p[:, None].expand(3, 4), atol=1e-5)
    # the score is the symmetrised P(better than the stored reference), computed here by hand
    keys = ("question", "label_a", "label_b", "answer_prefix", "yes", "no")
    yn = yesno.YesNoConfig(**{k: zr["yesno"][k] for k in keys})
    ref = yesno.decode_png(zr["yesno"]["reference_png"]).unsqueeze(0)
    pix = sc.prepare_images(torch.cat([ims[:1], ref]))
    with torch.no_grad():
        lg = yesno.pair_logits(sc, yn, ["a red circle"] * 2, pix, [0, 1], [1, 0])
    y = torch.softmax(lg[:, [zr["yesno"]["yes_id"], zr["yesno"]["no_id"]]], -1)[:, 0]
    assert torch.allclose(p[0], 0.5 * (y[0] + 1 - y[1]), atol=1e-5)
    with pytest.raises(ValueError, match="no reasoning mode"):
        sc.score(["x"], ims[:1], reasoning=True)


def test_resume_gives_identical_losses(tiny_model, small_world, tmp_path):
    straight = _cfg(tiny_model, small_world, tmp_path / "a", run__max_steps=4)
    straight.data.val = None
    rd.train(straight)
    half = _cfg(tiny_model, small_world, tmp_path / "b", run__max_steps=2, run__save_every=2)
    half.data.val = None
    rd.train(half)
    rest = _cfg(tiny_model, small_world, tmp_path / "b", run__max_steps=4)
    rest.data.val = None
    rd.train(rest)
    la = [e["loss"] for e in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [e["loss"] for e in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(la) == len(lb) == 4 and np.allclose(la, lb, rtol=1e-5, atol=1e-6)
