"""`zreward eval`: evaluate saved Scorers on a canonical split → OUT/report.json, OUT/report.md, PNG plots.

    zreward eval --model [NAME=]DIR[:direct|:reasoning[:M]] [--model ...] --data SPLIT_DIR --out OUT
                 [--reasoning] [--samples M] [--temperature T] [--engine hf|vllm] [--batch-size B] [--n-boot R]
                 [--seed S]
                 [--max-images N] [--device cpu|cuda]
    zreward eval perception --model DIR --data SPLIT [--max-images N] [--out FILE]   (captioning VLMs)
    zreward eval compare --eval DIR --eval DIR ... [--n-boot R] [--out FILE]   (paired differences across runs)

Under `torchrun --nproc_per_node N -m zreward.cli eval ...` each process scores its share of the images (on
`cuda:LOCAL_RANK` with `--device cuda`) and the main process writes the report: the same scores as one process.

Model names default to the directory name (`runs/sft/final` → "sft"). A model whose zreward.json mode is
"reasoning" is scored in reasoning mode with M chains per (image, dim) when `--reasoning` is given; a per-model
suffix overrides that (`:direct`, `:reasoning`, `:reasoning:8`). See `zreward.eval.runner` for every metric and
`zreward.eval.report` for the files written. report.json: `models` → {name → accuracy, accuracy_ci,
accuracy_ties, per_dim, kl, js, w1, srcc, plcc, ece, img_per_s, n_pairs, ... (each with _ci and _n)}.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zreward eval", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True, metavar="[NAME=]DIR[:MODE[:M]]",
                    help="a Scorer directory (repeatable)")
    ap.add_argument("--data", required=True, help="canonical split directory")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--reasoning", action="store_true",
                    help="score reasoning-mode models (zreward.json mode) in reasoning mode")
    ap.add_argument("--samples", type=int, default=4, help="chains per (image, dim) in reasoning mode (default 4)")
    ap.add_argument("--temperature", type=float, default=None,
                    help="chain sampling temperature in reasoning mode (default: each model's zreward.json)")
    ap.add_argument("--engine", choices=("hf", "vllm"), default="hf",
                    help="what samples reasoning chains: hf (transformers generate, default) or vllm (CUDA only, "
                         "pip install 'zreward[vllm]'; untested here)")
    ap.add_argument("--batch-size", type=int, default=32, help="images per scoring call (default 32)")
    ap.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and of sampled chains (default 0)")
    ap.add_argument("--max-images", type=int, default=None, help="use only the first N images of the split")
    ap.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["perception"]:
        from zreward.eval.perception import main as perception_main  # deferred (torch + transformers)

        return perception_main(argv[1:])
    if argv[:1] == ["compare"]:
        from zreward.eval.compare import main as compare_main  # deferred (torch via the runner)

        return compare_main(argv[1:])
    args = _parser().parse_args(argv)
    # deferred (torch + transformers): `zreward eval --help` and bad arguments answer without loading them
    from zreward.eval.report import write_eval_report
    from zreward.eval.runner import ceiling_metrics, evaluate, load_eval_data, parse_model_spec, start_distributed
    from zreward.trainers.run_utils import end_distributed
    from zreward.trainers.sharding import rank_world

    if args.samples < 1 or args.batch_size < 1 or args.n_boot < 1:
        print("zreward eval: --samples, --batch-size and --n-boot must be >= 1", file=sys.stderr)
        return 2
    device = start_distributed(args.device)
    try:
        specs = [parse_model_spec(m) for m in args.model]
        data = load_eval_data(args.data, max_images=args.max_images)
        results, cals, scores = evaluate(specs, data, reasoning=args.reasoning, samples=args.samples,
                                         batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed,
                                         device=device, temperature=args.temperature, engine=args.engine)
    except (ValueError, FileNotFoundError) as e:
        print(f"zreward eval: {e}", file=sys.stderr)
        return 2
    if rank_world()[0] != 0:  # a non-main process of a torchrun job: the main one writes the report
        end_distributed()
        return 0
    meta = {"command": "zreward eval " + shlex.join(argv),
            "settings": {"reasoning": args.reasoning, "samples": args.samples, "temperature": args.temperature,
                         "engine": args.engine,
                         "batch_size": args.batch_size, "n_boot": args.n_boot, "seed": args.seed,
                         "max_images": args.max_images, "device": args.device}}
    write_eval_report(args.out, data, results, cals, scores, meta, n_boot=args.n_boot, seed=args.seed,
                      ceiling=ceiling_metrics(data, n_boot=args.n_boot, seed=args.seed))
    print(f"[eval] wrote {Path(args.out) / 'report.md'} and report.json")
    end_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
