"""The demo's profiles: world sizes, the base model, evaluation settings, per-stage overrides of the trainers'
configs, the generator stages' settings, and rough stage durations (the first ETA and the order in which ready
stages start). `zreward.demo_stages` keys and builds the stages from them; `zreward.demo` runs them."""
from __future__ import annotations

# Chain temperature of the reasoning models at evaluation. Measured on 400 val images (600 pairs) with the
# cold-start teacher: greedy 0.655, M = 4 at T = 1.0 0.571, T = 0.5 0.613, T = 0.3 0.646 — the tiny teachers'
# T = 1 chains are too noisy to average.
EVAL_TEMPERATURE = 0.3

# The splits every trained model is scored on; the evaluation of each is one report over all the models.
EVAL_SPLITS = ["test", "ood"]
# Rough seconds of one model's scoring stage (both splits), from the evaluations of 2026-12-02: the reasoning
# models' chains are most of it.
_SCORE_EST_QUICK = {"score_sft": 12, "score_rewarddance": 12, "score_grpo": 40, "score_gdso_teacher": 40,
                    "score_risd_student": 12, "score_opd_student": 12}
_SCORE_EST_FULL = {k: 6 * v for k, v in _SCORE_EST_QUICK.items()}
# Each half of RISD's teacher pass (1,600 images, M = 2 in both profiles). The quick estimates are rough and also set
# the order in which ready stages start; the 14.6-min run (README) used these: measured there, each half 67 s, RISD's
# own training 250 s, OPD 250 s. With 90 (not 80 as in that run) the parts' longest path (90 + 600 + the generator's
# 43) clearly beats OPD's (722), so both halves start before OPD, as they did there.
_PASS_EST = {"risd_student_teacher0": 90, "risd_student_teacher1": 90}
# The full profile's one student budget (RISD and OPD alike): every train image, 1,600 steps.
_FULL_STUDENT_BUDGET = ["data.max_images=null", "run.max_steps=1600"]

