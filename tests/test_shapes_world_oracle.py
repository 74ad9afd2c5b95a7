"""ShapesWorld oracle: every term of the normative formulas, with hand-computed values and the exact thresholds.

Default scene: canvas 64, ground_y 52, background (235, 230, 220) (L = 0.9033). Squares of side 10 standing on
the ground have y = 47 (box [42, 52]).
"""
from __future__ import annotations

import pytest

from zreward.data.shapes_world.oracle import oracle_facts, oracle_scores, q
from zreward.data.shapes_world.rationales import rationales


def obj(shape="square", color="red", size=10.0, x=32.0, y=47.0, warp=0.0) -> dict:
    return {"shape": shape, "color": color, "size": size, "x": x, "y": y, "warp": warp}


def scene(*objects, **kw) -> dict:
    return {"canvas": 64, "background": [235, 230, 220], "ground_y": 52, "objects": list(objects),
            "noise": 0.0, "blur": 0.0, **kw}


def scores(sc, prompt="a red square"):
    return oracle_scores(sc, prompt)


# --------------------------------------------------------------------------------------------- quantiser


@pytest.mark.parametrize("v,expected", [(2.25, 2.5), (2.2499, 2.0), (4.75, 5.0), (4.74, 4.5), (3.0, 3.0),
                                        (1.24, 1.0), (0.3, 1.0), (-7.0, 1.0), (5.2, 5.0), (9.0, 5.0)])
def test_q_rounds_halves_up_and_clips(v, expected):
    assert q(v) == expected


# --------------------------------------------------------------------------------------------- alignment


def test_alignment_perfect_relation_left():
    sc = scene(obj(color="blue", x=12), obj(color="blue", x=26), obj("triangle", "yellow", x=44))
    assert scores(sc, "two blue squares to the left of a yellow triangle")["alignment"] == 5.0


def test_alignment_spec_example_and_rationale():
    # 2 of 5 atoms (blue present + count), relation false because B is absent, 1 extra: q(1 + 1.6 - 0.5) = 2.0
    sc = scene(obj(color="blue", x=12), obj(color="blue", x=26), obj("circle", "green", x=44))
    f = oracle_facts(sc, "two blue squares to the left of a yellow triangle")
    assert (f.satisfied, f.total, f.relation_ok) == (2, 5, False)
    assert f.scores["alignment"] == 2.0
    assert rationales(f, sc)["alignment"] == ("3 objects: blue square, blue square, green circle. want 2 blue square: "
                                              "see 2. want 1 yellow triangle: see 0. left: no. extra: 1 green circle.")


def test_alignment_count_wrong():
    # present yes, count no, B both, relation yes: 4/5 -> q(4.2) = 4.0
    sc = scene(obj(color="blue", x=12), obj("triangle", "yellow", x=44))
    assert scores(sc, "two blue squares to the left of a yellow triangle")["alignment"] == 4.0


def test_alignment_left_right_are_strict():
    prompt = "a red square to the left of a blue square"
    assert scores(scene(obj(x=20), obj(color="blue", x=44)), prompt)["alignment"] == 5.0
    assert scores(scene(obj(x=44), obj(color="blue", x=20)), prompt)["alignment"] == 4.0  # wrong side: 4/5
    # equal x: max x(A) < min x(B) fails (boxes overlap but alignment only looks at x)
    assert oracle_facts(scene(obj(x=30), obj(color="blue", x=30, y=30)), prompt).relation_ok is False
    right = "a red square to the right of a blue square"
    assert scores(scene(obj(x=44), obj(color="blue", x=20)), right)["alignment"] == 5.0
    assert scores(scene(obj(x=20), obj(color="blue", x=44)), right)["alignment"] == 4.0


def test_alignment_relation_uses_all_matches():
    # left needs max x over A < min x over B: one blue square between the reds breaks it
    prompt = "two red squares to the left of a blue square"
    assert oracle_facts(scene(obj(x=10), obj(x=50), obj(color="blue", x=30)), prompt).relation_ok is False
    assert oracle_facts(scene(obj(x=10), obj(x=24), obj(color="blue", x=40)), prompt).relation_ok is True


