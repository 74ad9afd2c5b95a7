"""Captioning pretraining: the teacher-forced CE on hand-computed values, a learning run on ShapesWorld, exact resume,
where captions come from (and the error without one), the CLI help."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zreward.trainers import caption as cap
from zreward.trainers.run_utils import read_metrics


def _cfg(tiny_model, world, out, **over) -> cap.Config:
    cfg = cap.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(world / "train"), None
    cfg.data.images_per_batch, cfg.data.val_max_images = 8, 8
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_steps = str(out), False, 4
    cfg.optim.lr = 3e-3
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def _mean_ce(scorer, data: cap.CaptionData, n: int) -> float:
    caps = cap.tokenize_captions(scorer.tokenizer, data.captions[:n], 160)
    with torch.no_grad():
        ce, count, _ = cap.caption_forward(scorer, data.image_batch(range(n)), caps, "Describe the image.")
    return float(ce) / count


def test_caption_forward_is_the_next_token_ce_over_caption_and_eos(tiny_model):
    """CE = −Σ_j log p(c_j | prompt, c_<j) − log p(EOS | prompt, c), summed over images of different caption lengths
    (right padding must not change it); the accuracy counts argmax hits over the same positions."""
    from zreward.models.scorer import load_scorer

    sc = load_scorer(tiny_model)
    tok = sc.tokenizer
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    caps = [tok.encode(t, add_special_tokens=False) for t in ("2 objects: red circle.", "0 objects.", "blur: 0.5")]
    with torch.no_grad():
        ce, n, hits = cap.caption_forward(sc, images, caps, "Describe the image.")
        pixels = sc.prepare_images(images)
        want, count, want_hits = 0.0, 0, 0
        for i, c in enumerate(caps):  # one unpadded sequence at a time, full logits
            batch, pids = sc.encode_items([cap.caption_prompt(sc, "Describe the image.")], [i], pixels,
                                          suffix_ids=[c + [tok.eos_token_id]])
            logits = sc.model(**batch.inputs, use_cache=False).logits[0]
            p = len(pids[0])
            for j, t in enumerate(c + [tok.eos_token_id]):
                want -= float(logits[p - 1 + j].log_softmax(-1)[t])
                want_hits += int(logits[p - 1 + j].argmax()) == t
                count += 1
    assert n == count == sum(len(c) + 1 for c in caps)
    assert float(ce) == pytest.approx(want, rel=1e-5)
    assert hits == want_hits
    assert cap.caption_prompt(sc, "Describe the image.").endswith("assistant\n")  # generation prompt included


def test_short_run_learns_to_caption_and_saves_an_init_scorer(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer

    cfg = _cfg(tiny_model, small_world, tmp_path / "run", run__max_steps=40, data__eval_every=20,
               caption__val_generate=2)
    cfg.data.val = str(small_world / "val")
    final = cap.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [e["step"] for e in logs] == list(range(1, 41))
    loss = [e["loss"] for e in logs]
    assert np.mean(loss[-5:]) < 0.5 * np.mean(loss[:5])  # e.g. 6.2 → 1.0 (measured)
    val = [e for e in logs if "val_ce" in e]
    assert [e["step"] for e in val] == [20, 40]
    assert val[1]["val_ce"] < val[0]["val_ce"] and val[1]["val_token_acc"] > val[0]["val_token_acc"]
    samples = json.loads((tmp_path / "run" / "val_captions.json").read_text())
    assert samples["step"] == 40 and len(samples["samples"]) == 2 and 0 <= val[1]["val_gen_word_acc"] <= 1
    # the saved scorer captions the training images much better than the initial model; mode is untouched
    assert json.loads((final / "zreward.json").read_text())["mode"] == "direct"
    data = cap.load_caption_data(small_world / "train", max_images=8)
    before, after = (_mean_ce(load_scorer(p), data, 8) for p in (tiny_model, final))
    assert after < 0.5 * before


def test_resume_gives_identical_losses(tiny_model, small_world, tmp_path):
    # 16 images, 8 per step: steps 3-4 are a new epoch (new permutation), so the resumed half starts one;
    # two micro-batches per step exercise gradient accumulation with the global normaliser.
    over = {"data__max_images": 16, "accelerator__gradient_accumulation_steps": 2}
    cap.train(_cfg(tiny_model, small_world, tmp_path / "a", **over))
    cap.train(_cfg(tiny_model, small_world, tmp_path / "b", run__max_steps=2, run__save_every=2, **over))
    cap.train(_cfg(tiny_model, small_world, tmp_path / "b", **over))  # resume="auto" picks up step 2
    la = [e["loss"] for e in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [e["loss"] for e in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(la) == len(lb) == 4 and len(set(la)) == 4
    assert np.allclose(la, lb, rtol=1e-6, atol=0)


def test_gradient_accumulation_gives_the_same_steps(tiny_model, small_world, tmp_path):
    """Micro-batches share the step's token normaliser: same loss, gradient norm and update as one micro-batch."""
    logs = []
    for ga in (1, 3):
        cap.train(_cfg(tiny_model, small_world, tmp_path / f"ga{ga}", run__max_steps=2,
                       accelerator__gradient_accumulation_steps=ga))
        logs.append(read_metrics(tmp_path / f"ga{ga}" / "metrics.jsonl"))
    for key in ("loss", "grad_norm", "tokens"):
        assert np.allclose([e[key] for e in logs[0]], [e[key] for e in logs[1]], rtol=1e-4), key


def _split_with(out, src, metas_scenes):
    """A split (no labels) of the first images of split `src` whose records carry the given (meta, scene) pairs."""
    from zreward.data.records import DatasetInfo, ImageRecord
    from zreward.data.split_writer import write_split

    recs = [(ImageRecord(id=f"img{k}", prompt="x", image="", meta=meta, scene=scene),
             src.image_path(src.images[k]).read_bytes()) for k, (meta, scene) in enumerate(metas_scenes)]
    return write_split(out, DatasetInfo(name="t"), recs)


def test_caption_sources_and_the_error_without_one(small_world, tmp_path):
    from zreward.data.records import RecordError, read_split
    from zreward.data.shapes_world.captions import caption

    src = read_split(small_world / "train")
    scenes = [r.scene for r in src.images[:3]]
    split = _split_with(tmp_path / "ok", src,
                        [({"caption": "a red ball."}, scenes[0]), ({}, scenes[1]), ({"caption": " "}, scenes[2])])
    data = cap.load_caption_data(split)
    assert data.captions == ["a red ball.", caption(scenes[1]), caption(scenes[2])]  # meta.caption wins over scene
    assert len(data.images) == 3 and data.images[0].dtype == torch.uint8
    bad = _split_with(tmp_path / "bad", src, [({}, scenes[0]), ({"oracle": 1}, None)])
    with pytest.raises(RecordError, match=r"images\.jsonl:2 \(id img1\): meta\.caption / scene: expected"):
        cap.load_caption_data(bad)


def test_cli_help_lists_the_caption_fields(capsys):
    from zreward.trainers import cli

    assert cli.main(["--help"]) == 0
    assert "captioning pretraining: next-token CE on image captions" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["caption", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "usage: zreward train caption" in out
    for key in ("caption.instruction (str, default Describe the image.)", "caption.max_tokens (int, default 160)",
                "data.images_per_batch (int, default 32)", "optim.lr"):
        assert key in out
