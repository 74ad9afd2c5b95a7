"""Session-wide fixtures: small ShapesWorld datasets built locally (no network, seconds)."""
from __future__ import annotations

import os

import pytest

# One intra-op thread: the tiny models gain nothing from a second one, and on a busy 2-core machine a spinning
# second thread made the suite several times slower (measured). Set before torch is imported; torchrun children
# inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("ZREWARD_NO_PROGRESS", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


@pytest.fixture(scope="session")
def small_world(tmp_path_factory):
    """A 40-prompt ShapesWorld (train/val/test/ood split dirs), built once per test session."""
    from zreward.data.shapes_world.build import build_world

    return build_world(tmp_path_factory.mktemp("world") / "sw", prompts=40, seed=0)
