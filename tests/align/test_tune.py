"""Reward fine-tuning: gradients reach the generator through the Scorer reward; a short run raises the reward."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from zreward.align.generator import load_generator
from zreward.align.audit import hacking_warning
from zreward.align.tune import TuneConfig, apply_lora, merge_lora, reward_step, tune


@pytest.fixture(scope="module")
def scorer(tiny_model):
    from zreward.models.scorer import load_scorer

    s = load_scorer(tiny_model)
    for p in s.model.parameters():
        p.requires_grad_(False)
    return s


@pytest.mark.parametrize("method,k,lora", [("draft", 2, True), ("refl", 1, False)])
def test_gradients_reach_generator_params(tiny_gen_dir, scorer, method, k, lora):
    gen = load_generator(tiny_gen_dir)
    frozen = None if lora else copy.deepcopy(gen.transformer).requires_grad_(False)  # LoRA: adapters disabled
    if not lora:  # move the tuned weights away from the frozen copy, so that the regulariser is non-zero
        with torch.no_grad():
            gen.transformer.proj_out.weight.add_(0.01 * torch.randn_like(gen.transformer.proj_out.weight))
    for p in gen.text_encoder.parameters():
        p.requires_grad_(False)
    if lora:
        gen.transformer.requires_grad_(False)
        apply_lora(gen, 4)
        # LoRA B starts at zero, so only B gets a gradient at step 0; make A and B non-zero to see both.
        for n, p in gen.transformer.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.01)
    cfg = TuneConfig(method=method, k=k, sample_steps=4, reg=0.1)
    loss, reward, reg = reward_step(gen, frozen, scorer, ["a red circle", "two blue squares"], [0, 1], cfg,
                                    torch.Generator().manual_seed(0))
    loss.backward()
    named = dict(gen.transformer.named_parameters())
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    assert trainable and all(p.grad is not None for p in trainable.values())
    total = sum(p.grad.abs().sum().item() for p in trainable.values())
    assert total > 0 and torch.isfinite(torch.tensor(total))
    if lora:
        assert all("lora_" in n for n in trainable)  # base weights are frozen under LoRA
    assert reward.shape == (2,) and reg > 0  # LoRA / full weights moved away from the SFT copy


def test_grad_checkpointing_gives_same_gradient(tiny_gen_dir, scorer):
    grads = []
    for ckpt in (False, True):
        gen = load_generator(tiny_gen_dir)
        if ckpt:
            gen.transformer.enable_gradient_checkpointing()
        gen.train()
        cfg = TuneConfig(method="draft", k=2, sample_steps=4)
        loss, _, _ = reward_step(gen, None, scorer, ["a red circle"], [0], cfg,
                                  torch.Generator().manual_seed(0))
        loss.backward()
        grads.append(gen.transformer.proj_out.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_merge_lora_keeps_outputs(tiny_gen_dir):
    gen = load_generator(tiny_gen_dir).eval()
    apply_lora(gen, 4)
    for n, p in gen.transformer.named_parameters():
        if "lora_B" in n:
            torch.nn.init.normal_(p, std=0.05)
    before = gen.generate(["a red circle"], [0])
    merge_lora(gen)
    assert not any("lora" in n for n, _ in gen.transformer.named_parameters())
    assert torch.allclose(before, gen.generate(["a red circle"], [0]), atol=1e-5)


def test_short_tune_raises_heldout_reward(tiny_gen_dir, tiny_model, small_world, tmp_path):
    """A few DRaFT steps on train prompts raise the reward on the audit's held-out (val) prompts."""
    out = tune(TuneConfig(generator=str(tiny_gen_dir), reward=str(tiny_model), out=str(tmp_path / "tuned"),
                          data=str(small_world), method="draft", k=1, steps=6, batch_size=4, lr=3e-2, lora=False,
                          sample_steps=4, audit_every=6, audit_prompts=6, seed=0))
    rows = [json.loads(line) for line in (out / "audit.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 6]
    assert rows[-1]["reward"] > rows[0]["reward"] + 1e-3, rows
    # the oracle's per-image agreement with the reward is in every row (a correlation, or null when constant)
    assert all(r["oracle_overall:reward_plcc"] is None or -1 <= r["oracle_overall:reward_plcc"] <= 1 for r in rows)
    assert (out / "audit.png").is_file() and (out / "generator.json").is_file()
    meta = json.loads((out / "tune.json").read_text())
    assert len(meta["log"]) == 6 and "hacking_warnings" in meta
    load_generator(out)  # the tuned directory loads as a generator


def test_hacking_warning_step_to_step_and_against_the_start():
    def row(step, reward, oracle):
        return {"step": step, "reward": reward, "oracle_overall": oracle}

    start = row(0, 4.60, 3.17)
    # the full demo's drift: never more than tol between two audits, 0.09 below the start overall
    drift = [start, row(50, 4.61, 3.14), row(100, 4.62, 3.11)]
    msg = hacking_warning(drift, row(150, 4.628, 3.08), tol=0.05)
    assert msg is not None and "first audit (step 0)" in msg and "3.170 -> 3.080" in msg
    assert hacking_warning(drift[:2], row(100, 4.62, 3.13), tol=0.05) is None   # 0.04 below the start: within tol
    # a sudden drop since the previous audit names the previous one
    msg = hacking_warning([start, row(50, 4.61, 3.30)], row(100, 4.62, 3.20), tol=0.05)
    assert msg is not None and "previous audit (step 50)" in msg
    # oracle fell but the reward fell too: not hacking; reward rose with the oracle: fine
    assert hacking_warning([start], row(50, 4.50, 2.90), tol=0.05) is None
    assert hacking_warning([start], row(50, 4.70, 3.30), tol=0.05) is None
    assert hacking_warning([], start, tol=0.05) is None
