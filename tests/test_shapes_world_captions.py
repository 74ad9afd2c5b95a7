"""ShapesWorld captions: hand-checked scenes, and every oracle quality fact appears as the oracle computes it."""
import pytest

from zreward.data.shapes_world.captions import caption
from zreward.data.shapes_world.scene import SceneError


def _obj(shape, color, size, x, y, warp=0.0):
    return {"shape": shape, "color": color, "size": size, "x": x, "y": y, "warp": warp}


def _scene(objects, **kw):
    return {"canvas": 64, "background": [235, 230, 220], "ground_y": 52, "objects": objects, **kw}


def test_objects_left_to_right_with_support():
    # a square on the ground at x=40, a circle resting on it, a triangle floating at x=10
    sc = _scene([_obj("square", "blue", 12, 40, 46), _obj("circle", "red", 8, 40, 36),
                 _obj("triangle", "green", 10, 10, 20)])
    assert caption(sc) == ("3 objects: green triangle floating, red circle on blue square, blue square. noise: 0.00. "
                           "blur: 0.0. warp: 0.00. cut: 0. low contrast: 0. crowded: no. unbalanced: no. clash: 0.")


def test_quality_facts_and_empty_scene():
    sc = _scene([_obj("square", "yellow", 12, 62, 46, warp=0.3)], noise=0.1, blur=0.5,
                background=[235, 215, 60])  # cut at the right edge; yellow on yellow: low contrast; mean x > 48
    assert caption(sc) == ("1 object: yellow square. noise: 0.10. blur: 0.5. warp: 0.30. cut: 1. low contrast: 1. "
                           "crowded: no. unbalanced: yes. clash: 0.")
    assert caption(_scene([])).startswith("0 objects. noise: 0.00.")


def test_crowding_and_clash():
    sc = _scene([_obj("square", "red", 12, 20, 46), _obj("square", "blue", 12, 30, 46)])  # boxes overlap by 2 px
    assert caption(sc).endswith("crowded: yes. unbalanced: no. clash: 1.")


def test_invalid_scene_is_an_error():
    with pytest.raises(SceneError):
        caption({"canvas": 64, "objects": [{"shape": "hexagon"}]})
