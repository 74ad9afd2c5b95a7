"""OPD trainer: the reverse-KL estimators on hand-computed numbers, a distillation run, teacher checks, resume."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zreward.losses import generalized_jsd
from zreward.trainers import opd
from zreward.trainers.run_utils import read_metrics


@pytest.fixture(scope="module")
def models(tiny_model, tiny_factory):
    """(student, teacher): two tiny random models of the same family with different seeds."""
    return tiny_model, tiny_factory(seed=1)


def _cfg(models, world, out, **over) -> opd.Config:
    cfg = opd.Config()
    cfg.model.init_from, cfg.teacher.path = str(models[0]), str(models[1])
    cfg.data.train, cfg.data.val = str(world / "train"), str(world / "val")
    cfg.data.val_max_images = 24
    cfg.opd.images_per_batch = 4
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_steps = str(out), False, 8
    cfg.optim.lr, cfg.optim.warmup_steps = 3e-3, 0
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_exact_loss_is_reverse_kl_by_hand():
    """p_S = (0.5, 0.5), p_T = (0.8, 0.2): KL(p_S ‖ p_T) = 0.5·ln(0.5/0.8) + 0.5·ln(0.5/0.2) = 0.2231."""
    s = torch.tensor([[0.0, 0.0]])
    t = torch.log(torch.tensor([[0.8, 0.2]]))
    want = 0.5 * math.log(0.5 / 0.8) + 0.5 * math.log(0.5 / 0.2)
    assert abs(float(generalized_jsd(s, t, beta=1.0)) - want) < 1e-6
    assert abs(want - 0.22314355) < 1e-7


def test_sampled_surrogate_value_and_unbiased_gradient():
    # value by hand: samples y = [0, 1] → mean of (ln .5 − ln .8)·ln .5 and (ln .5 − ln .2)·ln .5
    s = torch.zeros(1, 2, requires_grad=True)
    t = torch.log(torch.tensor([[0.8, 0.2]]))
    val = opd.sampled_reverse_kl_surrogate(s, t, torch.tensor([[0, 1]]))
    want = 0.5 * (math.log(0.5 / 0.8) * math.log(0.5) + math.log(0.5 / 0.2) * math.log(0.5))
    assert abs(float(val.detach()) - want) < 1e-6
    # gradient: the Monte-Carlo mean over many student samples matches ∇ of the exact reverse KL
    torch.manual_seed(0)
    s = torch.randn(3, 9, requires_grad=True)
    t = torch.randn(3, 9)
    exact = torch.autograd.grad(generalized_jsd(s, t, beta=1.0, reduction="batchmean"), s)[0]
    y = torch.multinomial(torch.softmax(s.detach(), -1), 200_000, replacement=True)
    mc = torch.autograd.grad(opd.sampled_reverse_kl_surrogate(s, t, y), s)[0]  # mean over N rows = batchmean
    assert torch.allclose(mc, exact, atol=0.01), (mc - exact).abs().max()
    # a student equal to the teacher gets zero gradient in expectation and exactly zero loss
    assert float(generalized_jsd(t, t, beta=1.0)) == pytest.approx(0.0, abs=1e-7)


def test_distillation_run_moves_the_student_to_the_teacher(models, small_world, tmp_path):
    from zreward.models.scorer import load_scorer
    from zreward.trainers.data import load_train_data

    final = opd.train(_cfg(models, small_world, tmp_path / "run", run__max_steps=12))
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [e["step"] for e in logs] == list(range(1, 13))
    for key in ("loss", "forward_kl", "mean_abs_gap", "lr", "grad_norm", "step_time"):
        assert key in logs[0]
    assert np.mean([e["loss"] for e in logs[-3:]]) < 0.5 * logs[0]["loss"]
    assert {"val_acc", "teacher_val_acc"} <= set(logs[-1])
    # the saved student is closer to the teacher (reverse KL on held-out images) than the initial student
    data = load_train_data(small_world / "val", max_images=12)
    teacher = load_scorer(models[1])
    ims = data.image_batch(range(12))
    with torch.no_grad():
        t = teacher.direct_logits(data.prompts, ims).flatten(0, 1)
        kls = [float(generalized_jsd(load_scorer(p).direct_logits(data.prompts, ims).flatten(0, 1), t, beta=1.0))
               for p in (models[0], final)]
    assert kls[1] < 0.5 * kls[0]
    out = load_scorer(final).score(data.prompts[:2], ims[:2])
    assert out.probs.shape == (2, 4, 9) and torch.all((out.overall >= 1) & (out.overall <= 5))


def test_sampled_estimator_also_learns(models, small_world, tmp_path):
    cfg = _cfg(models, small_world, tmp_path / "run", run__max_steps=8, opd__estimator="sampled",
               opd__samples_per_item=8)
    cfg.data.val = None
    opd.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert "surrogate" in logs[0]
    assert np.mean([e["loss"] for e in logs[-3:]]) < logs[0]["loss"]


def test_teacher_must_match_levels_and_dims(models, tmp_path):
    from zreward.models.tiny import init_tiny
    from zreward.models.scorer import load_scorer

    student = load_scorer(models[0])
    other = load_scorer(init_tiny("qwen2_vl", tmp_path / "t", preset="tiny", levels=[1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.raises(ValueError, match="teacher levels"):
        opd.check_teacher(student, other, student.dims)
    with pytest.raises(ValueError, match="no rubric for dims"):
        opd.check_teacher(student, load_scorer(models[1]), ["sharpness"])
    with pytest.raises(ValueError, match="teacher.path is required"):
        opd.train(opd.Config())
    bad = opd.Config()
    bad.teacher.path, bad.accelerator.gradient_accumulation_steps = "t", 2
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        opd.train(bad)


def test_resume_gives_identical_losses(models, small_world, tmp_path):
    def cfg(out, steps, save_every=0):
        c = _cfg(models, small_world, tmp_path / out, run__max_steps=steps, run__save_every=save_every)
        c.data.val = None
        return c

    opd.train(cfg("a", 4))
    opd.train(cfg("b", 2, save_every=2))
    opd.train(cfg("b", 4))
    la = [e["loss"] for e in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    lb = [e["loss"] for e in read_metrics(tmp_path / "b" / "metrics.jsonl")]
    assert len(la) == len(lb) == 4 and np.allclose(la, lb, rtol=1e-5, atol=1e-7)


def test_empty_chain_teacher_query_reads_the_score_after_reasoning_close(models):
    """empty_chain = logits at the end of reasoning_prompt + reasoning_close, i.e. a chain of zero tokens."""
    from zreward.models.scorer import load_scorer

    t = load_scorer(models[1])
    torch.manual_seed(0)
    ims, prompts, dims = torch.rand(2, 3, 64, 64), ["a red circle", "two stars"], ["alignment", "realism"]
    got = opd.teacher_level_logits(t, prompts, ims, dims, "empty_chain")
    texts = [t.reasoning_prompt(p, d) + t.config.templates.reasoning_close for p in prompts for d in dims]
    pix = t.prepare_images(ims)
    with torch.no_grad():
        batch, _ = t.encode_items(texts, [0, 0, 1, 1], pix)
        full = t.logits_at(batch, batch.last_pos)[:, t.level_token_ids]
    assert got.shape == (2, 2, 9) and torch.allclose(got.flatten(0, 1), full, atol=1e-4)
    direct = opd.teacher_level_logits(t, prompts, ims, dims, "direct")
    assert torch.allclose(direct, t.direct_logits(prompts, ims, dims)) and not torch.allclose(direct, got, atol=1e-3)


def test_teacher_cache_computes_each_image_once_and_returns_its_rows():
    """Rows come back in batch order (repeats included); only unseen indices are computed, first occurrences."""
    calls = []

    def compute(prompts, images):  # a stand-in teacher: logits encode the image's first pixel and the prompt
        first = (torch.stack(images) if isinstance(images, list) else images)[:, 0, 0, 0]
        calls.append((list(prompts), first.tolist()))
        return torch.stack([torch.full((2, 3), float(x)) + len(p) for p, x in zip(prompts, first)])

    cache = opd.TeacherCache(compute)
    ims = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 3, 2, 2)
    got = cache([7, 3, 7, 5], ["a", "bb", "a", "ccc"], ims[[0, 1, 0, 2]])
    assert calls == [(["a", "bb", "ccc"], [0.0, 1.0, 2.0])]
    torch.testing.assert_close(got[:, 0, 0], torch.tensor([1.0, 3.0, 1.0, 5.0]))
    got = cache([5, 9], ["ccc", "dddd"], [ims[2], ims[3]])  # a list of images (sizes differ) works the same
    assert calls[-1] == (["dddd"], [3.0]) and len(calls) == 2
    torch.testing.assert_close(got[:, 1, 2], torch.tensor([5.0, 7.0]))


def _count_teacher_queries(monkeypatch) -> list[str]:
    """The prompts of every image the teacher is asked about, in order (OPD's teacher query, wrapped)."""
    scored: list[str] = []
    real = opd.teacher_level_logits

    def counting(teacher, prompts, images, dims, query):
        scored.extend(prompts)
        return real(teacher, prompts, images, dims, query)

    monkeypatch.setattr(opd, "teacher_level_logits", counting)
    return scored


def test_teacher_scores_each_drawn_image_once(models, small_world, tmp_path, monkeypatch):
    """A training run asks the teacher about each drawn image once: 12 steps of 4 images from 16 (three epochs)
    score exactly the distinct images drawn."""
    from zreward.trainers.data import load_train_data
    from zreward.trainers.run_utils import batch_indices

    scored = _count_teacher_queries(monkeypatch)
    cfg = _cfg(models, small_world, tmp_path / "run", run__max_steps=12, data__max_images=16)
    cfg.data.val = None
    opd.train(cfg)
    n = len(load_train_data(small_world / "train", max_images=16))
    drawn = {int(i) for s in range(12) for i in batch_indices(n, 4, s, cfg.run.seed)}
    assert n == 16 and len(scored) == len(drawn) <= 16 < 12 * 4


def test_unlabelled_images_are_distilled_too(models, small_world, tmp_path, monkeypatch):
    """`data.extra_unlabelled` (RISD's unlabelled images, `DistilDataConfig`): OPD draws its batches from the train
    images followed by the extra ones, and the teacher is asked about exactly the drawn images of both."""
    from zreward.trainers.data import load_train_data
    from zreward.trainers.run_utils import batch_indices

    scored = _count_teacher_queries(monkeypatch)
    cfg = _cfg(models, small_world, tmp_path / "run", run__max_steps=6, data__max_images=8)
    cfg.data.val, cfg.data.extra_unlabelled, cfg.data.extra_max_images = None, str(small_world / "ood"), 8
    opd.train(cfg)
    prompts = (load_train_data(small_world / "train", max_images=8).prompts
               + load_train_data(small_world / "ood", max_images=8).prompts)
    drawn = sorted({int(i) for s in range(6) for i in batch_indices(16, 4, s, cfg.run.seed)})
    assert any(i >= 8 for i in drawn)  # some extra images are drawn
    assert sorted(scored) == sorted(prompts[i] for i in drawn)
