"""RISD trainer: teacher-target cache (built once, reused, rebuilt on changes), student run, data union."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from zreward.trainers import risd, risd_teacher
from zreward.trainers.run_utils import derive_seed, read_metrics


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(teacher dir in reasoning mode with short chains, student dir)."""
    from zreward.models.tiny import init_tiny

    root = tmp_path_factory.mktemp("risd_models")
    teacher = init_tiny("qwen2_vl", root / "teacher", preset="tiny", seed=1, mode="reasoning", max_new_tokens=6)
    student = init_tiny("qwen2_vl", root / "student", preset="tiny", seed=2)
    # A random tiny model is nearly uniform over the levels; sharpen the teacher's level-token rows so that its
    # targets differ clearly from the student's start (else there is nothing to distil).
    from safetensors.torch import load_file, save_file

    ids = json.loads((teacher / "zreward.json").read_text())["level_token_ids"]
    sd = load_file(str(teacher / "model.safetensors"))
    key = next(k for k in sd if k.endswith("lm_head.weight"))
    sd[key][ids] *= 40.0
    save_file(sd, str(teacher / "model.safetensors"), metadata={"format": "pt"})
    return teacher, student


def _cfg(models, world, out, **over) -> risd.Config:
    cfg = risd.Config()
    cfg.teacher.path, cfg.model.init_from = str(models[0]), str(models[1])
    cfg.teacher.samples, cfg.teacher.batch_size = 2, 8
    cfg.data.train, cfg.data.max_images = str(world / "train"), 12
    cfg.data.extra_unlabelled, cfg.data.extra_max_images = str(world / "ood"), 4
    cfg.data.prompts_per_batch = 2
    cfg.run.output_dir, cfg.run.progress, cfg.run.max_steps = str(out), False, 5
    cfg.teacher.cache_dir = str(out.parent / "cache")
    cfg.optim.lr = 3e-3
    for key, value in over.items():
        section, name = key.split("__")
        setattr(getattr(cfg, section), name, value)
    return cfg


def test_risd_run_caches_teacher_once_and_student_learns(models, small_world, tmp_path):
    from zreward.models.scorer import load_scorer
    from zreward.trainers.data import concat_splits, load_train_data

    cfg = _cfg(models, small_world, tmp_path / "run", risd__human_weight=0.5)
    final = risd.train(cfg)
    logs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    first = logs[0]
    assert first["teacher_computed"] == 16  # 12 labelled + 4 unlabelled images, computed on this first run
    for key in ("loss", "kl", "gap", "human_kl", "lr", "grad_norm"):
        assert key in first
    assert np.mean([e["kl"] for e in logs[-2:]]) < first["kl"]
    assert json.loads((final / "zreward.json").read_text())["mode"] == "direct"
    assert load_scorer(final).score(["a red circle"], torch.rand(1, 3, 64, 64)).probs.shape == (1, 4, 9)

    # the cached rows are exactly the teacher's chain-averaged distributions (same seed, same batches)
    caches = list((tmp_path / "cache").glob("teacher_*.safetensors"))
    assert len(caches) == 1
    data = concat_splits(load_train_data(cfg.data.train, max_images=12),
                         load_train_data(cfg.data.extra_unlabelled, max_images=4), keep_labels=False,
                         what="data.extra_unlabelled")
    acc = _Main()
    cached, info = risd_teacher.teacher_targets(cfg, data, data.dims, tmp_path / "cache", acc)
    assert info["computed"] == 0  # reused
    teacher = load_scorer(models[0])
    torch.manual_seed(derive_seed(cfg.run.seed, 0))
    want = teacher.score(data.prompts[:8], data.image_batch(range(8)), reasoning=True, samples=2).probs
    torch.testing.assert_close(cached[:8], want)
    torch.testing.assert_close(cached.sum(-1), torch.ones(16, 4), rtol=0, atol=1e-5)

    # rerun of the same config elsewhere: the cache is reused, nothing is recomputed
    cfg2 = _cfg(models, small_world, tmp_path / "run2")
    cfg2.run.max_steps = 1
    risd.train(cfg2)
    assert read_metrics(tmp_path / "run2" / "metrics.jsonl")[0]["teacher_computed"] == 0


class _Main:
    """The bits of an Accelerator that `teacher_targets` uses, single process."""

    is_main_process = True
    process_index, num_processes = 0, 1
    device = torch.device("cpu")

    def wait_for_everyone(self) -> None:
        pass


