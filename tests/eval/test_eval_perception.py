"""Perception metrics of captions (`zreward.eval.perception`): parsing and per-fact scoring on hand-made captions."""
from __future__ import annotations

import pytest

from zreward.data.shapes_world.captions import caption
from zreward.eval.perception import band, parse_caption, perception_metrics

REF = ("3 objects: blue square, yellow triangle on blue square, red circle floating. noise: 0.10. blur: 0.5. "
       "warp: 0.30. cut: 0. low contrast: 1. crowded: no. unbalanced: yes. clash: 2.")
CLEAN = ("1 object: red circle. noise: 0.00. blur: 0.0. warp: 0.00. cut: 0. low contrast: 0. crowded: no. "
         "unbalanced: no. clash: 0.")


def test_parse_caption_reads_every_fact():
    f = parse_caption(REF)
    assert f["objects"] == [("blue", "square", ""), ("yellow", "triangle", "on blue square"),
                            ("red", "circle", "floating")]
    assert (f["n"], f["noise"], f["blur"], f["warp"], f["cut"], f["low_contrast"]) == (3, 0.10, 0.5, 0.30, 0, 1)
    assert (f["crowded"], f["unbalanced"], f["clash"]) == (False, True, 2)
    empty = parse_caption(CLEAN.replace("1 object: red circle.", "0 objects."))
    assert empty["objects"] == [] and empty["n"] == 0


@pytest.mark.parametrize("bad", ["", "3 objects: blue square", REF.replace(" clash: 2.", ""),
                                 REF.replace("crowded: no", "crowded: maybe"), REF.replace("blue square,", "blue,")])
def test_parse_caption_rejects_malformed(bad):
    assert parse_caption(bad) is None


def test_parse_caption_reads_the_world_captions():
    scene = {"canvas": 64, "background": [230, 230, 230], "ground_y": 50.0, "noise": 0.05, "blur": 0.0,
             "objects": [{"shape": "square", "color": "blue", "size": 10, "x": 20.0, "y": 45.0, "warp": 0.0}]}
    f = parse_caption(caption(scene))
    assert f["objects"] == [("blue", "square", "")] and f["noise"] == 0.05


def test_band_edges_are_the_samplers():
    assert [band("noise", v) for v in (0.0, 0.01, 0.07, 0.08)] == [0, 1, 1, 2]
    assert [band("blur", v) for v in (0.0, 0.6, 0.7)] == [0, 1, 2]
    assert [band("warp", v) for v in (0.0, 0.25, 0.26)] == [0, 1, 2]


def test_perception_metrics_by_hand():
    # image 0: one colour wrong (count, shapes and support right); noise 0.12 vs 0.10 is the same (severe) band
    gen0 = REF.replace("red circle floating", "green circle floating").replace("noise: 0.10", "noise: 0.12")
    # image 1: exact; image 2: unparseable -> wrong on every fact
    m = perception_metrics([gen0, CLEAN, "garbage"], [REF, CLEAN, CLEAN])
    acc = m["accuracy"]
    assert m["n"] == 3 and m["parsed"] == pytest.approx(2 / 3)
    assert acc["object_list_exact"] == pytest.approx(1 / 3)
    assert acc["count"] == acc["shapes"] == acc["support"] == acc["noise"] == pytest.approx(2 / 3)
    assert acc["colors"] == pytest.approx(1 / 3)
    assert acc["caption_exact"] == pytest.approx(1 / 3)
    # baseline: CLEAN's values are the most common (2 of 3 images)
    assert m["baseline"]["noise"] == pytest.approx(2 / 3)
    # uncommon = the images whose reference is not the most common value: image 0 only (noisy), which was right
    assert m["n_uncommon"]["noise"] == 1 and m["accuracy_uncommon"]["noise"] == 1.0


def test_perception_metrics_rejects_bad_input():
    with pytest.raises(ValueError, match="equal non-empty"):
        perception_metrics(["a"], [])
    with pytest.raises(ValueError, match="reference caption 0"):
        perception_metrics(["x"], ["not a caption"])
