"""Each image through the vision tower once per forward (`zreward.models.vision_share`): same outputs and pixel
gradients as encoding every repeat, and the tower sees only the distinct images."""
from __future__ import annotations

import contextlib

import pytest
import torch

from zreward.models import vision_share as vs
from zreward.models.scorer import load_scorer

PROMPTS = ["a red circle", "three green triangles above a purple hexagon"]


@pytest.fixture
def tower_rows(monkeypatch):
    """Returns (calls, switch): calls collects the image count of every tower forward; switch(False) disables
    sharing (the reference: every repeat encoded)."""
    calls, state = [], {"on": True}
    real = vs.encode_each_image_once

    def grid_rows(_mod, args, kwargs):
        grid = kwargs["grid_thw"] if "grid_thw" in kwargs else args[1]
        calls.append(int(grid.shape[0]))

    @contextlib.contextmanager
    def counting(model, image_index, pixels):
        with real(model, image_index, pixels) if state["on"] else contextlib.nullcontext():
            h = vs.vision_tower(model).register_forward_pre_hook(grid_rows, with_kwargs=True)  # runs after real's
            try:
                yield
            finally:
                h.remove()

    monkeypatch.setattr(vs, "encode_each_image_once", counting)
    return calls, lambda on: state.update(on=on)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl", "qwen3_5"])
def test_shared_encoding_equals_per_sequence_encoding(tiny_dir, tower_rows, family):
    calls, switch = tower_rows
    s = load_scorer(tiny_dir(family))
    results = {}
    for on in (False, True):
        switch(on)
        calls.clear()
        x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
        ro = s.direct_readout(PROMPTS, x)  # 2 images × 4 dims
        ro.mean.sum().backward()
        torch.manual_seed(0)
        with torch.no_grad():
            cb = s.generate_chains(PROMPTS, x.detach(), dims=["alignment", "realism"], samples=2, max_new_tokens=5)
            cf = s.chain_forward(cb, x.detach())
        results[on] = (ro.probs.detach(), x.grad.clone(), cb.chain_ids, cf.token_logprobs, cf.level_logits,
                       list(calls))
    off, on = results[False], results[True]
    assert off[5] == [8, 8, 8] and on[5] == [2, 2, 2]  # readout, generate prefill, chain forward
    assert torch.allclose(off[0], on[0], atol=1e-6) and torch.allclose(off[1], on[1], atol=1e-6)
    assert off[1].abs().sum() > 0
    assert off[2] == on[2]
    assert torch.allclose(off[3], on[3], atol=1e-5) and torch.allclose(off[4], on[4], atol=1e-5)


def test_no_repeats_or_no_tower_is_a_no_op(tiny_scorer):
    s = tiny_scorer("llava")
    assert vs.vision_tower(s.model) is None
    q = tiny_scorer("qwen2_vl")
    px = q.prepare_images(torch.rand(2, 3, 64, 64))
    tower = vs.vision_tower(q.model)
    with vs.encode_each_image_once(q.model, [0, 1], px):  # distinct images: no hooks installed
        assert not tower._forward_pre_hooks
    with vs.encode_each_image_once(q.model, [0, 0, 1], px):
        assert tower._forward_pre_hooks
    assert not tower._forward_pre_hooks and not tower._forward_hooks
