"""Resume protects the record: the same settings, an intact checkpoint, no debris of failed saves.

- `sweep_debris`: removes what an interrupted save or prune leaves in `checkpoints/` (`.step_*.tmp-<pid>-*`,
  `.step_*.old-<pid>`, `.del-step_*`) and in the run dir (`.final.tmp-<pid>-*`, `.final.old-<pid>`): the `zreward.atomic`
  temporaries of a dead process (`sweep_stale_tmp`; those of a live writer are kept), plus the names of the
  earlier checkpoint writer (`.tmp-step_*`, `.old-step_*`, `.tmp-final-*`, `.old-final-*`). `atomic_dir` cleans up
  after an exception, but not after a kill. Run at every start.
- `latest_intact_checkpoint`: the newest checkpoint whose files are all complete — every `.json` parses, every
  `.safetensors` is as long as its header says — so a truncated latest checkpoint (a copy or sync cut short, a
  full disk) is skipped, named, and the run resumes from the newest intact one.
- `config_changes` / `check_resume_config`: on resume, the run's saved `config.yaml` is compared with the new
  config; a changed setting is refused, naming each key (old → new), unless `run.resume_with_changes` (the
  `--resume-with-changes` flag): then the old config is kept as `config.before_step_XXXXXX.yaml` and the change is
  appended to `config_changes.jsonl` with the step it takes effect at. Settings that do not change what is
  trained (`RESUMABLE`: where the run lives, cadences, bookkeeping) may change freely; `run.max_steps` only with
  a constant learning-rate schedule (a cosine schedule is defined over max_steps, so extending it changes the
  learning rates of the steps already planned).
"""
from __future__ import annotations

import json
import re
import shutil
import struct
import sys
from pathlib import Path
from typing import Any

from zreward.atomic import atomic_write_text, sweep_stale_tmp
from zreward.trainers.checkpoint import list_checkpoints
from zreward.trainers.config import config_to_dict, parse_yaml

__all__ = ["RESUMABLE", "sweep_debris", "checkpoint_problem", "latest_intact_checkpoint", "config_changes",
           "check_resume_config"]

RESUMABLE = ("run.output_dir", "run.max_steps", "run.resume", "run.resume_with_changes", "run.overwrite",
             "run.progress", "run.keep_last", "run.save_every", "run.log_every", "run.max_nonfinite_skips",
             "run.trackers", "run.tracker_project", "data.eval_every", "data.eval_batch_size", "data.decode_workers")
_DEBRIS = (".del-step_", ".tmp-step_", ".old-step_", ".tmp-final-", ".old-final-")  # prunes; the earlier writer
_ATOMIC_TMP = re.compile(r"^\.(step_\d+|final)\.(?:tmp|old)-\d+")  # `zreward.atomic` temporaries of these targets


def sweep_debris(run_root: Path) -> list[Path]:
    """Delete leftovers of interrupted checkpoint / final writes and prunes of a run; returns what was removed."""
    dirs = [d for d in (run_root, run_root / "checkpoints") if d.is_dir()]
    gone = [p for d in dirs for p in d.iterdir() if p.name.startswith(_DEBRIS)]
    for p in gone:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    targets = {d / m.group(1) for d in dirs for p in d.iterdir() if (m := _ATOMIC_TMP.match(p.name))}
    return gone + [p for t in sorted(targets) for p in sweep_stale_tmp(t)]


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > size - 8:
                return f"{path.name}: header of {n} bytes in a file of {size}"
            header = json.loads(f.read(n))
    except (struct.error, ValueError, OSError) as e:
        return f"{path.name}: unreadable header ({e})"
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    if size != 8 + n + end:
        return f"{path.name}: {size} bytes, its header describes {8 + n + end}"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint directory `path` is not intact (truncated / unreadable file), or None."""
    for p in sorted(path.iterdir()):
        if p.suffix == ".json":
            try:
                json.loads(p.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                return f"{p.name}: {e}"
        elif p.suffix == ".safetensors":
            problem = _safetensors_problem(p)
            if problem:
                return problem
    return None


def latest_intact_checkpoint(run_root: Path, is_main: bool = True) -> Path | None:
    """The newest intact checkpoint of a run; each newer broken one is named on stderr (main process)."""
    for _, path in reversed(list_checkpoints(run_root / "checkpoints")):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        if is_main:
            print(f"[zreward] {path}: checkpoint is not intact ({problem}); falling back to an older one",
                  file=sys.stderr)
    return None


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): tree}


ABSENT = "(absent)"  # how a key missing on one side is shown


def config_changes(old: dict, new: dict, defaults: dict | None = None) -> dict[str, tuple[Any, Any]]:
    """{key path: (old, new)} for every setting that differs and matters for what is trained.

    A key the saved config lacks (a setting added to zreward after the run started) is a change only when its new
    value differs from its default in `defaults` (the Config's own defaults): new settings default to the earlier
    behaviour. A side that lacks a key shows `ABSENT`.
    """
    a, b, d = _flatten(old), _flatten(new), _flatten(defaults or {})
    missing = object()
    diff = {k: (a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)
            and not (k not in a and k in d and b.get(k, missing) == d[k])}
    constant = b.get("optim.schedule", "constant") == "constant" and a.get("optim.schedule", "constant") == "constant"
    return {k: tuple(ABSENT if x is missing else x for x in v) for k, v in diff.items()
            if k not in RESUMABLE or (k == "run.max_steps" and not constant)}


def check_resume_config(cfg: Any, config_path: Path, step: int, allow: bool, is_main: bool = True) -> None:
    """Refuse a resume whose settings differ from the saved `config_path` (see module docstring); with `allow`,
    keep the old config beside the new one and record the change (main process)."""
    if not config_path.is_file():
        return
    old = parse_yaml(config_path.read_text(encoding="utf-8"), str(config_path)) or {}
    changes = config_changes(old, config_to_dict(cfg), config_to_dict(type(cfg)()))
    if not changes:
        return
    listed = "; ".join(f"{k}: {o!r} → {n!r}" for k, (o, n) in changes.items())
    if not allow:
        raise ValueError(f"{config_path}: resuming at step {step} with changed settings ({listed}); use "
                         "--resume-with-changes (run.resume_with_changes=true) to continue with them on record, or "
                         "another run.output_dir")
    if is_main:
        keep = config_path.with_name(f"config.before_step_{step:06d}.yaml")
        atomic_write_text(keep, config_path.read_text(encoding="utf-8"))
        log = config_path.with_name("config_changes.jsonl")
        line = json.dumps({"step": step, "previous": keep.name,
                           "changes": {k: [o, n] for k, (o, n) in changes.items()}}, default=str)
        prior = log.read_text(encoding="utf-8") if log.exists() else ""
        atomic_write_text(log, prior + line + "\n")
        print(f"[zreward] resuming at step {step} with changed settings ({listed}); the old config is {keep}",
              file=sys.stderr)
