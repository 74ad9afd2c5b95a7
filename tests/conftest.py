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


@pytest.fixture(scope="session")
def tiny_factory(tmp_path_factory):
    """tiny_factory(family="qwen2_vl", seed=0, **scorer_kwargs) -> Path of a saved random tiny Scorer (preset "tiny"),
    built once per distinct arguments and shared by the whole session: tests read it, never write into it (a test
    that changes weights or files builds its own with `init_tiny`)."""
    from zreward.models.tiny import init_tiny  # here, not at the top: OMP_NUM_THREADS is set before torch loads

    cache = {}

    def get(family: str = "qwen2_vl", seed: int = 0, **scorer_kwargs):
        key = (family, seed, repr(sorted(scorer_kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"tiny_{family}_s{seed}")
            cache[key] = init_tiny(family, out, preset="tiny", seed=seed, **scorer_kwargs)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def tiny_model(tiny_factory):
    """The default tiny Scorer directory (qwen2_vl, preset tiny, seed 0), shared read-only by the session."""
    return tiny_factory()


@pytest.fixture
def loopback_servers():
    """loopback_servers(scorer, model_dir, **ServeConfig fields) → a running ServerHandle on 127.0.0.1 (uvicorn in a
    thread); every server started is stopped at teardown."""
    from zreward.serve.app import ServeConfig
    from zreward.serve.serve_cli import start_server_thread

    handles = []

    def _start(scorer, model_dir, **kw):
        h = start_server_thread(scorer, ServeConfig(model=str(model_dir), **kw))
        handles.append(h)
        return h

    yield _start
    for h in handles:
        if h.thread.is_alive():
            h.stop()


@pytest.fixture
def configs(tmp_path, monkeypatch):
    """A throwaway configs/ dir (one sft config) and the demo's "test" profile, for the demo tests."""
    from zreward.demo_profiles import PROFILES  # here, like the others: nothing of zreward loads before the env

    cdir = tmp_path / "configs"
    (cdir / "sft").mkdir(parents=True)
    (cdir / "sft" / "tiny_cpu.yaml").write_text("run:\n  max_steps: 5\noptim:\n  lr: 0.001\n")
    monkeypatch.setenv("ZREWARD_CONFIGS", str(cdir))
    monkeypatch.setitem(PROFILES, "test", {"student_preset": "tiny", "teacher_preset": "tiny",
                                           "eval_max_images": 8, "eval_samples": 1, "eval_temperature": 0.3,
                                           "speed_images": 4, "speed_min_seconds": 0.0, "overrides": {},
                                           "estimates": {}})
    return cdir
