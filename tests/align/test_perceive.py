"""Perception: rendered ShapesWorld scenes are read back (objects, boxes, ground) and score like the truth."""
from __future__ import annotations

import pytest
import torch

from zreward.align.perceive import perceive_scene, perceived_scores
from zreward.data.shapes_world import oracle_scores, render_array

BG = [235, 230, 220]


def _scene(objects, **kw):
    return {"canvas": 64, "background": BG, "ground_y": 52, "objects": objects, "noise": 0.0, "blur": 0.0, **kw}


def _obj(shape, color, size, x, y, warp=0.0):
    return {"shape": shape, "color": color, "size": size, "x": x, "y": y, "warp": warp}


CLEAN = [
    _scene([_obj("circle", "red", 12, 14, 46), _obj("square", "blue", 10, 32, 47),
            _obj("triangle", "green", 12, 50, 46)]),
    _scene([_obj("square", "orange", 12, 30, 46), _obj("circle", "purple", 10, 30.5, 35)]),  # circle on square
    _scene([_obj("triangle", "yellow", 14, 20, 45), _obj("triangle", "yellow", 9, 44, 47.5),
            _obj("square", "red", 8, 56, 48)]),
    _scene([_obj("circle", "blue", 11, 24, 30.5)]),  # floating
    _scene([_obj("square", "green", 10, 20, 47), _obj("square", "green", 10, 40, 47),
            _obj("circle", "orange", 9, 8, 47.5)]),
]


@pytest.mark.parametrize("i", range(len(CLEAN)))
def test_clean_scene_recovered(i):
    sc = CLEAN[i]
    got = perceive_scene(render_array(sc, seed=0))
    want = sorted((o["color"], o["shape"]) for o in sc["objects"])
    assert sorted((o["color"], o["shape"]) for o in got["objects"]) == want
    assert abs(got["ground_y"] - 52) < 0.3
    assert got["background"] == BG and got["noise"] == 0 and got["blur"] == 0
    for o in sc["objects"]:  # match by colour+shape+nearest x
        p = min((q for q in got["objects"] if (q["color"], q["shape"]) == (o["color"], o["shape"])),
                key=lambda q: abs(q["x"] - o["x"]))
        assert abs(p["size"] - o["size"]) < 1.0 and abs(p["x"] - o["x"]) < 0.5
        assert abs(p["y"] + p["size"] / 2 - (o["y"] + o["size"] / 2)) < 0.5  # bottom edge: decides resting
    for prompt in ("a red circle", "two green squares to the left of an orange circle",
                   "a purple circle on top of an orange square"):
        assert oracle_scores(got, prompt) == oracle_scores(sc, prompt)


def test_cut_object_extends_past_border():
    sc = _scene([_obj("square", "blue", 12, 2, 46), _obj("circle", "red", 10, 40, 47)])
    got = perceive_scene(render_array(sc, seed=0))
    sq = next(o for o in got["objects"] if o["shape"] == "square")
    assert sq["x"] - sq["size"] / 2 < 0  # cut is visible to the oracle
    assert oracle_scores(got, "a blue square")["aesthetics"] == oracle_scores(sc, "a blue square")["aesthetics"]


def test_noise_and_blur_are_seen():
    base = [_obj("circle", "red", 12, 20, 46), _obj("square", "blue", 12, 44, 46)]
    noisy = perceive_scene(render_array(_scene(base, noise=0.1), seed=3))
    assert 0.07 < noisy["noise"] < 0.13
    assert sorted(o["color"] for o in noisy["objects"]) == ["blue", "red"]
    blurred = perceive_scene(render_array(_scene(base, blur=1.5), seed=0))
    assert blurred["blur"] >= 0.5
    clean = oracle_scores(_scene(base), "a red circle")["realism"]
    assert oracle_scores(noisy, "a red circle")["realism"] < clean
    assert oracle_scores(blurred, "a red circle")["realism"] < clean


def test_small_canvas_scaled_to_64():
    """A 32 px image is read on the 64 px canvas: coordinates double."""
    sc = {"canvas": 32, "background": BG, "ground_y": 26, "objects": [_obj("square", "red", 8, 16, 22)]}
    got = perceive_scene(render_array(sc, seed=0))
    (o,) = got["objects"]
    assert got["canvas"] == 64 and abs(got["ground_y"] - 52) < 0.6
    assert abs(o["size"] - 16) < 1.0 and abs(o["x"] - 32) < 1.0 and o["shape"] == "square"


def test_perceived_scores_tensor_batch():
    imgs = torch.stack([torch.from_numpy(render_array(s, seed=0)).permute(2, 0, 1).float() / 255 for s in CLEAN[:2]])
    out = perceived_scores(imgs, ["a red circle", "a purple circle on top of an orange square"])
    assert out.shape == (2, 4)
    assert out[1].tolist() == [5.0, 5.0, 5.0, 5.0]  # circle resting on a square: all truthful scores 5


def test_agreement_on_built_split(small_world):
    """On a freshly built world, clean images are read back exactly (objects and all four oracle levels)."""
    from zreward.align.perceive import perception_agreement

    rep = perception_agreement(small_world / "test")
    assert rep["n"] == 20 and rep["clean"] is not None
    assert rep["clean"]["objects_exact"] >= 0.9
    assert rep["clean"]["dims"]["alignment"]["exact"] >= 0.9
    assert rep["dims"]["alignment"]["mean_abs"] < 0.5
    assert set(rep["by_mutation"]) >= {"clean"}
