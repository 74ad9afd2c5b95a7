"""Canonical preference records: the one on-disk format every loader writes and every command reads.

A split directory holds `images.jsonl`, `pairs.jsonl`, `images/` and `dataset.json` (see
`docs/records.md`). Every line is validated on read; a bad line fails with `file:line: field: expected ...`, or, with
`skip_bad=True`, is skipped and reported (count and reason) in `Split.skipped` — never silently.

Writing (atomic, with the same validation) is `zreward.data.split_writer`.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


LEVELS: tuple[float, ...] = tuple(1.0 + 0.5 * i for i in range(9))
DIMS: tuple[str, ...] = ("alignment", "realism", "aesthetics", "plausibility")
PAIR_LABELS = ("a", "b", "tie")

IMAGES_FILE = "images.jsonl"
PAIRS_FILE = "pairs.jsonl"
INFO_FILE = "dataset.json"
IMAGES_DIR = "images"


class RecordError(ValueError):
    """A record failed validation; the message reads `file:line: field: expected ...`."""


@dataclass
class DimLabel:
    """Label of one image on one dimension. Any subset of the fields may be present."""

    hist: list[float] | None = None
    mos: float | None = None
    std: float | None = None
    ratings: list[float] | None = None

    def to_json(self) -> dict:
        return {k: v for k, v in (("hist", self.hist), ("mos", self.mos), ("std", self.std),
                                  ("ratings", self.ratings)) if v is not None}


@dataclass
class ImageRecord:
    id: str
    prompt: str
    image: str
    labels: dict[str, DimLabel] = field(default_factory=dict)
    rationales: dict[str, str] = field(default_factory=dict)
    prompt_spec: dict | None = None
    scene: dict | None = None
    meta: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        out: dict[str, Any] = {"id": self.id, "prompt": self.prompt, "image": self.image,
                               "labels": {d: lab.to_json() for d, lab in self.labels.items()}}
        if self.rationales:
            out["rationales"] = dict(self.rationales)
        if self.prompt_spec is not None:
            out["prompt_spec"] = self.prompt_spec
        if self.scene is not None:
            out["scene"] = self.scene
        if self.meta:
            out["meta"] = self.meta
        return out


@dataclass
class PairRecord:
    a: str
    b: str
    dim: str = "overall"
    label: str = "a"
    votes: dict[str, int] | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"a": self.a, "b": self.b, "dim": self.dim, "label": self.label}
        if self.votes is not None:
            out["votes"] = self.votes
        return out


@dataclass
class DatasetInfo:
    name: str
    levels: list[float] = field(default_factory=lambda: list(LEVELS))
    dims: list[str] = field(default_factory=lambda: list(DIMS))
    source: str = ""
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"name": self.name, "levels": list(self.levels), "dims": list(self.dims), "source": self.source,
                **self.extra}


@dataclass
class Split:
    root: Path
    info: DatasetInfo
    images: list[ImageRecord]
    pairs: list[PairRecord]
    skipped: list[str] = field(default_factory=list)

    def by_id(self) -> dict[str, ImageRecord]:
        return {r.id: r for r in self.images}

    def image_path(self, rec_or_id: ImageRecord | str) -> Path:
        rec = rec_or_id if isinstance(rec_or_id, ImageRecord) else self.by_id()[rec_or_id]
        p = Path(rec.image)
        return p if p.is_absolute() else self.root / p


# ----------------------------------------------------------------------------------------------- validation


def _fail(where: str, fld: str, expected: str, got: Any = None) -> RecordError:
    got_s = "" if got is None else f", got {json.dumps(got)[:80] if _jsonable(got) else repr(got)[:80]}"
    return RecordError(f"{where}: {fld}: expected {expected}{got_s}")


def _jsonable(x: Any) -> bool:
    try:
        json.dumps(x)
        return True
    except (TypeError, ValueError):
        return False


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _str(obj: dict, key: str, where: str, *, required: bool = True, nonempty: bool = True) -> str | None:
    if key not in obj:
        if required:
            raise _fail(where, key, "a string (field is missing)")
        return None
    v = obj[key]
    if not isinstance(v, str) or (nonempty and not v.strip()):
        raise _fail(where, key, "a non-empty string", v)
    return v


def _opt_dict(obj: dict, key: str, where: str) -> dict | None:
    v = obj.get(key)
    if v is not None and not isinstance(v, dict):
        raise _fail(where, key, "an object", v)
    return v


def parse_dim_label(v: Any, where: str, fld: str, n_levels: int) -> DimLabel:
    if not isinstance(v, dict):
        raise _fail(where, fld, "an object with hist/mos/std/ratings", v)
    unknown = set(v) - {"hist", "mos", "std", "ratings"}
    if unknown:
        raise _fail(where, f"{fld}.{sorted(unknown)[0]}", "one of hist, mos, std, ratings")
    if not v:
        raise _fail(where, fld, "at least one of hist, mos, std, ratings")
    hist = v.get("hist")
    if hist is not None:
        if not isinstance(hist, list) or len(hist) != n_levels or not all(_is_num(h) and h >= 0 for h in hist):
            raise _fail(where, f"{fld}.hist", f"a list of {n_levels} non-negative numbers", hist)
        if not (0 < sum(hist) < math.inf):  # [1e308] * 9 passes the per-item check but its sum overflows
            raise _fail(where, f"{fld}.hist", "a positive, finite total", hist)
    mos, std = v.get("mos"), v.get("std")
    if mos is not None and not (_is_num(mos) and 1.0 <= mos <= 5.0):
        raise _fail(where, f"{fld}.mos", "a number in [1, 5]", mos)
    if std is not None and not (_is_num(std) and std >= 0):
        raise _fail(where, f"{fld}.std", "a non-negative number", std)
    ratings = v.get("ratings")
    if ratings is not None:
        if (not isinstance(ratings, list) or not ratings or not all(_is_num(r) for r in ratings)
                or not math.isfinite(sum(ratings))):
            raise _fail(where, f"{fld}.ratings", "a non-empty list of numbers with a finite sum", ratings)
    return DimLabel(hist=hist, mos=mos, std=std, ratings=ratings)


def parse_image_record(obj: Any, where: str, info: DatasetInfo) -> ImageRecord:
    """Validate one `images.jsonl` object. `where` is `file:line` for messages."""
    if not isinstance(obj, dict):
        raise _fail(where, "record", "a JSON object", obj)
    rid = _str(obj, "id", where)
    prompt = _str(obj, "prompt", where)
    image = _str(obj, "image", where)
    labels_raw = obj.get("labels", {})
    if not isinstance(labels_raw, dict):
        raise _fail(where, "labels", "an object keyed by dimension", labels_raw)
    labels = {}
    for dim, lab in labels_raw.items():
        if dim not in info.dims:
            raise _fail(where, f"labels.{dim}", f"a dimension of this dataset {list(info.dims)}")
        labels[dim] = parse_dim_label(lab, where, f"labels.{dim}", len(info.levels))
    rationales = obj.get("rationales") or {}
    if not isinstance(rationales, dict) or not all(isinstance(t, str) for t in rationales.values()):
        raise _fail(where, "rationales", "an object of strings", rationales)
    return ImageRecord(id=rid, prompt=prompt, image=image, labels=labels, rationales=dict(rationales),
                       prompt_spec=_opt_dict(obj, "prompt_spec", where), scene=_opt_dict(obj, "scene", where),
                       meta=_opt_dict(obj, "meta", where) or {})


def parse_pair_record(obj: Any, where: str, info: DatasetInfo, ids: set[str] | None) -> PairRecord:
    if not isinstance(obj, dict):
        raise _fail(where, "record", "a JSON object", obj)
    a, b = _str(obj, "a", where), _str(obj, "b", where)
    if a == b:
        raise _fail(where, "b", "an image id different from a", b)
    for key, val in (("a", a), ("b", b)):
        if ids is not None and val not in ids:
            raise _fail(where, key, "an image id present in images.jsonl", val)
    dim = obj.get("dim", "overall")
    if dim != "overall" and dim not in info.dims:
        raise _fail(where, "dim", f"'overall' or one of {list(info.dims)}", dim)
    label = obj.get("label")
    if label not in PAIR_LABELS:
        raise _fail(where, "label", "one of 'a', 'b', 'tie'", label)
    votes = obj.get("votes")
    if votes is not None:
        if not isinstance(votes, dict) or not set(votes) <= set(PAIR_LABELS) or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in votes.values()):
            raise _fail(where, "votes", "an object {a, b, tie} of non-negative integers", votes)
    return PairRecord(a=a, b=b, dim=dim, label=label, votes=votes)


def parse_info(obj: Any, where: str) -> DatasetInfo:
    if not isinstance(obj, dict):
        raise _fail(where, "dataset", "a JSON object", obj)
    name = _str(obj, "name", where)
    levels = obj.get("levels", list(LEVELS))
    if (not isinstance(levels, list) or len(levels) < 2 or not all(_is_num(x) for x in levels)
            or any(b <= a for a, b in zip(levels, levels[1:]))):
        raise _fail(where, "levels", "an increasing list of at least 2 numbers", levels)
    dims = obj.get("dims", list(DIMS))
    if not isinstance(dims, list) or not dims or not all(isinstance(d, str) and d for d in dims):
        raise _fail(where, "dims", "a non-empty list of strings", dims)
    if "overall" in dims or len(set(dims)) != len(dims):
        raise _fail(where, "dims", "unique names other than 'overall'", dims)
    source = obj.get("source", "")
    if not isinstance(source, str):
        raise _fail(where, "source", "a string", source)
    extra = {k: v for k, v in obj.items() if k not in ("name", "levels", "dims", "source")}
    return DatasetInfo(name=name, levels=[float(x) for x in levels], dims=list(dims), source=source, extra=extra)


# ----------------------------------------------------------------------------------------------- reading


def _utf8_line(raw: bytes, where: str) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        bad = raw[e.start:e.start + 1]
        raise _fail(where, "line", f"UTF-8 text (invalid byte {bad!r} at byte {e.start})") from None


def _read_jsonl(path: Path, parse, skip_bad: bool, skipped: list[str]) -> list:
    out = []
    with open(path, "rb") as f:
        for i, raw in enumerate(f, 1):
            where = f"{path}:{i}"
            try:
                line = _utf8_line(raw, where)
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _fail(where, "line", f"valid JSON ({e.msg} at column {e.colno})") from None
                except RecursionError:
                    raise _fail(where, "line", "JSON nested less deeply (too deep to parse)") from None
                out.append(parse(obj, where))
            except RecordError as e:
                if not skip_bad:
                    raise
                skipped.append(str(e))
    return out


def read_split(split_dir: str | os.PathLike, *, skip_bad: bool = False) -> Split:
    """Read and validate a split directory.

    Args:
        split_dir: directory with dataset.json, images.jsonl and (optionally) pairs.jsonl.
        skip_bad: skip invalid lines instead of failing; each skip is recorded in `Split.skipped`.

    Raises:
        RecordError: on the first invalid line (unless skip_bad), on duplicate ids, or a missing file.
    """
    root = Path(split_dir)
    if not root.is_dir():
        raise RecordError(f"{root}: split directory: expected an existing directory")
    info_path = root / INFO_FILE
    if not info_path.is_file():
        raise RecordError(f"{info_path}: file: expected {INFO_FILE} in the split directory")
    try:
        info_obj = json.loads(_utf8_line(info_path.read_bytes(), str(info_path)))
    except json.JSONDecodeError as e:
        raise RecordError(f"{info_path}:{e.lineno}: dataset: expected valid JSON ({e.msg})") from None
    except RecursionError:
        raise RecordError(f"{info_path}: dataset: expected JSON nested less deeply (too deep to parse)") from None
    info = parse_info(info_obj, str(info_path))
    images_path = root / IMAGES_FILE
    if not images_path.is_file():
        raise RecordError(f"{images_path}: file: expected {IMAGES_FILE} in the split directory")
    skipped: list[str] = []
    images = _read_jsonl(images_path, lambda o, w: parse_image_record(o, w, info), skip_bad, skipped)
    seen: dict[str, int] = {}
    unique = []
    for rec in images:
        if rec.id in seen:
            msg = f"{images_path}: id: expected unique ids, {rec.id!r} occurs more than once"
            if not skip_bad:
                raise RecordError(msg)
            skipped.append(msg)
            continue
        seen[rec.id] = 1
        unique.append(rec)
    ids = set(seen)
    pairs_path = root / PAIRS_FILE
    pairs = []
    if pairs_path.is_file():
        pairs = _read_jsonl(pairs_path, lambda o, w: parse_pair_record(o, w, info, ids), skip_bad, skipped)
    return Split(root=root, info=info, images=unique, pairs=pairs, skipped=skipped)


def skip_summary(skipped: list[str]) -> str:
    """One line per distinct reason (file:line stripped) with its count, for reports of skip mode."""
    counts: dict[str, int] = {}
    for msg in skipped:
        parts = msg.split(": ", 1)
        reason = parts[1] if len(parts) == 2 else msg
        counts[reason] = counts.get(reason, 0) + 1
    return "\n".join(f"{n} x {reason}" for reason, n in sorted(counts.items(), key=lambda kv: -kv[1]))
