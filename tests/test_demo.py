"""`zreward demo`: stage caching (keys, reuse, rebuild on change, resume of an unfinished stage), clear failure of a
missing trainer, and the report's keys — without training (a fake stage runner builds the outputs); plus the
generator stages run for real with a tiny generator and a tiny Scorer as the reward."""
from __future__ import annotations

import json
import math
import os
import shlex
import sys
import time

import pytest

import zreward.demo as demo
import zreward.demo_stages as demo_stages
from zreward.demo import run_demo
from zreward.demo_profiles import GEN_DEFAULTS, PROFILES
from zreward.demo_stages import stage_parts
from zreward.demo_types import Ctx, Stage, StageError, digest
from zreward.eval import demo_report
from zreward.eval.demo_report import GEN_KEYS, write_demo_report

from demo_fixtures import DATA as _DATA, FakeRunner, run_small_demo as _run, small_stages as _stages

def test_reuse_rebuild_and_resume(tmp_path, configs, monkeypatch):
    out = tmp_path / "demo"
    r1 = FakeRunner()
    ctx1 = _run(out, r1)
    assert r1.calls == [("world", False), ("init_student", False), ("a", False), ("b", False)]
    assert all(s["state"] == "done" for s in ctx1.status.values())

    r2 = FakeRunner()  # same seed, nothing changed: everything reused, same keys
    ctx2 = _run(out, r2)
    assert r2.calls == [] and all(s["state"] == "reused" for s in ctx2.status.values())
    assert ctx2.keys == ctx1.keys

    # A changed override of stage a: a is rebuilt from scratch, and b because its input changed.
    monkeypatch.setitem(PROFILES["test"], "overrides", {"a": ["optim.lr=0.5"]})
    r3, lines = FakeRunner(), []
    ctx3 = _run(out, r3, log=lines)
    assert r3.calls == [("a", False), ("b", False)]
    assert any("] a: running (config changed" in ln for ln in lines)  # the log says why
    assert any("] b: running (inputs changed" in ln for ln in lines)
    assert ctx3.keys["a"] != ctx1.keys["a"] and ctx3.keys["b"] != ctx1.keys["b"]
    assert ctx3.keys["world"] == ctx1.keys["world"]

    # The YAML file changes: both sft stages rebuild; an interrupted stage resumes with the same key next time.
    (configs / "sft" / "tiny_cpu.yaml").write_text("run:\n  max_steps: 6\n")
    with pytest.raises(KeyboardInterrupt):
        _run(out, FakeRunner(interrupt="b"))
    rec = json.loads((out / "stages" / "b.json").read_text())
    assert rec["finished"] is False
    r5 = FakeRunner()
    _run(out, r5)
    assert r5.calls == [("b", True)]


def test_key_ignores_output_dir_but_not_seed_or_upstream(tmp_path, configs):
    st = _stages()[2]
    base = dict(keys={"init_student": "k1", "world": "w"})
    k = digest(stage_parts(st, Ctx(out=tmp_path / "x", profile="test", seed=0, **base)))
    assert digest(stage_parts(st, Ctx(out=tmp_path / "elsewhere", profile="test", seed=0, **base))) == k
    assert digest(stage_parts(st, Ctx(out=tmp_path / "x", profile="test", seed=1, **base))) != k
    assert digest(stage_parts(st, Ctx(out=tmp_path / "x", profile="test", seed=0,
                             keys={"init_student": "k2", "world": "w"}))) != k


def test_missing_trainer_and_failure_block_only_dependents(tmp_path, configs):
    stages = _stages(Stage("x", "train", "no_such_method", (("model.init_from", "init_student"),) + _DATA),
                     Stage("y", "train", "sft", (("model.init_from", "x"),) + _DATA),
                     Stage("c", "train", "sft", (("model.init_from", "init_student"),) + _DATA))
    r = FakeRunner(fail="a")
    ctx = _run(tmp_path / "d", r, stages)
    st = ctx.status
    assert st["x"]["state"] == "failed" and "zreward.trainers.no_such_method does not exist yet" in st["x"]["reason"]
    assert st["y"]["state"] == "skipped" and "x" in st["y"]["reason"]
    assert st["a"]["state"] == "failed" and "boom" in st["a"]["reason"]
    assert st["b"]["state"] == "skipped" and st["c"]["state"] == "done"
    assert [c for c, _ in r.calls] == ["world", "init_student", "a", "c"]  # no fake result for x, y, b


