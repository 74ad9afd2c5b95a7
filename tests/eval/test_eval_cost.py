from __future__ import annotations

import time

import numpy as np
import pytest

from zreward.eval.cost import Timer, measure_throughput, peak_memory_bytes, reset_peak_memory


def _rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def test_timer_measures_wall_time():
    with Timer() as t:
        time.sleep(0.05)
    assert 0.05 <= t.seconds < 0.5


def test_measure_throughput_items_per_second_and_tokens():
    calls = []

    def fn():
        calls.append(1)
        time.sleep(0.02)
        return 12                                            # tokens generated for the 4 items

    cost = measure_throughput(fn, n_items=4, warmup=2, repeats=3)
    assert len(calls) == 5                                   # 2 warm-up + 3 timed
    assert 0.02 <= cost.seconds_per_call < 0.2
    assert cost.items_per_s == pytest.approx(4 / cost.seconds_per_call)
    assert cost.tokens_per_item == 3.0
    assert cost.device == "cpu" and cost.to_json()["n_items"] == 4
    assert np.isnan(measure_throughput(lambda: None, n_items=2, warmup=0, repeats=1).tokens_per_item)
    with pytest.raises(TypeError, match="number of generated tokens"):
        measure_throughput(lambda: [1.0], n_items=1)
    with pytest.raises(ValueError, match="n_items"):
        measure_throughput(lambda: None, n_items=0)


def test_peak_memory_sees_an_allocation_and_resets():
    kind = reset_peak_memory()
    if kind != "rss_hwm":
        pytest.skip("VmHWM cannot be reset on this system; only the since-start peak is available")
    base = _rss_bytes()

    def fn():
        a = np.ones(25_000_000)                              # 200 MB, touched
        return None if a[-1] == 1.0 else 0

    cost = measure_throughput(fn, n_items=1, warmup=0, repeats=1)
    assert cost.memory_kind == "rss_hwm"
    assert cost.peak_memory_bytes >= base + 190_000_000
    reset_peak_memory()
    assert peak_memory_bytes() < cost.peak_memory_bytes - 150_000_000   # the old peak is forgotten
