"""The demo's building blocks: how one stage is keyed and built.

`zreward.demo` holds the stage graph and the driver, `zreward.demo_profiles` the profiles, `zreward.demo_types` the
`Stage` type, the run context and the hashing of cache keys; this module answers, for one stage, what its cache key
is made of (`stage_parts`: resolved config, source code, upstream keys) and how its
output is built (`run_stage`: the ShapesWorld builder, `init_tiny`, a trainer's `train(cfg)`, one model's scores,
one split's `zreward eval` report or a `zreward gen` step, all in this process). Heavy modules (torch, transformers,
diffusers) are imported inside `run_stage` / `_gen_job` only when a stage actually runs, so `zreward demo --help`
and the reuse check of cached stages stay fast.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import json
import os
import shlex
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from zreward.data.shapes_world.build import build_world
from zreward.demo_profiles import EVAL_SPLITS, GEN_DEFAULTS
from zreward.demo_types import Ctx, Stage, StageError, configs_dir, digest, source_digest
from zreward.models.shipped import base_card, copy_base
from zreward.trainers.config import config_to_dict, load_config

FAMILY = "qwen2_vl"


# ------------------------------------------------------------------------------------------------ the stages

def _train_config(stage: Stage, ctx: Ctx, symbolic: bool):
    """(module, Config, yaml path, overrides) of a train stage; symbolic=True puts upstream keys in the paths."""
    if importlib.util.find_spec(f"zreward.trainers.{stage.method}") is None:
        raise StageError(f"stage {stage.name}: trainer module zreward.trainers.{stage.method} does not exist yet")
    yaml_path = configs_dir() / stage.method / f"{stage.config}.yaml"
    if not yaml_path.is_file():
        raise StageError(f"stage {stage.name}: config {yaml_path} not found (the trainer's {stage.config} config)")
    mod = importlib.import_module(f"zreward.trainers.{stage.method}")
    run_dir = "<run_dir>" if symbolic else str(ctx.out / "runs" / stage.name)
    overrides = [f"{k}={ctx.resolve(src, symbolic)}" for k, src in stage.links]
    out = "<out>" if symbolic else str(ctx.out)
    overrides += [e.replace("{out}", out) for e in stage.extra]
    overrides += list(ctx.prof["overrides"].get(stage.overrides_of or stage.name, []))
    overrides += [f"run.output_dir={run_dir}", f"run.seed={ctx.seed}"]
    return mod, load_config(mod.Config, yaml_path, overrides), yaml_path, overrides


# Shared trainer code every train stage depends on (the method's own module is added per stage).
# Every module a trainer stage's code path imports besides its own (the run loop, the RL loop, resume, sharding,
# trackers, checkpoints, data); a module missing here would let a changed trainer reuse a stale stage.
_TRAIN_SHARED = ("zreward.trainers.common", "zreward.trainers.data", "zreward.trainers.run_utils",
                 "zreward.trainers.checkpoint", "zreward.trainers.sharded_checkpoint", "zreward.trainers.config",
                 "zreward.trainers.rollout", "zreward.trainers.loop", "zreward.trainers.rl",
                 "zreward.trainers.risd_teacher", "zreward.trainers.resume", "zreward.trainers.sharding",
                 "zreward.trainers.trackers", "zreward.trainers.sft", "zreward.trainers.caption",
                 "zreward.trainers.guard", "zreward.losses", "zreward.metrics", "zreward.models",
                 "zreward.data.records", "zreward.data.labels", "zreward.data.images", "zreward.data.image_store",
                 "zreward.data.shapes_world", "zreward.atomic")


# What a score stage runs, and what an eval stage runs (not the demo's own report, rewritten on every run anyway).
# (the data package whole: decoding, labels, records and the oracle all shape scores, targets, pairs or ceiling)
_SCORE_CODE = ("zreward.eval.runner", "zreward.eval.cost", "zreward.models", "zreward.trainers.sharding",
               "zreward.data", "zreward.atomic")
_EVAL_CODE = tuple(f"zreward.eval.{m}" for m in ("runner", "model_metrics", "calibration", "bootstrap", "report")) \
    + ("zreward.metrics", "zreward.data")


# The pretraining world's seed is offset so that its scenes are disjoint from the main world's (both exclude the
# held-out ood combos, which are fixed, so pretraining never shows an ood (color, shape) pair).
PRETRAIN_SEED_OFFSET = 1000


def _world_seed(stage: Stage, ctx: Ctx) -> int:
    return ctx.seed + (PRETRAIN_SEED_OFFSET if stage.method == "pretrain" else 0)


def _world_prompts(stage: Stage, ctx: Ctx) -> int:
    key = "pretrain_prompts" if stage.method == "pretrain" else "world_prompts"
    return int(ctx.prof.get(key, 2000))


_GEN_CODE = ("zreward.align", "zreward.data.shapes_world", "zreward.models")


def _gen_job(stage: Stage, ctx: Ctx, symbolic: bool) -> tuple[dict, list[str], Callable[[], object]]:
    """(resolved settings, the equivalent `zreward gen` argv, the in-process call) of a gen stage; symbolic=True puts
    upstream keys in the paths (for the cache key)."""
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
        from zreward.align.pretrain import ARCHS, PretrainConfig, pretrain  # deferred: torch + diffusers

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
        from zreward.align.tune import TuneConfig, tune  # deferred: torch + diffusers

        over = {k: s[g] for k, g in (("steps", "tune_steps"), ("batch_size", "tune_batch_size"),
                                     ("audit_every", "audit_every")) if s[g] is not None}
        tcfg = TuneConfig.for_profile(prof, generator=ln["generator"], reward=ln["reward"], out=out, data=ln["data"],
                                      method=s["method"], k=s["k"], seed=ctx.seed, **over)
        argv = ["tune", "--generator", ln["generator"], "--reward", ln["reward"], "--method", s["method"],
                "--k", str(s["k"]), "--out", out, "--data", ln["data"], "--profile", prof,
                *opt("--steps", "tune_steps"), *opt("--batch-size", "tune_batch_size"),
                *opt("--audit-every", "audit_every"), *seed]
        return asdict(tcfg), argv, lambda: tune(tcfg)
    from zreward.align.gen_eval import evaluate_gsb  # deferred: torch + diffusers

    kw = {"a_dir": ln["a"], "b_dir": ln["b"], "n_prompts": int(s["eval_prompts"]), "out": out, "seed": ctx.seed,
          "data": ln["data"]}
    argv = ["eval", "--a", ln["a"], "--b", ln["b"], "--prompts", str(kw["n_prompts"]), "--out", out,
            "--data", ln["data"], *seed]
    return kw, argv, lambda: evaluate_gsb(**kw)


def stage_parts(stage: Stage, ctx: Ctx) -> dict[str, str]:
    """Digests of what a stage depends on: "config" (resolved settings), "code" (sources it runs), "inputs"
    (upstream keys). Raises StageError when the stage cannot be built."""
    # an eval stage's inputs are the scores it reports: only those that finished (a score stage that failed after
    # it was keyed is not in the report, and finishing later must change the report's key)
    done = [d for d in stage.optional if stage.kind not in ("eval", "speed") or d in ctx.outputs]
    up = digest({d: ctx.keys[d] for d in stage.deps + done if d in ctx.keys})
    if stage.kind == "world":
        return {"config": digest({"seed": _world_seed(stage, ctx), "prompts": _world_prompts(stage, ctx)}),
                "code": source_digest("zreward.data.shapes_world", "zreward.data.records", "zreward.data.split_writer",
                                      "zreward.atomic"), "inputs": up}
    if stage.kind == "init" and stage.method == "shipped":
        return {"config": digest(base_card()), "code": source_digest("zreward.models"), "inputs": up}
    if stage.kind == "init":
        return {"config": digest([FAMILY, ctx.prof[f"{stage.method}_preset"], ctx.seed, stage.method]),
                "code": source_digest("zreward.models"), "inputs": up}
    if stage.kind == "train":
        _, cfg, yaml_path, _ = _train_config(stage, ctx, symbolic=True)
        return {"config": digest({"cfg": config_to_dict(cfg), "yaml": yaml_path.read_text()}),
                "code": source_digest(f"zreward.trainers.{stage.method}", *_TRAIN_SHARED), "inputs": up}
    if stage.kind == "gen":
        settings, _, _ = _gen_job(stage, ctx, symbolic=True)
        return {"config": digest(settings), "code": source_digest(*_GEN_CODE), "inputs": up}
    settings = [stage.method, ctx.prof["eval_max_images"], ctx.prof["eval_samples"], ctx.prof["eval_temperature"],
                ctx.seed]
    if stage.kind == "score":
        return {"config": digest(settings + [EVAL_SPLITS]), "code": source_digest(*_SCORE_CODE), "inputs": up}
    if stage.kind == "speed":
        return {"config": digest(settings + [ctx.prof["speed_images"], ctx.prof["speed_min_seconds"], ctx.threads]),
                "code": source_digest(*_SCORE_CODE, "zreward.eval.speed"), "inputs": up}
    return {"config": digest(settings), "code": source_digest(*_EVAL_CODE), "inputs": up}


def run_stage(stage: Stage, ctx: Ctx, resume: bool) -> Path:
    """Build one stage's output; returns it."""
    if stage.kind == "world":
        out = ctx.out / stage.name
        prompts, seed = _world_prompts(stage, ctx), _world_seed(stage, ctx)
        ctx.commands[stage.name] = f"zreward world build --out {out} --prompts {prompts} --seed {seed} --overwrite"
        return Path(build_world(out, prompts=prompts, seed=seed, overwrite=True))
    out = ctx.out / {"eval": "eval", "score": "scores", "speed": "speed"}.get(stage.kind, "runs") / (
        stage.method if stage.kind in ("eval", "score", "speed") else stage.name)
    if stage.kind == "init" and stage.method == "shipped":
        ctx.commands[stage.name] = f"zreward model init --from base --out {out}"
        if out.exists():
            shutil.rmtree(out)
        return copy_base(out)
    if stage.kind == "init":
        from zreward.models.tiny import init_tiny  # deferred: torch + transformers

        preset = ctx.prof[f"{stage.method}_preset"]
        ctx.commands[stage.name] = (f"zreward model init --family {FAMILY} --preset {preset} --seed {ctx.seed} "
                                    f"--out {out}")
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
    if stage.kind == "score":
        return _score(stage, ctx, out)
    if stage.kind == "speed":
        return _speed(stage, ctx, out)
    return _eval_report(stage, ctx, out)


