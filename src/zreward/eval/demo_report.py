"""The `zreward demo` report: DIR/report.json + DIR/report.md from the demo's stages and its two eval reports.

report.json: `methods` → {sft, grpo, rewarddance, gdso_teacher, risd_student, opd_student} → the test-split fields
of `zreward eval` (accuracy, accuracy_ci, accuracy_ties, per_dim, kl, js, w1, srcc, plcc, ece, img_per_s,
n_pairs, ... with _ci/_n), `model_dir` (the saved Scorer dir), `ood` (the same fields on the ood split) and
`status`; a method whose stage failed keeps its key with null metrics and the reason. Plus `ceiling` (test,
on the evaluated pairs), `ceiling_ci`, `ceiling_ood`, `profile`, `seed`, `wall_s`, `dataset_dir`, `cost_ratio`
(student images/s ÷ teacher images/s), `cost_timing` ("alone": from `speed`, the speed stage's speed.json;
"score stages": from the img/s of each model's score stage), `speed`, `goals` (the paper's claims checked on our
numbers), `stages` (state, seconds, cache key), `commands` (the exact equivalent command of every stage),
`software`, `plots`, and `generator` (the reward-guided T2I stages): {net_gsb, net_gsb_ci, n_prompts,
oracle_sft: {dim: mean}, oracle_tuned: {dim: mean}, sft_dir, tuned_dir, status} from gen_eval's `gsb.json`, null
values unless gen_eval finished in this run or was reused (status = gen_eval's state).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

import yaml

from zreward.eval.report import fmt, fmt_ci, plot_training_curves, read_metrics_jsonl, software_versions
from zreward.eval.runner import json_clean

__all__ = ["GEN_KEYS", "ROWS", "budgets", "cost_ratios", "generator_summary", "goals", "write_demo_report"]

# (method key, label) in table order; the teacher's cold start is shown in the training curves only.
ROWS = [("sft", "SFT"), ("grpo", "GRPO"), ("rewarddance", "RewardDance"), ("gdso_teacher", "GDSO teacher"),
        ("risd_student", "RISD student"), ("opd_student", "OPD student")]


# report.json's `generator` keys (plus `status`); the GSB ones are read from gen_eval's gsb.json.
GEN_KEYS = ("net_gsb", "net_gsb_ci", "n_prompts", "oracle_sft", "oracle_tuned", "sft_dir", "tuned_dir")
_FINISHED = ("done", "reused")


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _pt(r: dict | None, key: str = "accuracy") -> float | None:
    return None if r is None else r.get(key)


def paired_ci(paired: list[dict], a: str | None, b: str | None) -> list[float] | None:
    """The paired 95% CI of accuracy(a) − accuracy(b) in points from an eval report's `paired` list, or None."""
    for p in paired:
        if (p["a"], p["b"]) == (a, b):
            return [100 * p["diff_ci"][0], 100 * p["diff_ci"][1]]
        if (p["a"], p["b"]) == (b, a):
            return [-100 * p["diff_ci"][1], -100 * p["diff_ci"][0]]
    return None


def cost_ratios(methods: dict, speed: dict | None) -> tuple[dict, str]:
    """(student images/s ÷ the GDSO teacher's images/s for RISD and OPD, how they were timed): from the speed
    stage's speed.json where it timed the teacher (every model alone, on the same images), else from each model's
    score stage (the test split, beside whichever stage shared the CPUs)."""
    if speed and "gdso_teacher" in speed.get("models", {}):
        ips, how = {m: r["img_per_s"] for m, r in speed["models"].items()}, "alone"
    else:
        ips, how = {m: _pt(methods.get(m), "img_per_s") for m in methods}, "score stages"
    t = ips.get("gdso_teacher")
    return {m: ips[m] / t if t and ips.get(m) else None for m in ("risd_student", "opd_student")}, how


