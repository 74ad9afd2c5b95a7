"""Micro-batching for the reward server: many small concurrent requests → few `Scorer.score` calls.

What is implemented: `MicroBatcher`, an asyncio queue with one worker coroutine.
- A request is submitted as a `Job` (decoded PIL images + prompts + a `BatchKey` = (dims, reasoning, samples)) and
  awaited through its future.
- The worker takes the oldest job, then keeps collecting until the queued images reach `max_batch` or `max_wait_ms`
  has passed since that first job arrived. It then forms one batch from the queued jobs that share the oldest job's
  key (jobs with another dims subset or reasoning setting wait for their own batch, in arrival order), never
  exceeding `max_batch` images except for a single job that alone is larger (it runs alone, chunked by the scorer's
  `batch_size`).
- The batch runs as ONE `Scorer.score` call in a dedicated single thread (torch releases the GIL, so the event
  loop keeps accepting and decoding requests meanwhile); each job's future gets its slice of the output.
- **Isolation**: when a batch's score call raises, each of its jobs is re-run on its own, so a request that still
  fails the model call (after the server's input checks) gets its own error and its batch mates their results; no
  job ever receives another job's error.
- Besides `max_batch` images, a batch holds at most `max_batch_tokens` prompt tokens (`Job.tokens`), unless a
  single job alone holds more.
- A job whose future was cancelled (its client went away) before the batch ran is dropped; one cancelled after
  the batch started is simply not resolved — it never disturbs the other jobs of the batch.
- `close()` (server shutdown) stops accepting, lets the worker finish every queued job, then stops it.

Admission control: `submit` raises `QueueFull` when the queued images would exceed `max_queue`, or their decoded
pixels `max_queue_pixels` (decoded RGB images are what the queue holds in memory: 3 bytes per pixel); the server
answers 429, which `RewardClient` retries with backoff. A job is always admitted into an empty queue.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is only needed by the scorer; keep `zreward serve --help` light
    import torch


class QueueFull(RuntimeError):
    """The batcher's queue holds too many images; retry later."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and accepts no new jobs."""


@dataclass(frozen=True)
class BatchKey:
    """Jobs are only batched with jobs of the same key (one `Scorer.score` call has one dims list and mode)."""

    dims: tuple[str, ...]
    reasoning: bool = False
    samples: int = 1


@dataclass
class JobResult:
    """One job's slice of a batch output.

    Attributes:
        probs: (n, D, L) level distributions.  mean, std: (n, D).  overall: (n,).
        batch_images: images in the forward batch this job rode in (for stats/tests).
    """

    probs: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    overall: torch.Tensor
    batch_images: int


@dataclass
class Job:
    prompts: list[str]
    images: list  # decoded PIL images, len == len(prompts)
    key: BatchKey
    future: asyncio.Future
    pixels: int = 0
    tokens: int = 0  # prompt tokens (for max_batch_tokens)
    enqueued: float = field(default_factory=time.monotonic)

    @property
    def n(self) -> int:
        return len(self.prompts)


@dataclass
class BatcherStats:
    """Counters exposed by `GET /info` (all since start).

    Attributes:
        jobs: jobs submitted.  images: images submitted.  batches: `Scorer.score` calls.  batched_images: images
        scored.  max_batch_images: largest batch.  batch_hist: batch size (images) → count.  dropped_jobs: jobs whose
        client had gone before their batch ran.  failed_batches: score calls that raised (each failed batch of
        several jobs is then re-run one job at a time).  isolated_jobs: jobs re-run alone after their batch failed.
        failed_jobs: jobs answered with an error.
        rejected_full: submissions refused with QueueFull.  busy_s: seconds spent inside score calls.
    """

    jobs: int = 0
    images: int = 0
    batches: int = 0
    batched_images: int = 0
    max_batch_images: int = 0
    batch_hist: dict[int, int] = field(default_factory=dict)
    dropped_jobs: int = 0
    failed_batches: int = 0
    isolated_jobs: int = 0
    failed_jobs: int = 0
    rejected_full: int = 0
    busy_s: float = 0.0

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["batch_hist"] = {str(k): v for k, v in sorted(self.batch_hist.items())}
        d["mean_batch_images"] = self.batched_images / self.batches if self.batches else 0.0
        return d


