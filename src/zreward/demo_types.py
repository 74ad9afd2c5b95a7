"""The demo's types: `Stage` (one step of the demo), `Ctx` (run-wide settings and per-stage results), `StageError`,
and the hashing its cache keys are made of (`digest`, `source_digest`). `zreward.demo_stages` keys and builds the
stages, `zreward.demo` runs them."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from zreward.demo_profiles import PROFILES


@dataclass(frozen=True)
class Stage:
    """One step of the demo.

    Attributes:
        name: stage name (= the method's key in report.json for trained methods).
        kind: "world", "init", "train", "score" (one trained model scored on every split of `EVAL_SPLITS`),
            "eval" (the metrics and report of one split over every scored model), "gen" (a `zreward gen` step;
            method = pretrain | tune | eval, links = its flags) or "speed" (the linked models' images/s timed one
            after the other on the first images of split `method`, once every other stage has finished).
        method: trainer module name (train) / "student" or "teacher" (init) / the model stage (score) / split
            name (eval).
        links: config key → upstream stage whose output (final Scorer dir / world split) it gets.
        extra: fixed overrides of this stage; `{out}` is replaced by the demo directory.
        config: the YAML under configs/<method>/ (without .yaml).
        after: stages to wait for whose outputs only help (e.g. a part of the teacher pass RISD would otherwise
            run itself): their keys are inputs, their failure blocks nothing.
        overrides_of: the stage whose profile overrides this one takes (default: its own name).
    """

    name: str
    kind: str
    method: str = ""
    links: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    config: str = "tiny_cpu"
    after: tuple[str, ...] = ()
    overrides_of: str = ""

    @property
    def deps(self) -> list[str]:
        """Stages this one needs (an eval or speed stage needs the world; each model it reports on is optional)."""
        if self.kind in ("eval", "speed"):
            return ["world"]
        return sorted({src.split(":")[0] for _, src in self.links})

    @property
    def optional(self) -> list[str]:
        """Stages waited for whose failure does not block this one."""
        return [src for k, src in self.links if k.startswith("model.") and self.kind in ("eval", "speed")] \
            + list(self.after)


class StageError(RuntimeError):
    """A stage cannot run (missing trainer/config/input); the message says which and why."""


def configs_dir() -> Path:
    """configs/ of the source checkout (or $ZREWARD_CONFIGS)."""
    env = os.environ.get("ZREWARD_CONFIGS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "configs"


def source_digest(*modules: str) -> str:
    """SHA-256 over the source files of the given modules/packages (code changes invalidate cached stages)."""
    h = hashlib.sha256()
    for mod in modules:
        spec = importlib.util.find_spec(mod)
        if spec is None or spec.origin is None:
            h.update(f"missing:{mod}".encode())
            continue
        origin = Path(spec.origin)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(f.name.encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Ctx:
    """Run-wide settings and per-stage results."""

    out: Path
    profile: str
    seed: int
    keys: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, Path] = field(default_factory=dict)
    status: dict[str, dict] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    threads: int = 0  # torch intra-op threads a stage runs with (0: not known); part of the speed stage's key

    @property
    def prof(self) -> dict:
        return PROFILES[self.profile]

    def resolve(self, src: str, symbolic: bool) -> str:
        """An upstream reference "stage" or "stage:sub" → a placeholder (symbolic; its key is in the "inputs"
        part of the cache key) or its path."""
        stage, _, sub = src.partition(":")
        if symbolic:
            return f"<{stage}>{'/' + sub if sub else ''}"
        base = self.outputs[stage]
        return str(base / sub) if sub else str(base)
