"""The README's Python snippet runs as written (with a tiny scorer and a rendered image standing in)."""
from __future__ import annotations

import re
from pathlib import Path


def test_readme_snippet_runs(tmp_path, monkeypatch):
    from zreward.data.shapes_world import render_png
    from zreward.models.tiny import init_tiny

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    scorer_dir = init_tiny("qwen2_vl", tmp_path / "student", preset="tiny", seed=0)
    scene = {"canvas": 64, "background": [235, 230, 220], "ground_y": 52, "noise": 0.0, "blur": 0.0,
             "objects": [{"shape": "circle", "color": "red", "size": 12, "x": 20.0, "y": 46.0, "warp": 0.0}]}
    (tmp_path / "img.png").write_bytes(render_png(scene, seed=0))
    code = code.replace("runs/demo/runs/risd_student/final", str(scorer_dir))
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert tuple(ns["out"].probs.shape) == (1, 4, 9)
    assert tuple(ns["reward"].shape) == (2,)
    assert ns["images"].grad is not None and ns["images"].grad.abs().sum() > 0
