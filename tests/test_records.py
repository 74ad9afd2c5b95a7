from __future__ import annotations

import json

import pytest

from zreward.data.records import (DIMS, LEVELS, DatasetInfo, DimLabel, ImageRecord, PairRecord, RecordError,
                                  read_split, skip_summary)
from zreward.data.split_writer import SplitWriter, write_split


def _rec(i: int) -> ImageRecord:
    return ImageRecord(id=f"img{i}", prompt="a red circle", image="",
                       labels={"alignment": DimLabel(hist=[0, 0, 0, 0, 1, 2, 3, 1, 0], mos=4.1, std=0.4),
                               "realism": DimLabel(mos=3.0, std=0.5)},
                       rationales={"alignment": "want 1 red circle: see 1."},
                       prompt_spec={"groups": [{"count": 1, "color": "red", "shape": "circle"}], "relation": None},
                       meta={"k": i})


def _write(tmp_path, n=3):
    info = DatasetInfo(name="t", source="test")
    d = tmp_path / "split"
    write_split(d, info, [(_rec(i), b"\x89PNG fake") for i in range(n)],
                [PairRecord(a="img0", b="img1", label="a", votes={"a": 5, "b": 1, "tie": 1}),
                 PairRecord(a="img1", b="img2", dim="realism", label="tie")])
    return d


def test_levels_and_dims():
    assert LEVELS == (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0)
    assert DIMS == ("alignment", "realism", "aesthetics", "plausibility")


def test_roundtrip(tmp_path):
    d = _write(tmp_path)
    split = read_split(d)
    assert [r.id for r in split.images] == ["img0", "img1", "img2"]
    r0 = split.images[0]
    assert r0.image == "images/img0.png" and split.image_path(r0) == d / "images" / "img0.png"
    assert split.image_path(r0).read_bytes() == b"\x89PNG fake"
    assert r0.labels["alignment"].hist == [0, 0, 0, 0, 1, 2, 3, 1, 0]
    assert r0.labels["realism"].mos == 3.0 and r0.labels["realism"].hist is None
    assert r0.meta == {"k": 0} and r0.prompt_spec["relation"] is None
    assert split.pairs[0].votes == {"a": 5, "b": 1, "tie": 1} and split.pairs[1].dim == "realism"
    assert split.info.levels == list(LEVELS) and split.info.source == "test"
    assert split.skipped == []


def _corrupt(d, lineno: int, new_line: str, file="images.jsonl"):
    p = d / file
    lines = p.read_text().splitlines()
    lines[lineno - 1] = new_line
    p.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("mutate,field,expected", [
    (lambda o: o.pop("prompt"), "prompt", "a string (field is missing)"),
    (lambda o: o.update(id=""), "id", "a non-empty string"),
    (lambda o: o["labels"]["alignment"].update(hist=[1, 2]), "labels.alignment.hist", "a list of 9 non-negative"),
    (lambda o: o["labels"]["alignment"].update(mos=7.0), "labels.alignment.mos", "a number in [1, 5]"),
    (lambda o: o["labels"].update(beauty={"mos": 3}), "labels.beauty", "a dimension of this dataset"),
    (lambda o: o["labels"]["realism"].update(std=-1), "labels.realism.std", "a non-negative number"),
    (lambda o: o.update(meta=[1]), "meta", "an object"),
])
def test_bad_image_line_names_file_line_field(tmp_path, mutate, field, expected):
    d = _write(tmp_path)
    obj = json.loads((d / "images.jsonl").read_text().splitlines()[1])
    mutate(obj)
    _corrupt(d, 2, json.dumps(obj))
    with pytest.raises(RecordError) as e:
        read_split(d)
    msg = str(e.value)
    assert msg.startswith(f"{d / 'images.jsonl'}:2: {field}: expected {expected}"), msg


def test_bad_json_and_pair_errors(tmp_path):
    d = _write(tmp_path)
    _corrupt(d, 1, '{"id": "img0", ')
    with pytest.raises(RecordError, match=r"images.jsonl:1: line: expected valid JSON"):
        read_split(d)
    d = _write(tmp_path / "x")
    _corrupt(d, 1, json.dumps({"a": "img0", "b": "nope", "label": "a"}), file="pairs.jsonl")
    with pytest.raises(RecordError, match=r"pairs.jsonl:1: b: expected an image id present in images.jsonl"):
        read_split(d)
    _corrupt(d, 1, json.dumps({"a": "img0", "b": "img1", "label": "left"}), file="pairs.jsonl")
    with pytest.raises(RecordError, match=r"pairs.jsonl:1: label: expected one of 'a', 'b', 'tie'"):
        read_split(d)


def test_skip_mode_reports_every_skip(tmp_path):
    d = _write(tmp_path)
    _corrupt(d, 2, "not json")
    split = read_split(d, skip_bad=True)
    # img1 is gone, so the pairs naming it are skipped too, each reported
    assert [r.id for r in split.images] == ["img0", "img2"]
    assert len(split.pairs) == 0 and len(split.skipped) == 3
    assert "images.jsonl:2: line: expected valid JSON" in split.skipped[0]
    summary = skip_summary(split.skipped).splitlines()
    assert len(summary) == 3 and all(line.startswith("1 x ") for line in summary)
    assert any("line: expected valid JSON" in line for line in summary)
    assert any(line.startswith("1 x a: expected an image id present") for line in summary)
    assert any(line.startswith("1 x b: expected an image id present") for line in summary)


def test_duplicate_ids(tmp_path):
    d = _write(tmp_path)
    lines = (d / "images.jsonl").read_text().splitlines()
    (d / "images.jsonl").write_text("\n".join(lines + [lines[0]]) + "\n")
    with pytest.raises(RecordError, match="unique ids"):
        read_split(d)
    assert len(read_split(d, skip_bad=True).skipped) == 1


def test_writer_is_atomic_and_refuses_overwrite(tmp_path):
    info = DatasetInfo(name="t")
    d = tmp_path / "split"
    with pytest.raises(RecordError):
        with SplitWriter(d, info) as w:
            w.add_image(_rec(0), b"x")
            w.add_pair(PairRecord(a="img0", b="missing", label="a"))
    assert not d.exists() and list(tmp_path.iterdir()) == []  # nothing half-written, temp dir removed
    _write(tmp_path)
    with pytest.raises(FileExistsError, match="not empty"):
        SplitWriter(d, info)
    write_split(d, info, [(_rec(7), b"y")], overwrite=True)
    assert [r.id for r in read_split(d).images] == ["img7"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["split"]


def test_info_validation(tmp_path):
    d = _write(tmp_path)
    (d / "dataset.json").write_text(json.dumps({"name": "t", "levels": [1, 3, 2]}))
    with pytest.raises(RecordError, match=r"dataset.json: levels: expected an increasing list"):
        read_split(d)
    (d / "dataset.json").write_text(json.dumps({"name": "t", "dims": ["overall"]}))
    with pytest.raises(RecordError, match=r"dims: expected unique names other than 'overall'"):
        read_split(d)
    with pytest.raises(RecordError, match="expected an existing directory"):
        read_split(tmp_path / "nope")