def goals(methods: dict, ceiling: float | None, paired: list[dict] | None = None,
          speed: dict | None = None) -> list[dict]:
    """The paper's claims on our numbers (accuracy in points = ×100). A claim whose inputs are missing is null.
    Claims between two methods carry `ci`: the paired 95% CI of their difference (test eval's `paired`); the
    speed claim reads `cost_ratios` (the speed stage's timing when there is one)."""
    def acc(m):
        return _pt(methods.get(m))

    paired = paired or []
    out = []
    base = {m: acc(m) for m in ("sft", "grpo", "rewarddance") if acc(m) is not None}
    t, s, o = acc("gdso_teacher"), acc("risd_student"), acc("opd_student")
    best_m = max(base, key=base.get) if base else None
    best = base.get(best_m)
    out.append({"claim": "GDSO teacher ≥ best of SFT / GRPO / RewardDance + 3 points",
                "value": None if t is None or best is None else 100 * (t - best), "target": 3.0,
                "ci": paired_ci(paired, "gdso_teacher", best_m),
                "holds": None if t is None or best is None else 100 * (t - best) >= 3.0})
    out.append({"claim": "GDSO teacher within 2 points of the annotator ceiling",
                "value": None if t is None or ceiling is None else 100 * (ceiling - t), "target": 2.0,
                "holds": None if t is None or ceiling is None else 100 * (ceiling - t) <= 2.0})
    out.append({"claim": "RISD student ≥ teacher − 0.5 points",
                "value": None if s is None or t is None else 100 * (s - t), "target": -0.5,
                "ci": paired_ci(paired, "risd_student", "gdso_teacher"),
                "holds": None if s is None or t is None else 100 * (s - t) >= -0.5})
    out.append({"claim": "RISD student above OPD student",
                "value": None if s is None or o is None else 100 * (s - o), "target": 0.0,
                "ci": paired_ci(paired, "risd_student", "opd_student"),
                "holds": None if s is None or o is None else s > o})
    r = cost_ratios(methods, speed)[0]["risd_student"]
    out.append({"claim": "student ≥ 20× the teacher's images/s", "value": r, "target": 20.0,
                "holds": None if r is None else r >= 20.0})
    return out


# What each trainer reads from labels: the teacher-distilled students read none (RISD with human_weight 0; OPD).
_LABELS = {"risd_student": lambda c: (c.get("risd") or {}).get("human_weight", 0) > 0, "opd_student": lambda c: False}


def budgets(ctx) -> list[dict]:
    """Each trained stage's budget side by side, from its run's config.yaml and the stage record: optimizer steps,
    the batch (images or prompts per step), the training images it may read, whether it reads human labels, the
    learning rate, and the stage's wall and CPU seconds (0 CPU s for a stage reused from an earlier run) with those
    of the stages that did part of its work (`includes`: the parts of RISD's teacher pass, "<stage>_teacher<R>")."""
    rows = []
    for name, st in ctx.status.items():
        cfg_file = ctx.out / "runs" / name / "config.yaml"
        if not cfg_file.is_file():
            continue
        parts = [h for h in ctx.status if re.fullmatch(re.escape(name) + r"_teacher\d+", h)]
        # a part that failed has no time (RISD then ran it itself, inside its own time)
        wall, cpu = ([st.get(k)] + [ctx.status[h].get(k) or 0.0 for h in parts] for k in ("seconds", "cpu_s"))
        c = yaml.safe_load(cfg_file.read_text()) or {}
        data, run = c.get("data") or {}, c.get("run") or {}
        # a method section may batch by images itself (OPD's opd.images_per_batch) instead of data.*
        per_images = next((sec["images_per_batch"] for k, sec in c.items() if k != "data" and isinstance(sec, dict)
                           and sec.get("images_per_batch")), None) or data.get("images_per_batch")
        batch = (f"{per_images} images" if per_images
                 else f"{data['prompts_per_batch']} prompts" if data.get("prompts_per_batch") else "–")
        extra = data.get("extra_unlabelled")
        rows.append({"stage": name, "steps": run.get("max_steps"), "batch": batch,
                     "train_images": data.get("max_images") or "all", "extra_unlabelled": bool(extra),
                     "labels": _LABELS.get(name, lambda _: name != "pretrain")(c),
                     "lr": (c.get("optim") or {}).get("lr"), "includes": parts,
                     "wall_s": None if None in wall else sum(wall), "cpu_s": None if None in cpu else sum(cpu)})
    return rows


