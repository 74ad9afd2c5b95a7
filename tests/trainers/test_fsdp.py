"""FSDP2 (`fully_shard` through accelerate) on CPU: torchrun, gloo, the settings of configs/accelerate/fsdp.yaml.

2 FSDP processes give the losses, held-out metrics and exported weights of the unsharded run with the same global
batch (SFT: 1 process; GDSO, whose chains are sampled per rank: 2 unsharded processes), and resuming from a
sharded checkpoint reproduces the straight run bitwise. Refusals (DeepSpeed, FSDP1, a checkpoint of the other
kind or another process count) are checked in process.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from torchrun_helper import run_torchrun
from zreward.models.scorer import load_scorer
from zreward.trainers.checkpoint import CheckpointError, load_checkpoint
from zreward.trainers.common import val_pairwise_accuracy
from zreward.trainers.data import load_train_data
from zreward.trainers.run_utils import AcceleratorConfig, make_accelerator
from zreward.trainers.sharded_checkpoint import load_sharded_checkpoint

SCRIPT = Path(__file__).with_name("fsdp_script.py")
FSDP_YAML = Path(__file__).parents[2] / "configs" / "accelerate" / "fsdp.yaml"


def fsdp_env(path: Path = FSDP_YAML) -> dict[str, str]:
    """The environment `accelerate launch --config_file PATH` gives each process (`fsdp_config.fsdp_x` → `FSDP_X`,
    as accelerate's launcher writes it). Mixed precision is left to the trainer config (float32 here)."""
    cfg = yaml.safe_load(path.read_text())
    assert cfg["distributed_type"] == "FSDP" and cfg["fsdp_config"]["fsdp_version"] == 2
    env = {"ACCELERATE_USE_FSDP": "true"}
    for k, v in cfg["fsdp_config"].items():
        env[k.upper()] = str(v).lower() if isinstance(v, bool) else str(v)
    return env


def _run(tmp_path: Path, name: str, nproc: int, method: str, args: list[str], fsdp: bool) -> dict:
    out = tmp_path / f"{name}.json"
    run_torchrun(SCRIPT, nproc, [out, method, *args, f"run.output_dir={tmp_path / name}"], timeout=300,
                 env=fsdp_env() if fsdp else {"ACCELERATE_USE_FSDP": "false"})
    return json.loads(out.read_text())


def _resume_copy(tmp_path: Path, name: str, step: int) -> None:
    """`name`'s run dir as an abrupt stop right after its step-`step` checkpoint would leave it (later checkpoints,
    metrics lines and the final scorer gone; the metrics file is cut by the resume itself)."""
    shutil.copytree(tmp_path / name, tmp_path / f"{name}_resumed")
    for p in (tmp_path / f"{name}_resumed" / "checkpoints").iterdir():
        if int(p.name.split("_")[1]) > step:
            shutil.rmtree(p)
    shutil.rmtree(tmp_path / f"{name}_resumed" / "final")


def _col(run: dict, key: str) -> torch.Tensor:
    return torch.tensor([e[key] for e in run["metrics"]], dtype=torch.float64)


def _weights(run: dict) -> dict[str, torch.Tensor]:
    return load_file(str(Path(run["final"]) / "model.safetensors"))


@pytest.mark.slow
def test_fsdp_sft_equals_one_process_and_resumes_bitwise(tiny_model, small_world, tmp_path):
    args = [f"model.init_from={tiny_model}", f"data.train={small_world / 'train'}", f"data.val={small_world / 'val'}",
            "data.val_max_images=12", "data.prompts_per_batch=4", "accelerator.gradient_accumulation_steps=2",
            "run.max_steps=4", "run.save_every=2", "optim.lr=3e-3", "sft.pair_weight=0.5",
            "model.gradient_checkpointing=true", "data.eval_every=2"]  # the step-2 checkpoint follows an evaluation
    one = _run(tmp_path, "one", 1, "sft", args, fsdp=False)
    two = _run(tmp_path, "fsdp", 2, "sft", args, fsdp=True)
    assert (one["world"], two["world"]) == (1, 2)
    # the same global batch: equal up to float summation order
    for key in ("loss", "kl", "pair", "grad_norm"):
        torch.testing.assert_close(_col(two, key), _col(one, key), rtol=1e-5, atol=1e-7)
    assert _col(one, "loss")[-1] < _col(one, "loss")[0]
    # validation at the last step, run by both FSDP ranks (every forward is a collective), logged by rank 0: that
    # of the unsharded run up to the weights' float noise (val_acc is left out there: after 4 steps most held-out
    # scores lie within 1e-5 of each other, and noise of 1e-6 flips the tie-aware accuracy of a pair, observed)
    # and exactly what one process measures with the exported final weights
    assert two["metrics"][-1]["val_kl"] == pytest.approx(one["metrics"][-1]["val_kl"], rel=1e-5)
    val = load_train_data(small_world / "val", max_images=12)
    alone = val_pairwise_accuracy(load_scorer(two["final"]), val, batch_size=64)
    assert two["metrics"][-1]["val_acc"] == alone["val_acc"]
    assert two["metrics"][-1]["val_kl"] == pytest.approx(alone["val_kl"], rel=1e-6)
    # the checkpoints are sharded; the final scorer is one HF directory equal to the unsharded run's
    ckpt = tmp_path / "fsdp" / "checkpoints" / "step_000004"
    assert sorted(p.name for p in ckpt.glob("model*")) == ["model_rank00000.safetensors",
                                                           "model_rank00001.safetensors"]
    wa, wb = _weights(one), _weights(two)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    # an abrupt stop after the step-2 checkpoint, resumed: bitwise the straight run
    _resume_copy(tmp_path, "fsdp", 2)
    resumed = _run(tmp_path, "fsdp_resumed", 2, "sft", args, fsdp=True)
    assert [e["step"] for e in resumed["metrics"]] == [1, 2, 3, 4]
    for key in ("loss", "grad_norm", "val_kl"):
        assert [e.get(key) for e in resumed["metrics"]] == [e.get(key) for e in two["metrics"]], key
    wr = _weights(resumed)
    assert all(torch.equal(wr[k], wb[k]) for k in wb)


@pytest.mark.slow
def test_fsdp_gdso_equals_unsharded_processes_and_resumes_bitwise(tiny_model, small_world, tmp_path):
    # `--head-rows 5`: the output head runs in 5-row chunks (as at a 248k vocabulary), so ranks with other chain
    # counts call it a different number of times; groups_per_micro: 2 micro-batches per rank
    args = ["--head-rows", "5", f"model.init_from={tiny_model}", f"data.train={small_world / 'train'}",
            f"data.val={small_world / 'val'}", "data.val_max_images=8", "data.prompts_per_batch=4",
            "data.max_per_prompt=3", "run.max_steps=4", "run.save_every=2", "optim.lr=3e-3", "gdso.group_size=2",
            "gdso.max_new_tokens=4", "gdso.dims_per_step=2", "gdso.groups_per_micro=1", "gdso.kl_coef=0.1",
            "gdso.ppo_epochs=2"]
    plain = _run(tmp_path, "plain", 2, "gdso", args, fsdp=False)
    two = _run(tmp_path, "fsdp", 2, "gdso", args, fsdp=True)
    for key in ("loss", "pg_loss", "dist_loss", "pair_loss", "kl", "reward_mean", "grad_norm"):
        torch.testing.assert_close(_col(two, key), _col(plain, key), rtol=1e-5, atol=1e-6)
    assert two["metrics"][-1]["val_kl"] == pytest.approx(plain["metrics"][-1]["val_kl"], rel=1e-5)
    assert _col(plain, "dist_loss")[-1] < _col(plain, "dist_loss")[0]
    _resume_copy(tmp_path, "fsdp", 2)
    resumed = _run(tmp_path, "fsdp_resumed", 2, "gdso", args, fsdp=True)
    for key in ("loss", "kl", "reward_mean", "grad_norm"):  # the rollouts' sampling RNG came back on both ranks
        assert [e[key] for e in resumed["metrics"]] == [e[key] for e in two["metrics"]], key


@pytest.mark.slow
def test_fsdp_gdso_chunked_generation_and_lora(tiny_model, small_world, tmp_path):
    """`model.generation_batch` splits a rollout into generate calls per rank: a rank with fewer calls repeats its
    last one (every generate step is a collective); LoRA adapters shard, resume and merge into the export."""
    args = [f"model.init_from={tiny_model}", f"data.train={small_world / 'train'}", "data.prompts_per_batch=4",
            "data.max_per_prompt=3", "run.max_steps=2", "run.save_every=1", "optim.lr=3e-3", "gdso.group_size=2",
            "gdso.max_new_tokens=4", "gdso.dims_per_step=2", "model.generation_batch=4", "model.lora=true",
            "gdso.kl_coef=0.1"]
    two = _run(tmp_path, "fsdp", 2, "gdso", args, fsdp=True)
    _resume_copy(tmp_path, "fsdp", 1)
    resumed = _run(tmp_path, "fsdp_resumed", 2, "gdso", args, fsdp=True)
    assert [e["loss"] for e in resumed["metrics"]] == [e["loss"] for e in two["metrics"]]
    merged = _weights(two)
    assert not any("lora" in k or "base_model" in k for k in merged)  # one plain HF directory: adapters merged
    base, final = (load_scorer(p).model.state_dict() for p in (tiny_model, two["final"]))
    assert sorted(final) == sorted(base)
    assert any(not torch.equal(final[k], base[k]) for k in base)  # and trained
    assert all(torch.equal(merged[k], v) for k, v in _weights(resumed).items())


@pytest.mark.slow
def test_fsdp_job_killed_with_sigkill_in_a_save_resumes_bitwise(tiny_model, small_world, tmp_path):
    """SIGKILL of every process of an FSDP job inside its step-4 save (all shards written, not yet renamed into
    place), then a plain restart: it resumes from step 2, sweeps the dead save's directory and gives the losses
    and weights of the straight run, bitwise."""
    args = [f"model.init_from={tiny_model}", f"data.train={small_world / 'train'}", "data.prompts_per_batch=4",
            "run.max_steps=6", "run.save_every=2", "optim.lr=3e-3", "sft.pair_weight=0.5"]
    straight = _run(tmp_path, "straight", 2, "sft", args, fsdp=True)
    run_dir = tmp_path / "killed"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
           str(tmp_path / "unused.json"), "sft", "--sigkill-at-save", "4", *args, f"run.output_dir={run_dir}",
           "accelerator.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ZREWARD_NO_PROGRESS": "1", **fsdp_env()}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir() if not p.name.startswith(".")) == ["step_000002"]
    dead = [p for p in ckpts.iterdir() if p.name.startswith(".step_000004.tmp-")]
    assert len(dead) == 1 and (dead[0] / "model_rank00001.safetensors").is_file()  # the shards were written
    resumed = _run(tmp_path, "killed", 2, "sft", args, fsdp=True)
    assert [e["step"] for e in resumed["metrics"]] == list(range(1, 7))
    for key in ("loss", "grad_norm"):
        assert [e[key] for e in resumed["metrics"]] == [e[key] for e in straight["metrics"]], key
    wa, wb = _weights(straight), _weights(resumed)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]  # the dead save's directory was swept


