"""Issue 14 item 3: the RISD teacher cache and `zreward eval` split over 2 processes (gloo, CPU) give exactly what
one process gives, sampled reasoning chains included."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from torchrun_helper import run_torchrun
from zreward.trainers.sharding import chunks, my_chunks, run_and_gather

SCRIPT = Path(__file__).with_name("sharded_script.py")
COST = {"img_per_s", "img_per_s_total", "peak_memory_mb", "score_seconds"}  # timings: this machine, this run


def test_chunks_and_shares_cover_the_work_once():
    parts = chunks(8, 3)
    assert [list(p) for p in parts] == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert my_chunks(3, 0, 2) == [0, 2] and my_chunks(3, 1, 2) == [1] and my_chunks(3, 2, 4) == [2]
    assert my_chunks(3, 3, 4) == []
    with pytest.raises(ValueError, match="chunk size must be >= 1"):
        chunks(4, 0)


@pytest.fixture(scope="module")
def tiny_reasoner(tmp_path_factory):
    """A random reasoning-mode scorer with short chains (6 tokens): cheap sampled generation."""
    from zreward.models.tiny import init_tiny

    return init_tiny("qwen2_vl", tmp_path_factory.mktemp("sharding") / "t", preset="tiny", seed=1, mode="reasoning",
                     max_new_tokens=6)


def test_run_and_gather_single_process_returns_or_raises_the_own_error():
    assert run_and_gather(lambda: {"k": 1}, 5, "work") == [{"k": 1}]
    with pytest.raises(ValueError, match="no dims"):
        run_and_gather(lambda: (_ for _ in ()).throw(ValueError("no dims")), 5, "work")


def test_a_failing_share_fails_every_process_at_once(tmp_path):
    import time

    t0 = time.perf_counter()
    run_torchrun(Path(__file__).with_name("gather_fail_script.py"), 2, [tmp_path], timeout=120)
    assert time.perf_counter() - t0 < 60  # the gather timeout is 60 s: nobody waited it out
    assert (tmp_path / "rank1.txt").read_text() == "ValueError: teacher has no dims ['realism']"
    assert (tmp_path / "rank0.txt").read_text() == ("RuntimeError: risd teacher targets: process 1 failed: "
                                                    "ValueError: teacher has no dims ['realism']")


def _strip(report: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k not in COST} for name, m in report["models"].items()}


@pytest.mark.slow  # two torchrun launches, ~45 s on 2 CPU cores
def test_two_processes_give_the_one_process_teacher_cache_and_eval_report(tmp_path, small_world, tiny_reasoner):
    got = {}
    for n in (1, 2):
        out = tmp_path / f"out{n}.json"
        run_torchrun(SCRIPT, n, [out, tiny_reasoner, small_world / "train", tmp_path / f"cache{n}",
                                 small_world / "test", tmp_path / f"eval{n}"], timeout=240)
        got[n] = json.loads(out.read_text())
        got[n]["report"] = json.loads((tmp_path / f"eval{n}" / "report.json").read_text())
    one, two = got[1], got[2]
    assert (one["world"], two["world"], one["rc"], two["rc"]) == (1, 2, 0, 0)
    assert one["computed"] == two["computed"] == 8
    assert two["cache_sha"] == one["cache_sha"]  # byte-identical teacher cache file
    assert two["targets"] == one["targets"]
    assert two["probs"] == one["probs"] and two["chains"] == one["chains"] and len(one["chains"]) == 6
    assert len({tuple(c) for c in one["chains"]}) > 1  # the chains were sampled, not all alike
    rep1, rep2 = _strip(one["report"]), _strip(two["report"])
    assert rep1["t"]["accuracy"] is not None and "tokens_per_image" in rep1["t"]
    assert rep2 == rep1
