"""Shared machinery for the public-dataset loaders (`zreward data convert`).

A loader reads the original files of one dataset and feeds a `Sink`, which wraps the atomic `SplitWriter`:
- every source record is processed inside `with sink.record(where):` (`sink.take(rows)` stops at `limit`); a
  `RecordError` raised inside (a bad field, a missing or undecodable image) aborts the conversion, or — with
  `skip_bad` — skips that record and keeps the message (`file:record N: field: expected ...`) for the end-of-run
  report. Nothing is ever dropped silently;
- images referenced by path are read and their bytes copied into `SPLIT_DIR/images/` (the split is
  self-contained); embedded bytes are written as they are. Either way the bytes are first validated by decoding
  them with the single loader (`zreward.data.images.load_image`), and the extension follows the real format;
- images are deduplicated by a source key (path or uid), so an image shared by many pairs is stored once;
- deliberate, documented drops that are *not* errors (ties skipped by a protocol, unlabeled rows) are counted
  with `sink.note(reason)` and reported too.
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from zreward.data.images import DEFAULT_MAX_PIXELS, ImageLoadError, probe_image_bytes
from zreward.data.records import DimLabel, ImageRecord, PairRecord, RecordError
from zreward.data.split_writer import SplitWriter

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class ConvertOptions:
    """Options shared by all loaders."""

    images_root: Path | None = None  # base for relative image paths (default: next to the source file)
    skip_bad: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    limit: int | None = None  # stop after this many source records


@dataclass
class PendingImage:
    data: bytes
    ext: str
    origin: str  # path or "<field of record>" for the report


def bad(where: str, fld: str, expected: str, got: Any = None) -> RecordError:
    """A RecordError with the house message format `where: field: expected ..., got ...`."""
    got_s = ""
    if got is not None:
        try:
            got_s = f", got {json.dumps(got)[:80]}"
        except (TypeError, ValueError):
            got_s = f", got {repr(got)[:80]}"
    return RecordError(f"{where}: {fld}: expected {expected}{got_s}")


def safe_id(key: str) -> str:
    """A file-name-safe image id derived from a source key (path without extension, uid, ...)."""
    stem = key[: -len(Path(key).suffix)] if Path(key).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp") else key
    out = _SAFE.sub("_", stem.replace("\\", "/").strip("/").replace("/", "__")).lstrip(".")
    return out or "img"


class Sink:
    """Collects converted records into a `SplitWriter` (see module docstring)."""

    def __init__(self, writer: SplitWriter, opts: ConvertOptions):
        self.w = writer
        self.opts = opts
        self.skipped: list[str] = []
        self.notes: Counter[str] = Counter()
        self.n_source = 0
        self._key_to_id: dict[str, str] = {}
        self._used_ids: set[str] = set()

    # ------------------------------------------------------------------ record scope
    @contextlib.contextmanager
    def record(self, where: str) -> Iterator[None]:
        """Scope of one source record: RecordError → raise, or skip and remember (skip_bad)."""
        self.n_source += 1
        try:
            yield
        except RecordError as e:
            if not self.opts.skip_bad:
                raise
            self.skipped.append(str(e))

    def done(self) -> bool:
        """True once `limit` source records were processed."""
        return self.opts.limit is not None and self.n_source >= self.opts.limit

    def take(self, rows: Iterable[tuple[str, Any]]) -> Iterator[tuple[str, Any]]:
        """The (where, raw) source rows until `limit` records were processed (`done`; each counts when its
        `record` scope opens)."""
        for row in rows:
            if self.done():
                return
            yield row

    def note(self, reason: str, n: int = 1) -> None:
        """Count a deliberate, documented drop that is not an error."""
        self.notes[reason] += n

    # ------------------------------------------------------------------ images
    def resolve(self, rel: str, default_bases: list[Path]) -> Path:
        """Absolute path of an image named relative to the dataset; `--images-root` wins over the defaults.

        Returns the first candidate that exists, else the first candidate (loading it then fails with a
        missing-file error naming that path).
        """
        p = Path(rel)
        if p.is_absolute():
            return p
        bases = [self.opts.images_root] if self.opts.images_root is not None else default_bases
        cands = [b / p for b in bases]
        for c in cands:
            if c.is_file():
                return c
        return cands[0]

    def load_path(self, path: Path, where: str, fld: str) -> PendingImage:
        """Read and validate an image file; errors become RecordErrors naming record, field and path."""
        if not path.is_file():
            raise bad(where, fld, f"an existing image file, not found: {path}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise bad(where, fld, f"a readable image file {path} ({e})") from None
        return self._validate(data, where, fld, str(path))

    def load_bytes(self, data: Any, where: str, fld: str) -> PendingImage:
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes) or not data:
            raise bad(where, fld, "encoded image bytes", None if data is None else type(data).__name__)
        return self._validate(data, where, fld, f"<{fld}>")

    def load_cell(self, value: Any, where: str, fld: str, default_bases: list[Path]) -> PendingImage:
        """An image given as bytes, a HF `Image` struct {bytes, path}, or a path string."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return self.load_bytes(value["bytes"], where, fld)
            if isinstance(value.get("path"), str) and value["path"]:
                return self.load_path(self.resolve(value["path"], default_bases), where, fld)
            raise bad(where, fld, "an image struct with non-empty 'bytes' or 'path'", sorted(value))
        if isinstance(value, str) and value:
            return self.load_path(self.resolve(value, default_bases), where, fld)
        return self.load_bytes(value, where, fld)

    def _validate(self, data: bytes, where: str, fld: str, origin: str) -> PendingImage:
        try:
            ext = probe_image_bytes(data, max_pixels=self.opts.max_pixels, what=f"{where}: {fld}")
        except ImageLoadError as e:
            msg = str(e)
            raise RecordError(msg if origin.startswith("<") else f"{msg} [file {origin}]") from None
        return PendingImage(data=data, ext=ext, origin=origin)

    def has(self, key: str) -> bool:
        return key in self._key_to_id

    def id_for(self, key: str) -> str:
        return self._key_to_id[key]

    def add_image(self, key: str, img: PendingImage | None, prompt: str, *, labels: dict[str, DimLabel] | None = None,
                  meta: dict | None = None) -> str:
        """Write an image once per source key; return its id. `img` may be None only if the key was added."""
        if key in self._key_to_id:
            return self._key_to_id[key]
        if img is None:
            raise ValueError(f"image {key!r} was not added before and no bytes were given")
        iid = safe_id(key)
        if iid in self._used_ids:  # two keys sanitised to the same id: disambiguate deterministically
            iid = f"{iid}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
        self.w.add_image(ImageRecord(id=iid, prompt=prompt, image="", labels=labels or {}, meta=meta or {}),
                         img.data, ext=img.ext)
        self._key_to_id[key] = iid
        self._used_ids.add(iid)
        return iid

    def add_pair(self, a: str, b: str, label: str, *, dim: str = "overall",
                 votes: dict[str, int] | None = None) -> None:
        self.w.add_pair(PairRecord(a=a, b=b, dim=dim, label=label, votes=votes))


