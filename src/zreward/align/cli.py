"""`zreward gen pretrain | tune | eval | label`: the reward-guided T2I verbs (ShapesWorld generator; `tune` also takes a
local diffusers Z-Image / SD3 / FLUX / Qwen-Image pipeline directory).

    zreward gen pretrain --data DATASET_DIR --out DIR [--profile quick|full] [--steps N] [--arch default|tiny]
                         [--seed S]
    zreward gen tune --generator DIR --reward SCORER_DIR --method refl|draft|alignprop [--k K] --out DIR
                     [--profile quick|full] [--steps N] [--full-ft] [--grad-checkpointing] [--reg BETA]
                     [--lambda L] [--data DATASET_DIR | --prompts FILE --heldout-prompts FILE]
                     [--device cuda --dtype bf16] [--height H --width W --guidance G --sample-steps N]
                     [--ema D] [--save-every N] [--sample-every N] [--judge [NAME=]DIR[:reasoning[:M]] ...]
    zreward gen eval --a GEN_DIR --b GEN_DIR --prompts N --out DIR [--data DATASET_DIR] [--seed S]
    zreward gen label --generator GEN_DIR --out SPLIT_DIR [--data DATASET_DIR] [--split train|val|test|ood]
                      [--prompts N] [--per-prompt K] [--seed S] [--overwrite]

Profiles set steps/batch sizes (see `pretrain.PROFILES`, `tune.PROFILES`); explicit flags override them.
Each command prints where it wrote its outputs; `eval` prints the GSB report as JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

from zreward.align.gen_eval import evaluate_gsb
from zreward.align.gen_label import LabelConfig, label_generator
from zreward.align.pretrain import ARCHS, PROFILES as PT_PROFILES
from zreward.align.pretrain import PretrainConfig, pretrain
from zreward.align.tune import PROFILES as TUNE_PROFILES
from zreward.align.flow_pipeline import is_pipeline_dir
from zreward.align.tune import METHODS, TuneConfig, tune

DEFAULT_DATA = "runs/shapes_world"
DATA_HELP = f"ShapesWorld dataset dir (default {DEFAULT_DATA}; build one with `zreward world build --out DIR`)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zreward gen", description="reward-guided T2I (ShapesWorld, diffusers pipelines)")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pretrain", help="train the SFT generator on high-quality ShapesWorld images")
    a.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    a.add_argument("--out", required=True)
    a.add_argument("--profile", choices=sorted(PT_PROFILES), default="quick")
    a.add_argument("--steps", type=int)
    a.add_argument("--batch-size", type=int)
    a.add_argument("--arch", choices=sorted(ARCHS), default="default", help="generator size (tiny: smoke tests)")
    a.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("tune", help="ReFL / DRaFT-K / AlignProp with a Scorer as differentiable reward")
    t.add_argument("--generator", required=True, help="ShapesWorld generator dir or local diffusers pipeline dir "
                   "(Z-Image, SD3, FLUX, Qwen-Image)")
    t.add_argument("--reward", required=True, help="Scorer directory")
    t.add_argument("--method", choices=list(METHODS), default="draft")
    t.add_argument("--k", type=int, default=1, help="DRaFT-K: gradient steps at the end of sampling "
                   "(alignprop: the largest K drawn)")
    t.add_argument("--out", required=True)
    t.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    t.add_argument("--prompts", help="training prompts (.txt one per line or .jsonl with 'prompt'); "
                   "required for a pipeline")
    t.add_argument("--heldout-prompts", help="held-out prompts for the audit and sample grids")
    t.add_argument("--profile", choices=sorted(TUNE_PROFILES), default=None,
                   help="ShapesWorld step/batch settings (default quick for a ShapesWorld generator, none for a "
                   "pipeline)")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--sample-steps", type=int, help="Euler steps (default: the generator's)")
    t.add_argument("--height", type=int)
    t.add_argument("--width", type=int)
    t.add_argument("--guidance", type=float, help="the pipeline's guidance_scale")
    t.add_argument("--max-sequence-length", type=int)
    t.add_argument("--device", default="cpu")
    t.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    t.add_argument("--full-ft", action="store_true", help="full fine-tuning instead of LoRA")
    t.add_argument("--lora-rank", type=int, default=8)
    t.add_argument("--grad-checkpointing", action="store_true")
    t.add_argument("--reg", type=float, default=0.0, help="beta of the velocity regulariser toward the frozen model")
    t.add_argument("--lambda", dest="lam", type=float, default=None, help="uncertainty penalty: mean - lambda*std")
    t.add_argument("--margin", type=float, default=None, help="ReFL loss relu(margin - reward) instead of -reward")
    t.add_argument("--scorer-size", type=int, help="resize images to this side before scoring "
                   "(default: the scorer's own preprocessing; the ShapesWorld profiles use 64)")
    t.add_argument("--ema", type=float, help="EMA decay of the tuned weights (off by default)")
    t.add_argument("--save-every", type=int, help="checkpoint period in steps (resumes from the latest)")
    t.add_argument("--no-resume", action="store_true", help="ignore checkpoints already in --out")
    t.add_argument("--sample-every", type=int, help="write samples/step_N.png every N steps")
    t.add_argument("--judge", action="append", default=None, help="held-out Scorer for the hacking audit, "
                   "[NAME=]DIR[:direct|:reasoning[:M]] (repeatable)")
    t.add_argument("--judge-reasoning", action="store_true", help="teacher judges without a suffix score in "
                   "reasoning mode")
    t.add_argument("--judge-samples", type=int, default=4, help="chains per (image, dim) for those (default 4)")
    t.add_argument("--audit-every", type=int)
    t.add_argument("--audit-prompts", type=int)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval", help="GSB of generator A vs B by the simulated raters")
    e.add_argument("--a", required=True, help="candidate (tuned) generator")
    e.add_argument("--b", required=True, help="baseline (SFT) generator")
    e.add_argument("--prompts", type=int, default=100)
    e.add_argument("--out", required=True)
    e.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    e.add_argument("--seed", type=int, default=0)
    g = sub.add_parser("label", help="a labelled split of a generator's own images (perceived scene -> oracle -> "
                       "the world's simulated raters), for training reward models on generator-like images")
    g.add_argument("--generator", required=True, help="ShapesWorld generator dir")
    g.add_argument("--out", required=True, help="split directory to write")
    g.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    g.add_argument("--split", default="train", choices=("train", "val", "test", "ood"),
                   help="whose prompts to draw (default train)")
    g.add_argument("--prompts", type=int, help="the first N distinct prompts (default: all)")
    g.add_argument("--per-prompt", type=int, default=4, help="images per prompt, one seed each (default 4)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--overwrite", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "pretrain":
        over = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
        pretrain(PretrainConfig.for_profile(args.profile, data=args.data, out=args.out, seed=args.seed,
                                            gen=copy.deepcopy(ARCHS[args.arch]), **over))
    elif args.cmd == "tune":
        keys = ("steps", "batch_size", "lr", "audit_every", "audit_prompts", "sample_steps", "height", "width",
                "guidance", "max_sequence_length", "scorer_size", "ema", "save_every", "sample_every")
        over = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
        over.update(generator=args.generator, reward=args.reward, out=args.out, data=args.data, prompts=args.prompts,
                    heldout_prompts=args.heldout_prompts, method=args.method, k=args.k, lora=not args.full_ft,
                    lora_rank=args.lora_rank, grad_checkpointing=args.grad_checkpointing, reg=args.reg,
                    uncertainty_lambda=args.lam, margin=args.margin, device=args.device, dtype=args.dtype,
                    resume=not args.no_resume, judges=args.judge, judge_reasoning=args.judge_reasoning,
                    judge_samples=args.judge_samples, seed=args.seed)
        profile = args.profile or (None if is_pipeline_dir(args.generator) else "quick")
        tune(TuneConfig.for_profile(profile, **over) if profile else TuneConfig(**over))
    elif args.cmd == "label":
        print(json.dumps(label_generator(LabelConfig(
            generator=args.generator, data=args.data, out=args.out, split=args.split, prompts=args.prompts,
            per_prompt=args.per_prompt, seed=args.seed, overwrite=args.overwrite)), indent=2))
    else:
        report = evaluate_gsb(args.a, args.b, args.prompts, args.out, seed=args.seed, data=args.data)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
