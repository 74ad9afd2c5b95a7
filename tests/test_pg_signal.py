"""benchmarks/pg_signal.py: does the GDSO reward rank a scorer's exact chains above its wrong ones."""
from __future__ import annotations

import json

import numpy as np
import pytest
from benchmark_scripts import load_benchmark


def test_summary_hand_values():
    mod = load_benchmark("pg_signal")
    rew = np.array([[-0.1, -1.0, -0.5, -0.9],   # mixed: exact {0, 2} mean -0.3, wrong {1, 3} mean -0.95 -> +0.65
                    [-0.2, -0.2, -0.2, -0.2],   # all exact: not mixed
                    [-1.0, -0.4, -2.0, -2.0]])  # mixed: exact {0} -1.0, wrong {1, 2, 3} mean -1.4667 -> +0.4667
    exact = np.array([[1, 0, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=bool)
    out = mod.summarise(rew, exact)
    assert out["exact_chain_share"] == pytest.approx(7 / 12)
    assert out["reward_exact"] == pytest.approx((-0.1 - 0.5 - 0.8 - 1.0) / 7)
    assert out["reward_wrong"] == pytest.approx((-1.0 - 0.9 - 0.4 - 4.0) / 5)
    assert out["mixed_group_share"] == pytest.approx(2 / 3) and out["all_wrong_group_share"] == 0.0
    assert out["mixed_gap_mean"] == pytest.approx((0.65 + (-1.0 + 4.4 / 3)) / 2)
    assert out["mixed_gap_positive_share"] == 1.0
    none = mod.summarise(rew[1:2], exact[1:2])
    assert none["mixed_gap_mean"] is None and none["reward_wrong"] is None
    assert mod.summarise(rew[:1], ~exact[:1] & False)["all_wrong_group_share"] == 1.0


def test_main_prints_one_json_line(small_world, tiny_model, capsys):
    mod = load_benchmark("pg_signal")
    assert mod.main([str(tiny_model), str(small_world / "train"), "--images", "6", "--samples", "2"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["dim"] == "alignment" and out["samples"] == 2 and 0 < out["images"] <= 6
    assert 0.0 <= out["exact_chain_share"] <= 1.0 and 0.0 <= out["mixed_group_share"] <= 1.0
