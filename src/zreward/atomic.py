"""Atomic writes: a file or directory appears complete or not at all (the one home of this pattern).

Every write goes to a temporary sibling (same filesystem, so the final `os.replace` is a rename), is flushed and
fsynced, and is renamed into place only when complete; on an exception the temporary is removed and an existing
target is left untouched. Used by split writers, the ShapesWorld builder, `zreward score`, checkpoints and run
logs.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened for fsync
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success it replaces `path`, on an exception it is removed.

    Args:
        mode: "w" (UTF-8 text) or "wb".
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_file: mode={mode!r}, expected 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically; returns the path."""
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 `text` to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def prepare_target(path: Path, overwrite: bool) -> None:
    """Refuse to replace an existing non-empty directory unless `overwrite` (and never a file)."""
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{path}: expected a directory path, found a file")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise FileExistsError(f"{path}: directory exists and is not empty (pass overwrite to replace it)")


def make_tmp_dir(path: Path) -> Path:
    """A new temporary sibling directory `.<name>.tmp-<pid>-*` of `path` (moved into place by `replace_dir`).

    The stale temporaries of earlier writers of the same target that were killed before they could clean up
    (kill -9, power loss) are swept first (`sweep_stale_tmp`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_tmp(path)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def sweep_stale_tmp(path: str | os.PathLike) -> list[Path]:
    """Remove the `.<name>.tmp-<pid>-*` / `.<name>.old-<pid>` siblings of `path` whose process is no longer running
    (a killed writer's leftovers); those of live processes are kept, so concurrent writers never delete each
    other's work. Returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pat = re.compile(rf"^\.{re.escape(path.name)}\.(?:tmp|old)-(\d+)(?:-.*)?$")
    removed = []
    for p in path.parent.iterdir():
        m = pat.match(p.name)
        if m and not _alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the fully written directory `tmp` into place as `target`.

    The top-level files of `tmp` are fsynced first. POSIX rename cannot replace a non-empty directory, so an
    existing `target` is renamed aside, and deleted only after the new one is in place (restored on failure).
    """
    for p in tmp.iterdir():
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(tmp)
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{os.getpid()}"
        os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling directory; on success it replaces `path` (`replace_dir`), on an exception it is
    removed and `path` is left as it was."""
    path = Path(path)
    tmp = make_tmp_dir(path)
    try:
        yield tmp
        replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
