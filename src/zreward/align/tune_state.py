"""Tuning state: trainable parameters, EMA of them, and checkpoints for exact resume of `zreward gen tune`.

What is implemented:
- `trainable(module)`: name → parameter of the parameters that train (LoRA adapters, or the full transformer).
- `EMA`: an exponential moving average θ̄ ← d·θ̄ + (1 − d)·θ of those parameters (float32 shadows), with
  `swapped_in(params)` to sample / save with the averaged weights and put the live ones back afterwards.
- `save_tune_checkpoint` / `load_tune_checkpoint`: through `zreward.trainers.checkpoint` (pickle-free, atomic):
  the trainable parameters, AdamW state, global RNG states, the tuner's own `torch.Generator` state (it draws the
  prompts, seeds and ReFL/AlignProp steps), EMA shadows and the log/audit rows, so a resumed run repeats the
  uninterrupted run's steps exactly (tested).
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from zreward.trainers.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint


def trainable(module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    return {n: p for n, p in module.named_parameters() if p.requires_grad}


class EMA:
    """EMA of named parameters (float32 shadows on the parameters' device).

    Args:
        params: name → parameter.  decay: d in θ̄ ← d·θ̄ + (1 − d)·θ.
    """

    def __init__(self, params: dict[str, torch.nn.Parameter], decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema: expected a decay in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.detach().float().clone() for n, p in params.items()}

    @torch.no_grad()
    def update(self, params: dict[str, torch.nn.Parameter]) -> None:
        for n, p in params.items():
            self.shadow[n].lerp_(p.detach().float(), 1.0 - self.decay)

    @contextlib.contextmanager
    def swapped_in(self, params: dict[str, torch.nn.Parameter]):
        """Inside the block the parameters hold the EMA weights; the live weights come back afterwards."""
        live = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n].to(p.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(live[n])


def save_tune_checkpoint(out: Path, step: int, params: dict[str, torch.nn.Parameter], opt: torch.optim.Optimizer,
                         g: torch.Generator, ema: EMA | None, state: dict, keep_last: int = 2) -> Path:
    """Write `<out>/checkpoints/step_XXXXXX/` (see the module docstring)."""
    extra = {"generator_state": g.get_state(), "state": state}
    if ema is not None:
        extra["ema"] = {n: t.cpu() for n, t in ema.shadow.items()}
    return save_checkpoint(out / "checkpoints", step, {n: p.detach().cpu() for n, p in params.items()},
                           optimizer=opt, extra=extra, keep_last=keep_last)


def load_tune_checkpoint(out: Path, params: dict[str, torch.nn.Parameter], opt: torch.optim.Optimizer,
                         g: torch.Generator, ema: EMA | None) -> tuple[int, dict] | None:
    """Restore the latest checkpoint under `<out>/checkpoints` in place; returns (step, tuner state) or None.

    Raises:
        CheckpointError / ValueError naming the checkpoint when its parameters do not match this run's.
    """
    path = latest_checkpoint(out)
    if path is None:
        return None
    ck = load_checkpoint(path, optimizer=opt)
    if set(ck.model_state) != set(params):
        missing, extra = sorted(set(params) - set(ck.model_state)), sorted(set(ck.model_state) - set(params))
        raise ValueError(f"{path}: model.safetensors: trainable parameters differ from this run's "
                         f"(missing {missing[:3]}, unexpected {extra[:3]}); resume with the same LoRA/full-FT setup")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(ck.model_state[n].to(p.device, p.dtype))
    g.set_state(ck.extra["generator_state"])
    if ema is not None:
        if "ema" not in ck.extra:
            raise ValueError(f"{path}: no EMA state saved, but this run uses --ema")
        ema.shadow = {n: t.to(params[n].device).float() for n, t in ck.extra["ema"].items()}
    return ck.step, ck.extra["state"]
