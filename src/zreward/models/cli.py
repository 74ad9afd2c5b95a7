"""`zreward model ...`: create tiny randomly initialised scorers from config, and inspect scorer directories.

    zreward model init --family qwen3_vl --preset tiny --out runs/tiny_scorer [--seed 0]
    zreward model init --from base --out runs/base       # a copy of the shipped captioning-pretrained base VLM
    zreward model info runs/tiny_scorer
"""
from __future__ import annotations

import argparse
import json
import sys

from zreward.models.families import FAMILIES
from zreward.models.shipped import copy_base


def _init(args) -> int:
    from zreward.models.tiny import PRESETS, init_tiny  # deferred (torch + transformers): `--help` stays instant

    if args.source is not None:
        if args.source != "base":
            print(f"zreward model init: --from: expected 'base', got {args.source!r}", file=sys.stderr)
            return 2
        try:
            out = copy_base(args.out)
        except (FileExistsError, FileNotFoundError) as e:
            print(f"zreward model init: {e}", file=sys.stderr)
            return 2
        print(f"wrote the shipped base VLM to {out} (card: {out / 'MODEL_CARD.md'})")
        return 0
    if args.family is None:
        print("zreward model init: --family is required (or --from base)", file=sys.stderr)
        return 2
    if args.preset not in PRESETS:
        print(f"zreward model init: --preset: expected one of {sorted(PRESETS)}, got {args.preset!r}", file=sys.stderr)
        return 2
    out = init_tiny(args.family, args.out, preset=args.preset, seed=args.seed)
    print(f"wrote {args.family}/{args.preset} scorer (seed {args.seed}) to {out}")
    return 0


def _info(args) -> int:
    from zreward.models.scorer import load_scorer  # deferred (torch + transformers): `--help` stays instant

    s = load_scorer(args.path, add_level_tokens=False)
    n = sum(p.numel() for p in s.model.parameters())
    info = {"family": s.config.family, "params": n, "dtype": str(s.model.dtype), "dims": s.dims,
            "levels": s.config.levels, "level_token_ids": s.config.level_token_ids,
            "added_level_tokens": s.config.added_level_tokens, "mode": s.config.mode,
            "reward_weights": s.config.reward_weights, "pixels": s.pixel_spec.__dict__}
    print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zreward model", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("init", help="write a randomly initialised small scorer (model + tokenizer + processor)")
    p.add_argument("--from", dest="source", default=None, metavar="base",
                   help="copy a shipped pretrained model instead: 'base' (see zreward/models/base/MODEL_CARD.md)")
    p.add_argument("--family", choices=sorted(FAMILIES), help="model family (a random model from config)")
    p.add_argument("--preset", default="tiny", help="tiny | 1m | 10m | 50m (default tiny)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(fn=_init)
    q = sub.add_parser("info", help="print a scorer directory's family, size, levels and dims")
    q.add_argument("path")
    q.set_defaults(fn=_info)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
