"""`zreward <verb> ...`: a small dispatcher that forwards argv to the verb's module `main(argv)`.

Modules are imported only when their verb runs, so `zreward --help` does not import torch.

A refusal of the user's input (ValueError — including record, image and config errors, which name the file,
record and field — or OSError) is printed as one line `zreward <verb>: error: <message>` with exit status 1;
`--debug` anywhere on the command line shows the traceback instead.
"""
from __future__ import annotations

import importlib
import sys

from zreward import __version__

# verb -> (module with main(argv) -> int | None, one-line help)
VERBS: dict[str, tuple[str, str]] = {
    "world": ("zreward.data.shapes_world.cli", "ShapesWorld: build a dataset, render scenes, run the oracle"),
    "data": ("zreward.data.convert", "convert public preference datasets to canonical records"),
    "model": ("zreward.models.cli", "create tiny models from config (model init)"),
    "score": ("zreward.serve.score_cli", "score a split directory with a saved Scorer"),
    "train": ("zreward.trainers.cli", "train a reward model: sft, gdso, grpo, rewarddance, risd, opd"),
    "eval": ("zreward.eval.cli", "evaluate saved Scorers on a split: accuracy, calibration, cost -> report"),
    "gen": ("zreward.align.cli", "reward-guided T2I: gen pretrain | tune | eval | label (ShapesWorld, diffusers "
            "pipelines)"),
    "serve": ("zreward.serve.serve_cli", "HTTP reward server (micro-batched) for RL harnesses"),
    "demo": ("zreward.demo", "the main job: the ShapesWorld end-to-end demo"),
}


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    lines = ["usage: zreward <verb> [args...]", "", "verbs:"]
    lines += [f"  {v.ljust(width)}  {h}" for v, (_, h) in VERBS.items()]
    lines += ["", "Every verb has --help."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(__version__)
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"zreward: unknown verb {verb!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(VERBS[verb][0])
    try:
        rc = module.main(rest)
    except (ValueError, OSError) as e:
        if debug:
            raise
        print(f"zreward {verb}: error: {one_line(e)} (run with --debug for the traceback)", file=sys.stderr)
        return 1
    return int(rc or 0)


def one_line(e: BaseException) -> str:
    """An exception as one line: its message (an OSError's file name is added when the message lacks it)."""
    msg = str(e).strip() or type(e).__name__
    if isinstance(e, OSError) and e.filename is not None and str(e.filename) not in msg:
        msg = f"{e.filename}: {msg}"
    return " ".join(msg.split())


if __name__ == "__main__":
    sys.exit(main())
