"""`zreward demo`: the README's main job.

Current stage: builds the default ShapesWorld dataset (the embedded ground-truthed preference world) and prints
its card. Training and the comparison report are added as the trainers and the evaluation land.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="zreward demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=["quick", "full"], default="quick", help="demo size (default: quick)")
    ap.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the world and every stage (default: 0)")
    args = ap.parse_args(argv)

    from zreward.data.shapes_world.build import build_world

    out = Path(args.out)
    data_dir = out / f"shapes_world_seed{args.seed}"
    card = data_dir / "card.json"
    if card.is_file() and json.loads(card.read_text()).get("settings", {}).get("seed") == args.seed:
        print(f"[demo] reusing {data_dir}")
    else:
        print(f"[demo] building ShapesWorld into {data_dir}")
        build_world(data_dir, seed=args.seed, overwrite=True)
    print((data_dir / "card.md").read_text())
    return 0
