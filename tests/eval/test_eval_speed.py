"""`zreward.eval.speed.time_models`: every model on the same images, whole passes until `min_seconds`, the median
over passes as its rate (a stand-in `score_spec` gives the passes' seconds by hand), and one real tiny model."""
from __future__ import annotations

import numpy as np
import pytest

from zreward.eval import speed
from zreward.eval.runner import ModelScores, load_eval_data, parse_model_spec


def _scores(seconds: float, n: int = 10) -> ModelScores:
    z = np.zeros((n, 1))
    return ModelScores(np.zeros((n, 1, 9)), z, z, np.zeros(n), ["alignment"], np.ones(1), False, 1, seconds,
                       float("nan"), 0, "none", median_img_per_s=n / seconds if seconds else float("nan"))


def test_passes_until_min_seconds_and_median_rate_by_hand(monkeypatch, tmp_path):
    """Model a: one pass of 4 s ≥ 3 s → 1 pass. Model b: first pass 0.5 s < 3 s → ceil(3 / 0.5) − 1 = 5 more passes
    (2.0, 1.0, 0.5, 0.5, 0.25 s on 10 images → 5, 10, 20, 20, 40 img/s after the first's 20): median 20."""
    times = {"a": [[4.0]], "b": [[0.5], [2.0, 1.0, 0.5, 0.5, 0.25]]}
    calls = []

    def fake(spec, datas, **kw):
        calls.append((spec.name, len(datas), kw["samples"]))
        secs = times[spec.name].pop(0)
        assert len(secs) == len(datas)
        return [_scores(s) for s in secs]

    monkeypatch.setattr(speed, "score_spec", fake)
    specs = [parse_model_spec(f"{n}={tmp_path / n}") for n in ("a", "b")]
    got = speed.time_models(specs, object(), min_seconds=3.0, log=lambda *_: None, samples=2)
    assert calls == [("a", 1, 2), ("b", 1, 2), ("b", 5, 2)]
    assert got["a"]["passes"] == 1 and got["a"]["img_per_s"] == pytest.approx(2.5)
    assert got["b"]["passes"] == 6 and got["b"]["per_pass"] == pytest.approx([20, 5, 10, 20, 20, 40])
    assert got["b"]["img_per_s"] == pytest.approx(20.0) and got["b"]["seconds"] == pytest.approx(4.75)
    for bad in (-1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="min_seconds"):
            speed.time_models(specs, object(), min_seconds=bad)
    with pytest.raises(ValueError, match="unique"):
        speed.time_models(specs + specs[:1], object(), min_seconds=1.0)


def test_pass_count_is_capped_and_a_zero_second_pass_is_refused(monkeypatch, tmp_path):
    """A first pass of 1e-6 s (or 5e-324 s: 10 / it is inf) asks for MAX_PASSES in all; a 0-s pass, first or
    later, is refused by number rather than put into the median."""
    asked = []

    def fake(spec, datas, **kw):
        asked.append(len(datas))
        secs = spec_seconds[spec.name]
        return [_scores(secs.pop(0) if isinstance(secs, list) else secs) for _ in datas]

    spec_seconds = {"fast": 1e-6, "tiniest": 5e-324, "none": 0.0, "later": [0.5, 0.5, 0.0]}
    monkeypatch.setattr(speed, "score_spec", fake)
    for name in ("fast", "tiniest"):
        asked.clear()
        got = speed.time_models([parse_model_spec(f"{name}={tmp_path}")], object(), min_seconds=10.0,
                                log=lambda *_: None)
        assert asked == [1, speed.MAX_PASSES - 1] and got[name]["passes"] == speed.MAX_PASSES
    with pytest.raises(ValueError, match="none: scoring pass 1 over 10 images took 0.0 s"):
        speed.time_models([parse_model_spec(f"none={tmp_path}")], object(), min_seconds=1.0, log=lambda *_: None)
    with pytest.raises(ValueError, match="later: scoring pass 3 over 10 images took 0.0 s"):
        speed.time_models([parse_model_spec(f"later={tmp_path}")], object(), min_seconds=1.5, log=lambda *_: None)


def test_times_a_real_tiny_model(small_world, tiny_model):
    data = load_eval_data(small_world / "test", max_images=4)
    got = speed.time_models([parse_model_spec(f"m={tiny_model}")], data, min_seconds=0.0, log=lambda *_: None)
    r = got["m"]
    assert r["passes"] == 1 and r["img_per_s"] == r["per_pass"][0] > 0 and r["reasoning"] is False