def test_alignment_on_top_of():
    prompt = "a green square on top of an orange square"
    stacked = scene(obj(color="orange", x=32, y=47), obj(color="green", x=32, y=37))
    beside = scene(obj(color="orange", x=20, y=47), obj(color="green", x=44, y=47))
    assert scores(stacked, prompt)["alignment"] == 5.0
    assert scores(beside, prompt)["alignment"] == 4.0
    # "every o in match(A) rests on some p in match(B)": a second green on the ground breaks it
    two = "two green squares on top of an orange square"
    assert oracle_facts(scene(obj(color="orange", x=32, y=47), obj(color="green", x=32, y=37),
                              obj(color="green", x=50, y=47)), two).relation_ok is False


def test_alignment_extras_and_clipping():
    base = [obj(x=32)]
    extras = [obj("circle", "green", size=4, x=5 + 6 * i, y=50) for i in range(3)]
    assert scores(scene(*base, *extras[:1]))["alignment"] == 4.5
    assert scores(scene(*base, *extras))["alignment"] == 3.5  # 5 - 1.5
    many = [obj("circle", "green", size=3, x=3 + 6 * i, y=50.5) for i in range(10)]
    assert scores(scene(*base, *many))["alignment"] == 1.0  # 5 - 5 = 0 -> clipped to 1
    # wrong colour: the object is an extra AND the group is absent: q(1 + 0 - 0.5) = 1.0
    assert scores(scene(obj(color="blue")))["alignment"] == 1.0


def test_alignment_prompt_as_spec_object():
    spec = {"groups": [{"count": 1, "color": "red", "shape": "square"}], "relation": None}
    assert scores(scene(obj()), spec)["alignment"] == 5.0
    assert scores(scene(obj()), {"text": "a red square"})["alignment"] == 5.0


def test_empty_scene():
    assert scores(scene()) == {"alignment": 1.0, "realism": 5.0, "aesthetics": 5.0, "plausibility": 5.0}


# --------------------------------------------------------------------------------------------- realism


def test_realism_terms():
    assert scores(scene(obj(warp=0.3), noise=0.1, blur=0.5))["realism"] == 3.0  # 5-.8-.5-.6 = 3.1
    assert scores(scene(obj(warp=1.0), blur=0.75))["realism"] == 2.5  # 5-.75-2 = 2.25 -> halves up
    # max warp over objects, not the sum
    assert scores(scene(obj(x=12, warp=0.2), obj(x=44, warp=0.5)))["realism"] == 4.0
    assert scores(scene(noise=0.3, blur=2.0))["realism"] == 1.0  # 5-2.4-2 = 0.6 -> clipped


# --------------------------------------------------------------------------------------------- aesthetics


def test_crowd_touching_boxes_vs_gap_of_two():
    a = obj(x=20)  # box [15, 25]
    assert scores(scene(a, obj(x=30)))["aesthetics"] == 4.5  # touching: gap 0 < 2
    assert scores(scene(a, obj(x=32)))["aesthetics"] == 5.0  # gap exactly 2: not crowded
    assert scores(scene(a, obj(x=31.99)))["aesthetics"] == 4.5
    # vertical separation counts too: gap = max(horizontal, vertical)
    assert oracle_facts(scene(a, obj(x=20, y=30)), "a red square").crowd == 0  # vertical gap 7


def test_crowd_ignores_objects_resting_on_one_another():
    base, top = obj(x=32), obj(x=32, y=37)  # top's bottom 42 = base's top
    assert oracle_facts(scene(base, top), "a red square").crowd == 0
    near = obj(x=32, y=36.5)  # 0.5 px above: still rests (<= 1), boxes 0.5 apart
    assert oracle_facts(scene(base, near), "a red square").crowd == 0
    off = obj(x=32, y=35.5)  # 1.5 px above: does not rest, gap 1.5 < 2 -> crowded
    assert oracle_facts(scene(base, off), "a red square").crowd == 1


