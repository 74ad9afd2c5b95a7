"""`zreward eval`: the runner's metric wiring (hand-computed on a hand-written split), the CLI on a ShapesWorld
split with a tiny random scorer, and public-format fixture splits (pairs only / ratings only)."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from zreward.data.records import DatasetInfo, DimLabel, ImageRecord, PairRecord, read_split
from zreward.data.split_writer import write_split
from zreward.eval.cli import main
from zreward.eval.model_metrics import compute_metrics, mos_pairs
from zreward.eval.runner import ModelScores, load_eval_data, parse_model_spec, resolve_mode

REQUIRED = ("accuracy", "accuracy_ci", "accuracy_ties", "per_dim", "kl", "js", "w1", "srcc", "plcc", "ece",
            "img_per_s", "n_pairs")
LEVELS = np.array([1.0 + 0.5 * i for i in range(9)])


@pytest.fixture(scope="module")
def tiny_reasoner(tiny_factory):
    """A random reasoning-mode scorer with short chains (8 tokens) to keep generation cheap."""
    return tiny_factory(seed=1, mode="reasoning", max_new_tokens=8)


def _png(color) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def _point_mass(values) -> np.ndarray:
    """(N,) level values → (N, 1, 9) one-hot distributions."""
    idx = np.searchsorted(LEVELS, values)
    return np.eye(9)[idx][:, None, :]


def _scores(values, dims=("alignment",), std=None) -> ModelScores:
    probs = _point_mass(np.asarray(values, dtype=float))
    mean = probs @ LEVELS
    return ModelScores(probs, mean, np.zeros_like(mean) if std is None else std, mean[:, 0], list(dims),
                       np.ones(len(dims)), False, 1, 2.0, float("nan"), 1, "rss_hwm")


@pytest.fixture
def hand_split(tmp_path):
    """p0: x0, x1, x2; p1: y0, y1. alignment MOS on all five; overall pairs only (one human tie)."""
    info = DatasetInfo(name="hand", dims=["alignment"])
    mos = {"x0": 4.0, "x1": 3.0, "x2": 3.0, "y0": 2.0, "y1": 5.0}
    prompts = {"x0": "p0", "x1": "p0", "x2": "p0", "y0": "p1", "y1": "p1"}
    recs = [(ImageRecord(i, prompts[i], f"images/{i}.png",
                         {"alignment": DimLabel(hist=list(np.eye(9)[int((m - 1) * 2)] * 3))}), _png((40 * k, 0, 0)))
            for k, (i, m) in enumerate(mos.items())]
    pairs = [PairRecord("x0", "x1", "overall", "a", {"a": 3, "b": 1, "tie": 0}),
             PairRecord("x1", "x2", "overall", "tie"),
             PairRecord("y0", "y1", "overall", "b")]
    return write_split(tmp_path / "hand", info, recs, pairs)


def test_parse_model_spec_syntax():
    s = parse_model_spec("runs/gdso/final")
    assert (str(s.path), s.name, s.mode, s.samples) == ("runs/gdso/final", "gdso", None, None)
    s = parse_model_spec("teacher=runs/gdso/final:reasoning:8")
    assert (str(s.path), s.name, s.mode, s.samples) == ("runs/gdso/final", "teacher", "reasoning", 8)
    s = parse_model_spec("/a/b/model:direct")
    assert (str(s.path), s.name, s.mode) == ("/a/b/model", "model", "direct")
    with pytest.raises(ValueError, match="takes no sample count"):
        parse_model_spec("m:direct:3")
    # --reasoning only switches reasoning-mode models; a suffix always wins.
    assert resolve_mode(parse_model_spec("d"), "direct", True, 4) == (False, 1)
    assert resolve_mode(parse_model_spec("t"), "reasoning", True, 4) == (True, 4)
    assert resolve_mode(parse_model_spec("t"), "reasoning", False, 4) == (False, 1)
    assert resolve_mode(parse_model_spec("t:reasoning:2"), "direct", False, 4) == (True, 2)


def test_metrics_hand_computed(hand_split):
    data = load_eval_data(hand_split)
    assert data.pair_counts() == {"overall": 3}
    # x0 4.0 > x1 3.0 (human a: right), x1 == x2 (human tie), y0 2.0 vs y1 4.5 (human b: right) → 2/2.
    rep, cal = compute_metrics(data, _scores([4.0, 3.0, 3.0, 2.0, 4.5]), n_boot=200)
    assert rep["accuracy"] == 1.0 and rep["n_pairs"] == 3 and rep["n_non_tie"] == 2
    assert rep["accuracy_ties"] == 1.0 and rep["tie_threshold"] == 0.0  # predicted tie = human tie at ε = 0
    # KL is 0 on the four exact rows; y1: target point mass at 5.0, prediction at 4.5 → KL = −log(1e-12)/5.
    assert math.isclose(rep["kl"], -math.log(1e-12) / 5, rel_tol=1e-9)
    assert math.isclose(rep["w1"], 0.5 / 5, rel_tol=1e-12)  # one row off by one level
    # per-dim: no alignment pairs in the split → MOS-derived within-prompt pairs: (x0,x1) a, (x0,x2) a,
    # (x1,x2) tie, (y0,y1) b — all predicted right.
    det = rep["per_dim_detail"]["alignment"]
    assert det["source"] == "mos" and det["n_pairs"] == 4 and det["n_non_tie"] == 3
    assert rep["per_dim"] == {"alignment": 1.0}
    # ECE: σ = 0 → P̂ ∈ {1, 0.5, 0}; outcomes 0.75 (votes), 0.5, 0 → ECE = |1 − 0.75| / 3.
    assert math.isclose(rep["ece"], 0.25 / 3, abs_tol=1e-6)
    for key in ("accuracy", "kl", "w1", "ece"):
        lo, hi = rep[f"{key}_ci"]
        assert lo <= rep[key] + 1e-12 and rep[key] <= hi + 1e-12
    # A wrong model: y0 above y1 → 1/2 non-tie correct.
    rep2, _ = compute_metrics(data, _scores([4.0, 3.0, 3.0, 4.5, 2.0]), n_boot=50)
    assert rep2["accuracy"] == 0.5


def test_mos_pairs_within_prompt_only(hand_split):
    a, b, lab = mos_pairs(load_eval_data(hand_split), 0)
    assert sorted(zip(a.tolist(), b.tolist(), lab.tolist())) == [(0, 1, "a"), (0, 2, "a"), (1, 2, "tie"), (3, 4, "b")]


def test_pairs_only_split_gives_null_label_metrics(tmp_path):
    info = DatasetInfo(name="pairs_only", dims=["alignment"])
    recs = [(ImageRecord(i, "p", f"images/{i}.png"), _png((k * 80, 9, 9))) for k, i in enumerate("abc")]
    split = write_split(tmp_path / "po", info, recs, [PairRecord("a", "b", "overall", "a"),
                                                       PairRecord("b", "c", "overall", "b")])
    rep, _ = compute_metrics(load_eval_data(split), _scores([3.0, 2.0, 4.0]), n_boot=50)
    assert rep["accuracy"] == 1.0 and rep["n_pairs"] == 2
    for key in ("kl", "js", "w1", "srcc", "plcc"):
        assert rep[key] is None
    assert rep["per_dim"] == {"alignment": None}


def _check_model_report(r: dict, n_pairs: int, dims) -> None:
    for key in REQUIRED:
        assert key in r, key
    assert r["n_pairs"] == n_pairs
    assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["accuracy_ties"] <= 1.0
    lo, hi = r["accuracy_ci"]
    assert lo <= r["accuracy"] <= hi
    assert set(r["per_dim"]) == set(dims) and all(0.0 <= v <= 1.0 for v in r["per_dim"].values())
    assert r["kl"] > 0 and 0 < r["js"] <= math.log(2) and r["w1"] > 0 and 0 <= r["ece"] <= 1
    assert -1 <= r["srcc"] <= 1 and -1 <= r["plcc"] <= 1
    assert r["img_per_s"] > 0 and r["peak_memory_mb"] > 0


def test_cli_on_shapes_world(small_world, tiny_model, tiny_reasoner, tmp_path):
    split_dir = small_world / "test"
    out = tmp_path / "ev"
    n_img = 12
    # --reasoning switches the reasoning-mode model only; the direct model stays direct.
    rc = main(["--model", str(tiny_model), "--model", f"teach={tiny_reasoner}", "--reasoning", "--samples", "2",
               "--data", str(split_dir), "--out", str(out), "--n-boot", "200", "--max-images", str(n_img),
               "--batch-size", "6"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    split = read_split(split_dir)
    ids = {r.id for r in split.images[:n_img]}
    n_overall = sum(p.dim == "overall" and p.a in ids and p.b in ids for p in split.pairs)
    assert n_overall > 0 and rep["n_images"] == n_img
    direct = tiny_model.name  # a --model without a name is named after its directory
    assert set(rep["models"]) == {direct, "teach"}
    for r in rep["models"].values():
        _check_model_report(r, n_overall, split.info.dims)
        assert all(r["per_dim_detail"][d]["source"] == "pairs" for d in split.info.dims)
    assert rep["models"][direct]["mode"] == "direct" and rep["models"][direct]["tokens_per_image"] is None
    teach = rep["models"]["teach"]
    assert teach["mode"] == "reasoning" and teach["samples"] == 2 and teach["tokens_per_image"] > 0
    assert 0.5 <= rep["ceiling"]["accuracy"] <= 1.0  # ShapesWorld oracle present
    md = (out / "report.md").read_text()
    for png in ("accuracy_vs_cost.png", f"reliability_{direct}.png", "reliability_teach.png", "examples.png"):
        assert (out / png).stat().st_size > 1000 and f"({png})" in md
    pred = np.load(out / "predictions" / "teach.npz")
    assert pred["probs"].shape == (n_img, 4, 9) and np.allclose(pred["probs"].sum(-1), 1, atol=1e-5)


@pytest.mark.parametrize("fmt", ["hpdv3", "agiqa3k"])
def test_cli_on_converted_public_fixture(fmt, tiny_model, tmp_path):
    import formats_fixtures as ff
    from zreward.data.convert import convert

    fx = getattr(ff, f"write_{fmt}")(tmp_path / "src")
    split_dir = tmp_path / "split"
    convert(fmt, fx.src, split_dir)
    out = tmp_path / "ev"
    assert main(["--model", str(tiny_model), "--data", str(split_dir), "--out", str(out), "--n-boot", "50"]) == 0
    r = json.loads((out / "report.json").read_text())["models"][tiny_model.name]
    assert r["n_pairs"] == fx.n_pairs and r["img_per_s"] > 0
    if fmt == "hpdv3":  # pairs only, no per-image labels
        assert 0 <= r["accuracy"] <= 1 and r["kl"] is None and r["srcc"] is None
    else:  # ratings only (alignment + quality; the scorer knows alignment): no pairs, distribution metrics
        assert r["accuracy"] is None and r["n_labelled_rows"] == fx.n_images and r["kl"] > 0
        assert r["per_dim_detail"]["alignment"]["source"] == "mos"
    assert (out / "report.md").is_file()


def test_cli_rejects_non_scorer_dir(tmp_path, small_world, capsys):
    rc = main(["--model", str(tmp_path), "--data", str(small_world / "test"), "--out", str(tmp_path / "o"),
               "--max-images", "4"])
    assert rc == 2 and "zreward.json" in capsys.readouterr().err


def test_temperature_overrides_reasoning_models_only(monkeypatch, small_world, tiny_model, tiny_reasoner, tmp_path,
                                                     capsys):
    from zreward.eval import runner

    seen = []
    real = runner.score_model

    def spy(scorer, data, **kw):
        seen.append((kw["reasoning"], kw["samples"], scorer.config.temperature))
        return real(scorer, data, **kw)

    monkeypatch.setattr(runner, "score_model", spy)
    data = load_eval_data(small_world / "test", max_images=4)
    specs = [parse_model_spec(f"d={tiny_model}"), parse_model_spec(f"t={tiny_reasoner}")]
    runner.evaluate(specs, data, reasoning=True, samples=2, n_boot=20, temperature=0.3, log=lambda *a: None)
    direct_t = json.loads((tiny_model / "zreward.json").read_text())["temperature"]
    assert seen == [(False, 1, direct_t), (True, 2, 0.3)]
    seen.clear()
    runner.evaluate(specs[1:], data, reasoning=True, samples=2, n_boot=20, log=lambda *a: None)
    assert seen == [(True, 2, json.loads((tiny_reasoner / "zreward.json").read_text())["temperature"])]
    for bad in ("0", "-1", "nan"):
        rc = main(["--model", str(tiny_reasoner), "--reasoning", "--temperature", bad, "--data",
                   str(small_world / "test"), "--out", str(tmp_path / f"o{bad}"), "--max-images", "4"])
        assert rc == 2 and "--temperature must be a finite number > 0" in capsys.readouterr().err
        assert not (tmp_path / f"o{bad}").exists()


def test_sharded_scoring_merges_to_the_one_process_scores(monkeypatch, small_world, tiny_factory):
    """In one process, play both ranks of a 2-process `score_model` (reasoning, sampled chains): each rank's calls,
    seeded per call, gathered, equal the 1-process scores exactly. (The real torchrun run: tests/trainers/
    test_sharding.py, -m slow.)"""
    from zreward.eval import runner
    from zreward.models.scorer import load_scorer

    scorer = load_scorer(tiny_factory(seed=1, mode="reasoning", max_new_tokens=6))
    data = load_eval_data(small_world / "test", max_images=5)
    kw = dict(reasoning=True, samples=2, batch_size=2, seed=4)
    one = runner.score_model(scorer, data, **kw)
    parts = {}

    class Recorded(Exception):
        pass

    def record(fn, timeout_s, what):
        parts[rank] = fn()
        raise Recorded

    monkeypatch.setattr(runner, "run_and_gather", record)
    for rank in (1, 0):  # rank 1 first: which process runs a call must not matter
        monkeypatch.setattr(runner, "rank_world", lambda r=rank: (r, 2))
        with pytest.raises(Recorded):
            runner.score_model(scorer, data, **kw)
    assert sorted(parts[0][0]) == [0, 2] and sorted(parts[1][0]) == [1]  # calls of 2, 2, 1 images: k mod 2
    monkeypatch.setattr(runner, "run_and_gather", lambda fn, timeout_s, what: [parts[0], parts[1]])
    monkeypatch.setattr(runner, "rank_world", lambda: (0, 2))
    two = runner.score_model(scorer, data, **kw)
    for f in ("probs", "mean", "std", "overall"):
        assert np.array_equal(getattr(two, f), getattr(one, f)), f
    assert two.chains == one.chains and len(one.chains) == 5 and two.tokens_per_image == one.tokens_per_image
