"""The one run loop (zreward.trainers.loop / .rl): cadences, clipping, accumulation and precision settings."""
from __future__ import annotations

import subprocess
import sys

import pytest

from zreward.trainers import grpo, sft
from zreward.trainers.config import ConfigError, load_config
from zreward.trainers.run_utils import read_metrics


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from zreward.models.tiny import init_tiny

    return init_tiny("qwen2_vl", tmp_path_factory.mktemp("loop_model") / "m", preset="tiny", seed=0)


def _sft(tiny, world, out, *over: str) -> sft.Config:
    return load_config(sft.Config, None, [f"model.init_from={tiny}", f"data.train={world / 'train'}",
                                          "data.prompts_per_batch=2", "run.progress=false", "run.max_steps=3",
                                          f"run.output_dir={out}", *over])


def _grpo(tiny, world, out, *over: str) -> grpo.Config:
    return load_config(grpo.Config, None, [f"model.init_from={tiny}", f"data.train={world / 'train'}",
                                           "data.prompts_per_batch=2", "data.max_per_prompt=2", "run.progress=false",
                                           "run.max_steps=2", f"run.output_dir={out}", "grpo.group_size=2",
                                           "grpo.max_new_tokens=3", "grpo.dims_per_step=1", *over])


def test_log_every_zero_logs_the_last_step_and_evaluations(tiny, small_world, tmp_path):
    cfg = _sft(tiny, small_world, tmp_path / "a", "run.log_every=0", "run.max_steps=4", "data.eval_every=2",
               f"data.val={small_world / 'val'}", "data.val_max_images=8")
    sft.train(cfg)
    steps = [e["step"] for e in read_metrics(tmp_path / "a" / "metrics.jsonl")]
    assert steps == [2, 4]  # no division by zero; the eval step and the last step
    with pytest.raises(ConfigError, match="run.log_every"):
        _sft(tiny, small_world, tmp_path / "b", "run.log_every=-1")


def test_grad_clip_zero_means_no_clipping_and_the_norm_is_still_measured(tiny, small_world, tmp_path):
    sft.train(_sft(tiny, small_world, tmp_path / "off", "optim.grad_clip=0", "optim.lr=0.01"))
    sft.train(_sft(tiny, small_world, tmp_path / "huge", "optim.grad_clip=1e9", "optim.lr=0.01"))
    a, b = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("off", "huge"))
    assert [e["loss"] for e in a] == [e["loss"] for e in b]
    assert all(e["grad_norm"] == e["grad_norm"] and e["grad_norm"] > 0 for e in a)  # finite, measured


def test_rl_gradient_accumulation_is_micro_batches_of_whole_groups(tiny, small_world, tmp_path):
    """accelerator.gradient_accumulation_steps=2 with 2 prompt groups = gdso/grpo groups_per_micro=1."""
    grpo.train(_grpo(tiny, small_world, tmp_path / "ga", "accelerator.gradient_accumulation_steps=2"))
    grpo.train(_grpo(tiny, small_world, tmp_path / "gpm", "grpo.groups_per_micro=1"))
    a, b = (read_metrics(tmp_path / d / "metrics.jsonl") for d in ("ga", "gpm"))
    for key in ("loss", "reward_mean", "grad_norm"):
        assert [e[key] for e in a] == [e[key] for e in b], key
    with pytest.raises(ValueError, match="groups_per_micro or accelerator.gradient_accumulation_steps"):
        grpo.train(_grpo(tiny, small_world, tmp_path / "both", "accelerator.gradient_accumulation_steps=2",
                         "grpo.groups_per_micro=1"))


def test_rl_mixed_precision_bf16_is_applied_and_fp16_refused(tiny, small_world, tmp_path):
    """bf16 runs in a fresh process (accelerate's precision is process-wide state)."""
    grpo.train(_grpo(tiny, small_world, tmp_path / "fp32", "run.max_steps=1"))
    args = [f"model.init_from={tiny}", f"data.train={small_world / 'train'}", "data.prompts_per_batch=2",
            "data.max_per_prompt=2", "run.progress=false", "run.max_steps=1", f"run.output_dir={tmp_path / 'bf16'}",
            "grpo.group_size=2", "grpo.max_new_tokens=3", "grpo.dims_per_step=1", "accelerator.mixed_precision=bf16",
            "accelerator.device=cpu"]
    subprocess.run([sys.executable, "-c", f"from zreward.trainers import grpo; grpo.main({args!r})"], check=True,
                   capture_output=True)
    a, b = (read_metrics(tmp_path / d / "metrics.jsonl")[0] for d in ("fp32", "bf16"))
    assert b["loss"] == b["loss"] and b["in_level_mass"] != a["in_level_mass"]  # bf16 autocast changed the maths
    with pytest.raises(ValueError, match="mixed_precision=fp16"):  # refused before any accelerator state is set
        grpo.train(_grpo(tiny, small_world, tmp_path / "fp16", "accelerator.mixed_precision=fp16"))


def test_one_micro_batch_trainers_refuse_accumulation(tiny, small_world, tmp_path):
    from zreward.trainers import rewarddance

    cfg = load_config(rewarddance.Config, None, [f"model.init_from={tiny}", f"data.train={small_world / 'train'}",
                                                 f"run.output_dir={tmp_path / 'rd'}",
                                                 "accelerator.gradient_accumulation_steps=2"])
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        rewarddance.train(cfg)
