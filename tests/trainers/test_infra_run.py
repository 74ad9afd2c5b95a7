"""Run helpers: metrics JSONL resume, non-finite guard, seeding, batch indices, progress, run dir, CLI."""
from __future__ import annotations

import importlib.machinery
import json
import random
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from zreward.trainers import cli
from zreward.trainers.checkpoint import save_checkpoint
from zreward.trainers.config import ConfigError, load_config
from zreward.trainers.guard import NonFiniteError, NonFiniteGuard
from zreward.trainers.run_utils import (AcceleratorConfig, MetricsLogger, RunConfig,
                                        batch_indices, derive_seed, make_accelerator, prepare_run_dir,
                                        progress_bar, progress_enabled, read_metrics, seed_everything)


def test_metrics_logger_resume_truncates(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricsLogger(path) as log:
        for s in range(1, 6):
            log.log(s, {"loss": torch.tensor(s / 10), "lr": np.float32(0.5)})
    assert [e["step"] for e in read_metrics(path)] == [1, 2, 3, 4, 5]
    assert read_metrics(path)[0]["loss"] == pytest.approx(0.1) and read_metrics(path)[0]["lr"] == 0.5
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # torn line from a crash
    with MetricsLogger(path, resume_step=3) as log:
        assert [e["step"] for e in read_metrics(path)] == [1, 2, 3]
        log.log(4, {"loss": 9.0})
        # flushed
        assert [(e["step"], e["loss"]) for e in read_metrics(path)][-2:] == [(3, pytest.approx(0.3)), (4, 9.0)]
    MetricsLogger(path).close()  # a fresh run starts an empty file
    assert path.read_text() == ""


def test_metrics_logger_corrupt_line_and_disabled(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=rf"{path}:2: expected a JSON object with a 'step' field"):
        MetricsLogger(path, resume_step=5)
    log = MetricsLogger(tmp_path / "other.jsonl", enabled=False)
    log.log(1, {"x": 1})
    assert not (tmp_path / "other.jsonl").exists()


def test_nonfinite_guard():
    g = NonFiniteGuard(max_skips=2)
    assert g.check(0, torch.tensor(1.0), torch.tensor(0.5)) is True
    assert g.check(1, torch.tensor(float("nan"))) is False
    assert g.check(2, float("inf")) is False
    assert g.consecutive == 2
    assert g.check(3, 0.3) is True and g.consecutive == 0 and g.total == 2  # a good step resets the count
    assert g.check(4, 1.0, torch.tensor(float("inf"))) is False  # finite loss, bad gradient norm
    assert g.check(5, torch.tensor([1.0, float("nan")])) is False
    with pytest.raises(NonFiniteError, match=r"loss became non-finite at step 6 \(3 consecutive skipped steps, "
                                             r"limit 2"):
        g.check(6, float("nan"))
    with pytest.raises(NonFiniteError, match=r"gradient norm became non-finite at step 0 \(1 consecutive skipped "
                                             r"steps, limit 0"):
        NonFiniteGuard(0).check(0, 1.0, float("nan"))
    h = NonFiniteGuard(2)
    h.load_state_dict(json.loads(json.dumps(g.state_dict())))
    assert (h.consecutive, h.total) == (3, 5)
    with pytest.raises(ValueError):
        NonFiniteGuard(-1)


def test_seed_everything():
    def draw():
        return torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()
    seed_everything(3, rank=1)
    a = draw()
    seed_everything(3, rank=1)
    assert draw() == a
    seed_everything(3, rank=0)
    assert draw() != a
    assert len({derive_seed(0, 1), derive_seed(1, 0), derive_seed(0, 0), derive_seed(1, 1)}) == 4


def test_batch_indices():
    n, b = 20, 8  # 2 batches per epoch, 4 items dropped per epoch
    full = [batch_indices(n, b, s, seed=7) for s in range(4)]
    assert all(len(x) == b for x in full)
    assert len(set(full[0] + full[1])) == 16  # no repeats within an epoch
    assert full[2] != full[0]  # a new permutation per epoch
    assert batch_indices(n, b, 3, seed=7) == full[3]  # pure function of (seed, step): resume needs no state
    for s in range(4):  # ranks' slices make up the global batch, in order
        halves = batch_indices(n, b, s, 7, rank=0, world_size=2) + batch_indices(n, b, s, 7, rank=1, world_size=2)
        assert halves == full[s]
    with pytest.raises(ValueError, match="not divisible by 3"):
        batch_indices(n, b, 0, 7, world_size=3)
    with pytest.raises(ValueError, match=r"must be in \[1, 20\]"):
        batch_indices(n, 21, 0, 7)


def test_progress_enabled(monkeypatch):
    monkeypatch.delenv("ZREWARD_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_enabled() is True
    assert progress_enabled(enabled=False) is False
    assert progress_enabled(is_main=False) is False
    monkeypatch.setenv("ZREWARD_NO_PROGRESS", "1")
    assert progress_enabled() is False
    monkeypatch.delenv("ZREWARD_NO_PROGRESS")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False, raising=False)
    assert progress_enabled() is False
    bar = progress_bar(10, initial=3)
    assert bar.disable and bar.n == 3
    bar.close()


def test_prepare_run_dir(tmp_path):
    root = tmp_path / "run"
    run, ckpt = prepare_run_dir(root)
    assert ckpt is None and run.checkpoints.is_dir()
    assert (run.config.name, run.metrics.name, run.final.name) == ("config.yaml", "metrics.jsonl", "final")
    save_checkpoint(run.checkpoints, 2, {"w": torch.zeros(1)})
    save_checkpoint(run.checkpoints, 4, {"w": torch.zeros(1)})
    assert prepare_run_dir(root)[1].name == "step_000004"
    assert prepare_run_dir(root, resume=str(run.checkpoints / "step_000002"))[1].name == "step_000002"
    with pytest.raises(FileExistsError, match="already has checkpoints"):
        prepare_run_dir(root, resume="never")
    with pytest.raises(FileNotFoundError, match="not a checkpoint directory"):
        prepare_run_dir(root, resume=str(tmp_path))
    run, ckpt = prepare_run_dir(root, resume="never", overwrite=True)
    assert ckpt is None and list(run.checkpoints.iterdir()) == []


@dataclass
class TrainerLike:
    run: RunConfig = field(default_factory=RunConfig)
    accelerator: AcceleratorConfig = field(default_factory=AcceleratorConfig)


def test_shared_config_sections_validate():
    cfg = load_config(TrainerLike, None, ["run.max_steps=7", "run.keep_last=null", "accelerator.device=cpu"])
    assert cfg.run.max_steps == 7 and cfg.run.keep_last is None
    with pytest.raises(ConfigError, match="run.keep_last must be >= 1 or null, got 0"):
        load_config(TrainerLike, None, ["run.keep_last=0"])
    with pytest.raises(ConfigError, match="accelerator.mixed_precision must be no, bf16 or fp16"):
        load_config(TrainerLike, None, ["accelerator.mixed_precision=fp8"])
    acc = make_accelerator(cfg.accelerator)
    assert acc.device.type == "cpu" and acc.num_processes == 1
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="accelerator.device=cuda"):
            make_accelerator(AcceleratorConfig(device="cuda"))


def test_train_cli_dispatch(monkeypatch, capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "usage: zreward train <method>" in out
    for m in cli.METHODS:
        assert (f"  {m} " in out) == (m in cli.available_methods())
    assert cli.main(["nosuch"]) == 2 and "unknown method 'nosuch'" in capsys.readouterr().err
    fake = types.ModuleType("zreward.trainers.opd")
    fake.__spec__ = importlib.machinery.ModuleSpec("zreward.trainers.opd", None)
    seen = []
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "zreward.trainers.opd", fake)
    assert "opd" in cli.available_methods()
    assert cli.main(["opd", "--config", "x.yaml", "run.max_steps=1"]) == 3
    assert seen == [["--config", "x.yaml", "run.max_steps=1"]]


def test_accelerator_backward_does_not_rescale_micro_batches():
    """Trainers normalise each term by its global-batch count; accelerate must not divide by the micro-batch count."""
    import torch

    from zreward.trainers.run_utils import AcceleratorConfig, make_accelerator

    acc = make_accelerator(AcceleratorConfig(gradient_accumulation_steps=4))
    w = torch.nn.Parameter(torch.tensor(2.0))
    acc.backward(3.0 * w)
    assert w.grad is not None and float(w.grad) == 3.0
