"""Splitting fixed work over the processes of a torchrun job and gathering the results (RISD teacher, eval).

The unit of work is a **chunk** (one batch of images) whose content and RNG seed do not depend on the number of
processes: `chunks(n, size)` cuts 0..n-1 into batches, `my_chunks` gives rank r the chunks k ≡ r (mod world), and
each chunk is computed under `chunk_seed(seed, k)`. So 1 and N processes compute the same batches with the same
random draws, and the gathered results are identical (CPU; on GPUs up to the devices' own determinism).

`all_gather_objects` / `barrier` run on a separate **gloo** group created with an explicit timeout: the ranks wait
there for the slowest one, and that wait must be allowed to last longer than a collective normally does (the
default group's timeout, 10–30 minutes, is for steps, not for a teacher pass over a split). Pickled objects go
through host memory, so this works the same under an NCCL default group. With one process (or no process group)
they return at once. `run_and_gather` runs a rank's share and gathers it; an exception on any rank is raised on
every rank (instead of leaving the others waiting out the timeout).
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

from zreward.trainers.run_utils import derive_seed


class GatherTimeoutError(RuntimeError):
    """A rank waited longer than the allowed timeout for the others."""


def rank_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) without one."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def chunks(n: int, size: int) -> list[range]:
    """0..n-1 cut into consecutive batches of `size` (the last may be shorter)."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    return [range(s, min(s + size, n)) for s in range(0, n, size)]


def my_chunks(n_chunks: int, rank: int, world: int) -> list[int]:
    """Chunk numbers rank `rank` computes: k ≡ rank (mod world) — balanced to within one chunk."""
    return list(range(rank, n_chunks, world))


def chunk_seed(seed: int, k: int) -> int:
    """The RNG seed of chunk `k` (`derive_seed(seed, k)`): independent of which rank computes it."""
    return derive_seed(seed, k)


def _group(timeout_s: float):
    return torch.distributed.new_group(backend="gloo", timeout=timedelta(seconds=timeout_s))


def _collective(fn, timeout_s: float, what: str) -> Any:
    group = _group(timeout_s)
    try:
        return fn(group)
    except RuntimeError as e:
        if "timed out" in str(e).lower() or "timeout" in str(e).lower():
            raise GatherTimeoutError(f"{what}: a process waited more than {timeout_s:.0f} s for the others "
                                     f"({e}); raise the timeout if one share of the work can take that long") from e
        raise
    finally:
        torch.distributed.destroy_process_group(group)


def all_gather_objects(obj: Any, timeout_s: float, what: str = "gather") -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank (`[obj]` with one process).

    Raises:
        GatherTimeoutError: a rank waited more than `timeout_s` seconds (names `what` and the timeout).
    """
    _, world = rank_world()
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    _collective(lambda g: torch.distributed.all_gather_object(out, obj, group=g), timeout_s, what)
    return out


def run_and_gather(fn: Callable[[], Any], timeout_s: float, what: str) -> list[Any]:
    """`fn()` on this rank, then every rank's result in rank order (`all_gather_objects`). If `fn` raised on some
    rank, every rank raises: that rank its own exception, the others a RuntimeError naming the rank and error."""
    try:
        mine: Any = fn()
    except Exception as e:  # noqa: BLE001 - handed to every rank, then re-raised
        mine = _Failed(f"{type(e).__name__}: {e}")
        failure: Exception | None = e
    else:
        failure = None
    got = all_gather_objects(mine, timeout_s, what)
    bad = [(r, g) for r, g in enumerate(got) if isinstance(g, _Failed)]
    if failure is not None:
        raise failure
    if bad:
        r, g = bad[0]
        raise RuntimeError(f"{what}: process {r} failed: {g.message}")
    return got


class _Failed:
    """What a rank whose share raised sends to the others."""

    def __init__(self, message: str) -> None:
        self.message = message


def barrier(timeout_s: float, what: str = "barrier") -> None:
    """Wait for every rank (no-op with one process); `GatherTimeoutError` after `timeout_s` seconds."""
    if rank_world()[1] > 1:
        _collective(lambda g: torch.distributed.barrier(group=g), timeout_s, what)
