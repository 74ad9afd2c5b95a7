"""ShapesWorld: the embedded, ground-truthed text-to-image preference world (spec: docs/shapes-world.md).

Python API used across zreward:
    build_world(out_dir, *, prompts=2000, candidates=4, canvas=64, raters=7, seed=0, overwrite=False) -> Path
    oracle_scores(scene: dict, prompt) -> dict[str, float]     # prompt: text or {text, groups, relation}
    render_png(scene: dict, seed: int) -> bytes
    render_array(scene: dict, seed: int) -> np.ndarray          # (H, W, 3) uint8
    parse_prompt(text) -> dict                                  # {"groups": [...], "relation": ...}
"""
from __future__ import annotations

from zreward.data.shapes_world.build import HELD_OUT, SPLITS, WorldConfig, build_world
from zreward.data.shapes_world.oracle import oracle_facts, oracle_scores, q
from zreward.data.shapes_world.prompts import PromptError, parse_prompt, spec_to_text
from zreward.data.shapes_world.render import render_array, render_png
from zreward.data.shapes_world.scene import PALETTE, SceneError, parse_scene

__all__ = ["HELD_OUT", "PALETTE", "PromptError", "SPLITS", "SceneError", "WorldConfig", "build_world",
           "oracle_facts", "oracle_scores", "parse_prompt", "parse_scene", "q", "render_array", "render_png",
           "spec_to_text"]
