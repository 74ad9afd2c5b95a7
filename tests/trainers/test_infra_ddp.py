"""torchrun (gloo, CPU): 2 processes match 1 with the same global batch; a 2-process resume is bitwise exact."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from torchrun_helper import run_torchrun

SCRIPT = Path(__file__).with_name("ddp_mlp_script.py")


def _run(tmp_path: Path, name: str, nproc: int, *args) -> dict:
    out = tmp_path / f"{name}.json"
    run_torchrun(SCRIPT, nproc, [out, tmp_path / name, *args], timeout=90)
    return json.loads(out.read_text())


def test_two_processes_match_one(tmp_path):
    bad_step = 3
    one = _run(tmp_path, "one", 1, "--steps", 8, "--bad-step", bad_step)
    two = _run(tmp_path, "two", 2, "--steps", 8, "--bad-step", bad_step)
    assert (one["world"], two["world"]) == (1, 2)
    # the NaN seen by the last rank only made every rank skip that step (else DDP would hang or diverge)
    assert one["skipped"] == two["skipped"] == 1
    assert math.isnan(one["losses"][bad_step]) and math.isnan(two["losses"][bad_step])
    # same global batch: equal up to float summation order (all-reduce of two half-batch means)
    torch.testing.assert_close(torch.tensor(two["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-6,
                               equal_nan=True)
    assert one["losses"][-1] < 0.5 * one["losses"][0]  # it trained
    for a, b in zip(one["params"], two["params"]):
        torch.testing.assert_close(torch.tensor(b), torch.tensor(a), rtol=1e-5, atol=1e-5)


def test_two_process_resume_is_exact(tmp_path):
    straight = _run(tmp_path, "straight", 2, "--steps", 8, "--dropout", 0.3, "--save-every", 4)
    # resume a copy of the run from its step-4 checkpoint; both ranks' dropout RNG must come back
    shutil.copytree(tmp_path / "straight", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_000008")
    resumed = _run(tmp_path, "resumed", 2, "--steps", 8, "--dropout", 0.3, "--save-every", 4, "--resume", "auto")
    assert len(resumed["losses"]) == 8  # metrics.jsonl: 4 kept from before the checkpoint + 4 new lines
    assert resumed["losses"] == straight["losses"]  # bitwise
    assert resumed["params"] == straight["params"]