# ---------------------------------------------------------------------------------------------- source readers


def read_json_list(path: Path, *, key: str | None = None) -> list[tuple[str, Any]]:
    """Records of a JSON array file (or the array under `key`), or of a JSON-lines file.

    Returns:
        (where, record) with where = "<file>:record <i>" (0-based index in the array) or "<file>:<line>".
    """
    if not path.is_file():
        raise RecordError(f"{path}: file: expected an existing JSON/JSONL file")
    text = path.read_text(encoding="utf-8")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as first:
        out = []
        for i, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{i}", json.loads(line)))
            except json.JSONDecodeError as e:
                if i == 1:
                    raise RecordError(f"{path}:{first.lineno}: file: expected a JSON array or JSON lines "
                                      f"({first.msg})") from None
                out.append((f"{path}:{i}", _Unparsable(e.msg)))
        return out
    if key is not None:
        if not isinstance(obj, dict) or key not in obj:
            raise RecordError(f"{path}: {key}: expected a top-level object with a '{key}' array")
        obj = obj[key]
    if isinstance(obj, dict):  # a single record
        obj = [obj]
    if not isinstance(obj, list):
        raise RecordError(f"{path}: file: expected a JSON array of records, got {type(obj).__name__}")
    return [(f"{path}:record {i}", r) for i, r in enumerate(obj)]