# ------------------------------------------------------------------------------------------ in process


def test_deepspeed_and_fsdp1_configurations_are_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(ValueError, match="DeepSpeed.*DDP and FSDP2 only"):
        make_accelerator(AcceleratorConfig(device="cpu"))
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="FSDP version 1.*FSDP2 only"):
        make_accelerator(AcceleratorConfig(device="cpu"))


def _fake_checkpoint(path: Path, shards: int | None) -> Path:
    path.mkdir(parents=True)
    state = {"format_version": 1, "step": 2, "world_size": 2, "extra": {}}
    if shards is not None:
        state["shards"] = shards
    (path / "state.json").write_text(json.dumps(state))
    return path


def test_a_checkpoint_of_the_other_kind_or_process_count_is_refused_by_name(tmp_path):
    sharded = _fake_checkpoint(tmp_path / "sharded" / "step_000002", shards=2)
    with pytest.raises(CheckpointError, match="sharded checkpoint written by 2 FSDP processes"):
        load_checkpoint(sharded)
    kw = dict(model=None, optimizer=None, scheduler=None, lora=False, rank=0)
    with pytest.raises(CheckpointError, match="written by 2 FSDP processes; resume with the same number"):
        load_sharded_checkpoint(sharded, world=4, **kw)
    plain = _fake_checkpoint(tmp_path / "plain" / "step_000002", shards=None)
    with pytest.raises(CheckpointError, match="an unsharded checkpoint"):
        load_sharded_checkpoint(plain, world=2, **kw)


