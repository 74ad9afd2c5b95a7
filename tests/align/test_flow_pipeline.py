"""Reward tuning of diffusers flow-matching pipelines (Z-Image, SD3, FLUX, Qwen-Image), tiny components from config.

Each family: the explicit Euler loop equals the pipeline's own sampling; one DRaFT-1 and one ReFL step send
gradients through the reward and the VAE decoder to the LoRA parameters; a short tune raises the reward on
held-out prompts. Plus exact resume (with EMA), the judge audit with a synthetic divergence, and the CLI.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from zreward.align.audit import ScorerJudge, hacking_warning
from zreward.align.flow_pipeline import PipelineSampling, load_pipeline_generator
from zreward.align.tiny_pipelines import FAMILIES, build_tiny_pipeline
from zreward.align.tune import TuneConfig, apply_lora, reward_step, tune
from zreward.align.tune_state import EMA
from zreward.models.scorer import load_scorer

PROMPTS = ["a red circle", "two blue squares"]
# guidance as each pipeline's own scale, on for all (SD3 / Z-Image / Qwen-Image CFG, FLUX distilled embedding)
GUIDANCE = {"sd3": 2.0, "flux": 3.5, "zimage": 2.0, "qwenimage": 2.0}
OFF = {"sd3": 1.0, "flux": 3.5, "zimage": 0.0, "qwenimage": 1.0}  # CFG off (FLUX has no CFG pass)


def pipe_kwargs(fam: str, g: float) -> dict:
    """The pipeline's own call arguments for guidance g (Qwen-Image: true CFG needs a negative prompt)."""
    if fam == "qwenimage":
        return {"true_cfg_scale": g, "negative_prompt": [""] * len(PROMPTS)}
    return {"guidance_scale": g}


@pytest.fixture(scope="session")
def pipe_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines")
    for fam in FAMILIES:
        build_tiny_pipeline(fam, root / fam)
    return {fam: root / fam for fam in FAMILIES}


@pytest.fixture(scope="session")
def prompt_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    (d / "train.txt").write_text("a red circle\ntwo blue squares\na green triangle above a yellow star\n"
                                 "one purple circle\n")
    (d / "held.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n"
                                          for p in ["a blue circle", "three red squares", "a yellow triangle"]))
    return d / "train.txt", d / "held.jsonl"


@pytest.fixture(scope="module")
def scorer(tiny_model):
    s = load_scorer(tiny_model)
    s.model.requires_grad_(False)
    return s


def _gen(pipe_dirs, fam, guidance=None):
    cfg = PipelineSampling(height=32, width=32, steps=4, guidance=GUIDANCE[fam] if guidance is None else guidance,
                           max_sequence_length=16)
    return load_pipeline_generator(pipe_dirs[fam], cfg)


@pytest.mark.parametrize("fam", FAMILIES)
def test_euler_loop_equals_pipeline_sampling(pipe_dirs, fam):
    gen = _gen(pipe_dirs, fam)
    x0 = gen.initial_noise([0, 1])
    with torch.no_grad():
        ours = gen.sample(PROMPTS, [0, 1], x=x0.clone())
        img = gen.to_image(ours)
    kw = dict(height=32, width=32, num_inference_steps=4, max_sequence_length=16, **pipe_kwargs(fam, GUIDANCE[fam]))
    ref = gen.pipe(list(PROMPTS), latents=x0.clone(), output_type="latent", **kw).images
    ref_img = gen.pipe(list(PROMPTS), latents=x0.clone(), output_type="pt", **kw).images
    assert ours.shape == ref.shape and ours.abs().mean() > 0.1
    assert torch.allclose(ours, ref, atol=1e-4), (ours - ref).abs().max()
    assert img.shape == (2, 3, 32, 32) and torch.allclose(img, ref_img, atol=1e-4)
    # and the seeded noise does matter: another seed gives another sample
    with torch.no_grad():
        assert not torch.allclose(gen.sample(PROMPTS, [5, 6]), ours, atol=1e-3)


@pytest.mark.parametrize("fam", FAMILIES)
@pytest.mark.parametrize("method", ["draft", "refl"])
def test_one_step_reaches_lora_through_vae_and_reward(pipe_dirs, scorer, fam, method):
    gen = _gen(pipe_dirs, fam)
    gen.transformer.requires_grad_(False)
    apply_lora(gen, 4)
    with torch.no_grad():  # LoRA B starts at zero (then only B gets a gradient): make both non-zero
        for n, p in gen.transformer.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.02)
    cfg = TuneConfig(method=method, k=1, sample_steps=4, reg=0.1)
    loss, reward, reg = reward_step(gen, None, scorer, PROMPTS, [0, 1], cfg, torch.Generator().manual_seed(0))
    loss.backward()
    named = dict(gen.transformer.named_parameters())
    lora = {n: p for n, p in named.items() if "lora_" in n}
    assert lora and all(p.requires_grad for p in lora.values())
    assert all(not p.requires_grad for n, p in named.items() if "lora_" not in n)
    # SD3's and Qwen-Image's last joint block ends the text stream: its text queries (add_q_proj) and text output
    # (to_add_out) feed nothing the image depends on, so they get no gradient (FLUX's single blocks still read it).
    dead = ()
    if fam in ("sd3", "qwenimage"):
        last = f"transformer_blocks.{len(gen.pipe.transformer.transformer_blocks) - 1}.attn."
        dead = (last + "add_q_proj", last + "to_add_out")
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for n, p in lora.items()
               if not any(d in n for d in dead))
    assert all(p.grad is None for p in gen.pipe.vae.parameters())  # the VAE is frozen, gradients pass through it
    assert reward.shape == (2,) and bool(((reward >= 1) & (reward <= 5)).all())
    assert reg > 0 and torch.isfinite(loss)  # non-zero B: the adapted model differs from the adapter-free one


