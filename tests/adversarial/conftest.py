"""Fixtures for the adversarial tests: a random tiny scorer, loopback servers, and the hostile benchmark module."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def hostile():
    """benchmarks/hostile_serve.py as a module (its case catalogue and runners are what the tests check)."""
    spec = importlib.util.spec_from_file_location("hostile_serve", ROOT / "benchmarks" / "hostile_serve.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def adv_scorer_dir(tmp_path_factory):
    from zreward.models.tiny import init_tiny

    return init_tiny("qwen2_vl", tmp_path_factory.mktemp("adv_scorer") / "tiny", preset="tiny", seed=0)


@pytest.fixture(scope="session")
def adv_scorer(adv_scorer_dir):
    from zreward import load_scorer

    return load_scorer(adv_scorer_dir)


@pytest.fixture
def serve(adv_scorer_dir, loopback_servers):
    """serve(scorer, **ServeConfig fields) → a running ServerHandle on 127.0.0.1; all stopped at teardown."""
    return lambda scorer, **kw: loopback_servers(scorer, adv_scorer_dir, **kw)