def test_teacher_cache_is_rebuilt_when_inputs_change(models, small_world, tmp_path):
    from zreward.trainers.data import load_train_data

    teacher = tmp_path / "teacher"
    shutil.copytree(models[0], teacher)
    cfg = _cfg(models, small_world, tmp_path / "run")
    cfg.teacher.path = str(teacher)
    split = tmp_path / "split"
    shutil.copytree(small_world / "train", split)
    data = load_train_data(split, max_images=4)
    acc, cache = _Main(), tmp_path / "cache"
    _, info = risd_teacher.teacher_targets(cfg, data, data.dims, cache, acc)
    assert info["computed"] == 4
    assert risd_teacher.teacher_targets(cfg, data, data.dims, cache, acc)[1]["computed"] == 0
    cfg.teacher.samples = 3  # another M: new cache file
    assert risd_teacher.teacher_targets(cfg, data, data.dims, cache, acc)[1]["computed"] == 4
    cfg.teacher.samples = 2
    zr = json.loads((teacher / "zreward.json").read_text())
    zr["temperature"] = 0.7  # the teacher dir changed: new fingerprint
    (teacher / "zreward.json").write_text(json.dumps(zr))
    assert risd_teacher.teacher_targets(cfg, data, data.dims, cache, acc)[1]["computed"] == 4
    from PIL import Image

    f = data.images.paths[0]  # an image changed under the same id: only that row is recomputed
    Image.fromarray(255 - data.images[0].permute(1, 2, 0).numpy()).save(f)
    assert risd_teacher.teacher_targets(cfg, data, data.dims, cache, acc)[1]["computed"] == 1
    assert len(list(cache.glob("teacher_*.safetensors"))) == 3


def test_concat_unlabelled_drops_extra_labels_and_regroups(small_world):
    from zreward.trainers.data import concat_splits, load_train_data

    a = load_train_data(small_world / "train", max_images=8)
    b = load_train_data(small_world / "ood", max_images=8)
    u = concat_splits(a, b, keep_labels=False, what="data.extra_unlabelled")
    assert len(u) == 16 and u.ids == a.ids + [f"data.extra_unlabelled/{i}" for i in b.ids]
    assert u.mask[:8].tolist() == a.mask.tolist() and not u.mask[8:].any()
    assert (u.target[8:] == 0).all() and (u.mos[8:] == 0).all()
    for g in u.groups:  # every group holds one prompt, and every image is in exactly one group
        assert len({u.prompts[i] for i in g}) == 1
    assert len(u.groups) == len(a.groups) + len(b.groups)  # each split keeps its own prompt instances
    assert not set(u.group[:8].tolist()) & set(u.group[8:].tolist())
    assert sorted(np.concatenate(u.groups).tolist()) == list(range(16))


def test_step_losses_hand_values():
    """Teacher one-hot at 4.0 and 2.0 (gap 2), uniform student (means 3.0, gap 0): KL = log 9 per row,
    Huber(δ=1) of 2 = 1.5, human KL only on the labelled row."""
    import math

    from zreward.models.level_readout import readout_from_level_logits
    from zreward.trainers.data import TrainData

    levels = torch.tensor([1.0 + 0.5 * i for i in range(9)])

    class FakeScorer:
        def __init__(self):
            self.levels = levels

        def direct_readout(self, prompts, images, dims):
            return readout_from_level_logits(torch.zeros(len(prompts), len(dims), 9), levels)

    target = np.zeros((2, 1, 9), np.float32)
    target[0, 0, 8] = 1.0
    data = TrainData(ids=["a", "b"], prompts=["p", "p"], images=[torch.zeros(3, 8, 8, dtype=torch.uint8)] * 2,
                     target=target, mask=np.array([[True], [False]]), mos=np.array([[5.0], [0.0]], np.float32),
                     group=np.array([0, 0]), groups=[np.array([0, 1])], rationales=[{}, {}], dims=["alignment"],
                     levels=levels.tolist())
    teach = torch.zeros(2, 1, 9)
    teach[0, 0, 6], teach[1, 0, 2] = 1.0, 1.0
    cfg = risd.Config()
    cfg.risd.human_weight = 1.0
    terms = risd.step_losses(cfg, FakeScorer(), data, teach, np.array([0, 1]), ["alignment"],
                             {"rows": 2.0, "pairs": 1.0, "labelled": 1.0}, "cpu")
    assert float(terms["kl"]) == pytest.approx(math.log(9))
    assert float(terms["gap"]) == pytest.approx(1.5)
    assert float(terms["human_kl"]) == pytest.approx(math.log(9))


