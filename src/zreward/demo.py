"""`zreward demo [--profile quick|full] [--out DIR] [--seed S]`: the paper's comparison on ShapesWorld, end to end.

Stages (`STAGES`, run in order; each one entry, so plugging a trainer in is one line):
  world          build the default ShapesWorld (2000 train prompts × 4 candidates, 64 px) into DIR/world
  pretrain       the "pretrained VLM" every method starts from: by default a copy of the base VLM shipped in the
                 package (`zreward model init --from base`; zreward/models/base/MODEL_CARD.md says how it was
                 trained); with `--from-scratch` it is rebuilt by three stages instead:
    pretrain_world a second ShapesWorld from another seed (DIR/pretrain_world): unlabelled images for pretraining
    init_base      random tiny VLM (`zreward.models.tiny.init_tiny`, the profile's `base_preset`)
    pretrain       captioning pretraining of that VLM on pretrain_world's train images (`zreward train caption`;
                   scene captions only, no labels, prompts or scores)
  sft            SFT baseline (direct, KL to annotator distributions)            ← pretrain
  rewarddance    RewardDance baseline (P("yes") generative reward)               ← pretrain
  sft_cold       teacher cold start: SFT in reasoning mode on the rationales     ← pretrain
  grpo           GRPO baseline (scalar PG reward on the sampled score only)      ← sft_cold
  gdso_teacher   GDSO teacher (PG on distribution expectations + pointwise + pairwise) ← sft_cold
  risd_student   RISD student: KL(p̄_T ‖ p_S) to the teacher's chain-averaged distribution ← pretrain, gdso_teacher
  opd_student    OPD baseline: on-policy distillation from the same teacher      ← pretrain, gdso_teacher
  eval_test / eval_ood   `zreward eval` of all six on test and ood (reasoning models in reasoning mode, M chains)
  gen_pretrain   the tiny T2I generator (`zreward gen pretrain`) on world's high-quality train images: the SFT
                 generator                                                       ← world
  gen_tune       DRaFT-1 reward tuning of it (`zreward gen tune`), the RISD student's Scorer as the reward, with
                 the hacking audit (reward vs oracle on val prompts)             ← gen_pretrain, risd_student
  gen_eval       `zreward gen eval`: GSB of the tuned vs the SFT generator by the simulated raters on held-out
                 test prompts, oracle means, side-by-side grid                   ← gen_pretrain, gen_tune
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
module + the shared trainer helpers, losses, models, serve; `zreward.eval` for evaluation; `zreward.align`,
shapes_world, serve, models for the generator stages); its inputs' keys.
DIR/stages/<name>.json records the key and parts when a stage starts and when it finishes; the log says which
part changed when a stage is rebuilt. Re-running with the same seed reuses every finished
stage whose key is unchanged; a stage whose key changed is wiped and rebuilt (so are its dependents, whose keys
change with it); an unfinished stage with the same key resumes from its last checkpoint.
Progress: one line per stage with elapsed time and an ETA from the profile's estimates (replaced by the measured
time of the stage's previous run when there is one); trainers show their own progress bars on a TTY.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import os
import shlex
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from zreward.models.shipped import base_card, copy_base

# Chain temperature of the reasoning models at evaluation. Measured on 400 val images (600 pairs) with the
# cold-start teacher: greedy 0.655, M = 4 at T = 1.0 0.571, T = 0.5 0.613, T = 0.3 0.646 — the tiny teachers'
# T = 1 chains are too noisy to average.
EVAL_TEMPERATURE = 0.3

# Profiles: world sizes, the base model preset (`zreward.models.tiny`), eval settings (images per split, M chains for
# reasoning models at eval_temperature), per-stage overrides (YAML dotlist) on top of the stage's config, and rough
# stage durations (s) on an idle 2-core CPU for the first ETA. full = the trainers' tiny_cpu configs unchanged, the
# whole test/ood splits, M = 4; quick = the same pipeline with fewer steps, 200 test + 200 ood images (50 prompts
# each), M = 2.
PROFILES: dict[str, dict] = {
    "quick": {"world_prompts": 2000, "pretrain_prompts": 2000, "base_preset": "1m", "eval_max_images": 200,
              "eval_samples": 2, "eval_temperature": EVAL_TEMPERATURE,
              # generator stages (`GEN_DEFAULTS`): measured 116 + 30 + 5 s (1-min load 2.5 → 5)
              "gen": {"pretrain_steps": 800, "tune_steps": 40, "eval_prompts": 100,
                      "estimates": {"gen_pretrain": 120, "gen_tune": 30, "gen_eval": 5}},
              "overrides": {"pretrain": ["run.max_steps=500", "data.eval_every=0", "data.val_max_images=100"],
                            "sft": ["run.max_steps=300", "data.eval_every=0", "data.val_max_images=200"],
                            "rewarddance": ["run.max_steps=150", "data.val_max_images=100"],
                            "sft_cold": ["run.max_steps=250", "data.eval_every=0", "data.val_max_images=48"],
                            "grpo": ["run.max_steps=15", "data.val_max_images=48"],
                            "gdso_teacher": ["run.max_steps=15", "data.val_max_images=48"],
                            "risd_student": ["run.max_steps=200", "data.eval_every=0", "data.max_images=400",
                                             "data.val_max_images=200"],
                            "opd_student": ["run.max_steps=100", "data.val_max_images=200"]},
              "estimates": {"world": 10, "pretrain_world": 10, "init_base": 5, "pretrain": 150, "sft": 120,
                            "rewarddance": 90, "sft_cold": 150, "grpo": 100, "gdso_teacher": 120,
                            "risd_student": 150, "opd_student": 60, "eval_test": 60, "eval_ood": 60}},
    "full": {"world_prompts": 2000, "pretrain_prompts": 2000, "base_preset": "1m", "eval_max_images": None,
             "eval_samples": 4, "eval_temperature": EVAL_TEMPERATURE, "overrides": {},
             # generator stages: measured 278 + 103 + 8 s (1-min load 3.5–4.7)
             "gen": {"align_profile": "full", "pretrain_steps": 2000, "tune_steps": 200, "eval_prompts": 150,
                     "estimates": {"gen_pretrain": 280, "gen_tune": 105, "gen_eval": 10}},
             "estimates": {"world": 10, "pretrain_world": 10, "init_base": 5, "pretrain": 1600, "sft": 600,
                           "rewarddance": 420, "sft_cold": 600, "grpo": 360, "gdso_teacher": 480,
                           "risd_student": 600, "opd_student": 200, "eval_test": 500, "eval_ood": 500}},
}
FAMILY = "qwen2_vl"


@dataclass(frozen=True)
class Stage:
    """One step of the demo.

    Attributes:
        name: stage name (= the method's key in report.json for trained methods).
        kind: "world", "init", "train", "eval" or "gen" (a `zreward gen` step; method = pretrain | tune | eval,
            links = its flags).
        method: trainer module name (train) / "student" or "teacher" (init) / split name (eval).
        links: config key → upstream stage whose output (final Scorer dir / world split) it gets.
        extra: fixed overrides of this stage; `{out}` is replaced by the demo directory.
        config: the YAML under configs/<method>/ (without .yaml).
    """

    name: str
    kind: str
    method: str = ""
    links: tuple[tuple[str, str], ...] = ()
    extra: tuple[str, ...] = ()
    config: str = "tiny_cpu"

    @property
    def deps(self) -> list[str]:
        """Stages this one needs (an eval stage needs the world; each model it evaluates is optional)."""
        if self.kind == "eval":
            return ["world"]
        return sorted({src.split(":")[0] for _, src in self.links})

    @property
    def optional(self) -> list[str]:
        return [src for k, src in self.links if k.startswith("model.")] if self.kind == "eval" else []


_DATA = (("data.train", "world:train"), ("data.val", "world:val"))
_BASE = (("model.init_from", "pretrain"),)
# The base VLM: the shipped one (default) or rebuilt from scratch by the same recipe at the profile's size.
SHIPPED_BASE = [Stage("pretrain", "init", "shipped")]
SCRATCH_BASE = [Stage("pretrain_world", "world", "pretrain"),
                Stage("init_base", "init", "base"),
                Stage("pretrain", "train", "caption", (("model.init_from", "init_base"),
                                                       ("data.train", "pretrain_world:train"), ("data.val", "world:val")))]
STAGES: list[Stage] = [
    Stage("world", "world"),
    *SHIPPED_BASE,
    Stage("sft", "train", "sft", _BASE + _DATA),
    Stage("rewarddance", "train", "rewarddance", _BASE + _DATA),
    Stage("sft_cold", "train", "sft", _BASE + _DATA, ("sft.mode=reasoning",), config="cold_start_tiny_cpu"),
    Stage("grpo", "train", "grpo", (("model.init_from", "sft_cold"),) + _DATA),
    Stage("gdso_teacher", "train", "gdso", (("model.init_from", "sft_cold"),) + _DATA),
    Stage("risd_student", "train", "risd", _BASE + (("teacher.path", "gdso_teacher"),) + _DATA,
          ("teacher.cache_dir={out}/cache/risd_teacher_targets",)),
    Stage("opd_student", "train", "opd", _BASE + (("teacher.path", "gdso_teacher"),) + _DATA),
]
METHODS = ["sft", "grpo", "rewarddance", "gdso_teacher", "risd_student", "opd_student"]
EVAL_SPLITS = ["test", "ood"]
STAGES += [Stage(f"eval_{s}", "eval", s, tuple((f"model.{m}", m) for m in METHODS) + (("data", f"world:{s}"),))
           for s in EVAL_SPLITS]
# Reward-guided T2I (issue 6), after the evaluations; the links are `zreward gen` flags (`_gen_job`).
STAGES += [Stage("gen_pretrain", "gen", "pretrain", (("data", "world"),)),
           Stage("gen_tune", "gen", "tune", (("generator", "gen_pretrain"), ("reward", "risd_student"),
                                            ("data", "world"))),
           Stage("gen_eval", "gen", "eval", (("a", "gen_tune"), ("b", "gen_pretrain"), ("data", "world")))]


def demo_stages(from_scratch: bool = False) -> list[Stage]:
    """`STAGES`, with the base VLM rebuilt by captioning pretraining instead of copied when `from_scratch`."""
    if not from_scratch:
        return list(STAGES)
    i = STAGES.index(SHIPPED_BASE[0])
    return STAGES[:i] + SCRATCH_BASE + STAGES[i + 1:]


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


# ------------------------------------------------------------------------------------------------ the stages

def _train_config(stage: Stage, ctx: Ctx, symbolic: bool):
    """(module, Config, yaml path, overrides) of a train stage; symbolic=True puts upstream keys in the paths."""
    if importlib.util.find_spec(f"zreward.trainers.{stage.method}") is None:
        raise StageError(f"stage {stage.name}: trainer module zreward.trainers.{stage.method} does not exist yet")
    yaml_path = configs_dir() / stage.method / f"{stage.config}.yaml"
    if not yaml_path.is_file():
        raise StageError(f"stage {stage.name}: config {yaml_path} not found (the trainer's {stage.config} config)")
    mod = importlib.import_module(f"zreward.trainers.{stage.method}")
    from zreward.trainers.config import load_config

    run_dir = "<run_dir>" if symbolic else str(ctx.out / "runs" / stage.name)
    overrides = [f"{k}={ctx.resolve(src, symbolic)}" for k, src in stage.links]
    out = "<out>" if symbolic else str(ctx.out)
    overrides += [e.replace("{out}", out) for e in stage.extra] + list(ctx.prof["overrides"].get(stage.name, []))
    overrides += [f"run.output_dir={run_dir}", f"run.seed={ctx.seed}"]
    return mod, load_config(mod.Config, yaml_path, overrides), yaml_path, overrides


# Shared trainer code every train stage depends on (the method's own module is added per stage).
_TRAIN_SHARED = ("zreward.trainers.common", "zreward.trainers.data", "zreward.trainers.run_utils",
                 "zreward.trainers.checkpoint", "zreward.trainers.config", "zreward.trainers.rollout",
                 "zreward.trainers.sft", "zreward.losses", "zreward.models", "zreward.serve", "zreward.data.records",
                 "zreward.data.labels", "zreward.data.images")


# What an eval stage runs (not the demo's own report, which is rewritten on every run anyway).
_EVAL_MODULES = ("runner", "model_metrics", "metrics", "calibration", "bootstrap", "cost", "report")


# The pretraining world's seed is offset so that its scenes are disjoint from the main world's (both exclude the
# held-out ood combos, which are fixed, so pretraining never shows an ood (color, shape) pair).
PRETRAIN_SEED_OFFSET = 1000


def _world_seed(stage: Stage, ctx: Ctx) -> int:
    return ctx.seed + (PRETRAIN_SEED_OFFSET if stage.method == "pretrain" else 0)


def _world_prompts(stage: Stage, ctx: Ctx) -> int:
    key = "pretrain_prompts" if stage.method == "pretrain" else "world_prompts"
    return int(ctx.prof.get(key, 2000))


# Generator stages: the profile's "gen" dict over these defaults; None = the value of `zreward gen`'s own profile
# `align_profile` (`zreward.align.pretrain.PROFILES` / `tune.PROFILES`). DRaFT-1 is `zreward gen tune`'s default and
# what its profiles were measured with. `estimates` (s per gen stage) only feed the first ETA.
GEN_DEFAULTS: dict = {"align_profile": "quick", "arch": "default", "pretrain_steps": None, "pretrain_batch_size": None,
                      "method": "draft", "k": 1, "tune_steps": None, "tune_batch_size": None, "audit_every": None,
                      "eval_prompts": 100, "estimates": {}}
_GEN_CODE = ("zreward.align", "zreward.data.shapes_world", "zreward.serve", "zreward.models")


def _gen_job(stage: Stage, ctx: Ctx, symbolic: bool) -> tuple[dict, list[str], Callable[[], object]]:
    """(resolved settings, the equivalent `zreward gen` argv, the in-process call) of a gen stage; symbolic=True puts
    upstream keys in the paths (for the cache key)."""
    import copy
    from dataclasses import asdict

    s = {**GEN_DEFAULTS, **ctx.prof.get("gen", {})}
    if set(s) - set(GEN_DEFAULTS):
        raise StageError(f"stage {stage.name}: profile {ctx.profile!r} gen: unknown key(s) "
                         f"{sorted(set(s) - set(GEN_DEFAULTS))}; expected some of {sorted(GEN_DEFAULTS)}")
    ln = {k: ctx.resolve(src, symbolic) for k, src in stage.links}
    out = "<out>" if symbolic else str(ctx.out / "runs" / stage.name)
    prof, seed = s["align_profile"], ["--seed", str(ctx.seed)]

    def opt(flag: str, key: str) -> list[str]:
        return [] if s[key] is None else [flag, str(s[key])]

    if stage.method == "pretrain":
        from zreward.align.pretrain import ARCHS, PretrainConfig, pretrain

        if s["arch"] not in ARCHS:
            raise StageError(f"stage {stage.name}: gen.arch: expected one of {sorted(ARCHS)}, got {s['arch']!r}")
        over = {k: s[g] for k, g in (("steps", "pretrain_steps"), ("batch_size", "pretrain_batch_size"))
                if s[g] is not None}
        pcfg = PretrainConfig.for_profile(prof, data=ln["data"], out=out, seed=ctx.seed,
                                          gen=copy.deepcopy(ARCHS[s["arch"]]), **over)
        argv = ["pretrain", "--data", ln["data"], "--out", out, "--profile", prof, *opt("--steps", "pretrain_steps"),
                *opt("--batch-size", "pretrain_batch_size"), "--arch", s["arch"], *seed]
        return asdict(pcfg), argv, lambda: pretrain(pcfg)
    if stage.method == "tune":
        from zreward.align.tune import TuneConfig, tune

        over = {k: s[g] for k, g in (("steps", "tune_steps"), ("batch_size", "tune_batch_size"),
                                     ("audit_every", "audit_every")) if s[g] is not None}
        tcfg = TuneConfig.for_profile(prof, generator=ln["generator"], reward=ln["reward"], out=out, data=ln["data"],
                                      method=s["method"], k=s["k"], seed=ctx.seed, **over)
        argv = ["tune", "--generator", ln["generator"], "--reward", ln["reward"], "--method", s["method"],
                "--k", str(s["k"]), "--out", out, "--data", ln["data"], "--profile", prof,
                *opt("--steps", "tune_steps"), *opt("--batch-size", "tune_batch_size"),
                *opt("--audit-every", "audit_every"), *seed]
        return asdict(tcfg), argv, lambda: tune(tcfg)
    from zreward.align.gen_eval import evaluate_gsb

    kw = {"a_dir": ln["a"], "b_dir": ln["b"], "n_prompts": int(s["eval_prompts"]), "out": out, "seed": ctx.seed,
          "data": ln["data"]}
    argv = ["eval", "--a", ln["a"], "--b", ln["b"], "--prompts", str(kw["n_prompts"]), "--out", out,
            "--data", ln["data"], *seed]
    return kw, argv, lambda: evaluate_gsb(**kw)


def stage_parts(stage: Stage, ctx: Ctx) -> dict[str, str]:
    """Digests of what a stage depends on: "config" (resolved settings), "code" (sources it runs), "inputs"
    (upstream keys). Raises StageError when the stage cannot be built."""
    up = digest({d: ctx.keys[d] for d in stage.deps + stage.optional if d in ctx.keys})
    if stage.kind == "world":
        return {"config": digest({"seed": _world_seed(stage, ctx), "prompts": _world_prompts(stage, ctx)}),
                "code": source_digest("zreward.data.shapes_world", "zreward.data.records"), "inputs": up}
    if stage.kind == "init" and stage.method == "shipped":
        return {"config": digest(base_card()), "code": source_digest("zreward.models"), "inputs": up}
    if stage.kind == "init":
        return {"config": digest([FAMILY, ctx.prof[f"{stage.method}_preset"], ctx.seed, stage.method]),
                "code": source_digest("zreward.models"), "inputs": up}
    if stage.kind == "train":
        from zreward.trainers.config import config_to_dict

        _, cfg, yaml_path, _ = _train_config(stage, ctx, symbolic=True)
        return {"config": digest({"cfg": config_to_dict(cfg), "yaml": yaml_path.read_text()}),
                "code": source_digest(f"zreward.trainers.{stage.method}", *_TRAIN_SHARED), "inputs": up}
    if stage.kind == "gen":
        settings, _, _ = _gen_job(stage, ctx, symbolic=True)
        return {"config": digest(settings), "code": source_digest(*_GEN_CODE), "inputs": up}
    return {"config": digest([stage.method, ctx.prof["eval_max_images"], ctx.prof["eval_samples"],
                              ctx.prof["eval_temperature"], ctx.seed]),
            "code": source_digest(*(f"zreward.eval.{m}" for m in _EVAL_MODULES), "zreward.serve", "zreward.models"),
            "inputs": up}


def stage_key(stage: Stage, ctx: Ctx) -> str:
    """The cache key: a digest of `stage_parts` (see the module docstring)."""
    return digest(stage_parts(stage, ctx))


def run_stage(stage: Stage, ctx: Ctx, resume: bool) -> Path:
    """Build one stage's output; returns it."""
    if stage.kind == "world":
        from zreward.data.shapes_world.build import build_world

        out = ctx.out / stage.name
        prompts, seed = _world_prompts(stage, ctx), _world_seed(stage, ctx)
        ctx.commands[stage.name] = f"zreward world build --out {out} --prompts {prompts} --seed {seed} --overwrite"
        return Path(build_world(out, prompts=prompts, seed=seed, overwrite=True))
    out = ctx.out / ("eval" if stage.kind == "eval" else "runs") / (stage.method if stage.kind == "eval"
                                                                      else stage.name)
    if stage.kind == "init" and stage.method == "shipped":
        ctx.commands[stage.name] = f"zreward model init --from base --out {out}"
        if out.exists():
            shutil.rmtree(out)
        return copy_base(out)
    if stage.kind == "init":
        from zreward.models.tiny import init_tiny

        preset = ctx.prof[f"{stage.method}_preset"]
        ctx.commands[stage.name] = f"zreward model init --family {FAMILY} --preset {preset} --seed {ctx.seed} --out {out}"
        if out.exists():
            shutil.rmtree(out)
        return Path(init_tiny(FAMILY, out, preset=preset, seed=ctx.seed))
    if stage.kind == "train":
        mod, cfg, yaml_path, overrides = _train_config(stage, ctx, symbolic=False)
        ctx.commands[stage.name] = shlex.join(["zreward", "train", stage.method, "--config", str(yaml_path),
                                               *overrides])
        if not resume and out.exists():
            shutil.rmtree(out)  # a changed key: never resume from another config's checkpoints
        return Path(mod.train(cfg))
    if stage.kind == "gen":
        _, argv, call = _gen_job(stage, ctx, symbolic=False)
        ctx.commands[stage.name] = shlex.join(["zreward", "gen", *argv])
        if out.exists():
            shutil.rmtree(out)  # no checkpoints to resume from: a rerun starts clean (no stale audit or grid files)
        call()
        return out
    from zreward.eval.report import write_eval_report
    from zreward.eval.runner import ceiling_metrics, evaluate, load_eval_data, parse_model_spec

    m = ctx.prof["eval_samples"]
    specs = [parse_model_spec(f"{name}={ctx.outputs[name]}") for name in stage.optional if name in ctx.outputs]
    if not specs:
        raise StageError(f"stage {stage.name}: no trained model to evaluate")
    data = load_eval_data(ctx.outputs["world"] / stage.method, max_images=ctx.prof["eval_max_images"])
    t = ctx.prof["eval_temperature"]
    args = ["--data", str(ctx.outputs["world"] / stage.method), "--out", str(out), "--reasoning", "--samples", str(m),
            "--temperature", str(t), "--seed", str(ctx.seed)] + (["--max-images", str(ctx.prof["eval_max_images"])]
                                        if ctx.prof["eval_max_images"] else [])
    cmd = shlex.join(["zreward", "eval"] + [a for s in specs for a in ("--model", f"{s.name}={s.path}")] + args)
    ctx.commands[stage.name] = cmd
    results, cals, scores = evaluate(specs, data, reasoning=True, samples=m, seed=ctx.seed, temperature=t, log=_log)
    write_eval_report(out, data, results, cals, scores, {"command": cmd, "settings": {"samples": m, "temperature": t,
                                                                                      "seed": ctx.seed}},
                      ceiling=ceiling_metrics(data, seed=ctx.seed))
    return out


# ---------------------------------------------------------------------------------------------------- driver

def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


def _log(msg: str) -> None:
    print(msg, flush=True)  # progress lines must appear at once, also when piped to a file


def run_demo(out: Path, profile: str, seed: int, stages: list[Stage] | None = None,
             runner: Callable[[Stage, Ctx, bool], Path] = run_stage, log=_log) -> Ctx:
    """Run (or reuse) every stage in order; failures are recorded in ctx.status and block only dependents."""
    stages = STAGES if stages is None else stages
    ctx = Ctx(out=out, profile=profile, seed=seed)
    rec_dir = out / "stages"
    rec_dir.mkdir(parents=True, exist_ok=True)
    records = {s.name: json.loads(p.read_text()) for s in stages if (p := rec_dir / f"{s.name}.json").is_file()}
    first = {**PROFILES[profile]["estimates"], **PROFILES[profile].get("gen", {}).get("estimates", {})}
    est = {s.name: float(records.get(s.name, {}).get("seconds") or first.get(s.name, 60)) for s in stages}
    t0 = time.time()
    for i, stage in enumerate(stages):
        eta = sum(est[s.name] for s in stages[i:] if ctx.status.get(s.name, {}).get("state") != "reused")
        head = f"[demo {i + 1}/{len(stages)}] {stage.name}"
        missing = [d for d in stage.deps if ctx.status.get(d, {}).get("state") not in ("done", "reused")]
        if missing:
            ctx.status[stage.name] = {"state": "skipped", "reason": f"needs failed/skipped stage(s) {missing}"}
            log(f"{head}: SKIPPED (needs {', '.join(missing)})")
            continue
        try:
            parts = stage_parts(stage, ctx)
            key = digest(parts)
        except StageError as e:
            ctx.status[stage.name] = {"state": "failed", "reason": str(e)}
            log(f"{head}: FAILED — {e}")
            continue
        ctx.keys[stage.name] = key
        rec = records.get(stage.name, {})
        if rec.get("key") == key and rec.get("finished") and Path(rec.get("output", "")).exists():
            ctx.outputs[stage.name] = Path(rec["output"])
            ctx.status[stage.name] = {"state": "reused", "seconds": rec.get("seconds"), "cpu_s": rec.get("cpu_s"),
                                      "key": key}
            ctx.commands[stage.name] = rec.get("command", "")
            log(f"{head}: reused (key {key})")
            continue
        resume = rec.get("key") == key and not rec.get("finished")
        why = [p for p in parts if rec.get("parts", {}).get(p) != parts[p]] if rec.get("parts") else []
        log(f"{head}: {'resuming' if resume else 'running'}"
            + (f" ({', '.join(why)} changed since the last build)" if why and not resume else "")
            + f" — elapsed {_fmt_s(time.time() - t0)}, ETA ≈ {_fmt_s(eta)}")
        (rec_dir / f"{stage.name}.json").write_text(json.dumps({"key": key, "parts": parts, "finished": False,
                                                                "seconds": rec.get("seconds")}) + "\n")
        ts, cs = time.time(), time.process_time()
        try:
            output = runner(stage, ctx, resume)
        except Exception as e:  # noqa: BLE001 - a failed stage is reported, its dependents skipped
            ctx.status[stage.name] = {"state": "failed", "reason": f"{type(e).__name__}: {e}",
                                      "traceback": traceback.format_exc(limit=8)}
            log(f"{head}: FAILED after {_fmt_s(time.time() - ts)} — {type(e).__name__}: {e}")
            continue
        sec, cpu = time.time() - ts, time.process_time() - cs
        ctx.outputs[stage.name] = Path(output)
        ctx.status[stage.name] = {"state": "done", "seconds": sec, "cpu_s": cpu, "key": key,
                                  **({"rebuilt_because": why} if why else {})}
        (rec_dir / f"{stage.name}.json").write_text(json.dumps(
            {"key": key, "parts": parts, "finished": True, "seconds": sec, "cpu_s": cpu, "output": str(output),
             "command": ctx.commands.get(stage.name, "")}) + "\n")
        log(f"{head}: done in {_fmt_s(sec)} (CPU time of this process {_fmt_s(cpu)})")
    return ctx


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="zreward demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", choices=sorted(PROFILES), default="quick", help="demo size (default: quick)")
    ap.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    ap.add_argument("--seed", type=int, default=0, help="seed for the world and every stage (default: 0)")
    ap.add_argument("--from-scratch", action="store_true",
                    help="rebuild the base VLM by captioning pretraining instead of copying the shipped one")
    args = ap.parse_args(argv)
    from zreward.eval.demo_report import write_demo_report

    out = Path(args.out).resolve()
    t0, c0, load0 = time.time(), time.process_time(), os.getloadavg()[0]
    ctx = run_demo(out, args.profile, args.seed, stages=demo_stages(args.from_scratch))
    wall = time.time() - t0
    machine = {"cpu_s": time.process_time() - c0, "cpus": os.cpu_count(),
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