def test_cut_boundaries_inclusive():
    left, right = obj(x=5), obj(x=59)  # boxes [0, 10] and [54, 64]: inside the canvas exactly
    assert scores(scene(left, right))["aesthetics"] == 5.0
    assert scores(scene(obj(x=4.99), right))["aesthetics"] == 4.0
    assert scores(scene(left, obj(x=59.01)))["aesthetics"] == 4.0
    f = oracle_facts(scene(obj(x=32, y=4.99)), "a red square")  # top < 0
    assert f.cut == 1 and f.scores["aesthetics"] == 4.0


def test_low_contrast_threshold_and_halves():
    yellow = obj(color="yellow")  # L = 0.74796
    assert oracle_facts(scene(yellow), "a yellow square").low_contrast == 0  # default bg: |dL| = 0.155
    assert oracle_facts(scene(yellow, background=[229, 229, 229]), "a yellow square").low_contrast == 0  # 0.1501
    f = oracle_facts(scene(yellow, background=[226, 226, 226]), "a yellow square")  # |dL| = 0.1383
    assert f.low_contrast == 1 and f.scores["aesthetics"] == 4.5  # 5 - 0.75 = 4.25 -> 4.5
    two = scene(obj(color="yellow", x=20), obj(color="yellow", x=44), background=[226, 226, 226])
    assert scores(two, "two yellow squares")["aesthetics"] == 3.5


def test_unbalanced_threshold():
    assert scores(scene(obj(x=48)))["aesthetics"] == 5.0  # |48 - 32| = 16 = canvas/4: not >
    assert scores(scene(obj(x=48.25)))["aesthetics"] == 4.5
    assert scores(scene(obj(x=15.75)))["aesthetics"] == 4.5
    assert scores(scene(obj(x=10), obj(x=54)))["aesthetics"] == 5.0  # the mean counts, not each object


def test_aesthetics_combined():
    # cut (1) + crowd (0.5) + unbalanced (0.5): object at x=4 cut, neighbour touching, mean x = 9 < 16
    assert scores(scene(obj(x=4), obj(x=14)))["aesthetics"] == 3.0


# --------------------------------------------------------------------------------------------- plausibility


def test_ground_tolerance_one_px():
    for y in (47.0, 48.0, 46.0):  # bottom 52, 53, 51: |bottom - ground| <= 1
        assert scores(scene(obj(y=y)))["plausibility"] == 5.0
    for y in (48.01, 45.99):  # 1.01 px off
        assert scores(scene(obj(y=y)))["plausibility"] == 4.0


def test_rests_on_one_third_overlap():
    base = obj(x=32)  # box x [27, 37], top 42
    exact = obj(x=40.3333333333333333, y=37)  # box [35.33.., 45.33..]: overlap 1.666.. < 10/3
    assert scores(scene(base, exact))["plausibility"] == 4.0
    # sizes 12 and 12: threshold exactly 4 px
    b12 = obj(size=12, x=32, y=46)  # box [26, 38], top 40
    assert scores(scene(b12, obj(size=12, x=40, y=34)))["plausibility"] == 5.0  # overlap exactly 4 -> rests
    assert scores(scene(b12, obj(size=12, x=40.25, y=34)))["plausibility"] == 4.0  # 3.75 -> floats
    # min(s_o, s_p)/3: a 6 px object needs only 2 px of overlap with a 12 px base
    assert scores(scene(b12, obj(size=6, x=39, y=37)))["plausibility"] == 5.0  # box [36, 42]: overlap 2
    assert scores(scene(b12, obj(size=6, x=39.5, y=37)))["plausibility"] == 4.0
    # resting tolerance against the top of the base: 1 px
    assert scores(scene(b12, obj(size=12, x=32, y=35)))["plausibility"] == 5.0  # bottom 41, top 40
    assert scores(scene(b12, obj(size=12, x=32, y=35.01)))["plausibility"] == 4.0  # 1.01 px: floats


