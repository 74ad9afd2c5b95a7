"""Pickle-free, atomic training checkpoints for exact resume.

A checkpoint is a directory `<run_dir>/checkpoints/step_XXXXXX/` holding:

* `model.safetensors`       - the model state (a dict of tensors, e.g. full weights or only LoRA weights);
* `optimizer.safetensors` + `optimizer.json`  - `optimizer.state_dict()` split into its tensors and a JSON
  structure that refers to them (torch's own format otherwise needs pickle);
* `scheduler.json` (+ `scheduler.safetensors` if it holds tensors) - `scheduler.state_dict()`, same split;
* `rng.safetensors` + `rng.json` - for every rank: torch CPU (and CUDA) generator states as uint8 tensors,
  numpy's and Python's global RNG states as JSON;
* `state.json`              - the step, the world size and the trainer's extra JSON-able state.

Writes are atomic (`zreward.atomic.atomic_dir`): everything goes into a hidden temporary directory that is renamed
to `step_XXXXXX` only after every file is written and fsync'ed, so a crash or exception never leaves a half-written checkpoint that
`latest_checkpoint` would pick. Pruning (`keep_last`) renames old checkpoints away before deleting them.
Nothing here calls `pickle` or `torch.load`.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from zreward.atomic import atomic_dir

STEP_DIR_RE = re.compile(r"^step_(\d+)$")
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written or read back; the message names the file and the problem."""


# ------------------------------------------------------------- state_dict <-> (tensors, JSON) without pickle


