"""MicroBatcher with a fake scorer: batch formation, slicing, grouping by key, cancellation, failures, shutdown."""
from __future__ import annotations

import asyncio
import threading
from types import SimpleNamespace

import pytest
import torch

from zreward.serve.batcher import BatcherClosed, BatchKey, MicroBatcher, QueueFull

A, B = BatchKey(("alignment", "realism")), BatchKey(("aesthetics",))


class FakeScorer:
    """score() returns, for prompt "k", probs filled with k and mean = k; logs every call."""

    def __init__(self, gate: threading.Event | None = None, fail_first: bool = False):
        self.calls, self.gate, self.fail_first = [], gate, fail_first
        self.started = threading.Event()

    def score(self, prompts, images, dims=None, reasoning=False, samples=1, batch_size=None):
        self.calls.append((list(prompts), tuple(dims), batch_size))
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        if self.fail_first and len(self.calls) == 1:
            raise RuntimeError("CUDA out of memory (fake)")
        k = torch.tensor([float(p) for p in prompts])
        d = len(dims)
        return SimpleNamespace(probs=k.view(-1, 1, 1).expand(-1, d, 9).clone(), mean=k.view(-1, 1).expand(-1, d),
                               std=torch.zeros(len(k), d), overall=k.clone())


def _run(coro):
    return asyncio.run(coro)


def test_jobs_are_grouped_by_key_capped_at_max_batch_and_sliced_back():
    async def main():
        sc = FakeScorer()
        mb = MicroBatcher(sc, max_batch=4, max_wait_ms=50)
        mb.start()
        futs = [mb.submit(["1", "2", "3"], [None] * 3, A), mb.submit(["4"], [None], B),
                mb.submit(["5", "6"], [None] * 2, A), mb.submit(["7"], [None], A), mb.submit(["8"], [None], B)]
        res = await asyncio.gather(*futs)
        await mb.close()
        return sc, mb, res

    sc, mb, res = _run(main())
    # oldest job first; same-key jobs that fit join it (["5","6"] would make 5 > 4 and waits); B jobs together
    assert [c[0] for c in sc.calls] == [["1", "2", "3", "7"], ["4", "8"], ["5", "6"]]
    assert [c[1] for c in sc.calls] == [A.dims, B.dims, A.dims]
    assert [r.mean[:, 0].tolist() for r in res] == [[1, 2, 3], [4], [5, 6], [7], [8]]
    assert res[0].probs.shape == (3, 2, 9) and res[1].probs.shape == (1, 1, 9)
    assert res[3].batch_images == 4 and res[2].batch_images == 2
    assert mb.stats.batches == 3 and mb.stats.batch_hist == {4: 1, 2: 2} and mb.stats.max_batch_images == 4


def test_an_oversized_job_runs_alone_chunked_by_the_scorer():
    async def main():
        sc = FakeScorer()
        mb = MicroBatcher(sc, max_batch=4, max_wait_ms=0)
        mb.start()
        r = await mb.submit([str(i) for i in range(10)], [None] * 10, A)
        await mb.close()
        return sc, r

    sc, r = _run(main())
    assert len(sc.calls) == 1 and sc.calls[0][2] == 4 and r.overall.tolist() == list(range(10))


def test_cancelled_jobs_are_dropped_or_ignored_without_breaking_the_batch():
    async def main():
        gate = threading.Event()
        sc = FakeScorer(gate)
        mb = MicroBatcher(sc, max_batch=8, max_wait_ms=30)
        mb.start()
        gone_early = mb.submit(["1"], [None], A)
        gone_early.cancel()  # client left while queued: dropped before the batch runs
        f2, f3 = mb.submit(["2"], [None], A), mb.submit(["3"], [None], A)
        await asyncio.to_thread(sc.started.wait, 10)
        f2.cancel()  # client left while its batch is running
        gate.set()
        r3 = await f3
        r4 = await mb.submit(["4"], [None], A)
        await mb.close()
        return sc, mb, r3, r4

    sc, mb, r3, r4 = _run(main())
    assert [c[0] for c in sc.calls] == [["2", "3"], ["4"]]
    assert r3.overall.tolist() == [3.0] and r4.overall.tolist() == [4.0]
    assert mb.stats.dropped_jobs == 1