def _finished_output(ctx, stage: str) -> Path | None:
    """The output dir of a stage that finished in this run or was reused (never a stale one from an older run)."""
    ok = ctx.status.get(stage, {}).get("state") in _FINISHED and stage in ctx.outputs
    return Path(ctx.outputs[stage]) if ok else None


def generator_summary(ctx) -> tuple[dict, dict]:
    """report.json's `generator` and the details report.md shows (GSB counts, goal, tuning method, audit rows).

    Values are null unless gen_eval finished or was reused; sft_dir / tuned_dir are set when their stage finished.
    """
    st = ctx.status.get("gen_eval", {"state": "not run"})
    sft, tuned, ev = (_finished_output(ctx, s) for s in ("gen_pretrain", "gen_tune", "gen_eval"))
    g = _load(ev / "gsb.json") if ev else None
    gen = {k: (g or {}).get(k) for k in GEN_KEYS[:5]}
    gen.update(sft_dir=str(sft) if sft else None, tuned_dir=str(tuned) if tuned else None, status=st["state"])
    tj = _load(tuned / "tune.json") if tuned else None
    detail = {"reason": st.get("reason") or (None if g or not ev else f"{ev / 'gsb.json'} not found"),
              "gsb": g, "tune": None if tj is None else {"method": tj["config"]["method"], "k": tj["config"]["k"],
                                                         "steps": tj["config"]["steps"], "audit": tj["audit"],
                                                         "hacking_warnings": tj["hacking_warnings"]}}
    return gen, detail


def _gen_plots(ctx, out: Path) -> dict:
    """The audit plot (gen_tune) and the side-by-side grid (gen_eval), as paths relative to the report."""
    plots = {}
    for key, stage, name in (("gen/audit", "gen_tune", "audit.png"), ("gen/side_by_side", "gen_eval",
                                                                       "side_by_side.png")):
        d = _finished_output(ctx, stage)
        if d is not None and (d / name).is_file():
            plots[key] = Path(os.path.relpath(d / name, out)).as_posix()
    return plots


def write_demo_report(ctx, wall_s: float, command: str, machine: dict | None = None) -> dict:
    """Assemble and write DIR/report.json and DIR/report.md; returns report.json's content."""
    out: Path = ctx.out
    ev = {s: _load(out / "eval" / s / "report.json") for s in ("test", "ood")}
    test_models = (ev["test"] or {}).get("models", {})
    ood_models = (ev["ood"] or {}).get("models", {})
    methods = {}
    for m, _ in ROWS:
        st = ctx.status.get(m, {"state": "not run"})
        if m in test_models:
            methods[m] = {**test_models[m], "model_dir": str(ctx.outputs.get(m, test_models[m].get("model_dir"))),
                          "ood": ood_models.get(m), "status": st["state"]}
        else:
            methods[m] = {k: None for k in ("accuracy", "accuracy_ci", "accuracy_ties", "per_dim", "kl", "js", "w1",
                                            "srcc", "plcc", "ece", "img_per_s", "n_pairs", "ood")}
            methods[m].update(model_dir=str(ctx.outputs[m]) if m in ctx.outputs else None, status=st["state"],
                              reason=st.get("reason", "not evaluated"))
    ceil = {s: (ev[s] or {}).get("ceiling") for s in ("test", "ood")}
    speed = _load(ctx.outputs["speed"] / "speed.json") if "speed" in ctx.outputs else None
    cost_ratio, cost_timing = cost_ratios(methods, speed)
    ceiling = (ceil["test"] or {}).get("accuracy")
    curves = {}
    for name, st in ctx.status.items():
        mfile = out / "runs" / name / "metrics.jsonl"
        if mfile.is_file():
            curves[name] = read_metrics_jsonl(mfile)
    plots = {}
    if curves:
        plots["training_curves"] = plot_training_curves(curves, out / "training_curves.png").name
    for s in ("test", "ood"):
        for p in sorted((out / "eval" / s).glob("*.png")):
            plots[f"{s}/{p.stem}"] = f"eval/{s}/{p.name}"
    plots.update(_gen_plots(ctx, out))
    generator, gen_detail = generator_summary(ctx)
    card = _load(out / "world" / "card.json") or {}
    report = json_clean({
        "methods": methods, "ceiling": ceiling, "ceiling_ci": (ceil["test"] or {}).get("accuracy_ci"),
        "ceiling_ood": (ceil["ood"] or {}).get("accuracy"), "ceiling_card": card.get("ceiling"),
        "profile": ctx.profile, "seed": ctx.seed, "wall_s": wall_s, "machine": machine or {},
        # sum of every stage's own build time (reused stages: from their records) = a from-scratch run's work
        "stages_wall_s": sum(st.get("seconds") or 0.0 for st in ctx.status.values()),
        "n_reused": sum(st["state"] == "reused" for st in ctx.status.values()),
        "dataset_dir": str(out / "world"),
        "cost_ratio": cost_ratio, "cost_timing": cost_timing, "speed": speed,
        "goals": goals(methods, ceiling, (ev["test"] or {}).get("paired"), speed),
        "eval": {s: {"n_images": (ev[s] or {}).get("n_images"), "pairs": (ev[s] or {}).get("pairs")} for s in ev},
        "generator": generator, "budgets": budgets(ctx),
        "stages": ctx.status, "commands": {"demo": command, **ctx.commands}, "software": software_versions(),
        "plots": plots})
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "report.md").write_text("\n".join(_markdown(report, ev, gen_detail)) + "\n")
    return report