@pytest.mark.parametrize("fam", FAMILIES)
def test_short_tune_raises_heldout_reward(pipe_dirs, tiny_model, prompt_files, fam, tmp_path):
    out = tune(TuneConfig(generator=str(pipe_dirs[fam]), reward=str(tiny_model), out=str(tmp_path / "t"),
                          prompts=str(prompt_files[0]), heldout_prompts=str(prompt_files[1]), method="draft", k=1,
                          steps=8, batch_size=2, lr=1e-2, lora=False, sample_steps=4, height=32, width=32,
                          guidance=OFF[fam], max_sequence_length=16,
                          audit_every=8, audit_prompts=3, seed=0))
    rows = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 8]
    assert rows[-1]["reward"] > rows[0]["reward"] + 5e-3, rows
    tuned = load_pipeline_generator(out)  # the tuned pipeline loads, with its sampling settings
    assert (tuned.cfg.height, tuned.cfg.steps) == (32, 4)
    img = tuned.generate(["a blue circle"], [10_000])
    assert img.shape == (1, 3, 32, 32)


def test_resume_is_exact_with_ema(pipe_dirs, tiny_model, prompt_files, tmp_path, capsys):
    def run(out, steps):
        return tune(TuneConfig(generator=str(pipe_dirs["sd3"]), reward=str(tiny_model), out=str(out),
                               prompts=str(prompt_files[0]), heldout_prompts=str(prompt_files[1]), method="alignprop",
                               k=2, steps=steps, batch_size=2, lr=3e-2, lora_rank=4, sample_steps=3, height=32,
                               width=32, guidance=1.0, max_sequence_length=16, audit_every=2, audit_prompts=2,
                               ema=0.5, save_every=2, seed=3))

    straight = run(tmp_path / "a", 4)
    run(tmp_path / "b", 2)
    capsys.readouterr()
    resumed = run(tmp_path / "b", 4)
    assert "resumed from step 2" in capsys.readouterr().out  # steps 3-4 ran from the checkpoint, 1-2 did not rerun
    la, lb = (json.loads((d / "tune.json").read_text()) for d in (straight, resumed))
    assert [r["loss"] for r in la["log"]] == [r["loss"] for r in lb["log"]] and len(lb["log"]) == 4
    assert la["audit"] == lb["audit"]
    wa, wb = (load_file(str(d / "transformer" / "diffusion_pytorch_model.safetensors")) for d in (straight, resumed))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (resumed / "lora" / "adapter_model.safetensors").is_file()


class FallingJudge:
    """A synthetic held-out judge whose score falls by `drop` at every audit (a divergence by construction)."""

    watch = ("judge:synthetic",)
    labels = {"judge:synthetic": "judge synthetic"}

    def __init__(self, drop: float):
        self.drop, self.calls = drop, 0

    def __call__(self, prompts, images):
        self.calls += 1
        return {"judge:synthetic": 4.0 - self.drop * self.calls}


@pytest.mark.parametrize("drop,warns", [(0.5, True), (0.0, False)])
def test_audit_warns_when_a_judge_diverges(pipe_dirs, tiny_model, prompt_files, tmp_path, drop, warns):
    out = tune(TuneConfig(generator=str(pipe_dirs["sd3"]), reward=str(tiny_model), out=str(tmp_path / "t"),
                          prompts=str(prompt_files[0]), heldout_prompts=str(prompt_files[1]), steps=8, batch_size=2,
                          lr=1e-2, lora=False, sample_steps=4, height=32, width=32, guidance=1.0,
                          max_sequence_length=16, audit_every=4, audit_prompts=3, seed=0),
               judges=[FallingJudge(drop)])
    meta = json.loads((out / "tune.json").read_text())
    assert meta["audit"][-1]["reward"] > meta["audit"][0]["reward"]  # the tuned reward rose
    assert bool(meta["hacking_warnings"]) == warns
    if warns:
        assert "judge synthetic fell" in meta["hacking_warnings"][0]