def _other_trainers(tiny_factory, world: Path, tmp: Path) -> dict[str, list[str]]:
    """Short runs of the trainers not covered above (val splits where they evaluate; caption and GRPO generate)."""
    student, teacher = tiny_factory(), tiny_factory(seed=1)
    common = [f"model.init_from={student}", f"data.train={world / 'train'}", "run.max_steps=3", "optim.lr=3e-3"]
    val = [f"data.val={world / 'val'}", "data.val_max_images=8"]
    return {
        "caption": [*common, *val, "data.images_per_batch=8", "caption.val_generate=2"],
        "grpo": [*common, *val, "data.prompts_per_batch=2", "data.max_per_prompt=3", "grpo.group_size=2",
                 "grpo.max_new_tokens=3", "grpo.dims_per_step=2"],
        "rewarddance": [*common, *val, "rewarddance.pairs_per_batch=8"],
        "risd": [*common, f"teacher.path={teacher}", "teacher.samples=2", "teacher.batch_size=8",
                 "data.max_images=12", "data.prompts_per_batch=2", f"teacher.cache_dir={tmp / 'cache'}"],
        "opd": [*common, *val, f"teacher.path={teacher}", "opd.images_per_batch=4"],
    }


@pytest.mark.slow
@pytest.mark.parametrize("method", ["caption", "grpo", "rewarddance", "risd", "opd"])
def test_fsdp_other_trainers_equal_their_unsharded_two_process_runs(method, tiny_factory, small_world, tmp_path):
    args = _other_trainers(tiny_factory, small_world, tmp_path)[method]
    plain = _run(tmp_path, "plain", 2, method, args, fsdp=False)
    two = _run(tmp_path, "fsdp", 2, method, args, fsdp=True)
    torch.testing.assert_close(_col(two, "loss"), _col(plain, "loss"), rtol=1e-5, atol=1e-6)
    assert {k for k in plain["metrics"][-1] if k.startswith("val_")} == {k for k in two["metrics"][-1]
                                                                          if k.startswith("val_")}
    wa, wb = _weights(plain), _weights(two)
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
