"""Fixtures shared by the trainer tests."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory):
    """A tiny random Qwen2-VL scorer directory (direct mode), built once per session."""
    from zreward.models.tiny import init_tiny

    return init_tiny("qwen2_vl", tmp_path_factory.mktemp("tiny_vlm") / "m", preset="tiny", seed=0)


@pytest.fixture
def sft_config(tiny_vlm, small_world):
    """make(out, *overrides) -> an SFT config on the tiny VLM and the small world (2 prompt groups per step)."""
    from zreward.trainers import sft
    from zreward.trainers.config import load_config

    def make(out, *over: str):
        return load_config(sft.Config, None, [f"model.init_from={tiny_vlm}", f"data.train={small_world / 'train'}",
                                              "data.prompts_per_batch=2", "run.progress=false",
                                              f"run.output_dir={out}", *over])

    return make


@pytest.fixture
def leafy_score_chains(monkeypatch):
    """Patches `rollout.score_chains` so that its log-probs and level logits are leaf tensors (gradients readable);
    returns the dict whose "cf" holds the last `ChainForward` it produced."""
    from zreward.models.scorer import ChainForward
    from zreward.trainers import rollout as R

    captured = {}
    real = R.score_chains

    def leafy(scorer, ro):
        cf = real(scorer, ro)
        captured["cf"] = ChainForward(cf.token_logprobs.detach().requires_grad_(), cf.token_mask,
                                      cf.level_logits.detach().requires_grad_(), cf.in_level_mass)
        return captured["cf"]

    monkeypatch.setattr(R, "score_chains", leafy)
    return captured
