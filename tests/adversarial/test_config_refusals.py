"""ScorerConfig is validated at load (no NaN / all-zero / negative weights, no NaN levels), and scoring never
adds level tokens silently: a scorer whose levels are not single tokens is refused, naming the level's pieces."""
from __future__ import annotations

import json
import math

import pytest

import zreward
from zreward.models.load import LevelTokenError
from zreward.models.scorer_config import ScorerConfig


@pytest.mark.parametrize("field,value,msg", [
    ("levels", [1.0, math.nan, 3.0], "levels: expected ≥ 2 finite, strictly ascending numbers"),
    ("levels", [1.0, 1.0, 2.0], "levels: expected ≥ 2 finite, strictly ascending numbers"),
    ("levels", [1.0, "2", 3.0], "levels: expected ≥ 2 finite"),
    ("reward_weights", [math.nan, 1, 1, 1], "reward_weights: expected finite non-negative numbers with a positive sum"),
    ("reward_weights", [0, 0, 0, 0], "reward_weights: expected finite non-negative"),
    ("reward_weights", [1, -0.5, 1, 1], "reward_weights: expected finite non-negative"),
    ("reward_weights", [math.inf, 1, 1, 1], "reward_weights: expected finite non-negative"),
    ("uncertainty_lambda", math.nan, "uncertainty_lambda: expected a finite number ≥ 0"),
    ("temperature", 0.0, "temperature: expected a finite number > 0"),
])
def test_config_refuses_values_that_give_nan_or_wrong_scores(field, value, msg, tmp_path):
    with pytest.raises(ValueError, match="where.json: " + msg.replace("(", r"\(")):
        ScorerConfig.from_json({"family": "qwen2_vl", field: value}, where="where.json")
    path = tmp_path / "zreward.json"
    path.write_text(json.dumps({"family": "qwen2_vl", field: value}))
    with pytest.raises(ValueError, match=str(path) + ": " + msg.replace("(", r"\(")):
        ScorerConfig.load(tmp_path)


def test_scoring_refuses_multi_token_levels_training_adds_them(adv_scorer_dir, tmp_path):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(adv_scorer_dir, d)
    cfg = json.loads((d / "zreward.json").read_text())
    cfg.update(levels=[1.0, 2.25, 3.5], level_strings=["1.0", "2.25", "3.5"], level_token_ids=[],
               reward_weights=[1, 1, 1, 1])
    (d / "zreward.json").write_text(json.dumps(cfg))
    with pytest.raises(LevelTokenError, match=r"never for scoring: level '2\.25' tokenizes as \['2', '\.', '25'\]"):
        zreward.load_scorer(d)  # the public loader is for scoring
    from zreward.models.scorer import load_scorer

    with pytest.warns(UserWarning, match="adding 3 level tokens"):
        s = load_scorer(d, add_level_tokens=True)  # what trainers do
    assert s.config.added_level_tokens
