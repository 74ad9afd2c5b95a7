"""`zreward demo [--profile quick|full] [--out DIR] [--seed S]`: the paper's comparison on ShapesWorld, end to end.

Stages (`STAGES`; each one entry, so plugging a trainer in is one line; `--jobs N` runs up to N side by side,
each as soon as its inputs are final, default one per CPU):
  world          build the default ShapesWorld (2000 train prompts × 4 candidates, 64 px) into DIR/world
  pretrain       the "pretrained VLM" every method starts from: by default a copy of the base VLM shipped in the
                 package (`zreward model init --from base`; zreward/models/base/MODEL_CARD.md says how it was
                 trained); with `--from-scratch` it is rebuilt by three stages instead:
    pretrain_world a second ShapesWorld from another seed (DIR/pretrain_world): unlabelled images for pretraining
                   (and, in a profile with `unlabelled`, for RISD and OPD, built in both modes then)
    init_base      random tiny VLM (`zreward.models.tiny.init_tiny`, the profile's `base_preset`)
    pretrain       captioning pretraining of that VLM on pretrain_world's train images (`zreward train caption`;
                   scene captions only, no labels, prompts or scores)
  sft            SFT baseline (direct, KL to annotator distributions)            ← pretrain
  rewarddance    RewardDance baseline (P("yes") generative reward)               ← pretrain
  sft_cold       teacher cold start: SFT in reasoning mode on the rationales     ← pretrain
  grpo           GRPO baseline (scalar PG reward on the sampled score only)      ← sft_cold
  gdso_teacher   GDSO teacher (PG on distribution expectations + pointwise + pairwise) ← sft_cold
  risd_student_teacher0/1  the two halves of RISD's teacher pass (`teacher.part=R/2`: the teacher's M chains on
                 every training image, written to RISD's target cache), side by side   ← gdso_teacher
  risd_student   RISD student: KL(p̄_T ‖ p_S) to the teacher's chain-averaged distribution ← pretrain, gdso_teacher
  opd_student    OPD baseline: on-policy distillation from the same teacher      ← pretrain, gdso_teacher
  score_<method> one trained model scored on test and ood as `zreward eval` scores it (reasoning models in
                 reasoning mode, M chains), as soon as it is trained   ← the method's stage, world
  eval_test / eval_ood   `zreward eval`'s metrics and report of each split over all six models' scores
  gen_pretrain   the tiny T2I generator (`zreward gen pretrain`) on world's high-quality train images: the SFT
                 generator                                                       ← world
  gen_tune       DRaFT-1 reward tuning of it (`zreward gen tune`), the RISD student's Scorer as the reward, with
                 the hacking audit (reward vs oracle on val prompts)             ← gen_pretrain, risd_student
  gen_eval       `zreward gen eval`: GSB of the tuned vs the SFT generator by the simulated raters on held-out
                 test prompts, oracle means, side-by-side grid                   ← gen_pretrain, gen_tune
  speed          the teacher's and the students' images/s on the same first test images, timed one after the
                 other when every other stage has finished (nothing runs beside it): the cost claim's figures
                                                                                 ← every stage
then DIR/report.md + DIR/report.json (`zreward.eval.demo_report`).

Every trainer stage runs `zreward.trainers.<method>.train(cfg)` in this process with
`configs/<method>/tiny_cpu.yaml` + the profile's overrides + the links (`model.init_from`, `data.train`,
`teacher.path`, ...). Every method starts from the same pretrained VLM (GRPO from the teacher's cold start, like
GDSO, so GRPO vs GDSO isolates the objective). Teacher and student have the same size here (the paper: 27B vs 9B):
on a 2-core CPU the budget goes to training steps, and the student's speed-up comes from skipping the chains.
A stage whose trainer module or config is missing fails with a message
saying so; stages that need it are skipped; no result is invented; the exit code is 1.

Caching: a stage's key is a SHA-256 of three parts: its resolved config (upstream paths replaced by the upstream
keys, the output dir left out) with the YAML file; the source files of the code it runs (the method's trainer
module + the shared trainer helpers, losses, models (with the Scorer); `zreward.eval` for evaluation;
`zreward.align`, shapes_world, models for the generator stages); its inputs' keys (`zreward.demo_stages`).
DIR/stages/<name>.json records the key and parts when a stage starts and when it finishes; the log says which
part changed when a stage is rebuilt. Re-running with the same seed reuses every finished
stage whose key is unchanged; a stage whose key changed is wiped and rebuilt (so are its dependents, whose keys
change with it); an unfinished stage with the same key resumes from its last checkpoint.
Progress: one line per stage with elapsed time and an ETA from the profile's estimates (replaced by the measured
time of the stage's previous run when there is one); trainers show their own progress bars on a TTY.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Callable

from zreward.demo_profiles import EVAL_SPLITS, PROFILES, check_profile
from zreward.demo_stages import _fmt_s, _log, run_stage, stage_parts
from zreward.demo_types import Ctx, Stage, StageError, digest


_DATA = (("data.train", "world:train"), ("data.val", "world:val"))
_BASE = (("model.init_from", "pretrain"),)
# The base VLM: the shipped one (default) or rebuilt from scratch by the same recipe at the profile's size.
SHIPPED_BASE = [Stage("pretrain", "init", "shipped")]
_PRETRAIN_LINKS = (("model.init_from", "init_base"), ("data.train", "pretrain_world:train"), ("data.val", "world:val"))
SCRATCH_BASE = [Stage("pretrain_world", "world", "pretrain"),
                Stage("init_base", "init", "base"),
                Stage("pretrain", "train", "caption", _PRETRAIN_LINKS)]
# RISD's teacher pass (M chains per training image) in parts that run side by side before it (`teacher.part`): the
# same rows as RISD's own pass, which then reads them from the cache; a failed part is only recomputed by RISD.
TEACHER_PARTS = 2
_RISD_LINKS = _BASE + (("teacher.path", "gdso_teacher"),) + _DATA
_RISD_EXTRA = ("teacher.cache_dir={out}/cache/risd_teacher_targets",)
_TEACHER_PASS = [Stage(f"risd_student_teacher{r}", "train", "risd", _RISD_LINKS,
                       _RISD_EXTRA + (f"teacher.part={r}/{TEACHER_PARTS}",), overrides_of="risd_student")
                 for r in range(TEACHER_PARTS)]
_RISD = Stage("risd_student", "train", "risd", _RISD_LINKS, _RISD_EXTRA, after=tuple(s.name for s in _TEACHER_PASS))
STAGES: list[Stage] = [
    Stage("world", "world"),
    *SHIPPED_BASE,
    Stage("sft", "train", "sft", _BASE + _DATA),
    Stage("rewarddance", "train", "rewarddance", _BASE + _DATA),
    Stage("sft_cold", "train", "sft", _BASE + _DATA, ("sft.mode=reasoning",), config="cold_start_tiny_cpu"),
    Stage("grpo", "train", "grpo", (("model.init_from", "sft_cold"),) + _DATA),
    Stage("gdso_teacher", "train", "gdso", (("model.init_from", "sft_cold"),) + _DATA),
    *_TEACHER_PASS,
    _RISD,
    Stage("opd_student", "train", "opd", _BASE + (("teacher.path", "gdso_teacher"),) + _DATA),
]
METHODS = ["sft", "grpo", "rewarddance", "gdso_teacher", "risd_student", "opd_student"]
# Each model is scored as soon as it is trained (while later ones train); each split's report waits for them all.
STAGES += [Stage(f"score_{m}", "score", m, (("model", m), ("data", "world"))) for m in METHODS]
STAGES += [Stage(f"eval_{s}", "eval", s, tuple((f"model.{m}", f"score_{m}") for m in METHODS)
                 + (("data", f"world:{s}"),)) for s in EVAL_SPLITS]
# Reward-guided T2I (issue 6), after the evaluations; the links are `zreward gen` flags (`_gen_job`).
STAGES += [Stage("gen_pretrain", "gen", "pretrain", (("data", "world"),)),
           Stage("gen_tune", "gen", "tune", (("generator", "gen_pretrain"), ("reward", "risd_student"),
                                            ("data", "world"))),
           Stage("gen_eval", "gen", "eval", (("a", "gen_tune"), ("b", "gen_pretrain"), ("data", "world")))]
# Last, alone: the teacher's and the students' images/s on the same test images (the cost claim's figures).
STAGES += [Stage("speed", "speed", "test", tuple((f"model.{m}", m) for m in ("gdso_teacher", "risd_student",
                                                                               "opd_student"))
                 + (("data", "world:test"),), after=tuple(s.name for s in STAGES))]


# The distilling students' (RISD with its teacher pass, OPD) unlabelled images where the profile asks for them: the
# train split of the second world (`pretrain_world`, built in both modes then).
_DISTIL_STAGES = ("risd_student", *(s.name for s in _TEACHER_PASS), "opd_student")
_UNLABELLED = ("data.extra_unlabelled", "pretrain_world:train")


def demo_stages(from_scratch: bool = False, unlabelled: bool = False) -> list[Stage]:
    """`STAGES`, with the base VLM rebuilt by captioning pretraining instead of copied when `from_scratch`; with
    `unlabelled`, RISD and OPD also distil the second world's train images (no labels read)."""
    stages = list(STAGES)
    if from_scratch:
        i = stages.index(SHIPPED_BASE[0])
        stages = stages[:i] + SCRATCH_BASE + stages[i + 1:]
    if not unlabelled:
        return stages
    if SCRATCH_BASE[0] not in stages:
        stages.insert(1, SCRATCH_BASE[0])  # right after world
    return [replace(s, links=s.links + (_UNLABELLED,)) if s.name in _DISTIL_STAGES else s for s in stages]