def _eval_argv(ctx: Ctx, split: str, out: Path, max_images: int | None = -1) -> list[str]:
    """The `zreward eval` flags (after the --model ones) of the demo's evaluation of one split (of its first
    `max_images` images; -1: the profile's `eval_max_images`)."""
    m, t = ctx.prof["eval_samples"], ctx.prof["eval_temperature"]
    n = ctx.prof["eval_max_images"] if max_images == -1 else max_images
    return ["--data", str(ctx.outputs["world"] / split), "--out", str(out), "--reasoning", "--samples", str(m),
            "--temperature", str(t), "--seed", str(ctx.seed)] + (["--max-images", str(n)] if n else [])


def _score(stage: Stage, ctx: Ctx, out: Path) -> Path:
    """One trained model scored on every split, as `zreward eval` scores it: DIR/scores/<model>/<split>.npz."""
    from zreward.eval.runner import load_eval_data, parse_model_spec, score_spec  # deferred: torch + transformers

    spec = parse_model_spec(f"{stage.method}={ctx.outputs[stage.method]}")
    if out.exists():
        shutil.rmtree(out)  # a changed key: no stale split file
    out.mkdir(parents=True)
    datas = [load_eval_data(ctx.outputs["world"] / split, max_images=ctx.prof["eval_max_images"])
             for split in EVAL_SPLITS]
    scores = score_spec(spec, datas, reasoning=True, samples=ctx.prof["eval_samples"], seed=ctx.seed,
                        temperature=ctx.prof["eval_temperature"], log=_log)  # the model loaded once for all splits
    cmds = []
    for split, sc in zip(EVAL_SPLITS, scores):
        sc.save(out / f"{split}.npz")
        cmds.append(shlex.join(["zreward", "eval", "--model", f"{spec.name}={spec.path}",
                                *_eval_argv(ctx, split, out / split)]))
    ctx.commands[stage.name] = " && ".join(cmds)  # the same scores, each with a one-model report
    return out


