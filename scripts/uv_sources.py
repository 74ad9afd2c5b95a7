"""pip's package sources as `uv pip install` flags, one per line (scripts/setup.sh reads them).

uv reads none of pip's configuration, so without these flags it would resolve from PyPI alone where pip uses a
mirror, local wheels or a constraints file. From `pip config list` (pip's config files and PIP_* variables):
index-url -> --default-index, extra-index-url -> --index, find-links -> --find-links, constraint -> --constraint,
no-index -> --no-index (and no index flags); a local path or file:// URL that does not exist is left out (pip
ignores those with a warning). Both tools then pick from all indexes alike (`--index-strategy unsafe-best-match`,
pip's behaviour).
Runs with the standard library only, before the project is installed.
"""
from __future__ import annotations

import os
import subprocess
import sys
from urllib.parse import urlparse


def _exists(src: str) -> bool:
    """False only for a local path or file:// URL that is not there."""
    u = urlparse(src)
    if u.scheme == "file":
        return os.path.exists(u.path)
    return bool(u.scheme) or os.path.exists(src)


def uv_flags(config_lines: list[str]) -> list[str]:
    """`pip config list` lines ("global.find-links='/opt/wheels'", ":env:.index-url='...'") -> uv flags."""
    vals: dict[str, list[str]] = {}
    env_index = None
    for line in config_lines:
        key, sep, value = line.partition("=")
        if not sep:
            continue
        name = key.rsplit(".", 1)[-1].strip()
        value = value.strip().strip("'\"")
        if name == "index-url" and key.startswith(":env:"):
            env_index = value  # PIP_INDEX_URL wins over the config files, as in pip
        vals.setdefault(name, []).extend(value.split())
    flags = ["--index-strategy", "unsafe-best-match"]
    no_index = vals.get("no-index", ["false"])[-1].lower() in ("1", "true", "yes", "on")
    sources = [("find-links", "--find-links"), ("constraint", "--constraint")]
    if no_index:  # pip then reads no index at all, only find-links
        flags.append("--no-index")
    else:
        index = env_index or (vals["index-url"][-1] if vals.get("index-url") else None)
        if index and _exists(index):
            flags += ["--default-index", index]
        sources.insert(0, ("extra-index-url", "--index"))
    for name, flag in sources:
        for src in dict.fromkeys(vals.get(name, [])):  # the same source listed twice (env + file) once
            if _exists(src):
                flags += [flag, src]
    return flags


def main() -> None:
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True)
    print("\n".join(uv_flags(out.stdout.splitlines() if out.returncode == 0 else [])))


if __name__ == "__main__":
    main()
