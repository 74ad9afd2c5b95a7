"""GDSO step-time benchmark: rollout / scoring / update split and generated tokens per second.

Usage: python benchmarks/bench_gdso.py [--family qwen2_vl] [--preset tiny] [--prompts 2] [--per-prompt 4]
           [--dims 2] [--group-size 4] [--think 16] [--steps 3] [--device cpu] [--threads 2] [--init DIR]

Builds a random model (`zreward.models.tiny.init_tiny`) unless `--init` names a scorer dir, then runs `--steps`
GDSO steps with the trainer's own stage functions on random 64-px images with random labels (prompts × per-prompt
images, so within-prompt pairs exist): `rollout.rollout` (one batched KV-cached generate call; EOS is suppressed
so every chain has exactly --think tokens and timings do not depend on when a random model stops), then
`gdso.gdso_losses` (one teacher-forced forward over all chains: "scoring"), then backward + AdamW step ("update").
Prints one JSON line per step and the mean over steps after the first (warm-up).
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", default="qwen2_vl")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--init", default=None, help="scorer dir to use instead of a random tiny model")
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--per-prompt", type=int, default=4)
    ap.add_argument("--dims", type=int, default=2)
    ap.add_argument("--group-size", type=int, default=4)
    ap.add_argument("--think", type=int, default=16, help="chain length (tokens)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from zreward.models.scorer import load_scorer
    from zreward.trainers import gdso
    from zreward.trainers import rollout as R
    from zreward.trainers.rl import MicroBatch, eval_rollout

    tmp = tempfile.TemporaryDirectory()
    path = args.init
    if path is None:
        from zreward.models.tiny import init_tiny

        path = tmp.name
        init_tiny(args.family, path, preset=args.preset, seed=0)
    sc = load_scorer(path, device=args.device)
    sc.model.train()
    # Fixed-length chains: suppress EOS/pad so a random model cannot stop early.
    sc.suppress_ids = sorted(set(sc.suppress_ids) | {sc.tokenizer.eos_token_id, sc.tokenizer.pad_token_id} - {None})
    opt = torch.optim.AdamW([p for p in sc.model.parameters() if p.requires_grad], lr=1e-4)
    cfg = gdso.GDSOConfig(group_size=args.group_size, max_new_tokens=args.think)
    b, d, L = args.prompts * args.per_prompt, args.dims, len(sc.levels)
    dims = sc.dims[:d]
    prompts = [f"a red circle number {i // args.per_prompt}" for i in range(b)]
    group_ids = np.repeat(np.arange(args.prompts), args.per_prompt)
    rows = []
    for step in range(args.steps):
        images = torch.rand(b, 3, 64, 64)
        target = torch.softmax(torch.randn(b, d, L) * 2, -1)
        mos = (target * sc.levels).sum(-1)
        lab = R.Labels(mos, torch.ones(b, d), target, torch.ones(b, d, dtype=torch.bool))
        t0 = time.perf_counter()
        ro = R.rollout(sc, prompts, images, dims, args.group_size, args.think, 1.0)
        _sync(args.device)
        t_roll = time.perf_counter() - t0
        t0 = time.perf_counter()
        mb = MicroBatch(ro, eval_rollout(sc, cfg, prompts, images, dims, cfg.dist_samples), lab, group_ids)
        loss, st, _ = gdso.gdso_losses(cfg, sc, mb, None, None)
        _sync(args.device)
        t_score = time.perf_counter() - t0
        t0 = time.perf_counter()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(args.device)
        t_upd = time.perf_counter() - t0
        row = {"step": step, "chains": len(ro.chains.chain_ids), "gen_tokens": ro.gen_tokens,
               "t_rollout": round(t_roll, 3), "t_score": round(t_score, 3), "t_update": round(t_upd, 3),
               "step_s": round(t_roll + t_score + t_upd, 3), "gen_tok_per_s": round(ro.gen_tokens / t_roll, 1)}
        rows.append(row)
        print(json.dumps(row), flush=True)
    keep = rows[1:] or rows
    mean = {k: round(float(np.mean([r[k] for r in keep])), 3) for k in ("t_rollout", "t_score", "t_update", "step_s",
                                                                        "gen_tok_per_s")}
    print(json.dumps({"summary": mean, "family": args.family, "preset": args.preset if args.init is None else args.init,
                      "images": b, "dims": d, "group_size": args.group_size, "think": args.think,
                      "device": args.device, "threads": args.threads}))
    return 0


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


if __name__ == "__main__":
    raise SystemExit(main())
