"""benchmarks/chain_perception.py: how right a teacher's own alignment chains are, part by part."""
from __future__ import annotations

import json

from benchmark_scripts import load_benchmark


def _module():
    return load_benchmark("chain_perception")


def test_comparison_parts_split_a_hand_written_comparison():
    parts = _module().comparison_parts("2 blue square: see 2. want 1 yellow triangle: see 0. left: no. "
                                       "extra: 1 green circle.")
    assert parts == {"want": ["want 2 blue square: see 2", "want 1 yellow triangle: see 0"], "relation": ["left: no"],
                     "extra": ["extra: 1 green circle"]}


def test_part_errors_count_only_comparisons_that_hold_the_part():
    pairs = [
        # want right, relation wrong (the model wrote "right" for a "left" prompt), extra right
        ("1 red square: see 1. want 1 blue circle: see 1. left: yes. extra: none.",
         "1 red square: see 1. want 1 blue circle: see 1. right: yes. extra: none."),
        # no relation on either side; the want copied from the object list, extra wrong
        ("1 green triangle: see 1. extra: 1 purple circle.", "1 purple circle: see 1. extra: 1 green triangle."),
    ]
    out = _module().part_errors(pairs)
    assert out == {"want_wrong_where_list_right": 0.5, "relation_wrong_where_list_right": 1.0,
                   "extra_wrong_where_list_right": 0.5}
    assert _module().part_errors([])["want_wrong_where_list_right"] is None


def test_main_prints_the_part_errors(small_world, tiny_model, capsys):
    assert _module().main([str(tiny_model), str(small_world / "val"), "4"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 4 and 0.0 <= out["chain_exact"] <= out["object_list_exact"] <= 1.0
    assert {"want_wrong_where_list_right", "relation_wrong_where_list_right",
            "extra_wrong_where_list_right"} <= set(out)
