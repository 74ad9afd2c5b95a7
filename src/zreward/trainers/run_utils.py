"""Plain helpers shared by the explicit training loops (no base Trainer class).

* `RunConfig` / `AcceleratorConfig`: the config sections every trainer nests in its own `Config`;
* `RunDir` + `prepare_run_dir`: the layout `run_dir/{config.yaml, metrics.jsonl, checkpoints/step_XXXXXX/,
  final/}` and the fresh-run / resume / overwrite decision;
* `MetricsLogger`: JSONL, one flushed line per call, resumable (entries after the resumed step are dropped), and
  the same values to the `run.trackers` (TensorBoard / wandb, `zreward.trainers.trackers`);
* `progress_bar`: tqdm, off when stderr is not a TTY, when `ZREWARD_NO_PROGRESS=1`, when disabled in the config,
  and on non-main ranks;
* `seed_everything(seed, rank)`: Python, numpy and torch seeds derived from (seed, rank);
* `make_accelerator`: `accelerate.Accelerator` for CPU or GPU, also under `torchrun` on CPU (gloo); DDP or FSDP2
  from accelerate's launcher configuration (DeepSpeed and FSDP1 refused);
* `batch_indices`: which examples a global step uses, and each rank's shard of them - a pure function of
  (seed, step), so resuming at step k and splitting a global batch over processes need no data-loader state.

Every trainer's loop is `zreward.trainers.loop.RunLoop`, built from these and `zreward.trainers.guard.NonFiniteGuard` (tests/trainers/ddp_mlp_script.py runs
a minimal version of it under torchrun).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from zreward.atomic import atomic_write_text
from zreward.trainers.checkpoint import latest_checkpoint
from zreward.trainers.resume import latest_intact_checkpoint, sweep_debris
from zreward.trainers.trackers import check_trackers, tracker_values


@dataclass
class RunConfig:
    """Where and how long a run goes; shared by all trainers as `cfg.run`."""

    output_dir: str = field(default="runs/default", metadata={"help": "run directory (config, metrics, checkpoints, final/)"})
    seed: int = field(default=0, metadata={"help": "base seed; each rank derives its own from (seed, rank)"})
    max_steps: int = field(default=100, metadata={"help": "optimizer steps to train"})
    log_every: int = field(default=1, metadata={"help": "write metrics every N steps (0: only at the last step and at evaluations)"})
    save_every: int = field(default=0, metadata={"help": "checkpoint every N steps (0: only at the end)"})
    keep_last: int | None = field(default=2, metadata={"help": "checkpoints to keep (null: all)"})
    resume: str = field(default="auto", metadata={"help": "auto (latest intact checkpoint if any), never, or a checkpoint dir"})
    resume_with_changes: bool = field(default=False, metadata={"help": "resume even though settings changed (--resume-with-changes): both configs are kept and the change is recorded"})
    overwrite: bool = field(default=False, metadata={"help": "delete an existing run dir that has checkpoints"})
    max_nonfinite_skips: int = field(default=3, metadata={"help": "consecutive non-finite steps skipped before stopping"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar (also off without a TTY or with ZREWARD_NO_PROGRESS=1)"})
    trackers: list[str] = field(default_factory=list, metadata={"help": "also log the metrics to: tensorboard (run_dir/tensorboard), wandb (see zreward.trainers.trackers); [] = metrics.jsonl only"})
    tracker_project: str = field(default="zreward", metadata={"help": "wandb project of run.trackers=[wandb]"})

    def __post_init__(self) -> None:
        for name in ("max_steps", "log_every", "save_every", "max_nonfinite_skips"):
            if getattr(self, name) < 0:
                raise ValueError(f"run.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last is not None and self.keep_last < 1:
            raise ValueError(f"run.keep_last must be >= 1 or null, got {self.keep_last}")
        check_trackers(self.trackers)


@dataclass
class AcceleratorConfig:
    """Options passed to `accelerate.Accelerator` (multi-GPU DDP / FSDP2 sharding come from accelerate's own config)."""

    device: str = field(default="auto", metadata={"help": "auto (GPU if available), cpu or cuda"})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16"})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "micro-batches per optimizer step"})

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"accelerator.device must be auto, cpu or cuda, got {self.device!r}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise ValueError(f"accelerator.mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.gradient_accumulation_steps < 1:
            raise ValueError(f"accelerator.gradient_accumulation_steps must be >= 1, got {self.gradient_accumulation_steps}")

    def torch_device(self) -> str:
        """"cpu" or "cuda": the device `device` asks for (auto: cuda when available); cuda without CUDA is refused."""
        if self.device == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("accelerator.device=cuda but torch.cuda.is_available() is False")
        return "cpu" if self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available()) else "cuda"


# -------------------------------------------------------------------------------------------------- run dir