def test_missing_config_fails_clearly(tmp_path, configs):
    stages = [Stage("world", "world"), Stage("init_student", "init", "student"),
              Stage("g", "train", "gdso", (("model.init_from", "init_student"),) + _DATA)]
    ctx = _run(tmp_path / "d", FakeRunner(), stages)
    assert ctx.status["g"]["state"] == "failed" and "gdso/tiny_cpu.yaml not found" in ctx.status["g"]["reason"]


@pytest.mark.parametrize("from_scratch", [False, True])
def test_default_stage_list_wiring(from_scratch):
    stages = demo.demo_stages(from_scratch)
    names = [s.name for s in stages]
    assert len(set(names)) == len(names)
    for s in stages:  # every dependency comes earlier
        assert all(names.index(d) < names.index(s.name) for d in s.deps + s.optional)
    by = {s.name: s for s in stages}
    # the base every method starts from: the shipped one by default, captioning pretraining with --from-scratch
    expected = ("train", "caption") if from_scratch else ("init", "shipped")
    assert (by["pretrain"].kind, by["pretrain"].method) == expected
    assert ("pretrain_world" in by) == ("init_base" in by) == from_scratch
    by = {s.name: s for s in demo.STAGES}
    assert dict(by["risd_student"].links)["teacher.path"] == "gdso_teacher"
    assert dict(by["opd_student"].links)["teacher.path"] == "gdso_teacher"
    assert dict(by["risd_student"].links)["model.init_from"] == dict(by["opd_student"].links)["model.init_from"]
    assert "sft.mode=reasoning" in by["sft_cold"].extra
    # RISD's teacher pass in two parts before it: RISD's own config and links, one half each; RISD waits for them
    parts = [by[f"risd_student_teacher{r}"] for r in range(demo.TEACHER_PARTS)]
    assert by["risd_student"].optional == [p.name for p in parts] and demo.TEACHER_PARTS == 2
    for r, p in enumerate(parts):
        assert (p.kind, p.method, p.links, p.overrides_of) == ("train", "risd", by["risd_student"].links,
                                                               "risd_student")
        assert p.extra == by["risd_student"].extra + (f"teacher.part={r}/2",)
    assert set(by["eval_test"].optional) == {f"score_{m}" for m in demo.METHODS}
    assert all(by[f"score_{m}"].deps == sorted([m, "world"]) for m in demo.METHODS)
    # generator stages: after the evaluations; tuned with the RISD student as reward, GSB of tuned vs SFT generator
    assert names[-4:-1] == ["gen_pretrain", "gen_tune", "gen_eval"] and all(by[n].kind == "gen" for n in names[-4:-1])
    # the speed stage last, waiting for every other stage (so nothing runs beside it); the teacher and both students
    assert names[-1] == "speed" and by["speed"].deps == ["world"]
    assert set(by["speed"].optional) == set(names[:-1]) - {"pretrain_world", "init_base"}
    assert {src for k, src in by["speed"].links if k.startswith("model.")} == {"gdso_teacher", "risd_student",
                                                                              "opd_student"}
    assert by["gen_pretrain"].deps == ["world"]
    assert set(by["gen_tune"].deps) == {"gen_pretrain", "risd_student", "world"}
    assert dict(by["gen_tune"].links)["reward"] == "risd_student"
    assert dict(by["gen_tune"].links)["generator"] == "gen_pretrain"
    assert set(by["gen_eval"].deps) == {"gen_pretrain", "gen_tune", "world"}
    assert dict(by["gen_eval"].links)["a"] == "gen_tune" and dict(by["gen_eval"].links)["b"] == "gen_pretrain"
    for name, prof in PROFILES.items():  # no typo in a profile's generator settings
        assert set(prof.get("gen", {})) <= set(GEN_DEFAULTS), name


