"""Fixtures for the serving tests: one random tiny Scorer, real servers on loopback (uvicorn in a thread)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def scorer(tiny_model):
    from zreward.models.scorer import load_scorer

    return load_scorer(tiny_model)


@pytest.fixture
def start(scorer, tiny_model):
    """start(**ServeConfig fields) → a running ServerHandle; all are stopped at teardown."""
    from zreward.serve.app import ServeConfig
    from zreward.serve.serve_cli import start_server_thread

    handles = []

    def _start(**kw):
        h = start_server_thread(scorer, ServeConfig(model=str(tiny_model), **kw))
        handles.append(h)
        return h

    yield _start
    for h in handles:
        if h.thread.is_alive():
            h.stop()
