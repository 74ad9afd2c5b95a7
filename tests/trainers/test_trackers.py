"""run.trackers (issue 14, item 6): TensorBoard / wandb get the metrics JSONL's values; missing packages fail
clearly at config time."""
from __future__ import annotations

import importlib.util

import pytest

from zreward.trainers.config import ConfigError, load_config
from zreward.trainers.run_utils import MetricsLogger, RunConfig, read_metrics
from zreward.trainers.trackers import start_trackers, tracker_values

HAS_TB = importlib.util.find_spec("tensorboard") is not None
HAS_WANDB = importlib.util.find_spec("wandb") is not None


def _events(logdir):
    """{tag: [(step, value)]} of scalars and {tag: [(step, text)]} of texts in TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    scalars = {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
    texts = {t: [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(t)]
             for t in acc.Tags()["tensors"]}
    return scalars, texts


def test_tracker_values_keep_numbers_and_text():
    assert tracker_values({"loss": 0.5, "n": 3, "ok": True, "chain": "two circles", "v": [1, 2], "x": None}) == \
        {"loss": 0.5, "n": 3, "ok": 1, "chain": "two circles"}


def test_unknown_or_missing_tracker_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown tracker\(s\) \['mlflow'\]"):
        load_config(RunConfig, None, ["trackers=[mlflow]"])
    with pytest.raises(ConfigError, match="each tracker once"):
        load_config(RunConfig, None, ["trackers=[tensorboard, tensorboard]"])


@pytest.mark.skipif(HAS_WANDB, reason="wandb is installed here: the missing-package message cannot be shown")
def test_missing_wandb_names_the_extra():
    with pytest.raises(ConfigError, match=r"wandb needs the 'wandb' package.*pip install 'zreward\[wandb\]'"):
        load_config(RunConfig, None, ["trackers=[wandb]"])


@pytest.mark.skipif(not HAS_TB, reason="tensorboard not installed (pip install 'zreward[tensorboard]')")
def test_metrics_logger_sends_every_line_to_tensorboard(tmp_path):
    trackers = start_trackers(["tensorboard"], tmp_path, {"run": {"seed": 0, "trackers": ["tensorboard"]}})
    with MetricsLogger(tmp_path / "metrics.jsonl", trackers=trackers) as log:
        log.log(1, {"loss": 0.25, "sample_chain": "a red circle | alignment: one red circle"})
        log.log(2, {"loss": 0.125, "lr": 1e-3})
    scalars, texts = _events(tmp_path / "tensorboard")
    assert scalars["loss"] == [(1, 0.25), (2, 0.125)] and scalars["lr"] == [(2, pytest.approx(1e-3))]
    assert texts["sample_chain/text_summary"] == [(1, "a red circle | alignment: one red circle")]
    assert [e["step"] for e in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]  # the JSONL stays the record


@pytest.mark.skipif(not HAS_TB, reason="tensorboard not installed (pip install 'zreward[tensorboard]')")
def test_trainer_logs_the_jsonl_metrics_to_tensorboard(sft_config, tmp_path):
    from zreward.trainers import sft

    sft.train(sft_config(tmp_path / "run", "run.max_steps=3", "run.trackers=[tensorboard]"))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    scalars, _ = _events(tmp_path / "run" / "tensorboard")
    for key in ("loss", "kl", "lr", "grad_norm"):
        assert scalars[key] == [(r["step"], pytest.approx(r[key], rel=1e-6)) for r in rows], key


@pytest.mark.skipif(not HAS_WANDB, reason="wandb not installed (pip install 'zreward[wandb]')")
def test_wandb_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    trackers = start_trackers(["wandb"], tmp_path / "run", {"run": {"seed": 0}})
    with MetricsLogger(tmp_path / "metrics.jsonl", trackers=trackers) as log:
        log.log(1, {"loss": 0.5, "sample_chain": "text"})
    assert list((tmp_path / "run" / "wandb").glob("offline-run-*"))