def test_a_failing_batch_is_rerun_one_job_at_a_time():
    async def main():
        mb = MicroBatcher(FakeScorer(fail_first=True), max_batch=8, max_wait_ms=20)
        mb.start()
        f1, f2 = mb.submit(["1"], [None], A), mb.submit(["2"], [None], A)
        got = await asyncio.gather(f1, f2, return_exceptions=True)
        ok = await mb.submit(["3"], [None], A)
        await mb.close()
        return mb, got, ok

    mb, got, ok = _run(main())
    # the batch failed once (a transient failure); re-run alone, both jobs got their own results
    assert [g.overall.tolist() for g in got] == [[1.0], [2.0]] and [g.batch_images for g in got] == [1, 1]
    assert ok.overall.tolist() == [3.0]
    assert (mb.stats.failed_batches, mb.stats.isolated_jobs, mb.stats.failed_jobs) == (1, 2, 0)


def test_a_poisoned_job_fails_alone_with_its_own_error():
    class Poisonable(FakeScorer):
        def score(self, prompts, images, **kw):
            bad = [p for p in prompts if not p.isdigit()]
            if bad:
                raise ValueError(f"cannot score {bad[0]!r}")
            return super().score(prompts, images, **kw)

    async def main():
        mb = MicroBatcher(Poisonable(), max_batch=8, max_wait_ms=50)
        mb.start()
        futs = [mb.submit([p], [None], A) for p in ["1", "2", "poison", "4"]]
        got = await asyncio.gather(*futs, return_exceptions=True)
        await mb.close()
        return mb, got

    mb, got = _run(main())
    assert [g.overall.tolist() for i, g in enumerate(got) if i != 2] == [[1.0], [2.0], [4.0]]
    assert isinstance(got[2], ValueError) and str(got[2]) == "cannot score 'poison'"
    assert (mb.stats.failed_batches, mb.stats.isolated_jobs, mb.stats.failed_jobs) == (2, 4, 1)


def test_batches_respect_max_batch_tokens():
    async def main():
        sc = FakeScorer()
        mb = MicroBatcher(sc, max_batch=8, max_wait_ms=50, max_batch_tokens=10)
        mb.start()
        futs = [mb.submit([str(k)], [None], A, tokens=t) for k, t in ((1, 6), (2, 4), (3, 4), (4, 20))]
        await asyncio.gather(*futs)
        await mb.close()
        return sc

    sc = _run(main())
    # 6 + 4 fit in 10 tokens; 4 more would not; a single 20-token job runs alone
    assert [c[0] for c in sc.calls] == [["1", "2"], ["3"], ["4"]]


def test_queue_limit_and_close_finishes_queued_jobs():
    async def main():
        mb = MicroBatcher(FakeScorer(), max_batch=8, max_wait_ms=10_000, max_queue=3)
        mb.start()
        f1 = mb.submit(["1", "2"], [None] * 2, A)
        with pytest.raises(QueueFull):
            mb.submit(["3", "4"], [None] * 2, A)
        f2 = mb.submit(["5"], [None], A)
        mb.max_queue, mb.max_queue_pixels = 100, 1000  # now the decoded-pixel budget binds
        mb.submit(["7"], [None], A, pixels=900)
        with pytest.raises(QueueFull, match="pixels"):
            mb.submit(["8"], [None], A, pixels=200)
        await mb.close()  # does not wait the 10 s max_wait: shutdown flushes the queue at once
        with pytest.raises(BatcherClosed):
            mb.submit(["6"], [None], A)
        return mb, f1.result(), f2.result()

    mb, r1, r2 = _run(main())
    assert r1.overall.tolist() == [1.0, 2.0] and r2.overall.tolist() == [5.0]
    assert mb.stats.rejected_full == 2 and mb.stats.batches == 1 and mb.stats.batched_images == 4


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="max_batch"):
        MicroBatcher(FakeScorer(), max_batch=0)
    with pytest.raises(ValueError, match="max_wait_ms"):
        MicroBatcher(FakeScorer(), max_wait_ms=-1)
