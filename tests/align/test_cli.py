"""`zreward gen pretrain | tune | eval` argument plumbing (tiny settings, seconds)."""
from __future__ import annotations

import json

import pytest

from zreward.align.cli import main


def test_gen_cli_pretrain_tune_eval(small_world, tiny_model, tmp_path, capsys):
    sft = tmp_path / "sft"
    assert main(["pretrain", "--data", str(small_world), "--out", str(sft), "--steps", "2", "--batch-size", "2",
                 "--arch", "tiny"]) == 0
    meta = json.loads((sft / "pretrain.json").read_text())
    assert meta["config"]["steps"] == 2 and meta["config"]["profile"] == "quick"
    assert meta["config"]["gen"]["image_size"] == 16
    assert (sft / "samples.png").is_file() and (sft / "transformer" / "config.json").is_file()
    tuned = tmp_path / "tuned"
    assert main(["tune", "--generator", str(sft), "--reward", str(tiny_model), "--method", "refl",
                 "--out", str(tuned), "--data", str(small_world), "--steps", "1", "--batch-size", "2",
                 "--audit-every", "1", "--full-ft", "--reg", "0.1"]) == 0
    cfg = json.loads((tuned / "tune.json").read_text())["config"]
    assert (cfg["method"], cfg["lora"], cfg["reg"], cfg["steps"]) == ("refl", False, 0.1, 1)
    capsys.readouterr()
    assert main(["eval", "--a", str(tuned), "--b", str(sft), "--prompts", "3", "--out", str(tmp_path / "ev"),
                 "--data", str(small_world)]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["n_prompts"] == 3 and len(rep["net_gsb_ci"]) == 2


def test_gen_cli_rejects_unknown_method(tmp_path):
    with pytest.raises(SystemExit):
        main(["tune", "--generator", "g", "--reward", "r", "--method", "ppo", "--out", str(tmp_path)])
