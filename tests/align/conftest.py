"""Fixtures for the reward-guided T2I tests: a random tiny Scorer and a tiny pretrained generator (seconds)."""
from __future__ import annotations

import pytest

from zreward.align.pretrain import ARCHS

TINY_GEN = ARCHS["tiny"]


@pytest.fixture(scope="session")
def tiny_gen_dir(tmp_path_factory, small_world):
    """A generator pretrained for a few steps on the small world (weights barely trained: plumbing only)."""
    from zreward.align.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("gen") / "sft"
    return pretrain(PretrainConfig(data=str(small_world), out=str(out), steps=3, batch_size=4, warmup=1,
                                   grid_prompts=4, gen=TINY_GEN, seed=0))
