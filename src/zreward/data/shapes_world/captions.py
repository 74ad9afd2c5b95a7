"""ShapesWorld captions: a prompt-independent description of what a scene shows, for VLM pretraining.

A real reward model starts from a pretrained VLM that can already describe an image; the tiny models of the embedded
default start from random weights. Captioning pretraining on unlabelled ShapesWorld scenes (no annotator labels, no
prompts, no scores) plays the role of that pretraining, so that the reward-training methods compared in the demo
all start from a model that can see. The caption states the perceptual facts in the rationales' vocabulary, but
about the scene alone (the rationales compare the scene with a prompt):

    "3 objects: blue square, yellow triangle on blue square, red circle floating. noise: 0.10. blur: 0.5.
     warp: 0.30. cut: 0. low contrast: 1. crowded: no. unbalanced: no. clash: 0."

- objects are listed left to right (by x centre, then top to bottom); each object is "<color> <shape>", then
  " on <color> <shape>" when it rests on another object (the first one, in list order), or " floating" when it is
  unsupported (not on the ground, not on an object); nothing more when it rests on the ground.
- "0 objects." for an empty scene (the quality facts follow as usual).
- the quality facts are the oracle's: noise std and blur radius of the scene, maximum warp, number of cut objects,
  number of low-contrast objects, crowding, imbalance and the number of interpenetrating pairs.
"""
from __future__ import annotations

from zreward.data.shapes_world.oracle import oracle_facts, rests_on, rests_on_ground
from zreward.data.shapes_world.scene import Scene, parse_scene

# the quality facts do not depend on the prompt; oracle_facts needs one
_ANY_PROMPT = {"groups": [{"count": 1, "color": "red", "shape": "circle"}], "relation": None}


def caption_order(sc: Scene) -> list:
    """The scene's objects in caption order: left to right by x centre, then top to bottom, then scene order."""
    return [sc.objects[i] for i in sorted(range(len(sc.objects)), key=lambda i: (sc.objects[i].x, sc.objects[i].y, i))]


def object_list(scene: dict | Scene) -> str:
    """The caption's first sentence: "3 objects: blue square, yellow triangle on blue square, red circle floating."
    ("0 objects." for an empty scene). Raises `SceneError` for an invalid scene dict."""
    sc = parse_scene(scene)
    objs = caption_order(sc)
    parts = []
    for o in objs:
        desc = f"{o.color} {o.shape}"
        support = next((p for p in objs if rests_on(o, p)), None)
        if support is not None:
            desc += f" on {support.color} {support.shape}"
        elif not rests_on_ground(o, sc.ground_y):
            desc += " floating"
        parts.append(desc)
    n = len(objs)
    return f"{n} object{'' if n == 1 else 's'}" + (": " + ", ".join(parts) if parts else "") + "."


def caption(scene: dict | Scene) -> str:
    """The caption of a scene (see the module docstring). Raises `SceneError` for an invalid scene dict."""
    sc = parse_scene(scene)
    f = oracle_facts(sc, _ANY_PROMPT)
    yn = {0: "no", 1: "yes"}
    return (f"{object_list(sc)} noise: {f.noise:.2f}. blur: {f.blur:.1f}. warp: {f.max_warp:.2f}. cut: {f.cut}. "
            f"low contrast: {f.low_contrast}. crowded: {yn[f.crowd]}. unbalanced: {yn[f.unbalanced]}. "
            f"clash: {f.clash}.")
