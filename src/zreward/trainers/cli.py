"""`zreward train <method> --config FILE [a.b=c ...]`: forwards argv to `zreward.trainers.<method>.main(argv)`.

Only methods whose module is installed are offered; a trainer module is imported only when its method runs.
Each trainer parses its own arguments (see `zreward.trainers.config.parse_cli`), so
`zreward train <method> --help` lists that trainer's config fields.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys

# method -> one-line help; the order is the order shown in the usage text.
METHODS: dict[str, str] = {
    "sft": "SFT baseline: cross-entropy on the score token, no reasoning",
    "gdso": "GDSO: group-wise distribution PG + pointwise + pairwise supervision (the teacher)",
    "grpo": "GRPO baseline: reasoning + scalar policy-gradient reward only",
    "rewarddance": "RewardDance baseline: P('yes') generative reward, next-token CE",
    "risd": "RISD: distil the teacher's reasoning-conditioned distribution into a one-token student",
    "opd": "OPD baseline: on-policy distillation, per-token reverse KL",
    "caption": "captioning pretraining: next-token CE on image captions (initialises the tiny VLMs)",
}


def available_methods() -> list[str]:
    """Methods whose module `zreward.trainers.<method>` exists."""
    return [m for m in METHODS if importlib.util.find_spec(f"zreward.trainers.{m}") is not None]


def _usage() -> str:
    methods = available_methods()
    lines = ["usage: zreward train <method> [--config FILE] [key.path=value ...]", "", "methods:"]
    if methods:
        width = max(map(len, methods))
        lines += [f"  {m.ljust(width)}  {METHODS[m]}" for m in methods]
    else:
        lines.append("  (none installed yet)")
    lines += ["", "`zreward train <method> --help` lists the method's config fields.",
              "Configs: configs/<method>/<scale>.yaml (see configs/README.md)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    method, rest = argv[0], argv[1:]
    if method not in available_methods():
        known = ", ".join(available_methods()) or "none installed yet"
        print(f"zreward train: unknown method {method!r} (available: {known})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"zreward.trainers.{method}")
    rc = int(module.main(rest) or 0)
    from zreward.trainers.run_utils import end_distributed  # deferred (torch): `zreward train --help` stays instant

    end_distributed()  # under torchrun: a clean gloo/NCCL teardown on every rank
    return rc


if __name__ == "__main__":
    sys.exit(main())