def profile_stages(profile: str, from_scratch: bool = False) -> list[Stage]:
    """The stage list `zreward demo --profile P [--from-scratch]` runs (`demo_stages` with the profile's
    `unlabelled`)."""
    return demo_stages(from_scratch, bool(PROFILES[profile].get("unlabelled")))


# ---------------------------------------------------------------------------------------------------- driver

_TERMINAL = ("done", "reused", "failed", "skipped")


def default_jobs() -> int:
    """Stages run side by side by default: one per CPU, at most 4 (the stage graph seldom has more ready at once)."""
    return max(1, min(4, os.cpu_count() or 1))


def _priorities(stages: list[Stage], est: dict[str, float]) -> dict[str, float]:
    """Longest estimated path (s) from each stage to the end of the graph: the scheduler starts the stage that
    holds up the most work first."""
    users: dict[str, list[str]] = {s.name: [] for s in stages}
    for s in stages:
        for d in s.deps + s.optional:
            users.setdefault(d, []).append(s.name)
    prio: dict[str, float] = {}
    for s in reversed(stages):  # every user comes later in the list (test_default_stage_list_wiring)
        prio[s.name] = est[s.name] + max((prio.get(u, 0.0) for u in users[s.name]), default=0.0)
    return prio


# A fresh process per stage (no state carried from one stage to the next); Python 3.10 has no max_tasks_per_child,
# so there a worker may run several stages one after another.
_FRESH_WORKERS = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}


