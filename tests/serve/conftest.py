"""Fixtures for the serving tests: one random tiny Scorer, real servers on loopback (uvicorn in a thread)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def serve_scorer_dir(tmp_path_factory):
    from zreward.models.tiny import init_tiny

    return init_tiny("qwen2_vl", tmp_path_factory.mktemp("serve_scorer") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def scorer(serve_scorer_dir):
    from zreward.models.scorer import load_scorer

    return load_scorer(serve_scorer_dir)


@pytest.fixture
def start(scorer, serve_scorer_dir):
    """start(**ServeConfig fields) → a running ServerHandle; all are stopped at teardown."""
    from zreward.serve.app import ServeConfig
    from zreward.serve.serve_cli import start_server_thread

    handles = []

    def _start(**kw):
        h = start_server_thread(scorer, ServeConfig(model=str(serve_scorer_dir), **kw))
        handles.append(h)
        return h

    yield _start
    for h in handles:
        if h.thread.is_alive():
            h.stop()
