"""Checkpoints: pickle-free round trip, bitwise-exact resume, atomicity on failure, pruning, latest."""
from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest
import torch
from torch import nn

from zreward.trainers import checkpoint as ck
from zreward.atomic import atomic_write_text
from zreward.trainers.checkpoint import (CheckpointError, capture_rng_state, latest_checkpoint,
                                         list_checkpoints, load_checkpoint, restore_rng_state, save_checkpoint)
from zreward.trainers.guard import NonFiniteGuard
from zreward.trainers.run_utils import seed_everything


def _build(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.1)
    warm, total = 3, 20
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / total)))
    return model, opt, sched


def _train(model, opt, sched, guard, steps: range) -> list[float]:
    """Every step consumes torch, numpy and Python RNG (data, noise, dropout), so all three must resume."""
    losses = []
    model.train()
    for _ in steps:
        x = torch.randn(8, 4)
        noise = torch.from_numpy(np.random.randn(8, 1).astype(np.float32))
        y = x.sum(1, keepdim=True) * random.uniform(0.5, 1.5) + 0.1 * noise
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        gn = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if guard.check(len(losses), loss, gn):
            opt.step()
            sched.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def test_state_encoding_round_trip():
    state = {"state": {0: {"step": torch.tensor(3.0), "m": torch.arange(4.0)}},
             "param_groups": [{"betas": (0.9, 0.95), "lr": 1e-3, "params": [0], "foreach": None}],
             "np": np.arange(3, dtype=np.int64)}
    tensors: dict[str, torch.Tensor] = {}
    tree = ck.encode_state(state, tensors, "x")
    json.dumps(tree)  # must be plain JSON
    back = ck.decode_state(json.loads(json.dumps(tree)), tensors, "x")
    assert set(back["state"]) == {0} and torch.equal(back["state"][0]["m"], torch.arange(4.0))
    assert back["param_groups"][0]["betas"] == (0.9, 0.95)  # tuple survives, int keys survive
    assert back["np"].dtype == np.int64 and back["np"].tolist() == [0, 1, 2]
    with pytest.raises(CheckpointError, match="cannot store 'fn' of type function without pickle"):
        ck.encode_state({"fn": lambda: 0}, {}, "sched")


def test_rng_round_trip():
    seed_everything(5)
    state = capture_rng_state()
    tensors: dict[str, torch.Tensor] = {}
    state = ck.decode_state(json.loads(json.dumps(ck.encode_state(state, tensors, "r"))), tensors, "r")
    a = (torch.rand(3), np.random.rand(3), random.random())
    seed_everything(99)
    restore_rng_state(state)
    b = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_resume_is_bitwise_exact(tmp_path):
    n = 6
    seed_everything(0)
    model, opt, sched = _build(0)
    straight = _train(model, opt, sched, NonFiniteGuard(2), range(2 * n))
    final_straight = {k: v.clone() for k, v in model.state_dict().items()}

    seed_everything(0)
    model, opt, sched = _build(0)
    guard = NonFiniteGuard(2)
    first = _train(model, opt, sched, guard, range(n))
    path = save_checkpoint(tmp_path / "checkpoints", n, model.state_dict(), optimizer=opt, scheduler=sched,
                           extra={"guard": guard.state_dict(), "note": "x"})
    del model, opt, sched
    # A fresh process state: other weights, other RNG states, new optimizer/scheduler objects.
    seed_everything(1234)
    model, opt, sched = _build(77)
    guard = NonFiniteGuard(2)
    got = load_checkpoint(latest_checkpoint(tmp_path), model=model, optimizer=opt, scheduler=sched)
    guard.load_state_dict(got.extra["guard"])
    assert got.path == path and got.step == n and got.extra["note"] == "x"
    assert sched.last_epoch == n and opt.param_groups[0]["betas"] == (0.9, 0.95)
    second = _train(model, opt, sched, guard, range(n))

    assert first + second == straight  # bitwise: float lists compared with ==
    for k, v in model.state_dict().items():
        assert torch.equal(v, final_straight[k]), k
    assert not any(p.suffix == ".pt" or p.suffix == ".pkl" for p in path.iterdir())
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors", "optimizer.json", "optimizer.safetensors", "rng.json", "rng.safetensors",
        "scheduler.json", "state.json"]


def test_failed_save_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    model, opt, sched = _build(0)
    save_checkpoint(root, 1, model.state_dict(), optimizer=opt)
    real = ck._save_state

    def boom(state, stem):
        real(state, stem)
        if stem.name == "scheduler":
            raise OSError("disk full")

    monkeypatch.setattr(ck, "_save_state", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(root, 2, model.state_dict(), optimizer=opt, scheduler=sched)
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]  # no step_000002, no temp dir
    assert latest_checkpoint(tmp_path).name == "step_000001"
    # non-JSON extra state fails before anything is renamed into place, and an existing step is kept intact
    with pytest.raises(CheckpointError, match="extra: cannot store 'obj'"):
        save_checkpoint(root, 1, {"w": torch.zeros(2)}, extra={"obj": object()})
    assert load_checkpoint(root / "step_000001", restore_rng=False).model_state.keys() == model.state_dict().keys()
    assert sorted(p.name for p in root.iterdir()) == ["step_000001"]


def test_resave_same_step_replaces_atomically(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, 3, {"w": torch.zeros(2)})
    save_checkpoint(root, 3, {"w": torch.ones(2)})
    assert torch.equal(load_checkpoint(root / "step_000003").model_state["w"], torch.ones(2))
    assert [p.name for p in root.iterdir()] == ["step_000003"]


def test_keep_last_pruning_and_latest(tmp_path):
    root = tmp_path / "checkpoints"
    assert latest_checkpoint(tmp_path) is None
    for step in (5, 10, 15, 20):
        save_checkpoint(root, step, {"w": torch.full((2,), float(step))}, keep_last=2)
    assert [s for s, _ in list_checkpoints(root)] == [15, 20]
    assert latest_checkpoint(tmp_path).name == "step_000020"
    (root / "step_000099").mkdir()  # no state.json: incomplete, ignored
    (root / ".tmp-step_000100-abc").mkdir()
    assert latest_checkpoint(tmp_path).name == "step_000020"


def test_tied_weights_and_extra_tensors(tmp_path):
    emb = nn.Embedding(5, 3)
    head = nn.Linear(3, 5, bias=False)
    head.weight = emb.weight  # tied: safetensors refuses shared storage unless deduplicated
    state = {"emb.weight": emb.weight, "head.weight": head.weight}
    p = save_checkpoint(tmp_path, 0, state, extra={"ema": torch.arange(3.0), "k": [1, (2, 3)]})
    got = load_checkpoint(p)
    assert torch.equal(got.model_state["head.weight"], emb.weight.detach())
    assert torch.equal(got.extra["ema"], torch.arange(3.0)) and got.extra["k"] == [1, (2, 3)]


def test_load_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not a complete zreward checkpoint"):
        load_checkpoint(tmp_path)
    p = save_checkpoint(tmp_path, 1, {"w": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="RNG states for 1 rank"):
        load_checkpoint(p, rank=1)
    model, opt, _ = _build(0)
    with pytest.raises(CheckpointError, match="no optimizer state saved"):
        load_checkpoint(p, optimizer=opt)


def test_atomic_write_text(tmp_path):
    f = atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    assert f.read_text() == "hello" and [p.name for p in f.parent.iterdir()] == ["b.txt"]