def _worker_init(threads: int) -> None:
    """A stage process: `stage_threads(jobs)` torch intra-op threads (OMP_NUM_THREADS when the caller set it)."""
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))


def stage_threads(jobs: int) -> int:
    """Torch intra-op threads of each stage under `jobs`: OMP_NUM_THREADS when set (scripts/demo.sh sets 1), else
    a worker's share cpu_count // jobs (jobs 1: the whole machine, about torch's own default)."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else max(1, (os.cpu_count() or 1) // max(1, jobs))


def _run_in_worker(runner: Callable[[Stage, Ctx, bool], Path], stage: Stage, ctx: Ctx,
                   resume: bool) -> tuple[str, str, float, float]:
    """One stage in a worker process: (output, recorded command, wall s, CPU s); an exception travels back."""
    ts, cs = time.time(), time.process_time()
    output = runner(stage, ctx, resume)
    return str(output), ctx.commands.get(stage.name, ""), time.time() - ts, time.process_time() - cs


class _Driver:
    """The bookkeeping of one demo run: which stage is reused, fails at once, or runs, and what each left behind."""

    def __init__(self, out: Path, profile: str, seed: int, stages: list[Stage], log, threads: int = 0):
        check_profile(profile)
        self.ctx, self.stages, self.log = Ctx(out=out, profile=profile, seed=seed, threads=threads), stages, log
        self.rec_dir = out / "stages"
        self.rec_dir.mkdir(parents=True, exist_ok=True)
        self.records = {s.name: json.loads(p.read_text()) for s in stages
                        if (p := self.rec_dir / f"{s.name}.json").is_file()}
        first = {**PROFILES[profile]["estimates"], **PROFILES[profile].get("gen", {}).get("estimates", {})}
        # a copied base ("init" kind) takes seconds whatever its name (the shipped copy is called "pretrain")
        self.est = {s.name: float(self.records.get(s.name, {}).get("seconds")
                                  or (first.get("init_base", 5) if s.kind == "init" else first.get(s.name, 60)))
                    for s in stages}
        self.index = {s.name: i for i, s in enumerate(stages)}
        self.t0 = time.time()
        self.plans: dict[str, dict] = {}

    def head(self, stage: Stage) -> str:
        return f"[demo {self.index[stage.name] + 1}/{len(self.stages)}] {stage.name}"

    def state(self, name: str) -> str | None:
        return self.ctx.status.get(name, {}).get("state")

    def ready(self, stage: Stage) -> bool:
        """Every input of the stage (an eval stage: every model it may evaluate) has reached a final state."""
        return all(self.state(d) in _TERMINAL for d in stage.deps + stage.optional if d in self.index)

    def plan(self, stage: Stage) -> bool:
        """Key the stage; settle it at once when it is skipped, fails to key, or is reused. True: it must run."""
        ctx, head = self.ctx, self.head(stage)
        missing = [d for d in stage.deps if self.state(d) not in ("done", "reused")]
        if missing:
            ctx.status[stage.name] = {"state": "skipped", "reason": f"needs failed/skipped stage(s) {missing}"}
            self.log(f"{head}: SKIPPED (needs {', '.join(missing)})")
            return False
        try:
            parts = stage_parts(stage, ctx)
            key = digest(parts)
        except StageError as e:
            ctx.status[stage.name] = {"state": "failed", "reason": str(e)}
            self.log(f"{head}: FAILED — {e}")
            return False
        ctx.keys[stage.name] = key
        rec = self.records.get(stage.name, {})
        if rec.get("key") == key and rec.get("finished") and Path(rec.get("output", "")).exists():
            ctx.outputs[stage.name] = Path(rec["output"])
            ctx.status[stage.name] = {"state": "reused", "seconds": rec.get("seconds"), "cpu_s": rec.get("cpu_s"),
                                      "key": key}
            ctx.commands[stage.name] = rec.get("command", "")
            self.log(f"{head}: reused (key {key})")
            return False
        why = [p for p in parts if rec.get("parts", {}).get(p) != parts[p]] if rec.get("parts") else []
        self.plans[stage.name] = {"key": key, "parts": parts, "why": why,
                                  "resume": rec.get("key") == key and not rec.get("finished")}
        return True

    def start(self, stage: Stage, eta: float) -> bool:
        """Log the start and mark the stage unfinished on disk (an interrupted stage resumes next time)."""
        p, rec = self.plans[stage.name], self.records.get(stage.name, {})
        self.log(f"{self.head(stage)}: {'resuming' if p['resume'] else 'running'}"
                 + (f" ({', '.join(p['why'])} changed since the last build)" if p["why"] and not p["resume"] else "")
                 + f" — elapsed {_fmt_s(time.time() - self.t0)}, ETA ≈ {_fmt_s(eta)}")
        (self.rec_dir / f"{stage.name}.json").write_text(json.dumps(
            {"key": p["key"], "parts": p["parts"], "finished": False, "seconds": rec.get("seconds")}) + "\n")
        return p["resume"]

    def finish(self, stage: Stage, output: str, command: str, sec: float, cpu: float) -> None:
        p = self.plans[stage.name]
        self.ctx.outputs[stage.name] = Path(output)
        self.ctx.commands[stage.name] = command
        self.ctx.status[stage.name] = {"state": "done", "seconds": sec, "cpu_s": cpu, "key": p["key"],
                                       **({"rebuilt_because": p["why"]} if p["why"] else {})}
        (self.rec_dir / f"{stage.name}.json").write_text(json.dumps(
            {"key": p["key"], "parts": p["parts"], "finished": True, "seconds": sec, "cpu_s": cpu, "output": output,
             "command": command}) + "\n")
        self.log(f"{self.head(stage)}: done in {_fmt_s(sec)} (CPU time of the stage {_fmt_s(cpu)})")

    def fail(self, stage: Stage, e: BaseException, sec: float, tb: str) -> None:
        self.ctx.status[stage.name] = {"state": "failed", "reason": f"{type(e).__name__}: {e}", "traceback": tb}
        self.log(f"{self.head(stage)}: FAILED after {_fmt_s(sec)} — {type(e).__name__}: {e}")


def run_demo(out: Path, profile: str, seed: int, stages: list[Stage] | None = None,
             runner: Callable[[Stage, Ctx, bool], Path] = run_stage, log=_log, jobs: int = 1) -> Ctx:
    """Run (or reuse) every stage; failures are recorded in ctx.status and block only dependents.

    jobs = 1: in list order, in this process. jobs > 1: each stage in its own worker process (spawned; `runner`
    must be picklable), up to `jobs` at once, a stage as soon as its inputs are final, the one with the longest
    estimated path to the end first; each worker gets cpu_count // jobs torch threads unless OMP_NUM_THREADS is set.
    """
    d = _Driver(out, profile, seed, profile_stages(profile) if stages is None else stages, log, stage_threads(jobs))
    if jobs <= 1:
        for i, stage in enumerate(d.stages):
            if not d.plan(stage):
                continue
            eta = sum(d.est[s.name] for s in d.stages[i:] if d.state(s.name) != "reused")
            resume = d.start(stage, eta)
            ts, cs = time.time(), time.process_time()
            try:
                output = runner(stage, d.ctx, resume)
            except Exception as e:  # noqa: BLE001 - a failed stage is reported, its dependents skipped
                d.fail(stage, e, time.time() - ts, traceback.format_exc(limit=8))
                continue
            d.finish(stage, str(output), d.ctx.commands.get(stage.name, ""), time.time() - ts,
                     time.process_time() - cs)
        return d.ctx
    prio = _priorities(d.stages, d.est)
    pending, running = list(d.stages), {}
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_worker_init, initargs=(d.ctx.threads,), **_FRESH_WORKERS)
    try:
        while pending or running:
            settled = False
            for stage in sorted((s for s in pending if d.ready(s)), key=lambda s: (-prio[s.name], d.index[s.name])):
                if stage.name not in d.plans and not d.plan(stage):
                    pending.remove(stage)  # skipped, failed to key or reused: no worker needed
                    settled = True
                elif len(running) < jobs:
                    pending.remove(stage)
                    # ETA: the longest estimated path among the stages not finished yet, this one included
                    left = [prio[s.name] for s in pending] + [prio[s.name] for s, _ in running.values()]
                    resume = d.start(stage, max(left + [prio[stage.name]]))
                    running[pool.submit(_run_in_worker, runner, stage, d.ctx, resume)] = (stage, time.time())
            if settled:
                continue  # stages settled without a worker may have made others ready
            if not running:
                raise RuntimeError(f"demo stage graph: {[s.name for s in pending]} can never start")
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in done:
                stage, ts = running.pop(fut)
                try:
                    d.finish(stage, *fut.result())
                except Exception as e:  # noqa: BLE001 - a failed stage is reported, its dependents skipped
                    d.fail(stage, e, time.time() - ts, "".join(traceback.format_exception(e, limit=8)))
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return d.ctx


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="zreward demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="demo size (default: quick)")
    ap.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the world and every stage (default: 0)")
    ap.add_argument("--from-scratch", action="store_true",
                    help="rebuild the base VLM by captioning pretraining instead of copying the shipped one")
    ap.add_argument("--jobs", type=int, default=default_jobs(),
                    help="stages run side by side, each in its own process (default: one per CPU, at most 4; "
                         "1 runs them in order in this process)")
    args = ap.parse_args(argv)
    from zreward.eval.demo_report import write_demo_report  # deferred (matplotlib): `--help` stays instant

    out = Path(args.out).resolve()
    t0, c0, load0 = time.time(), time.process_time(), os.getloadavg()[0]
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    ctx = run_demo(out, args.profile, args.seed, stages=profile_stages(args.profile, args.from_scratch),
                   jobs=args.jobs)
    wall = time.time() - t0
    cpu = time.process_time() - c0  # with workers, this process only waits: add the CPU time of the stages it ran
    cpu += sum(s.get("cpu_s") or 0.0 for s in ctx.status.values() if s["state"] == "done") if args.jobs > 1 else 0.0
    machine = {"cpu_s": cpu, "cpus": os.cpu_count(), "jobs": args.jobs,
               "load_avg_1min": [load0, os.getloadavg()[0]]}  # other processes slow the wall time down
    command = shlex.join(["zreward", "demo", "--profile", args.profile, "--out", args.out, "--seed", str(args.seed)]
                         + (["--from-scratch"] if args.from_scratch else []))
    report = write_demo_report(ctx, wall, command, machine)  # the resolved command, defaults included
    failed = {n: s for n, s in ctx.status.items() if s["state"] in ("failed", "skipped")}
    print(f"[demo] wrote {out / 'report.md'} ({_fmt_s(wall)} wall)")
    if failed:
        print("[demo] incomplete: " + "; ".join(f"{n}: {s['state']} ({s['reason']})" for n, s in failed.items()),
              file=sys.stderr)
    return 1 if failed or report is None else 0


if __name__ == "__main__":
    sys.exit(main())
