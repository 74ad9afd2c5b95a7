"""Hidden temp directories for atomic directory writes, and the sweep of those left by a killed command.

A directory output (a split, a ShapesWorld) is written into a hidden sibling `.<name>.tmp-<pid>-<random>` and
renamed into place when complete; `replace_dir` parks the previous version as `.<name>.old-<pid>`. A command killed
in between (kill -9, power loss) cannot clean up, so the next `make_temp_dir` for the same target removes every
such sibling whose process id is no longer running (`sweep_stale_temps`). Siblings of a live process are kept, so
two concurrent writers never delete each other's work.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove `.<name>.tmp-<pid>-*` / `.<name>.old-<pid>` siblings of `target` whose process is gone; returns them."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    pat = re.compile(rf"^\.{re.escape(target.name)}\.(?:tmp|old)-(\d+)(?:-.*)?$")
    removed = []
    for p in target.parent.iterdir():
        m = pat.match(p.name)
        if m and not _alive(int(m.group(1))):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


def make_temp_dir(target: str | os.PathLike) -> Path:
    """Sweep stale temps of `target`, then create a fresh hidden temp directory next to it (same filesystem)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    sweep_stale_temps(target)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-{os.getpid()}-"))
