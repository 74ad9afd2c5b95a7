"""`zreward demo`'s score and eval stages (each model scored in its own stage, one report per split from the saved
scores) and the stages that only help another (`Stage.after`: RISD's teacher-pass parts)."""
from __future__ import annotations

import json
import shlex

import numpy as np

import zreward.demo_stages as demo_stages
from zreward.demo_profiles import PROFILES
from zreward.demo_types import Ctx, Stage
from zreward.eval import demo_report
from zreward.eval.demo_report import write_demo_report
from zreward.eval.runner import ModelScores, evaluate, json_clean, load_eval_data, parse_model_spec

from demo_fixtures import DATA as _DATA, FakeRunner, run_small_demo as _run, small_stages as _stages


class _PresetRunner:
    """Stage runner: `world` and the trained models are given directories, stage `fail` raises, the rest (score,
    eval, speed stages) run as the demo runs them."""

    def __init__(self, world, models: dict, fail: str):
        self.world, self.models, self.fail = world, models, fail

    def __call__(self, stage, ctx, resume):
        if stage.name == "world":
            return self.world
        if stage.name == self.fail:
            raise RuntimeError("training failed")
        return self.models.get(stage.name) or demo_stages.run_stage(stage, ctx, resume)


def test_score_and_eval_stages_equal_one_zreward_eval(tmp_path, configs, monkeypatch, small_world, tiny_factory):
    """Each model scored in its own stage, then one report per split: the same report as `evaluate()` scoring all
    the models in one run (a reasoning model with M = 2 chains and a direct one); a failed model is left out."""
    monkeypatch.setitem(PROFILES["test"], "eval_samples", 2)
    monkeypatch.setitem(PROFILES["test"], "eval_temperature", 0.7)
    models = {"a": tiny_factory(mode="reasoning", max_new_tokens=6), "b": tiny_factory(seed=2)}
    runner = _PresetRunner(small_world, models, fail="c")
    names = ["a", "c", "b"]
    stages = [Stage("world", "world"), *(Stage(n, "init", "student") for n in names),
              *(Stage(f"score_{n}", "score", n, (("model", n), ("data", "world"))) for n in names),
              Stage("eval_test", "eval", "test", tuple((f"model.{n}", f"score_{n}") for n in names)
                    + (("data", "world:test"),))]
    out = tmp_path / "d"
    ctx = _run(out, runner, stages)
    assert ctx.status["score_c"]["state"] == "skipped" and ctx.status["eval_test"]["state"] == "done"
    got = json.loads((out / "eval" / "test" / "report.json").read_text())

    data = load_eval_data(small_world / "test", max_images=8)
    specs = [parse_model_spec(f"{n}={models[n]}") for n in ("a", "b")]
    results, _, scores = evaluate(specs, data, reasoning=True, samples=2, seed=0, temperature=0.7, log=lambda *_: None)
    assert list(got["models"]) == ["a", "b"] and got["models"]["a"]["mode"] == "reasoning"
    for n in ("a", "b"):
        saved = ModelScores.load(out / "scores" / n / "test.npz")
        for f in ("probs", "mean", "std", "overall", "weights"):
            assert np.array_equal(getattr(saved, f), getattr(scores[n], f)), (n, f)
        assert (saved.dims, saved.samples, saved.chains) == (scores[n].dims, scores[n].samples, scores[n].chains)
        for key in ("accuracy", "accuracy_ci", "per_dim", "kl", "w1", "ece", "srcc"):
            assert got["models"][n][key] == json_clean(results[n][key]), (n, key)
    assert got["paired"] and {(p["a"], p["b"]) for p in got["paired"]} == {("a", "b")}
    # the recorded command re-runs the same evaluation through the CLI
    cmd = shlex.split(ctx.commands["eval_test"])
    assert cmd[:2] == ["zreward", "eval"] and cmd.count("--model") == 2 and "--reasoning" in cmd


def test_failed_teacher_part_does_not_block_risd(tmp_path, configs):
    """A stage in `after` is waited for, its key is an input, but its failure skips nothing."""
    stages = _stages(Stage("p", "train", "sft", (("model.init_from", "init_student"),) + _DATA),
                     Stage("r", "train", "sft", (("model.init_from", "init_student"),) + _DATA, after=("p",)))
    r = FakeRunner(fail="p")
    ctx = _run(tmp_path / "d", r, stages)
    assert ctx.status["p"]["state"] == "failed" and ctx.status["r"]["state"] == "done"
    assert [c for c, _ in r.calls].index("p") < [c for c, _ in r.calls].index("r")
    # p builds now; r's output never depended on p finishing (only helped), so r is reused under the same key
    ctx2 = _run(tmp_path / "d", FakeRunner(), stages)
    assert ctx2.status["p"]["state"] == "done" and ctx2.status["r"]["state"] == "reused"


def _score_eval(names):
    return [Stage("world", "world"), *(Stage(n, "init", "student") for n in names),
            *(Stage(f"score_{n}", "score", n, (("model", n), ("data", "world"))) for n in names),
            Stage("eval_test", "eval", "test", tuple((f"model.{n}", f"score_{n}") for n in names)
                  + (("data", "world:test"),))]


def test_eval_report_is_rebuilt_when_a_failed_score_stage_finishes(tmp_path, configs):
    """An eval stage's key holds only the scores it reported: a score stage that failed (after it was keyed) and
    finishes on the next run changes the report's key, so the report is rebuilt with that model."""
    stages = _score_eval(["a", "b"])
    ctx = _run(tmp_path / "d", FakeRunner(fail="score_b"), stages)
    assert ctx.status["score_b"]["state"] == "failed" and ctx.status["eval_test"]["state"] == "done"
    r = FakeRunner()
    ctx2 = _run(tmp_path / "d", r, stages)
    assert [c for c, _ in r.calls] == ["score_b", "eval_test"] and ctx2.status["eval_test"]["state"] == "done"
    assert ctx2.keys["eval_test"] != ctx.keys["eval_test"]
    assert _run(tmp_path / "d", FakeRunner(), stages).status["eval_test"]["state"] == "reused"