def test_interpenetrate_thresholds():
    a = obj(x=20)  # box [15, 25] x [42, 52]
    assert oracle_facts(scene(a, obj(x=28)), "a red square").clash == 1  # width exactly 2
    assert scores(scene(a, obj(x=28)))["plausibility"] == 4.0
    assert oracle_facts(scene(a, obj(x=28.01)), "a red square").clash == 0  # 1.99
    # height threshold: b floats above a with a vertical overlap of exactly 2 px
    f = oracle_facts(scene(a, obj(x=20, y=39)), "a red square")
    assert (f.clash, f.floating, f.scores["plausibility"]) == (1, 1, 3.0)
    f = oracle_facts(scene(a, obj(x=20, y=38.99)), "a red square")
    assert (f.clash, f.floating, f.scores["plausibility"]) == (0, 1, 4.0)
    # three mutually overlapping objects: 3 pairs
    assert oracle_facts(scene(obj(x=30), obj(x=31), obj(x=32)), "a red square").clash == 3


def test_unstable_on_circle_and_triangle_not_square():
    circle = obj("circle", "blue", size=12, x=32, y=46)  # top 40
    top = obj(size=8, x=32, y=36)  # bottom 40
    assert scores(scene(circle, top))["plausibility"] == 4.5
    tri = obj("triangle", "blue", size=12, x=32, y=46)
    assert scores(scene(tri, top))["plausibility"] == 4.5
    sq = obj("square", "blue", size=12, x=32, y=46)
    assert scores(scene(sq, top))["plausibility"] == 5.0
    # a square standing on the ground and also touching a sunk circle's top: on the ground -> not unstable
    sunk = obj("circle", "blue", size=4, x=32, y=54)  # top 52 = ground, bottom 56: floating
    f = oracle_facts(scene(sunk, obj(size=8, x=32, y=48)), "a red square")
    assert (f.unstable, f.floating, f.scores["plausibility"]) == (0, 1, 4.0)


def test_plausibility_stack_of_three_all_supported():
    sc = scene(obj(size=12, x=32, y=46), obj(size=10, x=32, y=35), obj(size=8, x=32, y=26))
    f = oracle_facts(sc, "three red squares")
    assert (f.floating, f.clash, f.unstable, f.scores["plausibility"]) == (0, 0, 0, 5.0)


def test_plausibility_halves_round_up_and_clip():
    circle = obj("circle", "blue", size=12, x=32, y=46)
    # unstable (0.5) + clash (1): 5 - 1.5 = 3.5; the green square overlaps the circle by 3 x 10 px
    sc = scene(circle, obj(size=8, x=32, y=36), obj("square", "green", size=10, x=24, y=47))
    f = oracle_facts(sc, "a red square")
    assert (f.unstable, f.clash, f.scores["plausibility"]) == (1, 1, 3.5)
    floaters = [obj(size=3, x=4 + 7 * i, y=10) for i in range(6)]
    assert scores(scene(*floaters))["plausibility"] == 1.0  # 5 - 6 clipped


def test_rationales_other_dims():
    sc = scene(obj(x=4.99, warp=0.3), obj(x=59), noise=0.1, blur=0.5)
    f = oracle_facts(sc, "a red square")
    r = rationales(f, sc)
    assert r["realism"] == "noise: 0.10. blur: 0.5. warp: 0.30."
    assert r["aesthetics"] == "cut: 1. low contrast: 0. crowded: no. unbalanced: no."
    assert r["plausibility"] == "2 objects: red square, red square. floating: 0. clash: 0. unstable: 0."
    assert r["alignment"] == "2 objects: red square, red square. want 1 red square: see 2. extra: none."


def test_rationale_describes_then_lists_extras_left_to_right():
    # extras are listed in caption order (left to right), whatever their order in the scene; the floating green
    # circle is described as such in both the alignment and the plausibility rationale
    sc = scene(obj("triangle", "yellow", x=50), obj(color="blue", x=10), obj("circle", "green", x=30, y=20))
    f = oracle_facts(sc, "a blue square")
    r = rationales(f, sc)
    assert r["alignment"] == ("3 objects: blue square, green circle floating, yellow triangle. want 1 blue square: "
                              "see 1. extra: 1 green circle, 1 yellow triangle.")
    assert r["plausibility"] == ("3 objects: blue square, green circle floating, yellow triangle. floating: 1. "
                                 "clash: 0. unstable: 0.")