def test_hacking_warning_watches_each_judge_against_the_start():
    def row(step, reward, a, b):
        return {"step": step, "reward": reward, "judge:a": a, "judge:b": b}

    rows = [row(0, 3.0, 3.5, 3.5), row(10, 3.1, 3.5, 3.47)]
    # judge b drifts down 0.03 per audit: under tol between audits, over tol since the start
    msg = hacking_warning(rows, row(20, 3.2, 3.5, 3.44), 0.05, ("judge:a", "judge:b"), {"judge:b": "judge b"})
    assert msg is not None and "first audit (step 0)" in msg and "judge b fell 3.500 -> 3.440" in msg
    assert hacking_warning(rows, row(20, 3.2, 3.5, 3.46), 0.05, ("judge:a", "judge:b")) is None


def test_scorer_judge_direct_and_reasoning(scorer):
    imgs = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    direct = ScorerJudge(scorer, "student")(PROMPTS, imgs)
    expected = scorer.score(PROMPTS, imgs).overall.mean().item()
    assert direct == {"judge:student": pytest.approx(expected)}
    teacher = ScorerJudge(scorer, "teacher", reasoning=True, samples=2)
    val = teacher(PROMPTS, imgs)["judge:teacher"]
    assert 1.0 <= val <= 5.0 and teacher.labels["judge:teacher"] == "judge teacher (reasoning)"


def test_ema_update_and_swap():
    p = torch.nn.Parameter(torch.zeros(2))
    ema = EMA({"w": p}, decay=0.9)
    with torch.no_grad():
        p.fill_(1.0)
    ema.update({"w": p})
    assert torch.allclose(ema.shadow["w"], torch.full((2,), 0.1))  # 0.9·0 + 0.1·1
    with ema.swapped_in({"w": p}):
        assert torch.allclose(p, torch.full((2,), 0.1))
    assert torch.equal(p.detach(), torch.ones(2))
    with pytest.raises(ValueError, match="ema"):
        EMA({"w": p}, decay=1.0)


def test_gen_cli_tunes_a_pipeline(pipe_dirs, tiny_model, prompt_files, tmp_path):
    from zreward.align.cli import main

    out = tmp_path / "tuned"
    assert main(["tune", "--generator", str(pipe_dirs["flux"]), "--reward", str(tiny_model), "--out", str(out),
                 "--prompts", str(prompt_files[0]), "--heldout-prompts", str(prompt_files[1]), "--method",
                 "alignprop", "--k", "2", "--steps", "2", "--batch-size", "1", "--sample-steps", "2", "--height",
                 "32", "--width", "32", "--max-sequence-length", "16", "--judge", str(tiny_model),
                 "--judge", f"teacher={tiny_model}:reasoning:2",
                 "--sample-every", "2", "--ema", "0.9", "--audit-every", "2", "--audit-prompts", "2",
                 "--grad-checkpointing"]) == 0
    meta = json.loads((out / "tune.json").read_text())
    c = meta["config"]
    assert (c["method"], c["k"], c["ema"], c["scorer_size"], c["profile"]) == ("alignprop", 2, 0.9, None, "custom")
    assert {f"judge:{tiny_model.name}", "judge:teacher"} <= set(meta["audit"][0]) and len(meta["audit"]) == 2
    assert (out / "samples" / "step_000002.png").is_file() and (out / "audit.png").is_file()
    assert (out / "lora" / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="prompts"):
        main(["tune", "--generator", str(pipe_dirs["flux"]), "--reward", str(tiny_model), "--out",
              str(tmp_path / "x")])


def test_judge_specs_follow_the_eval_model_syntax(tiny_model):
    from zreward.align.audit import load_scorer_judges

    teacher, plain = load_scorer_judges([f"teacher={tiny_model}:reasoning:3", str(tiny_model)])
    assert (teacher.key, teacher.reasoning, teacher.samples) == ("judge:teacher", True, 3)
    assert (plain.key, plain.reasoning, plain.samples) == (f"judge:{tiny_model.name}", False, 1)


def test_bf16_pipeline_with_checkpointing_trains_fp32_adapters(pipe_dirs, scorer):
    cfg = PipelineSampling(height=32, width=32, steps=4, guidance=3.5, max_sequence_length=16)
    gen = load_pipeline_generator(pipe_dirs["flux"], cfg, dtype=torch.bfloat16)
    assert gen.pipe.vae.dtype == torch.bfloat16
    gen.transformer.requires_grad_(False)
    gen.transformer.enable_gradient_checkpointing()
    apply_lora(gen, 4)
    lora = {n: p for n, p in gen.transformer.named_parameters() if p.requires_grad}
    assert lora and all(p.dtype == torch.float32 for p in lora.values())  # peft keeps adapters in fp32
    loss, reward, _ = reward_step(gen, None, scorer, PROMPTS, [0, 1], TuneConfig(method="draft", k=2),
                                  torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and reward.dtype == torch.float32
    assert sum(float(p.grad.abs().sum()) for n, p in lora.items() if "lora_B" in n) > 0
