"""Refusals of the CLI and the record/config readers: one clean line naming file, record and field (`--debug` for
the traceback), never a silent wrong result, nothing left behind."""
from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from zreward.cli import main as cli
from zreward.data.records import DatasetInfo, ImageRecord, RecordError, read_split
from zreward.data.split_writer import write_split
from zreward.atomic import make_tmp_dir, sweep_stale_tmp


def _png(w=32, h=32, seed=0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def split(tmp_path):
    items = [(ImageRecord(id=f"im{i}", prompt=f"{i} red squares", image=""), _png(seed=i)) for i in range(3)]
    return write_split(tmp_path / "split", DatasetInfo(name="t"), items)


def _refused(capsys, argv, *parts):
    assert cli(argv) == 1
    full = capsys.readouterr().err
    err = [ln for ln in full.splitlines() if ln.startswith("zreward ")]  # (transformers' progress bars aside)
    assert len(err) == 1 and "Traceback" not in full, full
    for p in parts:
        assert p in err[0], err[0]
    return err[0]


def test_score_refusals_are_one_line_and_leave_no_tmp(split, adv_scorer_dir, tmp_path, capsys):
    out = tmp_path / "o" / "scores.jsonl"
    base = ["score", "--model", str(adv_scorer_dir), "--data", str(split), "--out", str(out), "--no-progress"]
    for bad in (["--limit", "0"], ["--limit", "-1"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as e:
            cli(base + bad)
        assert e.value.code == 2 and "expected ≥ 1" in capsys.readouterr().err
    _refused(capsys, base + ["--dims", "nope"], "zreward score: error: dims: unknown dimensions ['nope']")
    # a record whose prompt holds a reserved token: named by file and id, and no <out>.tmp is left behind
    lines = (split / "images.jsonl").read_text().splitlines()
    rec = json.loads(lines[1])
    rec["prompt"] = "two <|image_pad|> squares"
    (split / "images.jsonl").write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    _refused(capsys, base, "images.jsonl (id 'im1'): prompt: contains the reserved token '<|image_pad|>'")
    assert not out.exists() and list(out.parent.iterdir()) == []
    with pytest.raises(ValueError, match="reserved token"):
        cli(base + ["--debug"])
    # a record whose image the preprocessing cannot take
    rec["prompt"] = "two squares"
    (split / "images" / "im1.png").write_bytes(_png(300, 1))
    (split / "images.jsonl").write_text("\n".join([lines[0], json.dumps(rec), lines[2]]) + "\n")
    _refused(capsys, base, "(id 'im1'): prompt: image aspect ratio: expected at most 200:1")
    assert list(out.parent.iterdir()) == []


def test_invalid_utf8_and_overflowing_numbers_name_the_record(split, capsys, tmp_path):
    p = split / "images.jsonl"
    lines = p.read_bytes().splitlines()
    p.write_bytes(b"\n".join([lines[0], lines[1].replace(b"red", b"r\xffd"), lines[2]]) + b"\n")
    with pytest.raises(RecordError, match=r"images\.jsonl:2: line: expected UTF-8 text \(invalid byte b'\\xff'"):
        read_split(split)
    _refused(capsys, ["score", "--model", "x", "--data", str(split), "--out", str(tmp_path / "s.jsonl")],
             "images.jsonl:2: line: expected UTF-8 text")
    rec = json.loads(lines[1])
    for lab, fld in (({"hist": [1e308] * 9}, "labels.alignment.hist: expected a positive, finite total"),
                     ({"ratings": [1e308] * 3}, "labels.alignment.ratings: expected a non-empty list of numbers "
                                                "with a finite sum")):
        rec["labels"] = {"alignment": lab}
        p.write_bytes(b"\n".join([lines[0], json.dumps(rec).encode(), lines[2]]) + b"\n")
        with pytest.raises(RecordError, match=r"images\.jsonl:2: " + fld.replace(".", r"\.").replace("(", r"\(")):
            read_split(split)
    assert math.isinf(sum([1e308] * 9))  # what the check guards against


def test_garbled_scorer_config_is_one_line(adv_scorer_dir, tmp_path, capsys):
    import shutil

    d = tmp_path / "m"
    shutil.copytree(adv_scorer_dir, d)
    data = tmp_path / "split"
    write_split(data, DatasetInfo(name="t"), [(ImageRecord(id="a", prompt="a cat", image=""), _png())])
    argv = ["score", "--model", str(d), "--data", str(data), "--out", str(tmp_path / "s.jsonl")]
    (d / "zreward.json").write_bytes(b'{"family": "qwen2_vl", "levels": [1, 2\xff')
    _refused(capsys, argv, "zreward.json: expected UTF-8 text")
    (d / "zreward.json").write_text('{"family": "qwen2_vl", "levels": [1, 2')
    _refused(capsys, argv, "zreward.json: expected valid JSON")
    (d / "zreward.json").write_text('{"family": "qwen2_vl", "reward_weights": [NaN, 1, 1, 1]}')
    _refused(capsys, argv, "zreward.json: reward_weights: expected finite non-negative numbers with a positive sum")


def test_killed_writer_temp_dir_is_swept_on_the_next_run(tmp_path):
    target = tmp_path / "world"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".world.tmp-{dead.pid}-abc"
    (stale / "train").mkdir(parents=True)
    (stale / "train" / "x.png").write_bytes(b"x" * 1000)
    old = tmp_path / f".world.old-{dead.pid}"
    old.mkdir()
    live = tmp_path / f".world.tmp-{os.getppid()}-xyz"  # a running process (our parent): never touched
    live.mkdir()
    other = tmp_path / f".other.tmp-{dead.pid}-abc"  # another target's temp: not ours to sweep
    other.mkdir()
    fresh = make_tmp_dir(target)
    assert not stale.exists() and not old.exists() and live.exists() and other.exists()
    assert fresh.name.startswith(f".world.tmp-{os.getpid()}-") and fresh.is_dir()
    assert sweep_stale_tmp(target) == []  # our own temp dir is alive


def test_world_build_sweeps_a_killed_build(tmp_path):
    from zreward.data.shapes_world.build import build_world

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".sw.tmp-{dead.pid}-q1"
    stale.mkdir()
    build_world(tmp_path / "sw", prompts=2, seed=0, workers=1)
    assert not stale.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["sw"]


@pytest.mark.parametrize("flag,value", [("--max-prompt-tokens", "0"), ("--max-client-connections", "0"),
                                        ("--header-timeout", "0"), ("--body-timeout", "-1"),
                                        ("--max-batch-tokens", "0")])
def test_serve_limits_must_be_positive(flag, value, capsys):
    from zreward.serve.serve_cli import main as serve_main

    with pytest.raises(SystemExit) as e:  # refused before any model is loaded
        serve_main(["--model", "nowhere", flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err
