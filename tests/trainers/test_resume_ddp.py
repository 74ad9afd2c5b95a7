"""SFT: exact resume (N steps straight == N/2 + resume + N/2) and 2 processes (torchrun, gloo) == 1 process."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from torchrun_helper import run_torchrun
from zreward.trainers import sft
from zreward.trainers.run_utils import read_metrics

SCRIPT = Path(__file__).with_name("sft_ddp_script.py")
STEPS, PPB = 4, 2


def _cfg(model, world, out: Path) -> sft.Config:
    cfg = sft.Config()
    cfg.model.init_from, cfg.data.train = str(model), str(world / "train")
    cfg.data.prompts_per_batch = PPB
    cfg.accelerator.device = "cpu"
    cfg.run.output_dir, cfg.run.max_steps, cfg.run.save_every, cfg.run.progress = str(out), STEPS, STEPS // 2, False
    cfg.optim.lr, cfg.optim.warmup_steps = 3e-3, 1
    cfg.sft.pair_weight = 0.5
    return cfg


def test_resume_gives_identical_losses_and_weights(tiny_model, small_world, tmp_path):
    straight = tmp_path / "straight"
    sft.train(_cfg(tiny_model, small_world, straight))
    resumed = tmp_path / "resumed"
    shutil.copytree(straight, resumed)
    shutil.rmtree(resumed / "checkpoints" / f"step_{STEPS:06d}")
    shutil.rmtree(resumed / "final")
    sft.train(_cfg(tiny_model, small_world, resumed))  # run.resume=auto picks step STEPS/2
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(resumed / "metrics.jsonl")
    assert [e["step"] for e in b] == list(range(1, STEPS + 1))
    assert [e["loss"] for e in b] == [e["loss"] for e in a]  # bitwise
    assert [e["grad_norm"] for e in b] == [e["grad_norm"] for e in a]
    wa = load_file(str(straight / "final" / "model.safetensors"))
    wb = load_file(str(resumed / "final" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a[-1]["loss"] < a[0]["loss"]


def test_two_processes_match_one(tiny_model, small_world, tmp_path):
    """Same global batch (PPB prompt groups) on 1 and 2 processes: same losses up to float summation order
    (each rank sums its half, the all-reduce adds the halves; bitwise equality is not expected)."""
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"losses{n}.json"
        run_torchrun(SCRIPT, n, [out, tiny_model, small_world / "train", tmp_path / f"run{n}", STEPS, PPB], timeout=240)
        runs[n] = json.loads(out.read_text())
    assert (runs[1]["world"], runs[2]["world"]) == (1, 2)
    torch.testing.assert_close(torch.tensor(runs[2]["loss"]), torch.tensor(runs[1]["loss"]), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.tensor(runs[2]["kl"]), torch.tensor(runs[1]["kl"]), rtol=1e-5, atol=1e-6)
    assert runs[1]["loss"][-1] < runs[1]["loss"][0]