def _speed(stage: Stage, ctx: Ctx, out: Path) -> Path:
    """Images/s of each linked model that finished, on the same first `speed_images` images of split `method`
    (`zreward.eval.speed.time_models`: each scored as its score stage scores it, alone, passes for about
    `speed_min_seconds`) while no other stage runs (the demo starts it last; the score stages' own timings share the
    CPUs with whichever stage runs beside them): DIR/speed/<split>/speed.json, with the 1-min load average before and
    after and how it was timed. Its recorded command is `zreward eval` on those images (one pass each: the metrics,
    not this timing)."""
    from zreward.eval.runner import load_eval_data, parse_model_spec  # deferred: torch + transformers
    from zreward.eval.speed import time_models

    specs = [parse_model_spec(f"{src}={ctx.outputs[src]}") for k, src in stage.links
             if k.startswith("model.") and src in ctx.outputs]
    if not specs:
        raise StageError(f"stage {stage.name}: no trained model to time")
    n, load = ctx.prof["speed_images"], [os.getloadavg()[0]]
    data = load_eval_data(ctx.outputs["world"] / stage.method, max_images=n)
    rates = time_models(specs, data, min_seconds=ctx.prof["speed_min_seconds"], reasoning=True, log=_log,
                        samples=ctx.prof["eval_samples"], seed=ctx.seed, temperature=ctx.prof["eval_temperature"])
    load.append(os.getloadavg()[0])
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    models = [a for s in specs for a in ("--model", f"{s.name}={s.path}")]
    ctx.commands[stage.name] = shlex.join(["zreward", "eval", *models, *_eval_argv(ctx, stage.method, out / "eval",
                                                                                   n)])
    timing = {"by": "zreward.eval.speed.time_models", "min_seconds": ctx.prof["speed_min_seconds"]}
    (out / "speed.json").write_text(json.dumps({"split": stage.method, "n_images": len(data.ids), "models": rates,
                                                "load_avg_1min": load, "timing": timing}, indent=1) + "\n")
    return out