@pytest.mark.parametrize("from_scratch", [False, True])
def test_unlabelled_images_go_to_both_students_and_the_teacher_pass(from_scratch):
    """`unlabelled`: RISD, each part of its teacher pass and OPD read the second world's train split as their
    unlabelled images; that world is built once, before them, in both modes; nothing else changes."""
    plain, stages = demo.demo_stages(from_scratch), demo.demo_stages(from_scratch, unlabelled=True)
    names = [s.name for s in stages]
    assert names.count("pretrain_world") == 1 and len(set(names)) == len(names)
    for s in stages:
        assert all(names.index(d) < names.index(s.name) for d in s.deps + s.optional)
    by, before = {s.name: s for s in stages}, {s.name: s for s in plain}
    students = {"risd_student", "risd_student_teacher0", "risd_student_teacher1", "opd_student"}
    for n in students:
        assert dict(by[n].links)["data.extra_unlabelled"] == "pretrain_world:train"
        assert by[n].links[:-1] == before[n].links
    assert all(by[n] == before[n] for n in before if n not in students)
    assert set(names) - set(before) == (set() if from_scratch else {"pretrain_world"})


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_risd_and_opd_students_get_the_same_images_and_steps(tmp_path, profile):
    """The two students are compared at one budget in every profile: the same train images, steps and images per
    step, resolved from the repository's configs plus the profile's overrides (as the demo runs them)."""
    by = {s.name: s for s in demo.profile_stages(profile)}
    ctx = Ctx(out=tmp_path, profile=profile, seed=0)
    (_, risd, _, _), (_, opd, _, _) = (demo_stages._train_config(by[n], ctx, symbolic=True)
                                       for n in ("risd_student", "opd_student"))
    assert (risd.data.max_images, risd.run.max_steps) == (opd.data.max_images, opd.run.max_steps)
    assert (risd.data.extra_unlabelled, risd.data.extra_max_images) == (opd.data.extra_unlabelled,
                                                                        opd.data.extra_max_images)
    assert risd.data.prompts_per_batch * 4 == opd.opd.images_per_batch  # ShapesWorld: 4 candidates per prompt
    assert risd.data.train == opd.data.train == "<world>/train"


def test_report_keys_without_results(tmp_path, configs):
    ctx = _run(tmp_path / "d", FakeRunner(fail="a"))
    rep = write_demo_report(ctx, 12.5, "zreward demo --profile test")
    assert set(rep["methods"]) == {"sft", "grpo", "rewarddance", "gdso_teacher", "risd_student", "opd_student"}
    for m in rep["methods"].values():  # nothing evaluated: metrics are null, never invented
        assert m["accuracy"] is None and m["img_per_s"] is None and "model_dir" in m and m["status"]
    for key in ("ceiling", "profile", "seed", "wall_s", "dataset_dir"):
        assert key in rep
    assert rep["profile"] == "test" and rep["seed"] == 0 and rep["wall_s"] == 12.5
    md = (tmp_path / "d" / "report.md").read_text()
    assert "failed" in md and "boom" in md
    # the generator stages did not run: every value null, never invented
    assert set(rep["generator"]) == set(GEN_KEYS) | {"status"}
    assert all(rep["generator"][k] is None for k in GEN_KEYS) and rep["generator"]["status"] == "not run"
    assert "## Reward-guided generation" in md and "Not available: gen_eval not run" in md


def test_report_budgets_side_by_side(tmp_path, configs):
    ctx = Ctx(out=tmp_path, profile="test", seed=0)
    configs = {"sft": "run: {max_steps: 300}\ndata: {images_per_batch: 32}\noptim: {lr: 0.0003}\n",
               "opd_student": "run: {max_steps: 100}\ndata: {prompts_per_batch: 8}\nopd: {images_per_batch: 16}\n",
               "risd_student": ("run: {max_steps: 200}\ndata: {prompts_per_batch: 4, max_images: 400, "
                                "extra_unlabelled: /x}\nrisd: {human_weight: 0.0}\noptim: {lr: 0.001}\n")}
    for name, cfg in configs.items():
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "config.yaml").write_text(cfg)
        ctx.status[name] = {"state": "done", "seconds": 120.0, "cpu_s": 60.0}
    ctx.status["world"] = {"state": "done", "seconds": 5.0}  # no run dir: not a trained stage
    for r in (0, 1):  # the parts of RISD's teacher pass: their time is RISD's
        ctx.status[f"risd_student_teacher{r}"] = {"state": "done", "seconds": 40.0, "cpu_s": 35.0 + r}
    rows = {b["stage"]: b for b in demo_report.budgets(ctx)}
    assert set(rows) == {"sft", "risd_student", "opd_student"}
    assert rows["opd_student"]["batch"] == "16 images"  # its own section's batch, not data.prompts_per_batch
    assert (rows["sft"]["steps"], rows["sft"]["batch"], rows["sft"]["train_images"], rows["sft"]["labels"],
            rows["sft"]["lr"]) == (300, "32 images", "all", True, 0.0003)
    r = rows["risd_student"]
    assert (r["batch"], r["train_images"], r["extra_unlabelled"], r["labels"]) == ("4 prompts", 400, True, False)
    assert (r["wall_s"], r["cpu_s"]) == (200.0, 131.0)
    assert r["includes"] == ["risd_student_teacher0", "risd_student_teacher1"]
    assert (rows["sft"]["wall_s"], rows["sft"]["cpu_s"], rows["sft"]["includes"]) == (120.0, 60.0, [])