def test_risd_resume_gives_identical_losses(models, small_world, tmp_path):
    """2 steps straight = 1 step, stop, resume for the second (shared teacher cache, same batches and RNG)."""
    def cfg(out, steps):
        c = _cfg(models, small_world, tmp_path / out, run__max_steps=steps, run__save_every=1)
        c.teacher.cache_dir = str(tmp_path / "cache")
        return c

    risd.train(cfg("straight", 3))
    risd.train(cfg("half", 1))
    risd.train(cfg("half", 3))  # resume="auto" picks up step_000001
    a, b = read_metrics(tmp_path / "straight" / "metrics.jsonl"), read_metrics(tmp_path / "half" / "metrics.jsonl")
    assert [e["step"] for e in b] == [1, 2, 3]
    for key in ("loss", "kl", "gap", "grad_norm"):
        assert [e[key] for e in a] == [e[key] for e in b], key


def test_sharded_teacher_cache_equals_one_process(models, small_world, tmp_path, monkeypatch):
    """Play both ranks of a 2-process teacher pass in one process: each runs its chunks (seeded per chunk), the
    gathered chunks make the byte-identical cache file one process writes. (torchrun: test_sharding.py, slow.)"""
    import hashlib

    from zreward.trainers.data import load_train_data

    cfg = _cfg(models, small_world, tmp_path / "run")
    cfg.teacher.batch_size = 3  # 7 images: chunks of 3, 3, 1; rank 0 runs chunks 0 and 2, rank 1 chunk 1
    data = load_train_data(small_world / "train", max_images=7)
    one, _ = risd_teacher.teacher_targets(cfg, data, data.dims, tmp_path / "one", _Main())
    shares = [risd_teacher.item_keys(data, list(range(0, 4))), risd_teacher.item_keys(data, list(range(4, 7)))]
    parts = {}

    class Recorded(Exception):
        pass

    class Rank(_Main):
        def __init__(self, r):
            self.process_index, self.num_processes, self.is_main_process = r, 2, r == 0

    def gather(obj, timeout_s, what):
        if what == "risd cache rows":  # both ranks read the same (empty) cache
            return [obj, obj]
        assert obj == shares[acc.process_index]  # each rank hashed only its contiguous share
        return shares

    def run_gather(fn, timeout_s, what):
        if acc.process_index in parts:  # the final pass: both ranks' chunks
            return [parts[0], parts[1]]
        parts[acc.process_index] = fn()
        raise Recorded

    monkeypatch.setattr(risd_teacher, "all_gather_objects", gather)
    monkeypatch.setattr(risd_teacher, "run_and_gather", run_gather)
    monkeypatch.setattr(risd_teacher, "barrier", lambda timeout_s, what: None)
    for r in (1, 0):
        acc = Rank(r)
        with pytest.raises(Recorded):
            risd_teacher.teacher_targets(cfg, data, data.dims, tmp_path / "two", acc)
    assert sorted(parts[0]) == [0, 2] and sorted(parts[1]) == [1]
    acc = Rank(0)
    two, info = risd_teacher.teacher_targets(cfg, data, data.dims, tmp_path / "two", acc)
    assert torch.equal(two, one) and info["computed"] == 7
    f1, f2 = (next((tmp_path / d).glob("teacher_*.safetensors")) for d in ("one", "two"))
    assert f1.name == f2.name
    assert hashlib.sha256(f1.read_bytes()).digest() == hashlib.sha256(f2.read_bytes()).digest()


