"""The base VLM shipped in the package (`zreward/models/base/`): it loads, `zreward model init --from base` copies
it, and its greedy captions of freshly sampled ShapesWorld images still reach the figures on its card."""
from __future__ import annotations

import json
import math

from zreward.data.shapes_world.build import build_world
from zreward.eval.perception import caption_split, perception_metrics
from zreward.models.cli import main as model_main
from zreward.models.scorer import load_scorer
from zreward.models.scorer_config import ScorerConfig
from zreward.models.shipped import BASE_DIR, base_card
from zreward.models.tiny import init_tiny

MAX_BYTES = 25 * 2**20


def test_shipped_files_and_card():
    card = base_card()
    assert (BASE_DIR / "model.safetensors").stat().st_size <= MAX_BYTES
    assert (BASE_DIR / "MODEL_CARD.md").is_file()
    assert card["steps"] > 0 and card["commit"] and len(card["commands"]) == 3
    assert set(card["perception"]["accuracy"]) >= {"object_list_exact", "count", "colors", "support", "noise"}


def test_model_init_from_base_copies_it(tmp_path, capsys):
    out = tmp_path / "base"
    assert model_main(["init", "--from", "base", "--out", str(out)]) == 0
    assert (out / "model.safetensors").read_bytes() == (BASE_DIR / "model.safetensors").read_bytes()
    assert json.loads((out / "zreward.json").read_text())["family"] == base_card()["family"]
    assert model_main(["init", "--from", "base", "--out", str(out)]) == 2  # not empty: refused, nothing overwritten
    assert model_main(["init", "--from", "nothing", "--out", str(tmp_path / "x")]) == 2
    assert "expected 'base'" in capsys.readouterr().err


def test_shipped_base_reads_the_prompt_a_rebuilt_base_would(tmp_path):
    # `zreward demo --from-scratch` rebuilds the base through init_tiny: both must score with the same prompt text
    shipped = ScorerConfig.load(BASE_DIR)
    rebuilt = ScorerConfig.load(init_tiny(shipped.family, tmp_path / "m", preset="tiny"))
    assert shipped.rubrics == rebuilt.rubrics == {d: d.capitalize() for d in shipped.dims}
    assert shipped.templates == rebuilt.templates
    other = ScorerConfig.load(init_tiny("qwen2_vl", tmp_path / "q", preset="tiny", dims=["quality"],
                                        reward_weights=[1.0]))
    assert other.rubrics == {"quality": "Quality"}  # any dims: each reads its own name
    scorer = load_scorer(BASE_DIR, add_level_tokens=False)
    assert scorer.direct_prompt("a red circle", "realism").count("Realism") == 1
    ids = scorer.tokenizer("Prompt: a red circle\nPlausibility")["input_ids"]
    assert len(ids) <= 8  # the rubric is one token, not a ≈ 30-token sentence


def test_shipped_base_reaches_its_card_on_fresh_images(tmp_path):
    # a world from a seed used nowhere else: 30 prompts x 4 = 120 train images the base never saw
    world = build_world(tmp_path / "w", prompts=30, seed=9_876_543, workers=1)
    scorer = load_scorer(BASE_DIR, add_level_tokens=False)
    scorer.model.eval()
    _, gen, ref = caption_split(scorer, world / "train")
    got = perception_metrics(gen, ref)["accuracy"]
    n = len(ref)
    for fact, p in base_card()["perception"]["accuracy"].items():
        margin = 3 * math.sqrt(max(p * (1 - p), 0.01) / n) + 0.02  # 3 standard errors of a binomial at n images
        assert got[fact] >= p - margin, f"{fact}: {got[fact]:.3f} on {n} fresh images < card {p:.3f} - {margin:.3f}"