def test_budgets_keep_risd_time_when_a_part_failed(tmp_path):
    """A failed part of the teacher pass has no time (RISD then ran that part itself): RISD's own time remains."""
    ctx = Ctx(out=tmp_path, profile="test", seed=0)
    (tmp_path / "runs" / "risd_student").mkdir(parents=True)
    (tmp_path / "runs" / "risd_student" / "config.yaml").write_text("run: {max_steps: 10}\n")
    ctx.status["risd_student"] = {"state": "done", "seconds": 100.0, "cpu_s": 90.0}
    ctx.status["risd_student_teacher0"] = {"state": "done", "seconds": 20.0, "cpu_s": 19.0}
    ctx.status["risd_student_teacher1"] = {"state": "failed", "reason": "boom"}
    (row,) = demo_report.budgets(ctx)
    assert (row["wall_s"], row["cpu_s"]) == (120.0, 109.0) and len(row["includes"]) == 2


def test_speed_stage_times_the_finished_models_alone_and_the_report_reads_it(tmp_path, configs, monkeypatch,
                                                                            small_world, tiny_factory):
    """The speed stage scores each linked model that finished on the same first `speed_images` test images, as its
    score stage would (a reasoning teacher with M chains at the eval temperature, a direct student); the cost
    claim reads those rates, and falls back to the score stages' own img/s (said so) where there is no timing."""
    monkeypatch.setitem(PROFILES["test"], "eval_samples", 2)
    models = {"gdso_teacher": tiny_factory(mode="reasoning", max_new_tokens=6), "risd_student": tiny_factory(seed=2)}
    runner = _PresetRunner(small_world, models, fail="opd_student")
    names = ["gdso_teacher", "risd_student", "opd_student"]
    stages = [Stage("world", "world"), *(Stage(n, "init", "student") for n in names)]
    stages += [Stage("speed", "speed", "test", tuple((f"model.{n}", n) for n in names) + (("data", "world:test"),),
                     after=tuple(s.name for s in stages))]
    ctx = _run(tmp_path / "d", runner, stages)
    assert ctx.status["speed"]["state"] == "done", ctx.status["speed"]
    sp = json.loads((tmp_path / "d" / "speed" / "test" / "speed.json").read_text())
    assert (sp["split"], sp["n_images"], list(sp["models"])) == ("test", 4, ["gdso_teacher", "risd_student"])
    t, s = sp["models"]["gdso_teacher"], sp["models"]["risd_student"]
    assert (t["reasoning"], t["samples"], s["reasoning"]) == (True, 2, False)
    assert all(r["img_per_s"] > 0 and r["seconds"] > 0 and r["passes"] == 1 for r in (t, s))  # min 0 s: one pass
    assert len(sp["load_avg_1min"]) == 2
    assert sp["timing"] == {"by": "zreward.eval.speed.time_models", "min_seconds": 0.0}
    cmd = shlex.split(ctx.commands["speed"])  # the same scoring through the CLI, on the same 4 images
    assert cmd[:2] == ["zreward", "eval"] and cmd.count("--model") == 2 and "#" not in cmd  # runnable as written
    assert cmd[cmd.index("--max-images") + 1] == "4" and cmd[cmd.index("--samples") + 1] == "2"

    methods = {"gdso_teacher": {"img_per_s": 2.0}, "risd_student": {"img_per_s": 30.0}, "opd_student": None}
    ratio, how = demo_report.cost_ratios(methods, sp)
    assert how == "alone" and ratio == {"risd_student": s["img_per_s"] / t["img_per_s"], "opd_student": None}
    speed_goal = demo_report.goals(methods, 0.89, [], sp)[-1]
    assert speed_goal["value"] == ratio["risd_student"]
    assert demo_report.cost_ratios(methods, None) == ({"risd_student": 15.0, "opd_student": None}, "score stages")
    no_teacher = {**sp, "models": {"risd_student": s}}  # a timing without the teacher: the score stages' rates
    assert demo_report.cost_ratios(methods, no_teacher) == ({"risd_student": 15.0, "opd_student": None},
                                                            "score stages")
    assert demo_report.goals(methods, 0.89, [])[-1]["value"] == 15.0


def test_report_states_how_the_speed_stage_timed(tmp_path, configs):
    """With a speed.json the report's cost line reads it (alone: the images, threads, load, each rate) and the
    ratio is its student ÷ teacher."""
    ctx = _run(tmp_path / "d", FakeRunner(fail="a"))
    (tmp_path / "sp").mkdir()
    models = {"gdso_teacher": {"img_per_s": 4.0, "torch_threads": 1}, "risd_student": {"img_per_s": 84.0,
                                                                                     "torch_threads": 1}}
    (tmp_path / "sp" / "speed.json").write_text(json.dumps({"split": "test", "n_images": 200, "models": models,
                                                            "load_avg_1min": [0.4, 1.1]}))
    ctx.outputs["speed"] = tmp_path / "sp"
    rep = write_demo_report(ctx, 1.0, "zreward demo --profile test")
    assert rep["cost_timing"] == "alone" and rep["cost_ratio"] == {"risd_student": 21.0, "opd_student": None}
    md = (tmp_path / "d" / "report.md").read_text()
    assert ("risd_student: 21.0×, opd_student: – (each model alone on the first 200 test images, one after the "
            "other, torch threads 1, 1-min load average 0.4–1.1; img/s gdso_teacher 4.00, risd_student 84.00)") in md
