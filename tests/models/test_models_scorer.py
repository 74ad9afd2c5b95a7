"""The Scorer on every family (tiny random models): validity, batch invariance, gradients, save/load, reasoning."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import zreward
from zreward.models.level_readout import std_of

from zreward.models.families import FAMILIES

ALL_FAMILIES = list(FAMILIES)

PROMPTS = ["a red circle", "two blue squares to the left of a large yellow star, all on a white background", "x"]


def _images(n=3, seed=0, size=64):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g)


@pytest.mark.parametrize("fam", ALL_FAMILIES)
def test_probs_valid_and_moments_consistent(fam, tiny_scorer):
    s = tiny_scorer(fam)
    out = s.score(PROMPTS, _images())
    assert out.probs.shape == (3, 4, 9) and out.dims == s.dims and out.levels.shape == (9,)
    assert (out.probs >= 0).all() and torch.allclose(out.probs.sum(-1), torch.ones(3, 4), atol=1e-5)
    assert torch.allclose(out.mean, (out.probs * out.levels).sum(-1), atol=1e-5)
    assert torch.allclose(out.std, std_of(out.probs, out.levels), atol=1e-5)
    w = torch.tensor([0.4, 0.2, 0.2, 0.2])
    assert torch.allclose(out.overall, (out.mean * w).sum(-1), atol=1e-5)
    assert ((out.in_level_mass > 0) & (out.in_level_mass < 1)).all()
    # The prompt and image matter: different images give different distributions.
    assert (out.probs[0] - out.probs[1]).abs().max() > 1e-6


@pytest.mark.parametrize("fam", ALL_FAMILIES)
def test_batch_invariance(fam, tiny_scorer):
    s = tiny_scorer(fam)
    rng = np.random.default_rng(1)
    # Mixed batch: different prompt lengths and (for Qwen) different image sizes → different image-token counts.
    ims = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(64, 64), (48, 64), (64, 32)]]
    mixed = s.score(PROMPTS, ims)
    for i in range(3):
        alone = s.score([PROMPTS[i]], [ims[i]])
        assert (alone.probs[0] - mixed.probs[i]).abs().max().item() < 1e-4
    sub = s.score(PROMPTS[:2], ims[:2], dims=["realism", "alignment"])
    assert torch.allclose(sub.probs[:, 0], mixed.probs[:2, 1], atol=1e-4)  # dims subset and reordering
    assert torch.allclose(sub.probs[:, 1], mixed.probs[:2, 0], atol=1e-4)


@pytest.mark.parametrize("fam", ALL_FAMILIES)
def test_reward_gradient_reaches_pixels(fam, tiny_scorer):
    s = tiny_scorer(fam)
    x = _images(2, seed=3).requires_grad_(True)
    r = s.reward(PROMPTS[:2], x)
    assert r.shape == (2,)
    with torch.no_grad():
        out = s.score(PROMPTS[:2], x)
    assert torch.allclose(r.detach(), out.overall, atol=1e-5)  # reward = weighted expectation
    r.sum().backward()
    frac = (x.grad.abs() > 0).float().mean().item()
    assert frac >= 0.5, f"only {frac:.2%} of pixels get gradient"
    s.model.zero_grad(set_to_none=True)
    # Uncertainty-aware variant: mean − λ·std.
    r2 = s.reward(PROMPTS[:2], x.detach(), uncertainty_lambda=0.5)
    assert torch.allclose(r2, out.overall - 0.5 * (out.std * torch.tensor([.4, .2, .2, .2])).sum(-1), atol=1e-5)


@pytest.mark.parametrize("fam", ALL_FAMILIES)
def test_save_load_identical_scores(fam, tiny_scorer, tmp_path):
    s = tiny_scorer(fam)
    s.save_pretrained(tmp_path)
    names = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "zreward.json", "config.json", "preprocessor_config.json"} <= names
    assert not any(n.endswith((".bin", ".pt", ".pkl")) for n in names)  # nothing to unpickle
    s2 = zreward.load_scorer(tmp_path)
    a, b = s.score(PROMPTS, _images()), s2.score(PROMPTS, _images())
    assert torch.equal(a.probs, b.probs)


@pytest.mark.parametrize("fam", ALL_FAMILIES)
def test_reasoning_chains_and_average(fam, tiny_scorer):
    s = tiny_scorer(fam)
    x = _images(2, seed=5)
    torch.manual_seed(11)
    out = s.score(PROMPTS[:2], x, dims=["alignment", "realism"], reasoning=True, samples=2)
    assert out.chains is not None and len(out.chains) == 2 and all(len(c) == 2 * 2 for c in out.chains)
    assert all(isinstance(t, str) for c in out.chains for t in c)
    assert out.chains[0][0] != out.chains[0][1]  # sampled chains differ
    # Same seed → same chains; the score is the mean of the per-chain restricted softmaxes.
    torch.manual_seed(11)
    cb = s.generate_chains(PROMPTS[:2], x, dims=["alignment", "realism"], samples=2)
    assert [cb.texts[i * 4:(i + 1) * 4] for i in range(2)] == out.chains
    with torch.no_grad():
        cf = s.chain_forward(cb, x)
    want = torch.softmax(cf.level_logits, -1).view(2, 2, 2, 9).mean(2)
    assert torch.allclose(out.probs, want, atol=1e-5)
    assert torch.allclose(out.mean, (want * out.levels).sum(-1), atol=1e-5)
    # Greedy single chain is deterministic and differs from direct mode (the chain is in the context).
    g1 = s.score(PROMPTS[:1], x[:1], dims=["alignment"], reasoning=True)
    assert (g1.probs - s.score(PROMPTS[:1], x[:1], dims=["alignment"]).probs).abs().max() > 1e-6
    # Left-padded batched generation: a greedy chain does not depend on its batch mates either.
    g_mixed = s.score(PROMPTS[1::-1], x.flip(0), dims=["alignment"], reasoning=True)
    assert g_mixed.chains[1] == g1.chains[0]
    assert (g_mixed.probs[1] - g1.probs[0]).abs().max().item() < 1e-4