# Profiles: world sizes, the base model preset (`zreward.models.tiny`), eval settings (images per split, M chains for
# reasoning models at eval_temperature, test images the speed stage times each model on alone, in passes for about
# speed_min_seconds: a student's pass of 100-200 images is 1-3 s, its rate 74-109 images/s over 5-6 passes of the
# same 200 images), per-stage overrides (YAML dotlist) on top of the stage's config, and rough stage durations (s) on
# an idle 2-core CPU for the first ETA. full = the trainers' tiny_cpu configs (RISD and OPD on every train image and
# 8,000 unlabelled ones, for twice the steps), the whole test/ood splits, M = 4; quick = the same pipeline with fewer
# steps, 200 test + 200 ood images (50 prompts each), M = 2.
PROFILES: dict[str, dict] = {
    "quick": {"world_prompts": 2000, "pretrain_prompts": 2000, "base_preset": "1m", "eval_max_images": 200,
              "eval_samples": 2, "eval_temperature": EVAL_TEMPERATURE, "speed_images": 100,
              "speed_min_seconds": 5.0,
              # generator stages (`GEN_DEFAULTS`): measured 178 + 33 + 8 s (seed 0, in order, 2026-12-01)
              "gen": {"pretrain_steps": 800, "tune_steps": 40, "eval_prompts": 100,
                      "estimates": {"gen_pretrain": 180, "gen_tune": 35, "gen_eval": 8}},
              "overrides": {"pretrain": ["run.max_steps=500", "data.eval_every=0", "data.val_max_images=100"],
                            "sft": ["run.max_steps=300", "data.eval_every=0", "data.val_max_images=200"],
                            # RewardDance gets SFT's budget (300 steps), chosen on val (seed-0 world, 1,356 pairs):
                            # RewardDance 150 steps 61.3%, 300 steps 63.9%
                            "rewarddance": ["run.max_steps=300", "data.val_max_images=100"],
                            # the cold start's length is the measured lever (seed-0 world, shipped base, 700 val
                            # images / 958 pairs, M = 2 at T = 0.3): 250 steps 59.9%, 400 61.2%, 600 65.9%
                            "sft_cold": ["run.max_steps=600", "data.eval_every=0", "data.val_max_images=48"],
                            "grpo": ["run.max_steps=15", "data.val_max_images=48"],
                            "gdso_teacher": ["run.max_steps=15", "data.val_max_images=48"],
                            # RISD and OPD: their configs' 1,600 images × 800 steps (the same image visits); RISD's
                            # budget and lr were chosen on val (configs/risd/tiny_cpu.yaml)
                            "risd_student": ["data.eval_every=0", "data.val_max_images=200"],
                            "opd_student": ["data.eval_every=0", "data.val_max_images=200"]},
              # rough durations from the in-order runs of 2026-12-01 and the cold-start sweep (one stage per core);
              # with --jobs > 1 they also decide which ready stage starts first (the longest path to the end)
              "estimates": {"world": 40, "pretrain_world": 40, "init_base": 5, "pretrain": 600, "sft": 190,
                            "rewarddance": 150, "sft_cold": 680, "grpo": 30, "gdso_teacher": 35,
                            "risd_student": 600, **_PASS_EST, "opd_student": 700, **_SCORE_EST_QUICK, "eval_test": 10,
                            "eval_ood": 10, "speed": 30}},
    # unlabelled: RISD and OPD also distil the second world's 8,000 train images (labels not read), chosen on val
    # (full seed-0 world and GDSO teacher, all 1,000 val images / 1,356 pairs, the same teacher targets for the train
    # images; one training seed each): 68.95% with them vs 67.99% without, +1.0 [−1.5, +3.6] (rule fixed beforehand:
    # adopt if above; test, reported only: −1.3 [−3.8, +1.1]); ≈ 20 CPU-min more of stages (16 of them teacher pass)
    "full": {"world_prompts": 2000, "pretrain_prompts": 2000, "base_preset": "1m", "eval_max_images": None,
             "unlabelled": True,
             "eval_samples": 4, "eval_temperature": EVAL_TEMPERATURE, "speed_images": 200,
             "speed_min_seconds": 10.0,
             # RISD distils every train image (8,000) for 1,600 steps, the best of five settings on val (full seed-0
             # world and GDSO teacher, 1,356 pairs, one training seed each; teacher 69.4%): 1,600 images x 800 steps
             # 66.9%, x 1,600 steps 67.1%; 3,200 images x 1,600 68.3%; 8,000 x 1,600 69.7%; M = 4 chains (1,600 x
             # 800) 68.0%. OPD gets the same images and steps (for parity; not measured on val). The quick profile
             # keeps the config's 1,600 x 800 for time.
             "overrides": {"risd_student": _FULL_STUDENT_BUDGET, "opd_student": _FULL_STUDENT_BUDGET},
             # generator stages: measured 278 + 103 + 8 s (1-min load 3.5–4.7)
             "gen": {"align_profile": "full", "pretrain_steps": 2000, "tune_steps": 200, "eval_prompts": 150,
                     "estimates": {"gen_pretrain": 280, "gen_tune": 105, "gen_eval": 10}},
             "estimates": {"world": 10, "pretrain_world": 10, "init_base": 5, "pretrain": 1600, "sft": 600,
                           "rewarddance": 420, "sft_cold": 600, "grpo": 360, "gdso_teacher": 480,
                           # RISD / OPD on 8,000 + 8,000 unlabelled images × 1,600 steps: measured on seed 0 (a
                           # slow day, 398ffd3) 841 s, teacher-pass halves 954 + 956 s, OPD 972 s
                           "risd_student": 840, "risd_student_teacher0": 950, "risd_student_teacher1": 960,
                           "opd_student": 970, **_SCORE_EST_FULL, "eval_test": 20,
                           "eval_ood": 20, "speed": 70}},
}


# What every profile must set (the stages read them). Optional: world_prompts / pretrain_prompts (2,000),
# "unlabelled" (off), "gen" (GEN_DEFAULTS); "<method>_preset" only where a stage inits a model from random weights.
PROFILE_KEYS = ("eval_max_images", "eval_samples", "eval_temperature", "speed_images", "speed_min_seconds",
                "overrides", "estimates")


def check_profile(name: str) -> dict:
    """PROFILES[name], or a ValueError naming the profile and the keys it lacks (before any stage runs, not when the
    first stage that reads one is keyed)."""
    if name not in PROFILES:
        raise ValueError(f"demo profile {name!r}: no such profile (have {sorted(PROFILES)})")
    missing = [k for k in PROFILE_KEYS if k not in PROFILES[name]]
    if missing:
        raise ValueError(f"demo profile {name!r} lacks {missing}")
    return PROFILES[name]


# Generator stages: the profile's "gen" dict over these defaults; None = the value of `zreward gen`'s own profile
# `align_profile` (`zreward.align.pretrain.PROFILES` / `tune.PROFILES`). DRaFT-1 is `zreward gen tune`'s default and
# what its profiles were measured with. `estimates` (s per gen stage) only feed the first ETA.
GEN_DEFAULTS: dict = {"align_profile": "quick", "arch": "default", "pretrain_steps": None, "pretrain_batch_size": None,
                      "method": "draft", "k": 1, "tune_steps": None, "tune_batch_size": None, "audit_every": None,
                      "eval_prompts": 100, "estimates": {}}