@dataclass(frozen=True)
class RunDir:
    """The files of one run."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def final(self) -> Path:
        return self.root / "final"


def prepare_run_dir(output_dir: str | Path, *, resume: str = "auto", overwrite: bool = False,
                    is_main: bool = True) -> tuple[RunDir, Path | None]:
    """Decide fresh start vs resume and create the directory (on the main process).

    Args:
        resume: "auto" resumes from the latest intact checkpoint if there is one (a truncated newer one is named
            and skipped; debris of interrupted saves is swept first); "never" starts fresh (an existing
            run with checkpoints is then an error unless `overwrite`); anything else is a checkpoint directory.
        overwrite: with resume="never", delete an existing run dir first.

    Returns:
        (run dir, checkpoint to resume from or None).

    Raises:
        FileExistsError / FileNotFoundError with the path and what to do.
    """
    run = RunDir(Path(output_dir))
    if is_main:
        sweep_debris(run.root)
    latest = latest_checkpoint(run.root)
    if resume == "auto":
        ckpt = latest_intact_checkpoint(run.root, is_main) if latest is not None else None
    elif resume == "never":
        ckpt = None
        if latest is not None and not overwrite:
            raise FileExistsError(f"{run.root}: run dir already has checkpoints ({latest.name}); use "
                                  "run.resume=auto to continue it, run.overwrite=true to replace it, or another run.output_dir")
        if latest is not None and is_main:
            shutil.rmtree(run.root)
    else:
        ckpt = Path(resume)
        if not (ckpt / "state.json").is_file():
            raise FileNotFoundError(f"run.resume: {ckpt} is not a checkpoint directory (no state.json)")
    if is_main:
        run.checkpoints.mkdir(parents=True, exist_ok=True)
    return run, ckpt


# -------------------------------------------------------------------------------------------------- metrics


def _jsonable(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().item() if v.numel() == 1 else v.detach().cpu().tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


class MetricsLogger:
    """Append `{"step": ..., **metrics, "time": ...}` lines to a JSONL file, flushed per line.

    `resume_step=None` starts a new file; `resume_step=k` keeps only entries with step <= k (the ones the
    resumed checkpoint had produced) so that a resumed run's file equals a straight run's. A torn last line
    (crash mid-write) is dropped; a corrupt line elsewhere is an error naming file and line.
    Only the main process should write: pass `enabled=False` elsewhere.
    `trackers`: started accelerate trackers (`zreward.trainers.trackers.start_trackers`) that get every line too
    (numbers and strings; `time` excepted) and are finished by `close`.
    """

    def __init__(self, path: str | Path, *, resume_step: int | None = None, enabled: bool = True,
                 trackers: list | None = None) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.trackers = list(trackers or []) if enabled else []
        self._f = None
        if not enabled:
            return
        kept: list[str] = []
        if resume_step is not None and self.path.exists():
            lines = self.path.read_text(encoding="utf-8").splitlines()
            for i, line in enumerate(lines):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    step = entry["step"]
                except (ValueError, KeyError, TypeError):
                    if i == len(lines) - 1:
                        continue  # torn write of the last line before a crash
                    raise ValueError(f"{self.path}:{i + 1}: expected a JSON object with a 'step' field, got {line[:80]!r}") from None
                if step <= resume_step:
                    kept.append(line)
        atomic_write_text(self.path, "".join(x + "\n" for x in kept))
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        """Write one line; tensors/numpy scalars become numbers (non-finite floats as JSON NaN/Infinity)."""
        if self._f is None:
            return
        entry = {"step": int(step), **{k: _jsonable(v) for k, v in metrics.items()}, "time": round(time.time(), 3)}
        self._f.write(json.dumps(entry) + "\n")
        self._f.flush()
        values = tracker_values({k: v for k, v in entry.items() if k not in ("step", "time")})
        for tracker in self.trackers:
            tracker.log(values, step=int(step))

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """All entries of a metrics JSONL file."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------- progress


def progress_enabled(enabled: bool = True, is_main: bool = True) -> bool:
    """Whether to draw a bar: config says so, main process, stderr is a TTY, ZREWARD_NO_PROGRESS is not 1."""
    if not enabled or not is_main or os.environ.get("ZREWARD_NO_PROGRESS", "") not in ("", "0"):
        return False
    return sys.stderr.isatty()


