"""Every YAML under configs/ is valid: trainer configs parse into their trainer's Config, accelerate configs have
the keys accelerate needs, and the real-scale models build on the meta device from configs/arch/ (no download)."""
from __future__ import annotations

import importlib
import importlib.util
import json
from pathlib import Path

import pytest
import torch
import yaml

from zreward.trainers.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TRAINER_YAMLS = sorted(p for p in CONFIGS.glob("*/*.yaml") if p.parent.name not in ("accelerate",))
ARCH = {json.loads(p.read_text())["hub_name"]: p for p in sorted((CONFIGS / "arch").glob("*.json"))}


def _has_trainer(method: str) -> bool:
    return importlib.util.find_spec(f"zreward.trainers.{method}") is not None


def test_there_are_configs_for_sft_and_risd():
    names = {(p.parent.name, p.stem) for p in TRAINER_YAMLS}
    assert {("sft", "tiny_cpu"), ("sft", "cold_start_tiny_cpu"), ("risd", "tiny_cpu"), ("sft", "qwen3_5_9b"),
            ("risd", "qwen3_5_9b")} <= names


@pytest.mark.parametrize("path", [p for p in TRAINER_YAMLS if _has_trainer(p.parent.name)],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_trainer_yaml_parses_into_its_config(path):
    module = importlib.import_module(f"zreward.trainers.{path.parent.name}")
    cfg = load_config(module.Config, path, [])
    assert cfg.run.output_dir.startswith("runs/")
    assert cfg.model.init_from, f"{path}: model.init_from is empty"
    if path.stem.startswith("qwen3_5"):  # real scale: GPU, bf16, activation checkpointing
        assert cfg.accelerator.mixed_precision == "bf16" and cfg.model.dtype == "bf16"
        assert cfg.model.gradient_checkpointing


def test_every_method_dir_has_a_trainer_or_is_reported():
    """A configs/<method>/ directory whose trainer does not exist yet is not silently ignored."""
    methods = {p.parent.name for p in TRAINER_YAMLS}
    missing = sorted(m for m in methods if not _has_trainer(m))
    assert missing == [], f"configs without a trainer module: {missing}"


def test_accelerate_configs():
    """The one accelerate config is FSDP2 (DeepSpeed was removed: refused by `make_accelerator`), with activation
    checkpointing left to `model.gradient_checkpointing`; tests/trainers/test_fsdp.py runs with its settings."""
    assert sorted(p.name for p in (CONFIGS / "accelerate").glob("*.yaml")) == ["fsdp.yaml"]
    fsdp = yaml.safe_load((CONFIGS / "accelerate" / "fsdp.yaml").read_text())
    assert fsdp["distributed_type"] == "FSDP" and fsdp["fsdp_config"]["fsdp_version"] == 2
    assert fsdp["fsdp_config"]["fsdp_activation_checkpointing"] is False
    assert fsdp["mixed_precision"] == "bf16" and fsdp["num_processes"] >= 1 and fsdp["use_cpu"] is False
    for p in CONFIGS.rglob("*.yaml"):
        assert "deepspeed" not in p.read_text().lower(), p


def _real_scale_models() -> list[str]:
    names = set()
    for p in TRAINER_YAMLS:
        if p.stem.startswith("qwen3_5"):
            init = (yaml.safe_load(p.read_text()).get("model") or {}).get("init_from", "")
            if "/" in init and not init.startswith(("runs/", "/", ".")):
                names.add(init)
    return sorted(names)


def test_real_scale_models_have_an_architecture_file():
    names = _real_scale_models()
    assert {"Qwen/Qwen3.5-9B", "Qwen/Qwen3.5-27B"} <= set(names)
    assert set(names) <= set(ARCH), f"no configs/arch/*.json for {sorted(set(names) - set(ARCH))}"


@pytest.mark.parametrize("hub_name", sorted(ARCH))
def test_real_scale_model_builds_on_meta_device(hub_name):
    from transformers import AutoConfig, AutoModelForImageTextToText

    from zreward.models.families import get_family

    spec = json.loads(ARCH[hub_name].read_text())
    config = AutoConfig.for_model(**spec["config"])
    assert get_family(config.model_type).name == "qwen3_5"  # zreward can score with it
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(config)
    n = sum(p.numel() for p in model.parameters()) / 1e9
    lo, hi = spec["expected_params_b"]
    assert lo <= n <= hi, f"{hub_name}: {n:.2f}B parameters, expected {lo}-{hi}B"
    assert all(p.device.type == "meta" for p in model.parameters())  # nothing was allocated
    lm = model.model.language_model.config
    assert lm.layer_types.count("full_attention") * 4 == lm.num_hidden_layers  # Qwen3.5's 3:1 hybrid
