"""The demo's profiles: what each one runs (the full profile's unlabelled images), the check of a profile before
any stage runs, and the speed stage's cache key (its settings and the stages' torch threads)."""
from __future__ import annotations

import os

import pytest

import zreward.demo as demo
from zreward.demo import run_demo
from zreward.demo_profiles import PROFILE_KEYS, PROFILES, check_profile
from zreward.demo_stages import stage_parts
from zreward.demo_types import Ctx, Stage, digest

from demo_fixtures import FakeRunner


def test_full_profile_distils_the_unlabelled_images():
    """The full profile's students read the second world (its `unlabelled` key, chosen on val); the quick one's
    do not (its time)."""
    for profile, on in (("full", True), ("quick", False)):
        by = {s.name: s for s in demo.profile_stages(profile)}
        assert ("pretrain_world" in by) == on
        for n in ("risd_student", "risd_student_teacher0", "risd_student_teacher1", "opd_student"):
            assert (dict(by[n].links).get("data.extra_unlabelled") == "pretrain_world:train") == on


def test_profiles_are_checked_before_any_stage_runs(tmp_path, configs, monkeypatch):
    for name in PROFILES:
        assert check_profile(name) is PROFILES[name]
    assert set(PROFILE_KEYS) <= set(PROFILES["quick"]) and set(PROFILE_KEYS) <= set(PROFILES["full"])
    monkeypatch.delitem(PROFILES["test"], "speed_images")
    with pytest.raises(ValueError, match=r"demo profile 'test' lacks \['speed_images'\]"):
        run_demo(tmp_path / "d", "test", 0, runner=FakeRunner(), log=lambda *_: None)
    assert not (tmp_path / "d").exists()  # nothing started, nothing half-written
    with pytest.raises(ValueError, match="no such profile"):
        check_profile("tiny")


def test_speed_key_follows_its_settings_and_the_stage_threads(tmp_path, configs, monkeypatch):
    """A timing is reused only under the same images, seconds and torch threads (a rerun under other threads
    times again); the threads are OMP_NUM_THREADS when set, else a worker's share of the CPUs."""
    st = Stage("speed", "speed", "test", (("model.a", "a"), ("data", "world:test")))

    def key(**ctx_kw):
        return digest(stage_parts(st, Ctx(out=tmp_path, profile="test", seed=0, keys={"world": "w"}, **ctx_kw)))

    k = key(threads=1)
    assert key(threads=1) == k and key(threads=2) != k
    monkeypatch.setitem(PROFILES["test"], "speed_min_seconds", 5.0)
    assert key(threads=1) != k
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert demo.stage_threads(2) == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert (demo.stage_threads(1), demo.stage_threads(2), demo.stage_threads(8)) == (4, 2, 1)
