"""`zreward gen pretrain | tune | eval`: the reward-guided T2I verbs (ShapesWorld generator).

    zreward gen pretrain --data DATASET_DIR --out DIR [--profile quick|full] [--steps N] [--arch default|tiny]
                         [--seed S]
    zreward gen tune --generator DIR --reward SCORER_DIR --method refl|draft [--k K] --out DIR
                     [--profile quick|full] [--steps N] [--full-ft] [--grad-checkpointing] [--reg BETA]
                     [--lambda L] [--data DATASET_DIR]
    zreward gen eval --a GEN_DIR --b GEN_DIR --prompts N --out DIR [--data DATASET_DIR] [--seed S]

Profiles set steps/batch sizes (see `pretrain.PROFILES`, `tune.PROFILES`); explicit flags override them.
Each command prints where it wrote its outputs; `eval` prints the GSB report as JSON.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys

from zreward.align.gen_eval import evaluate_gsb
from zreward.align.pretrain import ARCHS, PROFILES as PT_PROFILES
from zreward.align.pretrain import PretrainConfig, pretrain
from zreward.align.tune import PROFILES as TUNE_PROFILES
from zreward.align.tune import TuneConfig, tune

DEFAULT_DATA = "runs/shapes_world"
DATA_HELP = f"ShapesWorld dataset dir (default {DEFAULT_DATA}; build one with `zreward world build --out DIR`)"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zreward gen", description="reward-guided T2I on ShapesWorld")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pretrain", help="train the SFT generator on high-quality ShapesWorld images")
    a.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    a.add_argument("--out", required=True)
    a.add_argument("--profile", choices=sorted(PT_PROFILES), default="quick")
    a.add_argument("--steps", type=int)
    a.add_argument("--batch-size", type=int)
    a.add_argument("--arch", choices=sorted(ARCHS), default="default", help="generator size (tiny: smoke tests)")
    a.add_argument("--seed", type=int, default=0)
    t = sub.add_parser("tune", help="ReFL / DRaFT-K with a Scorer as differentiable reward")
    t.add_argument("--generator", required=True)
    t.add_argument("--reward", required=True, help="Scorer directory")
    t.add_argument("--method", choices=["refl", "draft"], default="draft")
    t.add_argument("--k", type=int, default=1, help="DRaFT-K: gradient steps at the end of sampling")
    t.add_argument("--out", required=True)
    t.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    t.add_argument("--profile", choices=sorted(TUNE_PROFILES), default="quick")
    t.add_argument("--steps", type=int)
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--full-ft", action="store_true", help="full fine-tuning instead of LoRA")
    t.add_argument("--lora-rank", type=int, default=8)
    t.add_argument("--grad-checkpointing", action="store_true")
    t.add_argument("--reg", type=float, default=0.0, help="beta of the L2-to-SFT velocity regulariser")
    t.add_argument("--lambda", dest="lam", type=float, default=None, help="uncertainty penalty: mean - lambda*std")
    t.add_argument("--margin", type=float, default=None, help="ReFL loss relu(margin - reward) instead of -reward")
    t.add_argument("--audit-every", type=int)
    t.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval", help="GSB of generator A vs B by the simulated raters")
    e.add_argument("--a", required=True, help="candidate (tuned) generator")
    e.add_argument("--b", required=True, help="baseline (SFT) generator")
    e.add_argument("--prompts", type=int, default=100)
    e.add_argument("--out", required=True)
    e.add_argument("--data", default=DEFAULT_DATA, help=DATA_HELP)
    e.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.cmd == "pretrain":
        over = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size)) if v is not None}
        pretrain(PretrainConfig.for_profile(args.profile, data=args.data, out=args.out, seed=args.seed,
                                            gen=copy.deepcopy(ARCHS[args.arch]), **over))
    elif args.cmd == "tune":
        over = {k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                  ("audit_every", args.audit_every)) if v is not None}
        tune(TuneConfig.for_profile(args.profile, generator=args.generator, reward=args.reward, out=args.out,
                                    data=args.data, method=args.method, k=args.k, lora=not args.full_ft,
                                    lora_rank=args.lora_rank, grad_checkpointing=args.grad_checkpointing,
                                    reg=args.reg, uncertainty_lambda=args.lam, margin=args.margin, seed=args.seed,
                                    **over))
    else:
        report = evaluate_gsb(args.a, args.b, args.prompts, args.out, seed=args.seed, data=args.data)
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
