"""The pretrained base VLM shipped inside the package (`zreward/models/base/`).

It stands in for "a pretrained Qwen3.5" in the embedded ShapesWorld default: a tiny qwen2_vl scorer trained by
captioning unlabelled ShapesWorld images (the recipe, figures and command are in `base/MODEL_CARD.md`, the measured
figures also in `base/card.json`). Every reward method of the demo starts from a copy of it.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent / "base"


def base_card() -> dict:
    """The shipped base model's card (`base/card.json`): recipe, steps, wall time and perception figures."""
    return json.loads((BASE_DIR / "card.json").read_text())


def copy_base(out: str | Path) -> Path:
    """Copy the shipped base Scorer directory to `out` (absent or empty). Returns `out`.

    Raises:
        FileNotFoundError: the package was installed without its base model.
        FileExistsError: `out` exists and is not empty.
    """
    if not (BASE_DIR / "model.safetensors").is_file():
        raise FileNotFoundError(f"the shipped base model is missing: no {BASE_DIR / 'model.safetensors'}")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(BASE_DIR, tmp, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return out