def _table(methods: dict, split: str, ceiling: dict | None, dims: list[str]) -> list[str]:
    head = "| method | mode | accuracy ±95% CI (n) | with ties | " + " | ".join(dims) + \
           " | KL | W1 | ECE | img/s |"
    L = [head, "|" + "---|" * (8 + len(dims))]
    for m, label in ROWS:
        r = methods[m] if split == "test" else (methods[m].get("ood") or {})
        if r.get("accuracy") is None and r.get("img_per_s") is None:
            L.append(f"| {label} | – | {methods[m].get('status', '?')}: {methods[m].get('reason', 'no result')} |"
                     + " |" * (5 + len(dims)))
            continue
        mode = r.get("mode", "?") + (f" M={r['samples']}" if r.get("mode") == "reasoning" else "")
        per = [fmt(100 * v, 1) if v is not None else "–" for v in (r.get("per_dim", {}).get(d) for d in dims)]
        L.append(f"| {label} | {mode} | {fmt_ci(r, 'accuracy', pct=True)} | {fmt_ci(r, 'accuracy_ties', pct=True)} | "
                 + " | ".join(per) + f" | {fmt(r.get('kl'))} | {fmt(r.get('w1'))} | {fmt(r.get('ece'))} | "
                 f"{fmt(r.get('img_per_s'), 2)} |")
    if ceiling:
        ci = ceiling.get("accuracy_ci") or [None, None]
        L.append(f"| annotator ceiling | oracle | {fmt(100 * ceiling['accuracy'], 1)} "
                 f"[{fmt(100 * ci[0], 1)}, {fmt(100 * ci[1], 1)}] (n={ceiling.get('n_non_tie')}) |"
                 + " |" * (5 + len(dims)))
    return L


