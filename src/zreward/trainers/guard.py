"""`NonFiniteGuard`: skip the optimizer step on a non-finite loss / gradient norm, agreeing across ranks, and stop
with a clear error after more than `max_skips` consecutive skips (`run.max_nonfinite_skips`)."""
from __future__ import annotations

import math

import torch


class NonFiniteError(RuntimeError):
    """Training produced non-finite values for more consecutive steps than allowed."""


class NonFiniteGuard:
    """Decide per step whether to apply the optimizer step; stop after too many consecutive bad steps.

    Use after backward, before `optimizer.step()`::

        if guard.check(step, loss, grad_norm):
            optimizer.step(); scheduler.step()
        optimizer.zero_grad()

    Under torch.distributed the verdict is all-reduced, so every rank skips together (a rank stepping alone
    would desynchronise the replicas). Save `state_dict()` in the checkpoint's extra state for exact resume.
    """

    def __init__(self, max_skips: int) -> None:
        if max_skips < 0:
            raise ValueError(f"max_skips must be >= 0, got {max_skips}")
        self.max_skips = max_skips
        self.consecutive = 0
        self.total = 0

    def check(self, step: int, loss: torch.Tensor | float, grad_norm: torch.Tensor | float | None = None) -> bool:
        """True when the step may be applied; False to skip it. Raises NonFiniteError past the limit."""
        loss_ok = _finite(loss)
        grad_ok = grad_norm is None or _finite(grad_norm)
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            device = loss.device if isinstance(loss, torch.Tensor) and dist.get_backend() == "nccl" else "cpu"
            flags = torch.tensor([float(loss_ok), float(grad_ok)], device=device)
            dist.all_reduce(flags, op=dist.ReduceOp.MIN)
            loss_ok, grad_ok = bool(flags[0].item()), bool(flags[1].item())
        if loss_ok and grad_ok:
            self.consecutive = 0
            return True
        self.consecutive += 1
        self.total += 1
        if self.consecutive > self.max_skips:
            what = "loss" if not loss_ok else "gradient norm"
            raise NonFiniteError(
                f"{what} became non-finite at step {step} ({self.consecutive} consecutive skipped steps, limit "
                f"{self.max_skips}; run.max_nonfinite_skips). Lower the learning rate, check the data, or use float32.")
        return False

    def state_dict(self) -> dict[str, int]:
        return {"consecutive": self.consecutive, "total": self.total}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.consecutive, self.total = int(state["consecutive"]), int(state["total"])


def _finite(x: torch.Tensor | float) -> bool:
    if isinstance(x, torch.Tensor):
        return bool(torch.isfinite(x.detach()).all().item())
    return math.isfinite(float(x))