@dataclass
class _Unparsable:
    """Placeholder for a JSONL line that is not valid JSON (reported as a bad record by `as_dict`)."""

    msg: str


def as_dict(rec: Any, where: str) -> dict:
    if isinstance(rec, _Unparsable):
        raise bad(where, "line", f"valid JSON ({rec.msg})")
    if not isinstance(rec, dict):
        raise bad(where, "record", "a JSON object", type(rec).__name__)
    return rec


def read_csv(path: Path) -> list[tuple[str, dict[str, str]]]:
    """Rows of a CSV file with a header; where = "<file>:<line>" (the header is line 1)."""
    if not path.is_file():
        raise RecordError(f"{path}: file: expected an existing CSV file")
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        return [(f"{path}:{reader.line_num}", row) for row in reader]


def parquet_files(src: Path) -> list[Path]:
    """A parquet file, or the sorted *.parquet files under a directory (recursively)."""
    if src.is_file():
        return [src]
    files = sorted(src.rglob("*.parquet")) if src.is_dir() else []
    if not files:
        raise RecordError(f"{src}: src: expected a .parquet file or a directory containing .parquet files")
    return files


def iter_parquet(src: Path, columns: list[str] | None = None, batch_size: int = 64) -> Iterator[tuple[str, dict]]:
    """Rows of one or more parquet files, read in small batches (image columns can be large).

    Yields:
        (where, row) with where = "<file>:row <i>" (0-based within the file).
    """
    import pyarrow.parquet as pq

    for path in parquet_files(src):
        try:
            pf = pq.ParquetFile(path)
        except Exception as e:  # pyarrow raises several types for a corrupt file
            raise RecordError(f"{path}: file: expected a readable parquet file ({e})") from None
        names = set(pf.schema_arrow.names)
        cols = None if columns is None else [c for c in columns if c in names]
        i = 0
        for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
            for row in batch.to_pylist():
                yield f"{path}:row {i}", row
                i += 1


def iter_table(src: Path) -> Iterator[tuple[str, Any]]:
    """Records of a parquet file/directory, or of a JSON array / JSON-lines file (by extension)."""
    if src.is_dir() or src.suffix.lower() == ".parquet":
        yield from iter_parquet(src)
    else:
        yield from read_json_list(src)


def need(rec: dict, key: str, where: str, kind: type | tuple[type, ...], expected: str) -> Any:
    """Fetch a required field of the given type(s) or raise a RecordError naming it."""
    if key not in rec or rec[key] is None:
        raise bad(where, key, f"{expected} (field is missing)")
    v = rec[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
        raise bad(where, key, expected, v if isinstance(v, (str, int, float, list, dict)) else type(v).__name__)
    if isinstance(v, str) and not v.strip():
        raise bad(where, key, f"{expected} (it is empty)")
    return v


def number(x: Any, where: str, fld: str, lo: float | None = None, hi: float | None = None) -> float:
    """A finite number (numeric strings accepted, as in CSV), optionally within [lo, hi]."""
    try:
        if isinstance(x, bool):
            raise ValueError
        v = float(x)
    except (TypeError, ValueError):
        raise bad(where, fld, "a number", x) from None
    if v != v or v in (float("inf"), float("-inf")):
        raise bad(where, fld, "a finite number", str(v))
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        raise bad(where, fld, f"a number in [{lo}, {hi}]", v)
    return v


def convert_counts(sink: Sink) -> dict:
    """Summary stored in dataset.json and printed by the CLI."""
    reasons: Counter[str] = Counter()
    for msg in sink.skipped:
        parts = msg.split(": ", 1)
        reasons[parts[1] if len(parts) == 2 else msg] += 1
    return {"source_records": sink.n_source, "images": sink.w.n_images, "pairs": sink.w.n_pairs,
            "skipped_bad": len(sink.skipped), "skip_reasons": dict(reasons.most_common(20)),
            "dropped_by_protocol": dict(sink.notes)}


__all__ = ["ConvertOptions", "PendingImage", "Sink", "bad", "safe_id", "read_json_list", "as_dict", "read_csv",
           "iter_parquet", "iter_table", "parquet_files", "need", "number", "convert_counts"]