class MicroBatcher:
    """Collect concurrent jobs into batches for one scorer; see the module docstring.

    Args:
        scorer: a `zreward.models.scorer.Scorer` (or anything with the same `score` signature).
        max_batch: images per forward batch (also the scorer's `batch_size` for a single oversized job).
        max_wait_ms: how long the first job of a batch waits for company.
        max_queue: images allowed in the queue before `submit` raises `QueueFull`.
        max_queue_pixels: decoded pixels allowed in the queue (None = no limit).
        max_batch_tokens: prompt tokens per forward batch (None = no limit).
    """

    def __init__(self, scorer, max_batch: int = 16, max_wait_ms: float = 10.0, max_queue: int = 1024,
                 max_queue_pixels: int | None = None, max_batch_tokens: int | None = None):
        if max_batch < 1:
            raise ValueError(f"max_batch: expected ≥ 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms: expected ≥ 0, got {max_wait_ms}")
        self.scorer = scorer
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.max_queue, self.max_queue_pixels = max_queue, max_queue_pixels
        self.max_batch_tokens = max_batch_tokens
        self.stats = BatcherStats()
        self._pending: deque[Job] = deque()
        self._queued_images = self._queued_pixels = 0
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._closing = False
        # One thread: forward passes never overlap (they would only fight over the same cores / GPU).
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="zreward-score")

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._wakeup = asyncio.Event()
        self._closing = False
        self._worker = asyncio.get_running_loop().create_task(self._run(), name="zreward-batcher")

    async def close(self) -> None:
        """Stop accepting jobs, finish all queued ones, stop the worker and its thread."""
        self._closing = True
        if self._wakeup is not None:
            self._wakeup.set()
        if self._worker is not None:
            await self._worker
            self._worker = None
        self._executor.shutdown(wait=True)

    @property
    def queued_images(self) -> int:
        return self._queued_images

    # ------------------------------------------------------------------ submission
    def submit(self, prompts: list[str], images: list, key: BatchKey, pixels: int = 0,
               tokens: int = 0) -> asyncio.Future:
        """Queue one request; await the returned future for its `JobResult`.

        Args:
            pixels: total pixels of the decoded images (for `max_queue_pixels`).
            tokens: total prompt tokens (for `max_batch_tokens`).

        Raises:
            BatcherClosed: during shutdown.  QueueFull: more than `max_queue` images would be queued.
        """
        if self._closing or self._worker is None:
            raise BatcherClosed("the server is shutting down")
        n = len(prompts)
        if self._queued_images and (self._queued_images + n > self.max_queue or (
                self.max_queue_pixels is not None and self._queued_pixels + pixels > self.max_queue_pixels)):
            self.stats.rejected_full += 1
            raise QueueFull(f"{self._queued_images} images ({self._queued_pixels} pixels) queued (limits "
                            f"{self.max_queue} images, {self.max_queue_pixels} pixels); retry later")
        fut = asyncio.get_running_loop().create_future()
        self._pending.append(Job(list(prompts), list(images), key, fut, pixels, tokens))
        self._queued_images += n
        self._queued_pixels += pixels
        self.stats.jobs += 1
        self.stats.images += n
        self._wakeup.set()
        return fut

    # ------------------------------------------------------------------ worker
    async def _wait(self, timeout: float | None) -> None:
        self._wakeup.clear()
        try:
            await asyncio.wait_for(self._wakeup.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def _take_batch(self) -> list[Job]:
        """Remove and return the next batch: the oldest job plus later same-key jobs that fit in max_batch."""
        first = self._pending[0]
        batch, rest, total, tokens = [], deque(), 0, 0
        cap = self.max_batch_tokens
        for job in self._pending:
            if job.key == first.key and (not batch or (total + job.n <= self.max_batch and
                                                       (cap is None or tokens + job.tokens <= cap))):
                batch.append(job)
                total += job.n
                tokens += job.tokens
            else:
                rest.append(job)
        self._pending = rest
        self._queued_images -= total
        self._queued_pixels -= sum(j.pixels for j in batch)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._pending:
                if self._closing:
                    return
                await self._wait(None)
                continue
            # Wait for company until max_batch images are queued or the oldest job has waited max_wait.
            deadline = self._pending[0].enqueued + self.max_wait
            while not self._closing and self._queued_images < self.max_batch:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                await self._wait(left)
            batch = self._take_batch()
            live = [j for j in batch if not j.future.done()]  # done here = cancelled: its client is gone
            self.stats.dropped_jobs += len(batch) - len(live)
            if live:
                await self._score(loop, live)

    async def _score(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> None:
        """Score `jobs` in one call; if it raises, re-run each job alone so only the failing ones get an error."""
        try:
            outs = await self._call(loop, jobs)
        except Exception as e:  # a model failure fails requests (never the worker)
            self.stats.failed_batches += 1
            if len(jobs) == 1:
                self.stats.failed_jobs += 1
                if not jobs[0].future.done():
                    jobs[0].future.set_exception(e)
                return
            for j in jobs:  # isolation: each job gets its own result or its own error, never a batch mate's
                if not j.future.done():
                    self.stats.isolated_jobs += 1
                    await self._score(loop, [j])
            return
        for j, part in zip(jobs, outs):
            if not j.future.done():  # a client that went away mid-batch: its slice is just dropped
                j.future.set_result(part)

    async def _call(self, loop: asyncio.AbstractEventLoop, jobs: list[Job]) -> list[JobResult]:
        """One `Scorer.score` call for the jobs' images (in the scoring thread) → each job's slice."""
        key = jobs[0].key
        prompts = [p for j in jobs for p in j.prompts]
        images = [im for j in jobs for im in j.images]
        n = len(prompts)
        t0 = time.monotonic()
        try:
            out = await loop.run_in_executor(
                self._executor, lambda: self.scorer.score(prompts, images, dims=list(key.dims),
                                                          reasoning=key.reasoning, samples=key.samples,
                                                          batch_size=self.max_batch))
        finally:
            self.stats.busy_s += time.monotonic() - t0
        parts, s = [], 0
        for j in jobs:
            sl = slice(s, s + j.n)
            s += j.n
            parts.append(JobResult(out.probs[sl], out.mean[sl], out.std[sl], out.overall[sl], n))
        self.stats.batches += 1
        self.stats.batched_images += n
        self.stats.max_batch_images = max(self.stats.max_batch_images, n)
        self.stats.batch_hist[n] = self.stats.batch_hist.get(n, 0) + 1
        return parts
