"""Benchmark: wall time of building the default ShapesWorld demo dataset.

Default settings = `zreward world build` defaults (2,000 train prompts + 250 each val/test/ood, 4 candidates,
64 px, 7 raters, seed 0). Prints the wall seconds (total, including worker start-up and the final rename), the CPU
seconds of all processes, the machine's load average (other jobs inflate the wall time) and the ceilings.
Usage: .venv/bin/python benchmarks/bench_world_build.py [--prompts N] [--workers W] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from zreward.data.shapes_world import build_world


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=2000)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--keep", default=None, help="write the dataset here instead of a temp dir")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_world_"))
    load0 = os.getloadavg()[0]  # other jobs on the machine slow the wall time down: report it
    out = Path(args.keep) if args.keep else tmp / "world"
    t0, c0 = time.perf_counter(), os.times()
    build_world(out, prompts=args.prompts, workers=args.workers, overwrite=True)
    seconds, c1 = time.perf_counter() - t0, os.times()
    cpu = sum(getattr(c1, k) - getattr(c0, k) for k in ("user", "system", "children_user", "children_system"))
    card = json.loads((out / "card.json").read_text())
    n_images = sum(s["images"] for s in card["splits"].values())
    print(f"build seconds: {seconds:.2f}  ({n_images} images, {n_images / seconds:.0f} img/s, "
          f"workers={card['workers']}); CPU seconds (all processes) {cpu:.1f}; "
          f"load average before/after: {load0:.1f}/{os.getloadavg()[0]:.1f}")
    print("ceiling:", card["ceiling"])
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
