"""Sharded (FSDP2) training checkpoints: every rank writes its own shard, pickle-free, for exact resume.

A sharded checkpoint is a `step_XXXXXX/` directory like `zreward.trainers.checkpoint`'s, except that the model and
optimizer state are split by rank, each file holding only that rank's local shard of every `fully_shard`ed
parameter (`DTensor.to_local()`) and the replicated buffers:

* `model_rank00000.safetensors`, ...                       - the model state (LoRA: the adapters only);
* `optimizer_rank00000.safetensors` + `.json`, ...       - `optimizer.state_dict()` with local shards;
* `scheduler.json`, `rng.safetensors` + `rng.json`         - as in an unsharded checkpoint (rank 0 writes them);
* `state.json`                                              - as unsharded, plus `"shards": world size`.

The files of all ranks go into one temporary directory named after rank 0's pid (`.step_XXXXXX.tmp-<pid>-shards`,
swept when that process is dead), which rank 0 renames into place after every rank has written and the barrier
passed: a kill at any point leaves no `step_` directory that `latest_checkpoint` would pick. Resume needs the
same number of processes (the shards are not re-partitioned; the RNG states are per rank anyway) and restores
every shard bitwise. Nothing here calls `pickle` or `torch.load`; no collective moves Python objects.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from zreward.atomic import replace_dir, sweep_stale_tmp
from zreward.trainers.checkpoint import (FORMAT_VERSION, Checkpoint, CheckpointError, _load_state, _save_state,
                                         _unshare, decode_state, encode_state, prune_checkpoints, restore_rng_state,
                                         step_dir_name)

__all__ = ["is_sharded", "reshard_all", "save_sharded_checkpoint", "load_sharded_checkpoint", "shard_file"]


def is_sharded(model) -> bool:
    """Whether `model` is an FSDP2 (`fully_shard`) module."""
    return isinstance(model, FSDPModule)


def reshard_all(model) -> None:
    """Put every FSDP2 unit of `model` back to its sharded parameters (local, no collective): after `generation`
    gathered the root explicitly, and before a checkpoint reads the parameters, so that shards, never gathered
    full tensors, are written. (A guard: with torch 2.13 the parameters were DTensors again after a no-grad
    forward as well, checked.)"""
    for m in model.modules():
        if isinstance(m, FSDPModule):
            m.reshard()


def shard_file(stem: str, rank: int) -> str:
    return f"{stem}_rank{rank:05d}"


def _local(obj: Any) -> Any:
    """The nested state with every DTensor replaced by this rank's local shard."""
    if isinstance(obj, DTensor):
        return obj.to_local()
    if isinstance(obj, dict):
        return {k: _local(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_local(v) for v in obj)
    return obj


def _rank0_pid(device: torch.device) -> int:
    pid = torch.tensor([os.getpid()], dtype=torch.long, device=device)
    torch.distributed.broadcast(pid, src=0)
    return int(pid.item())


def save_sharded_checkpoint(ckpt_root: str | Path, step: int, model_state: dict[str, torch.Tensor], *,
                            optimizer, scheduler, rng_states: list[dict[str, Any]], extra: dict[str, Any],
                            keep_last: int | None, rank: int, world: int, device: torch.device) -> Path:
    """Write `<ckpt_root>/step_XXXXXX/` from every rank (collective: all ranks call it). `model_state` may hold
    DTensors (FSDP2 parameters); only their local shards are written. Returns the checkpoint path."""
    dist = torch.distributed
    target = Path(ckpt_root) / step_dir_name(step)
    tmp = target.parent / f".{target.name}.tmp-{_rank0_pid(device)}-shards"
    if rank == 0:
        sweep_stale_tmp(target)
        tmp.mkdir(parents=True)
    dist.barrier()
    try:
        save_file(_unshare(_local(dict(model_state))), str(tmp / f"{shard_file('model', rank)}.safetensors"),
                  metadata={"format": "pt"})
        _save_state(_local(optimizer.state_dict()), tmp / shard_file("optimizer", rank))
        ok = torch.ones(1, device=device)
    except Exception:
        ok = torch.zeros(1, device=device)
        raise
    finally:  # every rank reaches the all-reduce, so a failing rank does not leave the others waiting
        dist.all_reduce(ok, op=dist.ReduceOp.MIN)
    if not ok.item():
        raise CheckpointError(f"{target}: another rank failed to write its shard")
    if rank == 0:
        _save_state(scheduler.state_dict(), tmp / "scheduler")
        _save_state({"ranks": rng_states}, tmp / "rng")
        extra_tensors: dict[str, torch.Tensor] = {}
        state = {"format_version": FORMAT_VERSION, "step": int(step), "world_size": len(rng_states),
                 "shards": world, "extra": encode_state(extra, extra_tensors, "extra")}
        if extra_tensors:
            save_file(_unshare(extra_tensors), str(tmp / "extra.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state, indent=1), encoding="utf-8")  # last: marks complete
        replace_dir(tmp, target)
        if keep_last is not None:
            prune_checkpoints(ckpt_root, keep_last)
    dist.barrier()
    return target


def _as_dtensor(local: torch.Tensor, like: DTensor) -> DTensor:
    return DTensor.from_local(local.to(like.device), like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride())


def _restore_model(model, weights: dict[str, torch.Tensor], lora: bool, where: Path) -> None:
    """Copy this rank's saved shards into the (sharded) model in place."""
    current = ({k: v for k, v in model.named_parameters() if v.requires_grad} if lora else model.state_dict())
    if set(current) != set(weights):
        missing, unexpected = sorted(set(current) - set(weights)), sorted(set(weights) - set(current))
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}; other model / LoRA settings?)")
    with torch.no_grad():
        for name, cur in current.items():
            dst = cur.to_local() if isinstance(cur, DTensor) else cur
            if dst.shape != weights[name].shape:
                raise CheckpointError(f"{where}: {name}: shard of shape {tuple(weights[name].shape)}, the model's "
                                      f"is {tuple(dst.shape)} (another number of processes or model?)")
            dst.copy_(weights[name])


def _restore_optimizer(optimizer, saved: dict, where: Path) -> None:
    """Load `saved` (local shards) into `optimizer`, turning each state tensor shaped like its parameter's local
    shard back into a DTensor with that parameter's layout."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    ids = [i for g in saved["param_groups"] for i in g["params"]]
    if len(ids) != len(params):
        raise CheckpointError(f"{where}: optimizer state for {len(ids)} parameters, the optimizer has {len(params)}")
    by_id = dict(zip(ids, params))
    state = {}
    for pid, st in saved["state"].items():
        p = by_id[pid]
        state[pid] = {k: _as_dtensor(v, p) if isinstance(p, DTensor) and isinstance(v, torch.Tensor)
                      and v.dim() > 0 else v for k, v in st.items()}
    optimizer.load_state_dict({**saved, "state": state})


def load_sharded_checkpoint(path: str | Path, *, model, optimizer, scheduler, lora: bool, rank: int,
                            world: int) -> Checkpoint:
    """Restore this rank's model and optimizer shards, the scheduler and this rank's RNG from a sharded checkpoint
    written with `world` processes. Returns the Checkpoint (its `model_state` is empty: applied in place)."""
    path = Path(path)
    try:
        state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a complete zreward checkpoint: {e}") from None
    shards = state.get("shards")
    if shards is None:
        raise CheckpointError(f"{path}: an unsharded checkpoint (no FSDP); resume it without FSDP, or start anew")
    if shards != world:
        raise CheckpointError(f"{path / 'state.json'}: written by {shards} FSDP processes; resume with the same "
                              f"number (this run has {world})")
    model_file = path / f"{shard_file('model', rank)}.safetensors"
    try:
        weights = load_file(str(model_file), device="cpu")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{model_file}: cannot read: {e}") from None
    _restore_model(model, weights, lora, model_file)
    _restore_optimizer(optimizer, _load_state(path / shard_file("optimizer", rank)), path)
    scheduler.load_state_dict(_load_state(path / "scheduler"))
    ranks = _load_state(path / "rng")["ranks"]
    restore_rng_state(ranks[rank])
    extra_st = path / "extra.safetensors"
    extra = decode_state(state["extra"], load_file(str(extra_st)) if extra_st.exists() else {},
                         str(path / "state.json"))
    return Checkpoint(path=path, step=int(state["step"]), model_state={}, extra=extra, world_size=world)