def progress_bar(total: int, *, initial: int = 0, desc: str = "train", enabled: bool = True, is_main: bool = True):
    """A tqdm bar over optimizer steps (a disabled, no-op bar when `progress_enabled` says no)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, dynamic_ncols=True,
                disable=not progress_enabled(enabled, is_main))


# ------------------------------------------------------------------------------------------ seeds, devices


def derive_seed(seed: int, rank: int = 0) -> int:
    """A 63-bit seed from (seed, rank) via numpy's SeedSequence: distinct per rank, no (seed+rank) collisions."""
    hi, lo = np.random.SeedSequence(entropy=seed, spawn_key=(rank,)).generate_state(2, dtype=np.uint32)
    return ((int(hi) << 32) | int(lo)) & (2**63 - 1)


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python `random`, numpy's global RNG and torch (CPU and CUDA) from `derive_seed(seed, rank)`.

    Call with rank=0 on every process before building the model (identical initial weights), then with the
    real rank before training if per-rank randomness (dropout, sampling) should differ. Returns the seed used.
    """
    s = derive_seed(seed, rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)  # also seeds every CUDA device
    return s


def make_accelerator(cfg: AcceleratorConfig | None = None, **kwargs: Any):
    """Build `accelerate.Accelerator` from an `AcceleratorConfig`; FSDP2 when accelerate's launcher asks for it.

    On CPU it passes `cpu=True`; under `torchrun` this makes accelerate initialise a gloo process group (observed:
    `accelerate launch --cpu --num_processes 2` silently runs one process, torchrun + cpu=True works).

    Sharding comes from accelerate's own configuration, i.e. the environment `accelerate launch --config_file
    configs/accelerate/fsdp.yaml` sets (`ACCELERATE_USE_FSDP=true`, `FSDP_VERSION=2`, `FSDP_*`). Only FSDP2
    (`fully_shard`) is supported: FSDP1 and DeepSpeed are refused with a message. accelerate 1.15 turns FSDP on only
    for GPU-type backends (on CPU the state stays MULTI_CPU and `prepare` would silently use DDP), so on CPU the
    FSDP2 plugin read from the same environment is installed on the accelerator's state after construction: the
    very `prepare` / `backward` / `clip_grad_norm_` / `no_sync` code paths of accelerate then run on gloo (how the
    CPU tests exercise FSDP2). Extra keyword arguments go to `Accelerator` unchanged.
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    cfg = cfg or AcceleratorConfig()
    cpu = cfg.torch_device() == "cpu"
    if _env_true("ACCELERATE_USE_DEEPSPEED"):
        raise ValueError("accelerate is configured for DeepSpeed (ACCELERATE_USE_DEEPSPEED=true, from `accelerate "
                         "launch` with a DeepSpeed config): zreward's trainers support DDP and FSDP2 only; use "
                         "configs/accelerate/fsdp.yaml for sharded training")
    fsdp = _env_true("ACCELERATE_USE_FSDP")
    if fsdp and os.environ.get("FSDP_VERSION", "1") != "2":
        raise ValueError(f"accelerate is configured for FSDP version {os.environ.get('FSDP_VERSION', '1')} "
                         "(FSDP_VERSION, fsdp_config.fsdp_version): zreward supports FSDP2 only; set "
                         "fsdp_version: 2 (see configs/accelerate/fsdp.yaml)")
    # `gradient_accumulation_steps` is deliberately not passed: our trainers split a step into micro-batches
    # themselves and divide every loss term by its count over the whole global batch, so accelerate's own
    # division of the loss by the number of micro-batches in `backward` would shrink the gradients a second time.
    acc = Accelerator(cpu=cpu, mixed_precision=cfg.mixed_precision, **kwargs)
    if fsdp and cpu and acc.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* environment, as accelerate does on GPUs
        if acc.mixed_precision != "no":
            plugin.set_mixed_precision(acc.mixed_precision)
        acc.state.distributed_type = DistributedType.FSDP
        acc.state.fsdp_plugin = plugin
    return acc


def _env_true(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def end_distributed() -> None:
    """Tear down the process group (if any) after a barrier, before the interpreter exits. Left to interpreter
    shutdown, gloo's threads are destroyed in arbitrary order and a rank can abort ("terminate called without an
    active exception", seen once in CI's 2-process test), failing a run that had finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def batch_indices(num_items: int, global_batch: int, step: int, seed: int, *, rank: int = 0,
                  world_size: int = 1) -> list[int]:
    """Indices of the examples that `rank` uses at global `step`: epochs are seeded permutations of
    range(num_items), consecutive global batches are taken from them (batches never span epochs; a short
    tail is dropped), and each rank gets a contiguous `global_batch // world_size` slice.

    Raises:
        ValueError: if global_batch is not divisible by world_size or exceeds num_items.
    """
    if global_batch % world_size:
        raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
    if not 0 < global_batch <= num_items:
        raise ValueError(f"global batch {global_batch} must be in [1, {num_items}] (dataset size)")
    per_epoch = num_items // global_batch
    epoch, pos = divmod(step, per_epoch)
    perm = np.random.default_rng([seed, epoch]).permutation(num_items)
    batch = perm[pos * global_batch:(pos + 1) * global_batch]
    local = global_batch // world_size
    return batch[rank * local:(rank + 1) * local].tolist()
