"""Experiment trackers beside the metrics JSONL: TensorBoard and Weights & Biases through accelerate's trackers.

`run.trackers: [tensorboard, wandb]` (default `[]`: the JSONL only, which stays the record). `start_trackers`
builds accelerate's own `TensorBoardTracker` / `WandBTracker` (the classes `Accelerator(log_with=...)` would
build), starts them and stores the resolved config; `MetricsLogger` then sends every line it writes to them
(`tracker_values`: numbers as scalars, strings — e.g. the RL trainers' `sample_chain` — as text). Only the main
process tracks (the metrics logger is enabled there only).

- tensorboard: event files under `run_dir/tensorboard/` (`tensorboard --logdir run_dir/tensorboard`); needs the
  `tensorboard` package: `pip install 'zreward[tensorboard]'`.
- wandb: project `run.tracker_project`, run name = the run directory's name, files under `run_dir/wandb/`; wandb's
  own settings (`WANDB_MODE=offline`, `WANDB_API_KEY`, ...) come from the environment; needs
  `pip install 'zreward[wandb]'`.

A tracker whose package is missing is an error naming the extra to install (accelerate itself would skip it with a
debug message only). A resumed run appends to the same TensorBoard directory (steps after the resumed checkpoint
may then appear twice there; the JSONL keeps one line per step) and starts a new wandb run.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

TRACKERS: dict[str, tuple[str, str]] = {"tensorboard": ("tensorboard", "tensorboard"), "wandb": ("wandb", "wandb")}
"""tracker name → (module that must be importable, zreward extra that installs it)."""


def check_trackers(names: list[str]) -> None:
    """Config validation: every name known, each once, its package installed (looked up, not imported).

    Raises:
        ValueError: naming the tracker and, for a missing package, the zreward extra that installs it.
    """
    if len(set(names)) != len(names):
        raise ValueError(f"run.trackers: each tracker once, got {names}")
    bad = [n for n in names if n not in TRACKERS]
    if bad:
        raise ValueError(f"run.trackers: unknown tracker(s) {bad}; choose from {sorted(TRACKERS)}")
    for name in names:
        module, extra = TRACKERS[name]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"run.trackers: {name} needs the {module!r} package, which is not installed; "
                             f"pip install 'zreward[{extra}]' (or drop {name} from run.trackers)")


def _flat(cfg: Any, prefix: str = "") -> dict[str, bool | int | float | str]:
    """A nested config dict as `a.b.c` keys with values TensorBoard's hparams accept (lists/None as text)."""
    out: dict[str, bool | int | float | str] = {}
    for k, v in cfg.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (bool, int, float, str)) else str(v)
    return out


def start_trackers(names: list[str], run_dir: str | Path, config: dict, project: str = "zreward") -> list:
    """Started accelerate trackers for `names` (in that order), the flattened `config` stored in each.

    Raises:
        ValueError: see `check_trackers`.
    """
    check_trackers(names)
    from accelerate.tracking import TensorBoardTracker, WandBTracker

    run_dir = Path(run_dir)
    out = []
    for name in names:
        if name == "tensorboard":
            tracker = TensorBoardTracker(".", run_dir / "tensorboard")
        else:
            (run_dir / "wandb").mkdir(parents=True, exist_ok=True)
            tracker = WandBTracker(project, name=run_dir.resolve().name, dir=str(run_dir))
        tracker.start()
        tracker.store_init_configuration(_flat(config))
        out.append(tracker)
    return out


def tracker_values(metrics: dict[str, Any]) -> dict[str, float | int | str]:
    """The entries of one metrics line a tracker can show: finite-or-not numbers (bools as 0/1) and strings;
    lists and None are left to the JSONL."""
    out: dict[str, float | int | str] = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = int(v)
        elif isinstance(v, (int, float, str)):
            out[k] = v
    return out
