"""Fixtures for the serving tests: one random tiny Scorer, real servers on loopback (uvicorn in a thread)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def scorer(tiny_model):
    from zreward.models.scorer import load_scorer

    return load_scorer(tiny_model)


@pytest.fixture
def start(scorer, tiny_model, loopback_servers):
    """start(**ServeConfig fields) → a running ServerHandle; all are stopped at teardown."""
    return lambda **kw: loopback_servers(scorer, tiny_model, **kw)