_GEN = [s for s in demo.STAGES if s.kind == "gen"]


def test_failed_risd_student_skips_gen_tune_and_eval(tmp_path, configs):
    stages = [Stage("world", "world"), Stage("risd_student", "init", "student"), *_GEN]
    r = FakeRunner(fail="risd_student")
    ctx = _run(tmp_path / "d", r, stages)
    assert [c for c, _ in r.calls] == ["world", "risd_student", "gen_pretrain"]
    assert ctx.status["gen_tune"]["state"] == "skipped" and "risd_student" in ctx.status["gen_tune"]["reason"]
    assert ctx.status["gen_eval"]["state"] == "skipped" and "gen_tune" in ctx.status["gen_eval"]["reason"]
    rep = write_demo_report(ctx, 1.0, "zreward demo --profile test")
    assert all(rep["generator"][k] is None for k in GEN_KEYS if k != "sft_dir")
    assert rep["generator"]["status"] == "skipped" and rep["generator"]["sft_dir"]


def test_gen_profile_settings_change_the_key(tmp_path, configs, monkeypatch):
    st = _GEN[0]
    ctx = Ctx(out=tmp_path, profile="test", seed=0, keys={"world": "w"})
    k = digest(stage_parts(st, ctx))  # a profile without "gen" works (defaults)
    monkeypatch.setitem(PROFILES["test"], "gen", {"pretrain_steps": 7})
    assert digest(stage_parts(st, ctx)) != k
    monkeypatch.setitem(PROFILES["test"], "gen", {"pretrain_step": 7})
    with pytest.raises(StageError, match="unknown key"):
        digest(stage_parts(st, ctx))


def test_gen_stages_run_and_fill_the_report(tmp_path, configs, monkeypatch, small_world, tiny_model):
    """The three generator stages for real (tiny generator, a random tiny Scorer as the RISD student's stand-in)."""
    from zreward.align.cli import main as gen_main

    scorer = tiny_model
    monkeypatch.setitem(PROFILES["test"], "gen", {"arch": "tiny", "pretrain_steps": 3, "pretrain_batch_size": 4,
                                                  "tune_steps": 2, "tune_batch_size": 2, "audit_every": 2,
                                                  "eval_prompts": 4})
    given = {"world": small_world, "risd_student": scorer}

    def runner(stage, ctx, resume):
        return given[stage.name] if stage.name in given else demo_stages.run_stage(stage, ctx, resume)

    stages = [Stage("world", "world"), Stage("risd_student", "init", "student"), *_GEN]
    out = tmp_path / "d"
    ctx = _run(out, runner, stages)
    assert all(s["state"] == "done" for s in ctx.status.values()), ctx.status
    rep = write_demo_report(ctx, 1.0, "zreward demo --profile test")
    gen = rep["generator"]
    assert gen["status"] == "done" and gen["n_prompts"] == 4
    assert math.isfinite(gen["net_gsb"]) and -1 <= gen["net_gsb"] <= 1
    lo, hi = gen["net_gsb_ci"]
    assert lo <= gen["net_gsb"] <= hi
    dims = {"alignment", "realism", "aesthetics", "plausibility"}
    for k in ("oracle_sft", "oracle_tuned"):
        assert set(gen[k]) == dims and all(math.isfinite(v) and 1 <= v <= 5 for v in gen[k].values())
    assert gen["sft_dir"] == str(out / "runs" / "gen_pretrain") and gen["tuned_dir"] == str(out / "runs" / "gen_tune")
    md = (out / "report.md").read_text()
    for key in ("gen/audit", "gen/side_by_side"):  # image links relative to the report, to files that exist
        assert f"]({rep['plots'][key]})" in md and (out / rep["plots"][key]).is_file()
    # the recorded command is the equivalent CLI call: re-running it reproduces gen_eval's numbers
    cmd = shlex.split(ctx.commands["gen_eval"])
    assert cmd[:3] == ["zreward", "gen", "eval"] and ctx.commands["gen_tune"].startswith("zreward gen tune ")
    assert gen_main(cmd[2:]) == 0
    again = json.loads((out / "runs" / "gen_eval" / "gsb.json").read_text())
    assert again["net_gsb"] == gen["net_gsb"] and again["oracle_tuned"] == gen["oracle_tuned"]
    # a second run reuses all three stages
    ctx2 = _run(out, runner, stages)
    assert all(ctx2.status[s.name]["state"] == "reused" for s in _GEN)