def encode_state(obj: Any, tensors: dict[str, torch.Tensor], where: str, key: str = "") -> Any:
    """Split a nested state (dicts, lists, tuples, tensors, scalars) into JSON plus a flat tensor table.

    Tensors become `{"__tensor__": name}` with the tensor stored under `name` in `tensors`; tuples become
    `{"__tuple__": [...]}`; dicts with non-string keys (optimizer state is keyed by int) become
    `{"__items__": [[k, v], ...]}`. Anything else non-JSON raises CheckpointError naming `where` and the key.
    """
    if isinstance(obj, torch.Tensor):
        name = key or "tensor"
        tensors[name] = obj.detach()
        return {"__tensor__": name}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {k: encode_state(v, tensors, where, f"{key}.{k}" if key else k) for k, v in obj.items()}
        return {"__items__": [[k, encode_state(v, tensors, where, f"{key}.{k}" if key else str(k))]
                              for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_state(v, tensors, where, f"{key}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_state(v, tensors, where, f"{key}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise CheckpointError(f"{where}: cannot store {key or '<root>'!r} of type {type(obj).__name__} "
                          "without pickle (only tensors, numbers, strings, lists, tuples and dicts)")


def decode_state(obj: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    """Inverse of `encode_state`."""
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            try:
                return tensors[obj["__tensor__"]]
            except KeyError:
                raise CheckpointError(f"{where}: tensor {obj['__tensor__']!r} is missing") from None
        if "__ndarray__" in obj:
            return np.asarray(obj["__ndarray__"], dtype=obj["dtype"])
        if "__tuple__" in obj:
            return tuple(decode_state(v, tensors, where) for v in obj["__tuple__"])
        if "__items__" in obj:
            return {k: decode_state(v, tensors, where) for k, v in obj["__items__"]}
        return {k: decode_state(v, tensors, where) for k, v in obj.items()}
    if isinstance(obj, list):
        return [decode_state(v, tensors, where) for v in obj]
    return obj


def _save_state(state: Any, stem: Path) -> None:
    """Write `<stem>.json` and, when there are tensors, `<stem>.safetensors`."""
    tensors: dict[str, torch.Tensor] = {}
    tree = encode_state(state, tensors, stem.name)
    if tensors:
        save_file(_unshare(tensors), str(stem.with_suffix(".safetensors")))
    stem.with_suffix(".json").write_text(json.dumps(tree), encoding="utf-8")


def _load_state(stem: Path, device: str | torch.device = "cpu") -> Any:
    json_path, st_path = stem.with_suffix(".json"), stem.with_suffix(".safetensors")
    try:
        tree = json.loads(json_path.read_text(encoding="utf-8"))
        tensors = load_file(str(st_path), device=str(device)) if st_path.exists() else {}
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{json_path}: cannot read: {e}") from None
    return decode_state(tree, tensors, str(json_path))


def _unshare(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors refuses tensors that share storage (tied weights, views): clone the later ones only."""
    seen: set[tuple[str, int]] = set()
    out = {}
    for k, t in tensors.items():
        t = t.detach()
        ident = (str(t.device), t.untyped_storage().data_ptr()) if t.numel() else None
        if ident is not None and ident in seen or not t.is_contiguous():
            t = t.contiguous().clone()
        elif ident is not None:
            seen.add(ident)
        out[k] = t
    return out


# ------------------------------------------------------------------------------------------------ RNG state


def capture_rng_state() -> dict[str, Any]:
    """This process's global RNG states: torch CPU (+ every CUDA device), numpy, Python `random`."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "key": np_state[1].tolist(), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state` (after a JSON round trip: lists are turned back into tuples)."""
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state((n["name"], np.asarray(n["key"], dtype=np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.cpu() for t in state["cuda"]])


def gather_rng_states() -> list[dict[str, Any]]:
    """Every rank's `capture_rng_state()`, in rank order, on every rank (one entry when not distributed).

    Collective: all ranks must call it. States travel as UTF-8 JSON in uint8 tensors (no pickle).
    """
    local = capture_rng_state()
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [local]
    tensors: dict[str, torch.Tensor] = {}
    tree = encode_state(local, tensors, "rng")
    blob = json.dumps({"tree": tree, "tensors": {k: v.cpu().tolist() for k, v in tensors.items()}}).encode()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    size = torch.tensor([len(blob)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    width = int(max(s.item() for s in sizes))
    buf = torch.zeros(width, dtype=torch.uint8, device=device)
    buf[: len(blob)] = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    bufs = [torch.zeros_like(buf) for _ in sizes]
    dist.all_gather(bufs, buf)
    out = []
    for b, s in zip(bufs, sizes):
        d = json.loads(bytes(b[: int(s.item())].cpu().tolist()).decode())
        ts = {k: torch.tensor(v, dtype=torch.uint8) for k, v in d["tensors"].items()}
        out.append(decode_state(d["tree"], ts, "rng"))
    return out


# ------------------------------------------------------------------------------------------ save / load


def step_dir_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(ckpt_root: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under `ckpt_root` as (step, path), oldest first; temporary dirs are ignored."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR_RE.match(p.name)
        if m and p.is_dir() and (p / "state.json").is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run (`<run_dir>/checkpoints/step_*`), or None."""
    found = list_checkpoints(Path(run_dir) / "checkpoints")
    return found[-1][1] if found else None


def prune_checkpoints(ckpt_root: str | Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` checkpoints (each renamed aside first); returns the removed."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be >= 1, got {keep_last}")
    removed = []
    for _, p in list_checkpoints(ckpt_root)[:-keep_last]:
        trash = p.parent / f".del-{p.name}-{os.getpid()}"
        os.replace(p, trash)  # after this, a crash leaves only a hidden dir, never a partial step_ dir
        shutil.rmtree(trash, ignore_errors=True)
        removed.append(p)
    return removed


def save_checkpoint(
    ckpt_root: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    *,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    keep_last: int | None = None,
) -> Path:
    """Atomically write `<ckpt_root>/step_XXXXXX/` and prune to `keep_last` (None keeps all).

    Call on the main process only; get `rng_states` from `gather_rng_states()` (a collective, all ranks) or
    `[capture_rng_state()]`. With None, this process's state is stored as rank 0's.

    Args:
        ckpt_root: the run's checkpoints directory (`RunDir.checkpoints`).
        step: number of optimizer steps done; training resumes at this step.
        model_state: name -> tensor (e.g. `accelerator.unwrap_model(model).state_dict()`).
        optimizer, scheduler: objects with `state_dict()`; stored without pickle.
        rng_states: one `capture_rng_state()` dict per rank.
        extra: JSON-able trainer state (data position, guard counters, ...); tensors allowed.
    """
    rng_states = rng_states if rng_states is not None else [capture_rng_state()]
    target = Path(ckpt_root) / step_dir_name(step)
    with atomic_dir(target) as tmp:
        save_file(_unshare(dict(model_state)), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if optimizer is not None:
            _save_state(optimizer.state_dict(), tmp / "optimizer")
        if scheduler is not None:
            _save_state(scheduler.state_dict(), tmp / "scheduler")
        _save_state({"ranks": rng_states}, tmp / "rng")
        extra_tensors: dict[str, torch.Tensor] = {}
        state = {"format_version": FORMAT_VERSION, "step": int(step), "world_size": len(rng_states),
                 "extra": encode_state(extra or {}, extra_tensors, "extra")}
        if extra_tensors:
            save_file(_unshare(extra_tensors), str(tmp / "extra.safetensors"))
        # state.json last: list_checkpoints() treats a step dir without it as incomplete.
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")
    if keep_last is not None:
        prune_checkpoints(ckpt_root, keep_last)
    return target


@dataclass
class Checkpoint:
    """What `load_checkpoint` read back (model weights are returned, not applied, unless a model was given)."""

    path: Path
    step: int
    model_state: dict[str, torch.Tensor]
    extra: dict[str, Any] = field(default_factory=dict)
    world_size: int = 1


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
    rank: int = 0,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint directory and restore optimizer, scheduler and this rank's RNG states in place.

    Args:
        path: a `step_XXXXXX` directory (see `latest_checkpoint`).
        model: if given, `model.load_state_dict(weights, strict=True)` is applied (pass the unwrapped module).
        rank: whose RNG state to restore; the checkpoint must hold one per rank of the current run.

    Raises:
        CheckpointError: missing/corrupt files, or RNG states for a different number of ranks.
    """
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
        if state.get("shards"):
            raise CheckpointError(f"{path}: a sharded checkpoint written by {state['shards']} FSDP processes; "
                                  "resume it under FSDP with that many processes (configs/accelerate/fsdp.yaml)")
        weights = load_file(str(path / "model.safetensors"), device=str(map_location))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a complete zreward checkpoint: {e}") from None
    if state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path / 'state.json'}: format_version: expected {FORMAT_VERSION}, "
                              f"got {state.get('format_version')!r}")
    extra_st = path / "extra.safetensors"
    extra = decode_state(state["extra"], load_file(str(extra_st)) if extra_st.exists() else {},
                         str(path / "state.json"))
    if model is not None:
        model.load_state_dict(weights, strict=True)
    for obj, stem in ((optimizer, "optimizer"), (scheduler, "scheduler")):
        if obj is not None:
            if not (path / f"{stem}.json").exists():
                raise CheckpointError(f"{path}: no {stem} state saved, but a {stem} was given to restore")
            # torch's Optimizer.load_state_dict moves state tensors to each parameter's device and dtype.
            obj.load_state_dict(_load_state(path / stem, map_location))
    if restore_rng:
        ranks = _load_state(path / "rng")["ranks"]
        if rank >= len(ranks):
            raise CheckpointError(f"{path / 'rng.json'}: holds RNG states for {len(ranks)} rank(s), "
                                  f"cannot restore rank {rank}; resume with the same number of processes")
        restore_rng_state(ranks[rank])
    return Checkpoint(path=path, step=int(state["step"]), model_state=weights, extra=extra,
                      world_size=int(state.get("world_size", 1)))
