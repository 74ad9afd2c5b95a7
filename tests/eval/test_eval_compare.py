"""`zreward eval compare`: paired differences across separate eval runs equal those of one joint run; old
predictions files (probs only) give the same numbers; mismatched runs are refused with the directory named."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from zreward.eval.cli import main as eval_main
from zreward.eval.compare import CompareError, compare
from zreward.eval.compare import main as compare_main

N_IMG = 16


@pytest.fixture(scope="module")
def runs(small_world, tiny_model, tiny_factory, tmp_path_factory):
    """Two random direct Scorers evaluated together (joint) and one per run (sep_a, sep_b) on the same images."""
    other = tiny_factory(seed=3)
    root = tmp_path_factory.mktemp("cmp")
    common = ["--data", str(small_world / "test"), "--n-boot", "300", "--max-images", str(N_IMG)]
    assert eval_main(["--model", f"a={tiny_model}", "--model", f"b={other}", "--out", str(root / "joint"),
                      *common]) == 0
    assert eval_main(["--model", f"a={tiny_model}", "--out", str(root / "sep_a"), *common]) == 0
    assert eval_main(["--model", f"b={other}", "--out", str(root / "sep_b"), *common]) == 0
    return root


def test_separate_runs_give_the_joint_runs_paired_difference(runs, tmp_path, capsys):
    joint = json.loads((runs / "joint" / "report.json").read_text())["paired"]
    res = compare([runs / "sep_a", runs / "sep_b"], n_boot=300, seed=0)
    assert res["paired"] == joint and res["n_images"] == N_IMG
    (p,) = joint
    models = json.loads((runs / "joint" / "report.json").read_text())["models"]
    assert math.isclose(p["diff"], models["a"]["accuracy"] - models["b"]["accuracy"], abs_tol=1e-12)
    out = tmp_path / "cmp.json"
    assert compare_main(["--eval", str(runs / "sep_a"), "--eval", str(runs / "sep_b"), "--n-boot", "300",
                         "--out", str(out)]) == 0
    assert json.loads(out.read_text())["paired"] == joint and "a − b:" in capsys.readouterr().out


def test_probs_only_predictions_recompute_the_same_scores(runs, tmp_path):
    """Files written before `mean`/`overall` were stored: recomputed from probs and the model's reward weights."""
    old = tmp_path / "old"
    shutil.copytree(runs / "sep_a", old)
    f = old / "predictions" / "a.npz"
    with np.load(f) as z:
        kept = {k: z[k] for k in ("ids", "dims", "levels", "probs")}
    np.savez_compressed(f, **kept)
    a = compare([old, runs / "sep_b"], n_boot=300)["paired"][0]
    b = compare([runs / "sep_a", runs / "sep_b"], n_boot=300)["paired"][0]
    assert a["diff_n"] == b["diff_n"] and math.isclose(a["diff"], b["diff"], abs_tol=1e-6)


def test_mismatched_runs_are_refused(runs, small_world, tiny_model, tmp_path, capsys):
    assert eval_main(["--model", f"c={tiny_model}", "--data", str(small_world / "test"), "--n-boot", "50",
                      "--max-images", str(N_IMG - 4), "--out", str(tmp_path / "fewer")]) == 0
    with pytest.raises(CompareError, match=r"fewer: scored 12 images .* not the same pairs"):
        compare([runs / "sep_a", tmp_path / "fewer"])
    with pytest.raises(CompareError, match="model name 'a' appears in two runs"):
        compare([runs / "sep_a", runs / "joint"])
    with pytest.raises(CompareError, match="need at least two models"):
        compare([runs / "sep_a"])
    assert compare_main(["--eval", str(tmp_path / "nothing"), "--eval", str(runs / "sep_a")]) == 1
    assert "nothing: no report.json" in capsys.readouterr().err