def test_shipped_base_stage_copies_the_packaged_model(tmp_path):
    from zreward.models.shipped import BASE_DIR, base_card

    ctx = Ctx(out=tmp_path, profile="quick", seed=0)
    stage = demo.SHIPPED_BASE[0]
    out = demo_stages.run_stage(stage, ctx, resume=False)
    assert (out / "model.safetensors").read_bytes() == (BASE_DIR / "model.safetensors").read_bytes()
    assert ctx.commands["pretrain"] == f"zreward model init --from base --out {out}"
    assert stage_parts(stage, ctx)["config"] == digest(base_card())  # a new base rebuilds its users


class TimedRunner:
    """A picklable fake runner for worker processes: sleeps, logs (stage, start, end) to a file, fails on request.

    `meet`: stages that each wait (up to 60 s) until all of them have started, so that two stages run side by side
    whatever the time a fresh worker takes to start on a busy machine; in-order execution would time out instead."""

    def __init__(self, log_dir, sleep: float = 0.0, fail: str | None = None, meet: tuple[str, ...] = ()):
        self.log_dir, self.sleep, self.fail, self.meet = log_dir, sleep, fail, meet

    def __call__(self, stage, ctx, resume):
        t0 = time.time()
        if stage.name == self.fail:
            raise RuntimeError("boom in a worker")
        if stage.name in self.meet:
            (self.log_dir / f"{stage.name}.started").touch()
            while not all((self.log_dir / f"{n}.started").exists() for n in self.meet):
                if time.time() - t0 > 60:
                    raise RuntimeError(f"{stage.name}: the stages {self.meet} never ran at the same time")
                time.sleep(0.02)
        time.sleep(self.sleep)
        ctx.commands[stage.name] = f"fake {stage.name}"
        out = ctx.out / "fake" / stage.name
        out.mkdir(parents=True, exist_ok=True)
        (self.log_dir / f"{stage.name}.json").write_text(json.dumps([t0, time.time(), os.getpid()]))
        return out


def test_parallel_jobs_run_independent_stages_side_by_side(tmp_path, configs):
    """--jobs 2: the two stages that only need init_student overlap in time, each in its own process; every stage
    starts after its inputs finished, a speed stage after every stage it waits for (nothing beside it); keys,
    outputs and recorded commands equal those of the in-order run."""
    stages = _stages(Stage("c", "train", "sft", (("model.init_from", "init_student"),) + _DATA))
    stages += [Stage("speed", "speed", "test", (("model.a", "a"), ("model.c", "c"), ("data", "world:test")),
                     after=tuple(s.name for s in stages))]
    logs = tmp_path / "logs"
    logs.mkdir()
    ctx = run_demo(tmp_path / "par", "test", 0, stages, runner=TimedRunner(logs, sleep=0.2, meet=("a", "c")),
                   log=lambda *_: None, jobs=2)
    assert all(s["state"] == "done" for s in ctx.status.values()), ctx.status
    t = {s.name: json.loads((logs / f"{s.name}.json").read_text()) for s in stages}
    for s in stages:
        assert all(t[d][1] <= t[s.name][0] for d in s.deps)  # inputs finished before the stage started
    assert t["a"][0] < t["c"][1] and t["c"][0] < t["a"][1]  # a and c ran at the same time
    assert all(t[s.name][1] <= t["speed"][0] for s in stages[:-1])  # the speed stage alone, after every other
    pids = {v[2] for v in t.values()}
    assert os.getpid() not in pids  # every stage ran in a worker, one fresh process each (Python ≥ 3.11)
    assert len(pids) == len(stages) or (sys.version_info < (3, 11) and len(pids) >= 2)
    assert ctx.commands["c"] == "fake c" and ctx.outputs["c"] == tmp_path / "par" / "fake" / "c"
    seq = run_demo(tmp_path / "seq", "test", 0, stages, runner=FakeRunner(), log=lambda *_: None)
    assert seq.keys == ctx.keys
    # a second parallel run reuses everything without starting a worker
    again = run_demo(tmp_path / "par", "test", 0, stages, runner=TimedRunner(logs, fail="world"), log=lambda *_: None,
                     jobs=2)
    assert all(s["state"] == "reused" for s in again.status.values())