def test_teacher_parts_hold_one_pass_rows(models, small_world, tmp_path):
    """teacher.part = R/W: each part runs chunks k ≡ R (mod W) of the one-pass chunking under the same chunk seeds;
    with both part files present a run computes nothing and reads the exact targets of one pass; a finished part
    is not recomputed; the main file's rows are not run again; a bad R/W is refused."""
    from zreward.trainers.data import load_train_data

    cfg = _cfg(models, small_world, tmp_path / "run")
    cfg.teacher.batch_size = 3  # 16 images (12 + 4 unlabelled): 6 chunks, parts of 3 and 3
    data, dims = risd.train_inputs(cfg)
    one, _ = risd_teacher.teacher_targets(cfg, data, dims, tmp_path / "one", _Main())
    files = []
    for r in (1, 0):
        cfg.teacher.part = f"{r}/2"
        files.append(risd.train(cfg))  # no training: only the part file
        assert files[-1].name.endswith(f".part{r}of2.safetensors") and files[-1].parent == tmp_path / "cache"
    assert not (tmp_path / "run").exists()
    cfg.teacher.part = None
    two, info = risd_teacher.teacher_targets(cfg, data, dims, tmp_path / "cache", _Main())
    assert info["computed"] == 0 and torch.equal(two, one)
    stamp = files[0].stat().st_mtime_ns
    cfg.teacher.part = "1/2"
    assert risd.train(cfg) == files[0] and files[0].stat().st_mtime_ns == stamp

    # a cache file holding the first 4 images: the parts split only the other 12 (4 chunks, 2 each)
    few = load_train_data(cfg.data.train, max_images=4)
    cfg.teacher.part = None
    risd_teacher.teacher_targets(cfg, few, dims, tmp_path / "c2", _Main())
    cfg.teacher.cache_dir = str(tmp_path / "c2")
    for r in (0, 1):
        cfg.teacher.part = f"{r}/2"
        assert len(risd_teacher._read_file(risd.train(cfg))[0]) == 6
    for bad in ("2/2", "a/2", "1", "-1/2"):
        with pytest.raises(ValueError, match="teacher.part"):
            risd_teacher.TeacherConfig(path="x", part=bad)


def test_teacher_part_of_another_pass_is_replaced(models, small_world, tmp_path):
    """A part file made for other images (here: data.max_images 8 -> 12) is recomputed, not kept: the parts of the
    new pass again hold exactly one pass's rows."""
    cfg = _cfg(models, small_world, tmp_path / "run", data__max_images=8)
    cfg.data.extra_unlabelled, cfg.teacher.batch_size = None, 2
    cfg.teacher.part = "0/2"
    n_old = len(risd_teacher._read_file(risd.train(cfg))[0])
    cfg.data.max_images = 12
    assert len(risd_teacher._read_file(risd.train(cfg))[0]) == 6 != n_old
    cfg.teacher.part = "1/2"
    risd.train(cfg)
    cfg.teacher.part = None
    data, dims = risd.train_inputs(cfg)
    two, info = risd_teacher.teacher_targets(cfg, data, dims, tmp_path / "cache", _Main())
    one, _ = risd_teacher.teacher_targets(cfg, data, dims, tmp_path / "one", _Main())
    assert info["computed"] == 0 and torch.equal(one, two)
    cfg.teacher.part = "0/3"  # another split of the same pass: the halves' files are stale and removed
    risd.train(cfg)
    assert sorted(f.name.split(".")[1] for f in (tmp_path / "cache").glob("*.part*")) == ["part0of3"]


def test_teacher_part_runs_on_the_configured_device(models, small_world, tmp_path, monkeypatch):
    """accelerator.device=cpu on a machine with CUDA: the part runs on the CPU, as one pass would."""
    cfg = _cfg(models, small_world, tmp_path / "run")
    cfg.accelerator.device, cfg.teacher.part = "cpu", "0/2"
    seen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(risd_teacher, "_run_teacher", lambda cfg, data, dims, work, device: seen.append(device) or {
        k: (torch.zeros(len(v), len(dims), len(data.levels)), torch.zeros(len(v), len(dims))) for k, v in work.items()})
    risd.train(cfg)
    assert seen == ["cpu"]
    with pytest.raises(ValueError, match="teacher.part"):
        risd_teacher.TeacherConfig(path="x", part="²/3")  # a unicode digit is not a part number


def test_ranks_reading_different_caches_refuse(models, small_world, tmp_path, monkeypatch):
    """Under torchrun the chunks are cut from each rank's view of the cache: if a part file appeared between two
    ranks' reads, the pass stops with a message instead of mixing up rows."""
    cfg = _cfg(models, small_world, tmp_path / "run")
    data = risd.train_inputs(cfg)[0]

    class Rank0(_Main):
        process_index, num_processes = 0, 2

    def gather(obj, timeout_s, what):
        return [obj, "another view"] if what == "risd cache rows" else [obj, []]

    monkeypatch.setattr(risd_teacher, "all_gather_objects", gather)
    with pytest.raises(RuntimeError, match="different teacher caches"):
        risd_teacher.teacher_targets(cfg, data, data.dims, tmp_path / "c", Rank0())
