"""Benchmark: memory and speed of training on a large split with per-batch image decoding (issue 14, item 5).

Builds a synthetic canonical split of `--records` records (default 100,000; 4 images per prompt, histogram labels
on the 4 dims, no pairs). To keep building it cheap the records point at a pool of `--pool` random PNG files of
`--size` px — the loader does not know that: every record is its own path and is decoded on its own. Then:

1. loads the split (`load_train_data`) and reports the process's RSS before and after (no decode-everything step:
   the eager cache it replaced would hold records × 3 × size² bytes of uint8 pixels, printed for comparison);
2. decoder throughput: images/s of `image_batch` over `--decode-batches` batches, with 0 and `--workers` decode
   threads;
3. trains a tiny direct-mode SFT model (`zreward.models.tiny`, CPU) for `--steps` steps with `data.max_pixels`
   capping the images to 64×64 (`--train-workers` decode threads, which also prefetch the next batch), sampling RSS
   every 0.1 s; prints RSS per step (min / max / first / last, and the
   slope over the second half) and training images/s (images per step / step time).

Usage: python benchmarks/bench_stream.py [--records N] [--size PX] [--steps S] [--out FILE.json]
Not part of the test suite. Keep other jobs in mind: timings on a shared machine vary.
"""
from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

DIMS = ("alignment", "realism", "aesthetics", "plausibility")
LEVELS = [1.0 + 0.5 * i for i in range(9)]


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_split(root: Path, records: int, pool: int, size: int, seed: int = 0) -> Path:
    """A canonical split of `records` records over `pool` image files (see the module docstring)."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    for k in range(pool):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / "images" / f"pool{k}.png")
    (root / "dataset.json").write_text(json.dumps({"name": "bench_stream", "levels": LEVELS, "dims": list(DIMS),
                                                   "source": "benchmarks/bench_stream.py"}))
    hists = rng.integers(0, 4, (records, len(DIMS), 9))
    hists[:, :, 4] += 1  # never an empty histogram
    with open(root / "images.jsonl", "w") as f:
        for i in range(records):
            labels = {d: {"hist": hists[i, j].tolist()} for j, d in enumerate(DIMS)}
            f.write(json.dumps({"id": f"r{i:07d}", "prompt": f"prompt number {i // 4}",
                                "image": f"images/pool{i % pool}.png", "labels": labels}) + "\n")
    return root


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--records", type=int, default=100_000)
    p.add_argument("--pool", type=int, default=64, help="distinct image files the records point at")
    p.add_argument("--size", type=int, default=128, help="side of the pool's square images (px)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--prompts-per-batch", type=int, default=8)
    p.add_argument("--decode-batches", type=int, default=20)
    p.add_argument("--workers", type=int, default=2, help="decode threads of the decoder-throughput measurement")
    p.add_argument("--train-workers", type=int, default=0,
                   help="data.decode_workers of the training run (> 0: the next batch is decoded during the step)")
    p.add_argument("--out", default=None, help="also write the summary here as JSON")
    args = p.parse_args()

    from zreward.models.tiny import init_tiny
    from zreward.trainers import sft
    from zreward.trainers.config import load_config
    from zreward.trainers.data import group_batch, load_train_data
    from zreward.trainers.run_utils import read_metrics

    tmp = Path(tempfile.mkdtemp(prefix="bench_stream_"))
    t0 = time.perf_counter()
    split = build_split(tmp / "split", args.records, args.pool, args.size)
    build_s = time.perf_counter() - t0
    out: dict = {"records": args.records, "pool_files": args.pool, "image_px": args.size,
                 "eager_cache_mib": args.records * 3 * args.size**2 / 2**20, "build_split_s": round(build_s, 1)}

    rss0 = rss_mib()
    t0 = time.perf_counter()
    data = load_train_data(split)
    out.update(load_s=round(time.perf_counter() - t0, 2), rss_before_load_mib=round(rss0, 1),
               rss_after_load_mib=round(rss_mib(), 1))

    for workers in (0, args.workers):  # decoder throughput alone
        data.images.workers = workers
        n, t0 = 0, time.perf_counter()
        for step in range(args.decode_batches):
            idx = group_batch(data, args.prompts_per_batch, step, seed=1)
            n += len(data.image_batch(idx))
        out[f"decode_img_per_s_workers{workers}"] = round(n / (time.perf_counter() - t0), 1)
    del data

    model = init_tiny("qwen2_vl", tmp / "model", preset="tiny", seed=0)
    samples: list[tuple[float, float]] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append((time.time(), rss_mib()))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    cfg = load_config(sft.Config, None, [f"model.init_from={model}", f"data.train={split}", "data.max_pixels=4096",
                                         f"data.prompts_per_batch={args.prompts_per_batch}", "run.progress=false",
                                         f"run.output_dir={tmp / 'run'}", f"run.max_steps={args.steps}",
                                         "run.save_every=0", "accelerator.device=cpu",
                                         f"data.decode_workers={args.train_workers}"])
    sampler.start()
    sft.train(cfg)
    stop.set()
    sampler.join()
    logs = read_metrics(tmp / "run" / "metrics.jsonl")
    ts = np.array([s[0] for s in samples])
    per_step = [samples[max(0, int(np.searchsorted(ts, e["time"])) - 1)][1] for e in logs]
    half = per_step[len(per_step) // 2:]
    slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else float("nan")
    images_per_step = args.prompts_per_batch * 4
    step_times = np.array([e["step_time"] for e in logs[1:]])  # step 1 includes lazy initialisations
    out.update(train_steps=len(logs), train_decode_workers=args.train_workers,
               rss_step_first_mib=round(per_step[0], 1), rss_step_last_mib=round(per_step[-1], 1),
               rss_step_min_mib=round(min(per_step), 1), rss_step_max_mib=round(max(per_step), 1),
               rss_slope_second_half_mib_per_step=round(slope, 3),
               train_img_per_s_median=round(images_per_step / float(np.median(step_times)), 1),
               rss_per_step_mib=[round(x, 1) for x in per_step])
    text = json.dumps(out, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