def test_parallel_failure_in_a_worker_blocks_only_dependents(tmp_path, configs):
    stages = _stages(Stage("c", "train", "sft", (("model.init_from", "init_student"),) + _DATA))
    lines: list[str] = []
    ctx = run_demo(tmp_path / "d", "test", 0, stages, runner=TimedRunner(tmp_path, fail="a"), log=lines.append,
                   jobs=2)
    st = ctx.status
    assert st["a"]["state"] == "failed" and "boom in a worker" in st["a"]["reason"]
    assert "boom in a worker" in st["a"]["traceback"]
    assert st["b"]["state"] == "skipped" and st["c"]["state"] == "done"
    assert any("] a: FAILED after" in ln for ln in lines) and any("] b: SKIPPED (needs a)" in ln for ln in lines)
    rec = json.loads((tmp_path / "d" / "stages" / "a.json").read_text())
    assert rec["finished"] is False  # a failed stage is rebuilt next time


def test_priorities_follow_the_longest_path():
    stages = _stages(Stage("c", "train", "sft", (("model.init_from", "init_student"),) + _DATA))
    est = {"world": 1.0, "init_student": 2.0, "a": 10.0, "b": 5.0, "c": 7.0}
    p = demo._priorities(stages, est)
    assert p == {"b": 5.0, "c": 7.0, "a": 15.0, "init_student": 17.0, "world": 16.0}


def test_goals_carry_the_paired_ci_of_each_difference():
    methods = {m: {"accuracy": a, "img_per_s": ips} for m, a, ips in
               (("sft", 0.60, 50.0), ("grpo", 0.58, 5.0), ("rewarddance", 0.62, 80.0), ("gdso_teacher", 0.66, 5.0),
                ("risd_student", 0.64, 60.0), ("opd_student", 0.61, 60.0))}
    paired = [{"a": "rewarddance", "b": "gdso_teacher", "diff": -0.04, "diff_ci": [-0.07, -0.01], "diff_n": 900},
              {"a": "risd_student", "b": "gdso_teacher", "diff": -0.02, "diff_ci": [-0.05, 0.01], "diff_n": 900}]
    g = demo_report.goals(methods, 0.89, paired)
    teacher = next(x for x in g if x["claim"].startswith("GDSO teacher ≥"))
    assert math.isclose(teacher["value"], 4.0) and teacher["holds"] is True
    assert teacher["ci"] == pytest.approx([1.0, 7.0])  # best baseline = RewardDance; its pair is stored b − a
    risd = next(x for x in g if x["claim"].startswith("RISD student ≥"))
    assert math.isclose(risd["value"], -2.0) and risd["ci"] == pytest.approx([-5.0, 1.0])
    opd = next(x for x in g if x["claim"].startswith("RISD student above"))
    assert opd["ci"] is None and len(g) == 5  # no stored pair: no interval, never invented


@pytest.mark.parametrize("unlabelled", [False, True])
def test_run_demo_defaults_to_the_profiles_stage_list(tmp_path, configs, monkeypatch, unlabelled):
    """run_demo without a stage list runs the profile's own (`unlabelled`: the second world and the students' link
    to it), as `zreward demo --profile P` does."""
    monkeypatch.setitem(PROFILES["test"], "unlabelled", unlabelled)
    ctx = run_demo(tmp_path / "d", "test", 0, runner=FakeRunner(), log=lambda *_: None)
    assert list(ctx.status) == [s.name for s in demo.demo_stages(unlabelled=unlabelled)]
    assert demo.profile_stages("test") == demo.demo_stages(unlabelled=unlabelled)
    assert ("pretrain_world" in ctx.status) == unlabelled