def _eval_report(stage: Stage, ctx: Ctx, out: Path) -> Path:
    """The metrics and report of one split over every model whose score stage finished (`zreward eval`'s report)."""
    # deferred: torch + transformers (+ matplotlib)
    from zreward.eval.report import write_eval_report
    from zreward.eval.runner import ModelScores, ceiling_metrics, load_eval_data, model_results

    split = stage.method
    got = [(k.partition(".")[2], src) for k, src in stage.links if k.startswith("model.") and src in ctx.outputs]
    if not got:
        raise StageError(f"stage {stage.name}: no trained model to evaluate")
    scores = {name: ModelScores.load(ctx.outputs[src] / f"{split}.npz") for name, src in got}
    dirs = {name: ctx.outputs[name] for name, _ in got}
    data = load_eval_data(ctx.outputs["world"] / split, max_images=ctx.prof["eval_max_images"])
    cmd = shlex.join(["zreward", "eval"] + [a for n, d in dirs.items() for a in ("--model", f"{n}={d}")]
                     + _eval_argv(ctx, split, out))
    ctx.commands[stage.name] = cmd
    results, cals = model_results(data, scores, dirs, seed=ctx.seed, log=_log)
    if out.exists():
        shutil.rmtree(out)  # no plot or predictions file of a model this report leaves out
    m, t = ctx.prof["eval_samples"], ctx.prof["eval_temperature"]
    write_eval_report(out, data, results, cals, scores, {"command": cmd, "settings": {"samples": m, "temperature": t,
                                                                                      "seed": ctx.seed}},
                      ceiling=ceiling_metrics(data, seed=ctx.seed), seed=ctx.seed)
    return out


def _fmt_s(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}:{s % 60:02d}"


def _log(msg: str) -> None:
    print(msg, flush=True)  # progress lines must appear at once, also when piped to a file