def _generation(rep: dict, detail: dict) -> list[str]:
    """The "Reward-guided generation" section: GSB table, oracle means per dim, audit plot, side-by-side grid."""
    gen, p, t, g = rep["generator"], rep["plots"], detail["tune"], detail["gsb"]
    how = "reward tuning"
    if t:
        how = ("ReFL" if t["method"] == "refl" else f"DRaFT-{t['k']}") + f" ({t['steps']} steps)"
    L = ["## Reward-guided generation", "",
         (f"The tiny T2I generator pretrained on the world's high-quality train images (SFT generator), tuned by "
          f"{how} with the RISD student's Scorer as the differentiable reward, then judged against the SFT generator "
          "by the simulated raters (GSB, majority of votes) on held-out test prompts; oracle = ShapesWorld oracle of "
          "the perceived scene (1–5)."), ""]
    if gen["net_gsb"] is None:
        return L + [f"Not available: gen_eval {gen['status']}" + (f" ({detail['reason']})" if detail["reason"]
                                                                   else "") + ".", ""]
    ci = gen["net_gsb_ci"] or [None, None]
    L += ["| net GSB (tuned vs SFT) ±95% CI | prompts | good / same / bad | paper |", "|---|---|---|---|",
          (f"| {fmt(gen['net_gsb'], 3)} [{fmt(ci[0], 3)}, {fmt(ci[1], 3)}] | {gen['n_prompts']} | "
           f"{g.get('good', '–')} / {g.get('same', '–')} / {g.get('bad', '–')} | +0.413 |"), "",
          "| oracle mean | SFT generator | tuned generator | Δ |", "|---|---|---|---|"]
    for d, sv in (gen["oracle_sft"] or {}).items():
        tv = (gen["oracle_tuned"] or {}).get(d)
        L.append(f"| {d} | {fmt(sv, 2)} | {fmt(tv, 2)} | {fmt(None if tv is None else tv - sv, 2)} |")
    L += ["", f"Goal (net GSB ≥ +0.413 and no oracle dimension worse): {'met' if g.get('goal_met') else 'not met'}.",
          ""]
    if "gen/audit" in p:
        L += ["Hacking audit during tuning (held-out val prompts, fixed seeds: reward vs oracle overall):", "",
              f"![audit]({p['gen/audit']})", ""]
        if t and t["audit"]:
            a0, a1 = t["audit"][0], t["audit"][-1]
            L += [f"Reward {fmt(a0['reward'], 3)} → {fmt(a1['reward'], 3)}, oracle overall "
                  f"{fmt(a0['oracle_overall'], 2)} → {fmt(a1['oracle_overall'], 2)} (step {a0['step']} → "
                  f"{a1['step']}); hacking warnings: "
                  + ("; ".join(t["hacking_warnings"]) if t["hacking_warnings"] else "none") + ".", ""]
            if "oracle_overall:reward_plcc" in a0:
                c0 = fmt(a0["oracle_overall:reward_plcc"], 2)
                L += ["Does the reward rank this generator's images like the oracle? Pearson of per-image reward and "
                      f"oracle overall on the audit images at step {a0['step']}: {c0} (near 0: the reward gives tuning "
                      "no signal to follow).", ""]
    if "gen/side_by_side" in p:
        L += ["Side by side (B = SFT, A = tuned, with the raters' verdict):", "",
              f"![side by side]({p['gen/side_by_side']})", ""]
    return L


