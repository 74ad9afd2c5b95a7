"""Writing canonical split directories (`docs/records.md`): `SplitWriter` and `write_split`.

Writing is atomic: the split is built in a temporary sibling directory and renamed into place only when everything
was written (`zreward.atomic`), so a failure never leaves a half-written split behind. Every record is validated
when it is added, with the same checks as `zreward.data.records.read_split`.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Iterable

from zreward.atomic import make_tmp_dir, prepare_target, replace_dir
from zreward.data.records import (
    IMAGES_DIR,
    IMAGES_FILE,
    INFO_FILE,
    PAIRS_FILE,
    DatasetInfo,
    ImageRecord,
    PairRecord,
    RecordError,
    parse_image_record,
    parse_pair_record,
)


class SplitWriter:
    """Write a split directory atomically.

    Example:
        with SplitWriter(out, DatasetInfo(name="x")) as w:
            w.add_image(ImageRecord(id="i0", prompt="a red circle", image=""), png_bytes)
            w.add_pair(PairRecord(a="i0", b="i1", label="a"))
    The directory appears only when the `with` block exits without an exception. Records are validated on add.
    """

    def __init__(self, split_dir: str | os.PathLike, info: DatasetInfo, *, overwrite: bool = False):
        self.target = Path(split_dir)
        prepare_target(self.target, overwrite)
        self.info = info
        self.tmp = make_tmp_dir(self.target)
        (self.tmp / IMAGES_DIR).mkdir()
        self._images = open(self.tmp / IMAGES_FILE, "w", encoding="utf-8")
        self._pairs = open(self.tmp / PAIRS_FILE, "w", encoding="utf-8")
        self._ids: set[str] = set()
        self.n_images = self.n_pairs = 0
        self._closed = False

    def add_image(self, rec: ImageRecord, data: bytes | None = None, *, ext: str = ".png") -> None:
        """Add an image record; with `data`, the bytes are written to images/<id><ext> and `rec.image` set."""
        where = f"{self.target / IMAGES_FILE}:{self.n_images + 1}"
        if rec.id in self._ids:
            raise RecordError(f"{where}: id: expected unique ids, {rec.id!r} was already added")
        if data is not None:
            if "/" in rec.id or "\\" in rec.id or rec.id.startswith("."):
                raise RecordError(f"{where}: id: expected a file-name-safe id, got {rec.id!r}")
            rel = f"{IMAGES_DIR}/{rec.id}{ext}"
            with open(self.tmp / rel, "wb") as f:
                f.write(data)
            rec.image = rel
        obj = rec.to_json()
        parse_image_record(obj, where, self.info)  # same validation as the reader
        self._images.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._ids.add(rec.id)
        self.n_images += 1

    def add_pair(self, pair: PairRecord) -> None:
        where = f"{self.target / PAIRS_FILE}:{self.n_pairs + 1}"
        obj = pair.to_json()
        parse_pair_record(obj, where, self.info, self._ids)
        self._pairs.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self.n_pairs += 1

    def close(self) -> Path:
        if self._closed:
            return self.target
        self._images.close()
        self._pairs.close()
        (self.tmp / INFO_FILE).write_text(json.dumps(self.info.to_json(), indent=1) + "\n", encoding="utf-8")
        replace_dir(self.tmp, self.target)
        self._closed = True
        return self.target

    def abort(self) -> None:
        if self._closed:
            return
        self._images.close()
        self._pairs.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_split(split_dir: str | os.PathLike, info: DatasetInfo,
                images: Iterable[tuple[ImageRecord, bytes | None]], pairs: Iterable[PairRecord] = (),
                *, overwrite: bool = False) -> Path:
    """Write a whole split at once (atomic). `images` are (record, bytes or None) pairs."""
    with SplitWriter(split_dir, info, overwrite=overwrite) as w:
        for rec, data in images:
            w.add_image(rec, data)
        for p in pairs:
            w.add_pair(p)
    return Path(split_dir)
