"""CPU benchmark of the score layer: direct-mode vs reasoning-mode images/s with the same tiny model.

Usage: python benchmarks/bench_scorer.py [--families qwen3_vl,qwen3_5] [--preset tiny] [--batch 8] [--think 32]

For each family it builds a random model (`zreward.models.tiny.init_tiny`) in a temp dir, loads it with
`zreward.load_scorer`, and times `Scorer.score` on a batch of 64-px images over all 4 rubric dimensions:
direct mode (one forward) and reasoning mode (greedy chains of exactly --think tokens: EOS is suppressed so random
models do not stop early, then one forward to read the score). Prints img/s for both and their ratio.
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch


def _time(fn, reps: int, clock) -> float:
    """Best of `reps` timings after a warm-up call (the minimum is robust to other load on a shared machine)."""
    fn()  # warm-up (first-call allocations, oneDNN kernel creation)
    best = float("inf")
    for _ in range(reps):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="qwen3_vl,qwen3_5,qwen2_5_vl,qwen2_vl,llava,gemma3")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--think", type=int, default=32, help="reasoning chain length (tokens)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with process CPU time (use with --threads 1 on a loaded machine: img per CPU-second)")
    args = ap.parse_args(argv)
    clock = time.process_time if args.cpu_time else time.perf_counter
    torch.set_num_threads(args.threads)
    from zreward import load_scorer
    from zreward.models.tiny import init_tiny

    print(f"preset={args.preset} batch={args.batch} images x 4 dims, 64 px, think={args.think} tokens, "
          f"threads={args.threads}, clock={'process CPU' if args.cpu_time else 'wall'} (best of {args.reps})")
    print(f"{'family':<12}{'params':>10}{'direct img/s':>15}{'reason img/s':>15}{'ratio':>8}")
    for fam in args.families.split(","):
        with tempfile.TemporaryDirectory() as d:
            init_tiny(fam, d, preset=args.preset, max_new_tokens=args.think)
            s = load_scorer(d)
            s.eos_ids = set()  # fixed-length chains: time exactly --think tokens per chain
            s.suppress_ids = sorted(set(s.suppress_ids) | {s.tokenizer.eos_token_id, s.tokenizer.pad_token_id})
            n_params = sum(p.numel() for p in s.model.parameters())
            g = torch.Generator().manual_seed(0)
            imgs = torch.rand(args.batch, 3, 64, 64, generator=g)
            prompts = [f"a red circle left of {i} blue squares" for i in range(args.batch)]
            t_dir = _time(lambda: s.score(prompts, imgs), args.reps, clock)
            t_rea = _time(lambda: s.score(prompts, imgs, reasoning=True), args.reps, clock)
            print(f"{fam:<12}{n_params / 1e6:>9.2f}M{args.batch / t_dir:>15.1f}{args.batch / t_rea:>15.2f}"
                  f"{t_rea / t_dir:>7.1f}x", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
