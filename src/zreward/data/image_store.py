"""`ImageStore`: the images of a split's records, decoded when a batch asks for them, never all at once.

Trainers and `zreward eval` index a store like a list (`store[i]`, `store[a:b]`, `store.batch(idx)`); each access
decodes the file with the single image loader (`zreward.data.images.load_image`: EXIF orientation, alpha on
white, the decompression-bomb limit), optionally downscales it to `max_pixels` (`cap_pixels`) and returns either
a uint8 tensor (3, H, W) (`kind="uint8"`, the trainers) or the RGB `PIL.Image` (`kind="pil"`, evaluation).
Nothing is cached: memory stays flat however many records a split has, and a process decodes only the images
its own batches use (its shard under torchrun). `workers` > 0 decodes the images of one batch in that many
threads (PIL's decoders release the GIL); results keep the order of the request. With workers, `prefetch(idx)`
starts decoding a coming batch in the background (only the latest prefetched batch is held); `batch` then takes
those images instead of decoding them again.

Holds only a path and an error label per record (the label names the records file and the record id, so a bad
image fails with `ImageLoadError` naming both, as the eager loaders did).
"""
from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from zreward.data.images import ImageLoadError, cap_pixels, image_to_uint8, load_image

KINDS = ("uint8", "pil")


class ImageStore(Sequence):
    """Lazily decoded images (see the module docstring).

    Args:
        paths: one image file per record.  whats: one error label per record (e.g. "split/images.jsonl (id x)").
        kind: "uint8" → torch uint8 (3, H, W); "pil" → RGB PIL images.
        max_pixels: downscale larger images to at most this many pixels (None: keep every image's size).
        workers: threads decoding one batch (0: decode in the calling thread).
    """

    def __init__(self, paths: Sequence[str | os.PathLike], whats: Sequence[str], *, kind: str = "uint8",
                 max_pixels: int | None = None, workers: int = 0) -> None:
        if len(paths) != len(whats):
            raise ValueError(f"ImageStore: {len(paths)} paths but {len(whats)} labels")
        if kind not in KINDS:
            raise ValueError(f"ImageStore: kind must be one of {KINDS}, got {kind!r}")
        if max_pixels is not None and (isinstance(max_pixels, bool) or max_pixels < 1):
            raise ValueError(f"max_pixels must be a positive pixel count or null, got {max_pixels!r}")
        if workers < 0:
            raise ValueError(f"decode workers must be >= 0, got {workers}")
        self.paths = [os.fspath(p) for p in paths]
        self.whats = list(whats)
        self.kind, self.max_pixels, self.workers = kind, max_pixels, workers
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[int, Future] = {}

    @classmethod
    def for_split(cls, split, recs: Iterable, **kwargs) -> ImageStore:
        """A store over records `recs` of `split` (a `zreward.data.records.Split`); labels name images.jsonl + id."""
        recs = list(recs)
        where = split.root / "images.jsonl"
        return cls([split.image_path(r) for r in recs], [f"{where} (id {r.id})" for r in recs], **kwargs)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int):
        """Decode record `i` (the one place a store touches a file)."""
        img = cap_pixels(load_image(self.paths[i], what=self.whats[i]), self.max_pixels)
        return image_to_uint8(img) if self.kind == "uint8" else img

    def __getitem__(self, i):
        if isinstance(i, slice):
            return self.batch(range(len(self))[i])
        return self.load(int(i))

    def batch(self, idx: Iterable[int]) -> list:
        """Decoded images at `idx`, in that order (in `workers` threads when > 0)."""
        idx = [int(i) for i in idx]
        ahead = self._ahead
        if self.workers == 0 or (len(idx) < 2 and not ahead):
            return [self.load(i) for i in idx]
        futures = [ahead.get(i) or self._submit(i) for i in idx]
        return [f.result() for f in futures]

    def prefetch(self, idx: Iterable[int]) -> None:
        """Start decoding `idx` in the background (a no-op without workers); replaces the previous prefetch."""
        if self.workers:
            old = self._ahead
            self._ahead = {int(i): old.get(int(i)) or self._submit(int(i)) for i in idx}

    def _submit(self, i: int) -> Future:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="zreward-decode")
        return self._pool.submit(self.load, i)

    def file_bytes(self, i: int) -> bytes:
        """The encoded file of record `i` (for content hashes that need no decoding)."""
        try:
            return Path(self.paths[i]).read_bytes()
        except OSError as e:
            raise ImageLoadError(f"{self.whats[i]}: image {self.paths[i]}: expected a readable file "
                                 f"({e.strerror})") from None

    def __add__(self, other: ImageStore) -> ImageStore:
        """Both stores' records, this one's first (same kind, cap and workers required)."""
        if not isinstance(other, ImageStore):
            return NotImplemented
        if (self.kind, self.max_pixels) != (other.kind, other.max_pixels):
            raise ValueError(f"ImageStore: cannot join kind/max_pixels {self.kind}/{self.max_pixels} with "
                             f"{other.kind}/{other.max_pixels}")
        return ImageStore(self.paths + other.paths, self.whats + other.whats, kind=self.kind,
                          max_pixels=self.max_pixels, workers=max(self.workers, other.workers))

    def __getstate__(self) -> dict:  # a thread pool does not pickle (DataLoader workers, spawn)
        return {**self.__dict__, "_pool": None, "_ahead": {}}

    def __del__(self) -> None:
        if getattr(self, "_pool", None) is not None:
            self._pool.shutdown(wait=False)
