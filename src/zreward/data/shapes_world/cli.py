"""`zreward world ...`: build a ShapesWorld dataset, render scenes, run the oracle.

Subcommands (exact contracts, other tools depend on them):
- `build --out DIR [--prompts N] [--candidates K] [--canvas PX] [--raters R] [--seed S] [--overwrite]`
  -> dataset dir with train/ val/ test/ ood/ split dirs (canonical records), card.json, card.md, hist.png.
- `render SCENES.jsonl --out DIR [--seed S]`: each line is an object with `scene` (and optionally `id`); writes
  DIR/<id>.png, or DIR/<line index, 6 digits>.png without an id (0-based index of the line in the file). The
  render seed is --seed when given, else the scene's own `seed` key (as written by `build`), else 0.
- `oracle SCENES.jsonl`: each line has `scene` and `prompt` (text, or an object with `text` and/or `groups`/
  `relation`); prints one JSON object per line, in order: {"alignment": 3.5, "realism": 5.0, ...}.
Unknown keys are ignored. Every input line is validated before anything is written or printed; a malformed line
is an error naming `file:line` and the field (exit status 2). `-` reads the lines from stdin.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterator

from zreward.data.shapes_world.build import build_world
from zreward.data.shapes_world.oracle import oracle_scores
from zreward.data.shapes_world.prompts import PromptError, resolve_prompt
from zreward.data.shapes_world.render import render_png
from zreward.data.shapes_world.scene import SceneError, parse_scene


class InputError(ValueError):
    """A malformed input line; the message reads `file:line: field: expected ...`."""


def _lines(path: str) -> Iterator[tuple[int, str, dict]]:
    """Yield (0-based line index, `file:line` label, parsed object) for each non-blank line."""
    f = sys.stdin if path == "-" else open(path, encoding="utf-8")
    name = "<stdin>" if path == "-" else path
    try:
        for i, line in enumerate(f):
            if not line.strip():
                continue
            where = f"{name}:{i + 1}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: line: expected valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise InputError(f"{where}: line: expected a JSON object, got {type(obj).__name__}")
            yield i, where, obj
    finally:
        if f is not sys.stdin:
            f.close()


def _scene(obj: dict, where: str) -> dict:
    if "scene" not in obj:
        raise InputError(f"{where}: scene: expected a scene object (field is missing)")
    try:
        parse_scene(obj["scene"])
    except SceneError as e:
        raise InputError(f"{where}: {e}") from None
    return obj["scene"]


def cmd_render(args: argparse.Namespace) -> int:
    jobs = []
    for i, where, obj in _lines(args.scenes):
        scene = _scene(obj, where)
        rid = obj.get("id")
        if rid is None:
            name = f"{i:06d}"
        elif isinstance(rid, (str, int)) and not isinstance(rid, bool) and str(rid).strip() \
                and not any(c in str(rid) for c in "/\\") and not str(rid).startswith("."):
            name = str(rid)
        else:
            raise InputError(f"{where}: id: expected a file-name-safe string, got {rid!r}")
        seed = args.seed if args.seed is not None else scene.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"{where}: scene.seed: expected a non-negative integer, got {seed!r}")
        jobs.append((name, scene, seed))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name, scene, seed in jobs:
        (out / f"{name}.png").write_bytes(render_png(scene, seed))
    print(f"wrote {len(jobs)} image(s) to {out}", file=sys.stderr)
    return 0


def cmd_oracle(args: argparse.Namespace) -> int:
    jobs = []
    for _, where, obj in _lines(args.scenes):
        scene = _scene(obj, where)
        if "prompt" not in obj:
            raise InputError(f"{where}: prompt: expected prompt text or an object (field is missing)")
        try:
            _, spec = resolve_prompt(obj["prompt"])
        except PromptError as e:
            raise InputError(f"{where}: {e}") from None
        jobs.append((scene, spec))
    for scene, spec in jobs:
        print(json.dumps(oracle_scores(scene, spec)))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    out = build_world(args.out, prompts=args.prompts, candidates=args.candidates, canvas=args.canvas,
                      raters=args.raters, seed=args.seed, overwrite=args.overwrite,
                      dim_pairs=not args.no_dim_pairs, workers=args.workers)
    card = json.loads((out / "card.json").read_text(encoding="utf-8"))
    print(f"wrote {out}  ({card['build_seconds']:.1f} s)")
    for split, c in card["splits"].items():
        print(f"  {split:5s} images {c['images']:6d}  pairs(overall) {c['pairs_overall']:6d}  "
              f"ceiling {card['ceiling'][split]:.3f}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zreward world", description="ShapesWorld: procedural T2I preference world.")
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build a dataset dir (train/val/test/ood + card)",
                       description="Build a ShapesWorld dataset; the defaults give the default demo dataset.")
    b.add_argument("--out", required=True, help="output dataset directory (absent or empty)")
    b.add_argument("--prompts", type=int, default=2000, help="train prompts; val/test/ood get ceil(N/8) each")
    b.add_argument("--candidates", type=int, default=4, help="images per prompt (all pairs are compared)")
    b.add_argument("--canvas", type=int, default=64, help="image side in px (32..256)")
    b.add_argument("--raters", type=int, default=7, help="simulated raters per image")
    b.add_argument("--seed", type=int, default=0, help="master seed")
    b.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: usable CPUs)")
    b.add_argument("--no-dim-pairs", action="store_true", help="write only 'overall' pairs")
    b.set_defaults(fn=cmd_build)
    r = sub.add_parser("render", help="render scenes from a JSONL file to PNGs",
                       description="Render each line's `scene` to DIR/<id>.png (or DIR/<line index>.png).")
    r.add_argument("scenes", help="JSONL file of {\"scene\": {...}, \"id\": ...} ('-' = stdin)")
    r.add_argument("--out", required=True, help="output directory")
    r.add_argument("--seed", type=int, default=None,
                   help="render seed for every line (default: the scene's own 'seed' key, else 0)")
    r.set_defaults(fn=cmd_render)
    o = sub.add_parser("oracle", help="print the 4 oracle scores per JSONL line",
                       description="Print {alignment, realism, aesthetics, plausibility} per line of "
                                   "{\"scene\": {...}, \"prompt\": text | {text, groups, relation}}.")
    o.add_argument("scenes", help="JSONL file ('-' = stdin)")
    o.set_defaults(fn=cmd_oracle)
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except (InputError, SceneError, PromptError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"zreward world {args.cmd}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
