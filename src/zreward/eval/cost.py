"""Cost measurement: wall time, throughput (items/s), generated tokens per item, peak memory.

Implemented:
- `Timer`: a context manager around `time.perf_counter`; on a CUDA device it synchronises before reading the clock
  at entry and exit, because kernels run asynchronously and an unsynchronised timer measures only the launches.
- `reset_peak_memory` / `peak_memory_bytes`: on CUDA `torch.cuda.max_memory_allocated` (tensor memory; the caching
  allocator's reserve and the CUDA context are not counted) after `torch.cuda.reset_peak_memory_stats`. On CPU the
  process peak resident set size: Linux `VmHWM` from /proc/self/status, which is reset per measurement by writing
  "5" to /proc/self/clear_refs; where that is impossible, `resource.getrusage(...).ru_maxrss`, a peak since process
  start that cannot be reset (then a later model's figure is at least the earlier one's; `Cost.memory_kind` says
  which counter was used).
- `measure_throughput(fn, n_items)`: warm-up calls, then timed repeats of `fn()`; images/s, seconds per call,
  generated tokens per item (when `fn` returns a token count), peak memory.

Compare models only from one process on one machine, measured in the same run.
"""
from __future__ import annotations

import numbers
import resource
import sys
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

__all__ = ["Timer", "Cost", "reset_peak_memory", "peak_memory_bytes", "measure_throughput"]


def _is_cuda(device) -> bool:
    return device is not None and torch.device(device).type == "cuda"


def _sync(device) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(torch.device(device))


class Timer:
    """Wall-clock timer: ``with Timer(device) as t: ...`` then ``t.seconds``.

    Args:
        device: None / "cpu" (no synchronisation) or a CUDA device (synchronised at entry and exit).
    """

    def __init__(self, device: str | torch.device | None = None):
        self.device = device
        self.seconds = float("nan")
        self._t0 = 0.0

    def __enter__(self) -> Timer:
        _sync(self.device)
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.seconds = time.perf_counter() - self._t0


def _rss_hwm_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


def reset_peak_memory(device: str | torch.device | None = None) -> str:
    """Starts a new peak-memory window.

    Returns:
        The counter `peak_memory_bytes` will read: "cuda_max_allocated", "rss_hwm" (reset worked) or
        "rss_peak_since_start" (could not reset).
    """
    if _is_cuda(device):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return "cuda_max_allocated"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux ≥ 4.0: resets VmHWM to the current RSS
        if _rss_hwm_bytes() is not None:
            return "rss_hwm"
    except OSError:
        pass
    return "rss_peak_since_start"


def peak_memory_bytes(device: str | torch.device | None = None, kind: str | None = None) -> int:
    """Peak memory in bytes since the last `reset_peak_memory` (see the module docstring for what is counted).

    Args:
        device: None / "cpu" or a CUDA device.
        kind: the value `reset_peak_memory` returned (None: CUDA counter on CUDA, else VmHWM if readable).
    """
    if _is_cuda(device):
        return int(torch.cuda.max_memory_allocated(torch.device(device)))
    if kind != "rss_peak_since_start":
        hwm = _rss_hwm_bytes()
        if hwm is not None:
            return hwm
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


@dataclass
class Cost:
    """Cost of one model on one workload.

    Attributes:
        items_per_s: throughput over the timed repeats (e.g. images/s).
        seconds_per_call: mean wall time of one `fn()` call.
        n_items: items per call.
        repeats: timed calls.
        tokens_per_item: generated tokens per item (NaN when `fn` returns no count).
        peak_memory_bytes: peak over warm-up and timed calls.
        memory_kind: which counter (see `reset_peak_memory`).
        device: device string.
    """
    items_per_s: float
    seconds_per_call: float
    n_items: int
    repeats: int
    tokens_per_item: float
    peak_memory_bytes: int
    memory_kind: str
    device: str

    def to_json(self) -> dict:
        return asdict(self)


def measure_throughput(fn: Callable[[], int | None], n_items: int, *, warmup: int = 1, repeats: int = 3,
                       device: str | torch.device | None = None) -> Cost:
    """Times `fn` (which processes `n_items` items per call) after `warmup` untimed calls.

    Args:
        fn: no-argument callable doing one batch of work; may return the number of tokens it generated.
        n_items: items per call (> 0).
        warmup: untimed calls first (compilation, allocator warm-up).
        repeats: timed calls (> 0).
        device: where `fn` runs (CUDA: synchronised timing and the CUDA memory counter).

    Returns:
        Cost; tokens_per_item averages the counts returned by the timed calls.
    """
    if n_items <= 0 or repeats <= 0 or warmup < 0:
        raise ValueError(f"measure_throughput: n_items={n_items}, repeats={repeats}, warmup={warmup}; expected "
                         "n_items > 0, repeats > 0, warmup >= 0")
    kind = reset_peak_memory(device)
    for _ in range(warmup):
        fn()
    tokens: list[float] = []
    with Timer(device) as t:
        for _ in range(repeats):
            out = fn()
            if out is not None:
                if not isinstance(out, numbers.Real):
                    raise TypeError(f"measure_throughput: fn returned {type(out).__name__}, expected None or the "
                                    "number of generated tokens (int)")
                tokens.append(float(out))
    tok = sum(tokens) / (len(tokens) * n_items) if len(tokens) == repeats else float("nan")
    return Cost(items_per_s=n_items * repeats / t.seconds, seconds_per_call=t.seconds / repeats, n_items=n_items,
                repeats=repeats, tokens_per_item=tok, peak_memory_bytes=peak_memory_bytes(device, kind),
                memory_kind=kind, device=str(torch.device(device)) if device is not None else "cpu")
