"""Shared pieces of the demo tests (test_demo.py, test_demo_eval_stages.py): a fake stage runner, a small stage
list and a driver call on the "test" profile (the `configs` fixture in conftest.py)."""
from __future__ import annotations

from zreward.demo import run_demo
from zreward.demo_types import Stage

DATA = (("data.train", "world:train"), ("data.val", "world:val"))


def small_stages(*more: Stage) -> list[Stage]:
    return [Stage("world", "world"), Stage("init_student", "init", "student"),
            Stage("a", "train", "sft", (("model.init_from", "init_student"),) + DATA),
            Stage("b", "train", "sft", (("model.init_from", "a"),) + DATA), *more]


class FakeRunner:
    """Records (stage, resume) calls and makes an output dir; `interrupt` raises KeyboardInterrupt at that stage."""

    def __init__(self, interrupt: str | None = None, fail: str | None = None):
        self.calls: list[tuple[str, bool]] = []
        self.interrupt, self.fail = interrupt, fail

    def __call__(self, stage, ctx, resume):
        self.calls.append((stage.name, resume))
        if stage.name == self.interrupt:
            raise KeyboardInterrupt
        if stage.name == self.fail:
            raise RuntimeError("boom")
        out = ctx.out / "fake" / stage.name
        out.mkdir(parents=True, exist_ok=True)
        return out


def run_small_demo(out, runner, stages=None, log=None):
    """The demo driver on the "test" profile, seed 0 (log lines appended to `log` when given)."""
    return run_demo(out, "test", 0, stages or small_stages(), runner=runner,
                    log=log.append if log is not None else lambda *_: None)
