"""Resume protects the record: changed settings refused (or kept on record), truncated checkpoints skipped,
debris of interrupted saves swept."""
from __future__ import annotations

import json

import pytest

from zreward.trainers import sft
from zreward.trainers.config import parse_cli
from zreward.trainers.resume import ABSENT, checkpoint_problem, config_changes
from zreward.trainers.run_utils import read_metrics

KEEP_ALL = ("run.save_every=1", "run.keep_last=null")


def test_config_changes_names_keys_and_ignores_run_bookkeeping():
    old = {"run": {"max_steps": 2, "seed": 0, "progress": True}, "optim": {"lr": 1e-3, "schedule": "constant"}}
    new = {"run": {"max_steps": 4, "seed": 0, "progress": False}, "optim": {"lr": 2e-3, "schedule": "constant"},
           "gdso": {"eval_temperature": 0.3}}
    assert config_changes(old, new) == {"optim.lr": (1e-3, 2e-3), "gdso.eval_temperature": (ABSENT, 0.3)}
    cos = {**new, "optim": {"lr": 1e-3, "schedule": "cosine"}}
    assert config_changes({**old, "optim": cos["optim"]}, cos) == {"gdso.eval_temperature": (ABSENT, 0.3),
                                                                   "run.max_steps": (2, 4)}


def test_settings_added_after_the_run_started_count_only_off_their_default():
    # the saved config predates model.lora_targets / gdso.eval_temperature: at their defaults they are no change
    old = {"model": {"lora": False}, "optim": {"lr": 1e-3}}
    defaults = {"model": {"lora": False, "lora_targets": None}, "gdso": {"eval_temperature": 0.3},
                "optim": {"lr": 1e-3}}
    assert config_changes(old, defaults, defaults) == {}
    new = {"model": {"lora": False, "lora_targets": ["q_proj"]}, "gdso": {"eval_temperature": 0.3},
           "optim": {"lr": 1e-3}}
    assert config_changes(old, new, defaults) == {"model.lora_targets": (ABSENT, ["q_proj"])}
    # a setting the saved config has and the new one lacks (removed from zreward) is shown as absent
    assert config_changes({**old, "x": {"y": 1}}, defaults, defaults) == {"x.y": (1, ABSENT)}


def test_changed_setting_is_refused_unless_resume_with_changes(tiny_vlm, small_world, tmp_path, sft_config):
    out = tmp_path / "run"
    sft.train(sft_config(out, *KEEP_ALL, "run.max_steps=1"))
    sft.train(sft_config(out, *KEEP_ALL, "run.max_steps=2"))  # a longer run: not a change of what is trained
    with pytest.raises(ValueError, match=r"optim.lr: 0.001 → 0.002.*--resume-with-changes"):
        sft.train(sft_config(out, *KEEP_ALL, "run.max_steps=3", "optim.lr=0.002"))
    cfg = parse_cli(sft.Config, ["--resume-with-changes", f"model.init_from={tiny_vlm}",
                                 f"data.train={small_world / 'train'}",
                                 "data.prompts_per_batch=2", "run.progress=false", "run.save_every=1",
                                 "run.keep_last=null", f"run.output_dir={out}", "run.max_steps=3", "optim.lr=0.002"],
                    prog="zreward train sft")
    assert cfg.run.resume_with_changes
    sft.train(cfg)
    assert [e["step"] for e in read_metrics(out / "metrics.jsonl")] == [1, 2, 3]
    assert "lr: 0.001" in (out / "config.before_step_000002.yaml").read_text()
    assert "lr: 0.002" in (out / "config.yaml").read_text()
    rec = [json.loads(x) for x in (out / "config_changes.jsonl").read_text().splitlines()]
    assert rec == [{"step": 2, "previous": "config.before_step_000002.yaml", "changes": {"optim.lr": [0.001, 0.002]}}]


def test_truncated_latest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys, sft_config):
    sft.train(sft_config(tmp_path / "straight", *KEEP_ALL, "run.max_steps=3"))
    out = tmp_path / "run"
    sft.train(sft_config(out, *KEEP_ALL, "run.max_steps=2"))
    weights = out / "checkpoints" / "step_000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # a copy cut short
    assert "bytes" in checkpoint_problem(weights.parent)
    assert checkpoint_problem(out / "checkpoints" / "step_000001") is None
    (out / "checkpoints" / ".tmp-step_000003-abc").mkdir()  # debris of a killed save
    (out / ".tmp-final-xyz").mkdir()
    capsys.readouterr()
    sft.train(sft_config(out, *KEEP_ALL, "run.max_steps=3"))
    err = capsys.readouterr().err
    assert "step_000002" in err and "not intact" in err
    a, b = read_metrics(tmp_path / "straight" / "metrics.jsonl"), read_metrics(out / "metrics.jsonl")
    assert [e["step"] for e in b] == [1, 2, 3]
    assert [e["loss"] for e in a] == [e["loss"] for e in b]  # steps 2-3 redone from step 1, bitwise
    assert checkpoint_problem(weights.parent) is None  # rewritten
    leftovers = [p.name for p in (*out.iterdir(), *(out / "checkpoints").iterdir()) if p.name.startswith(".")]
    assert leftovers == []
