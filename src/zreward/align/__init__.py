"""Reward-guided text-to-image generation: ShapesWorld (issue 6) and real diffusers pipelines (issue 17).

Python API (import from the submodules; nothing heavy is imported here):
    zreward.align.pretrain.pretrain(PretrainConfig) -> Path          # the SFT generator
    zreward.align.tune.tune(TuneConfig) -> Path                      # ReFL / DRaFT-K / AlignProp, Scorer reward
    zreward.align.flow_pipeline.load_pipeline_generator(dir) -> PipelineGenerator   # Z-Image/SD3/FLUX/Qwen-Image
    zreward.align.tiny_pipelines.build_tiny_pipeline(family, dir)    # tiny pipelines from config (tests)
    zreward.align.audit.hacking_warning(rows, row, tol, watch)       # reward vs oracle / held-out judges
    zreward.align.gen_eval.evaluate_gsb(a_dir, b_dir, n_prompts, out, seed) -> dict   # GSB by simulated raters
    zreward.align.reward_fn.ScorerRewardFn(scorer)(prompts, images) -> (scores, stds)  # GRPO-style harnesses
        .trl() / .flow_grpo()                                        # TRL / Flow-GRPO call forms (harness.py)
    zreward.align.perceive.perceive_scene(image) -> scene dict       # pixels -> scene -> ShapesWorld oracle
    zreward.align.generator.load_generator(dir) -> T2IGenerator      # explicit Euler sampler
Configs have `for_profile("quick" | "full", **overrides)`. CLI: `zreward gen pretrain | tune | eval | label`.
"""
