"""Reward-guided text-to-image generation on ShapesWorld (issue 6).

Python API (import from the submodules; nothing heavy is imported here):
    zreward.align.pretrain.pretrain(PretrainConfig) -> Path          # the SFT generator
    zreward.align.tune.tune(TuneConfig) -> Path                      # ReFL / DRaFT-K with a Scorer reward
    zreward.align.gen_eval.evaluate_gsb(a_dir, b_dir, n_prompts, out, seed) -> dict   # GSB by simulated raters
    zreward.align.reward_fn.ScorerRewardFn(scorer)(prompts, images) -> (scores, stds)  # GRPO-style harnesses
    zreward.align.perceive.perceive_scene(image) -> scene dict       # pixels -> scene -> ShapesWorld oracle
    zreward.align.generator.load_generator(dir) -> T2IGenerator      # explicit Euler sampler
Configs have `for_profile("quick" | "full", **overrides)`. CLI: `zreward gen pretrain | tune | eval`.
"""
