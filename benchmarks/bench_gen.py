"""Benchmark of the reward-guided T2I stage: step timings and perception agreement.

Measures (CPU, the current torch thread count; pass --threads):
- generator: parameters, one pretraining step (flow-matching loss, fwd+bwd+AdamW), sampling a batch;
- reward steps with a Scorer (default: a random tiny qwen2_vl built here): DRaFT-1, DRaFT-K, ReFL, with and
  without gradient checkpointing;
- perception agreement with the oracle on a rendered split (64 px as stored, and box-downsampled to the
  generator's size).

    .venv/bin/python benchmarks/bench_gen.py --data /work/data/sw_default --out bench_gen.json [--threads 1]
"""
from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import torch


def _timeit(fn, reps: int = 3) -> float:
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/data/sw_default")
    ap.add_argument("--out", default="bench_gen.json")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = leave as is)")
    ap.add_argument("--scorer", default="", help="Scorer dir (default: a random tiny qwen2_vl)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--perception-images", type=int, default=1000)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from zreward.align.generator import GeneratorConfig, T2IGenerator
    from zreward.align.perceive import perception_agreement
    from zreward.align.pretrain import flow_matching_loss, split_dir
    from zreward.align.tune import TuneConfig, reward_step
    from zreward.models.scorer import load_scorer

    res: dict = {"threads": torch.get_num_threads()}
    gcfg = GeneratorConfig()
    gen = T2IGenerator(gcfg)
    res["generator"] = {"config": gcfg.__dict__, "params_M": round(sum(p.numel() for p in gen.parameters()) / 1e6, 3)}
    prompts = ["two blue circles to the left of a red square"] * 32
    x0 = torch.rand(32, 3, gcfg.image_size, gcfg.image_size) * 2 - 1
    opt = torch.optim.AdamW(gen.parameters(), 1e-4)
    g = torch.Generator().manual_seed(0)

    def pt_step():
        loss = flow_matching_loss(gen, x0, prompts, g)
        opt.zero_grad()
        loss.backward()
        opt.step()

    res["pretrain_step_b32_s"] = round(_timeit(pt_step), 3)
    res[f"sample_b32_{gcfg.steps}steps_s"] = round(_timeit(lambda: gen.generate(prompts, list(range(32))), 2), 3)

    scorer_dir = args.scorer
    if not scorer_dir:
        from zreward.models.tiny import init_tiny

        scorer_dir = str(init_tiny("qwen2_vl", Path(tempfile.mkdtemp()) / "s", preset="tiny"))
    scorer = load_scorer(scorer_dir)
    for p in scorer.model.parameters():
        p.requires_grad_(False)
    ref = copy.deepcopy(gen)
    b = args.batch
    for name, kw in [("draft1", dict(method="draft", k=1)), ("draft4", dict(method="draft", k=4)),
                     ("refl", dict(method="refl")), ("draft4_ckpt", dict(method="draft", k=4))]:
        if name.endswith("ckpt"):
            gen.transformer.enable_gradient_checkpointing()
        cfg = TuneConfig(reg=0.1, **kw)

        def step():
            loss, _, _ = reward_step(gen, ref, scorer, prompts[:b], list(range(b)), cfg, g)
            opt.zero_grad()
            loss.backward()
            opt.step()

        res[f"{name}_b{b}_s"] = round(_timeit(step, 2), 3)
    for size in (None, gcfg.image_size):
        t = time.perf_counter()
        agr = perception_agreement(split_dir(args.data, "test"), n=args.perception_images, size=size)
        agr["seconds"] = round(time.perf_counter() - t, 1)
        res[f"perception_{size or 'native'}px"] = agr
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if not k.startswith("perception")}, indent=2))
    for k in res:
        if k.startswith("perception"):
            print(k, json.dumps({d: res[k]["dims"][d] for d in res[k]["dims"]}), "objects", res[k]["objects_exact"])


if __name__ == "__main__":
    main()