def _markdown(rep: dict, ev: dict, gen_detail: dict | None = None) -> list[str]:
    dims = (ev["test"] or {}).get("dims", [])
    L = ["# Z-Reward on ShapesWorld — `zreward demo` report", "",
         f"Profile **{rep['profile']}**, seed {rep['seed']}, wall time {rep['wall_s'] / 60:.1f} min"
         + (f" ({rep['n_reused']} stages reused; all stages' own build times sum to "
            f"{rep['stages_wall_s'] / 60:.1f} min)" if rep["n_reused"] else "")
         + (f" (CPU time {rep['machine']['cpu_s'] / 60:.1f} min; 1-min load average at start/end "
            f"{'/'.join(fmt(v, 1) for v in rep['machine']['load_avg_1min'])} on {rep['machine']['cpus']} CPUs)"
            if rep["machine"].get("cpu_s") is not None else "") + ", dataset "
         f"`{rep['dataset_dir']}`; evaluated on {rep['eval']['test']['n_images']} test and "
         f"{rep['eval']['ood']['n_images']} ood images.", ""]
    bad = {n: s for n, s in rep["stages"].items() if s["state"] in ("failed", "skipped")}
    if bad:
        L += ["## Incomplete: failed / skipped stages", ""] + [f"- **{n}** {s['state']}: {s.get('reason')}"
                                                              for n, s in bad.items()] + [""]
    L += ["## Comparison (test split; accuracy in %, non-tie pairs, 95% CI by prompt bootstrap)", ""]
    L += _table(rep["methods"], "test", (ev["test"] or {}).get("ceiling"), dims)
    L += ["", "## Out-of-distribution split (held-out colour–shape combinations)", ""]
    L += _table(rep["methods"], "ood", (ev["ood"] or {}).get("ceiling"), dims)
    cr = rep["cost_ratio"]
    sp = rep.get("speed") or {}
    threads = sorted({str(r.get("torch_threads", "?")) for r in sp.get("models", {}).values()})
    how = (f"each model alone on the first {sp.get('n_images')} {sp.get('split')} images, one after the other, "
           f"torch threads {'/'.join(threads)}, "
           f"1-min load average {'–'.join(fmt(x, 1) for x in sp.get('load_avg_1min', []))}; img/s "
           + ", ".join(f"{m} {fmt(r['img_per_s'], 2)}" for m, r in sp.get("models", {}).items())
           if rep.get("cost_timing") == "alone" else
           "from the score stages, each beside whichever stage shared the CPUs (the speed stage "
           + ("did not time the teacher)" if sp else "did not finish)"))
    ratios = ", ".join(f"{m}: {fmt(v, 1)}{'×' if v is not None else ''}" for m, v in cr.items())
    L += ["", f"Teacher vs student cost: student images/s ÷ teacher images/s = {ratios} ({how}). The img/s column "
          "above is each score stage's own timing.", "",
          "## The paper's claims on our numbers", "",
          "Differences in points on the test pairs; the CI is the paired one (both methods on each resampled "
          "prompt set).",
          "", "| claim | measured | paired 95% CI | target | holds |", "|---|---|---|---|---|"]
    for g in rep["goals"]:
        ci = g.get("ci")
        L.append(f"| {g['claim']} | {fmt(g['value'], 2)} | {'–' if not ci else f'[{ci[0]:+.1f}, {ci[1]:+.1f}]'} | "
                 f"{g['target']} | {'–' if g['holds'] is None else 'yes' if g['holds'] else 'no'} |")
    L += ["", "## Budgets (from each run's config.yaml; wall / CPU minutes of the stage on this machine)", "",
          "| stage | steps | batch | train images | + unlabelled | human labels | lr | wall min | CPU min |",
          "|---|---|---|---|---|---|---|---|---|"]
    for b in rep.get("budgets", []):
        L.append(f"| {b['stage']} | {b['steps']} | {b['batch']} | {b['train_images']} | "
                 f"{'yes' if b['extra_unlabelled'] else 'no'} | {'yes' if b['labels'] else 'no'} | {b['lr']} | "
                 f"{fmt(None if b['wall_s'] is None else b['wall_s'] / 60, 1)} | "
                 f"{fmt(None if b['cpu_s'] is None else b['cpu_s'] / 60, 1)}"
                 + (f" (with {', '.join(b['includes'])})" if b.get("includes") else "") + " |")
    p = rep["plots"]
    L += ["", "## Plots", ""]
    if "training_curves" in p:
        L += ["Training curves (loss; held-out accuracy where logged):", "",
              "![training curves](training_curves.png)", ""]
    for s in ("test", "ood"):
        if f"{s}/accuracy_vs_cost" in p:
            L += [f"Accuracy vs cost ({s}):", "", f"![accuracy vs cost {s}](eval/{s}/accuracy_vs_cost.png)", ""]
    rel = [k for k in p if k.startswith("test/reliability_")]
    if rel:
        L += ["Reliability diagrams (test, Thurstone P(a ≻ b) vs rater vote share):", ""]
        L += [f"![{k}]({p[k]})" for k in rel] + [""]
    if "test/examples" in p:
        L += ["Example test images: annotator histogram (grey bars) and each model's level distribution, per "
              "dimension:", "", "![examples](eval/test/examples.png)", ""]
    L += ["Full per-split reports: [test](eval/test/report.md), [ood](eval/ood/report.md).", ""]
    L += _generation(rep, gen_detail or {"reason": None, "gsb": None, "tune": None})
    L += ["## Reproduce", "", "Seed " + str(rep["seed"]) + " everywhere. Equivalent commands, in order:", "", "```"]
    L += [f"{c}" for c in rep["commands"].values() if c] + ["```", "", "## Stages", "",
                                                           "| stage | state | wall s | CPU s | cache key |",
                                                           "|---|---|---|---|---|"]
    for n, s in rep["stages"].items():
        L.append(f"| {n} | {s['state']} | {fmt(s.get('seconds'), 0)} | {fmt(s.get('cpu_s'), 0)} | "
                 f"{s.get('key', '–')} |")
    L += ["", "Software: " + ", ".join(f"{k} {v}" for k, v in rep["software"].items()) + "."]
    return L

