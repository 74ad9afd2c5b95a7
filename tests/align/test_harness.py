"""The reward in TRL's and Flow-GRPO's call forms, locally (ScorerRewardFn) and remotely (RewardClient); no resize."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.align.harness import as_flow_grpo_reward, as_trl_reward, completion_image, prompt_text
from zreward.align.reward_fn import ScorerRewardFn
from zreward.client import RewardClient

PROMPTS = ["a red circle", "two blue squares"]


@pytest.fixture(scope="module")
def reward(tiny_model):
    return ScorerRewardFn(tiny_model, uncertainty_lambda=0.5)


@pytest.fixture(scope="module")
def images():
    return torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))


def test_no_resize_by_default_the_scorer_preprocessing_decides(reward, images):
    scores, _ = reward(PROMPTS, images)
    with torch.no_grad():
        own = reward.scorer.reward(PROMPTS, images, uncertainty_lambda=0.5)
    torch.testing.assert_close(scores, own, atol=1e-5, rtol=0)
    resized, _ = ScorerRewardFn(reward.scorer, uncertainty_lambda=0.5, image_size=64)(PROMPTS, images)
    assert not torch.allclose(resized, scores, atol=1e-6)  # the old 64-px default scored other pixels


def test_uncertainty_lambda_lowers_the_score_by_lambda_times_std(reward, images):
    plain_s, plain_std = ScorerRewardFn(reward.scorer)(PROMPTS, images)
    s, _ = reward(PROMPTS, images)
    # one formula: Σw(μ − λσ)/Σw = Σwμ/Σw − λ·Σwσ/Σw
    torch.testing.assert_close(s, plain_s - 0.5 * plain_std, atol=1e-5, rtol=0)
    assert (plain_std > 0).all()


def test_trl_form(reward, images):
    fn = reward.trl()
    assert fn.__name__ == "zreward"
    scores, _ = reward(PROMPTS, images)
    out = fn(PROMPTS, [images[0], images[1]], completion_ids=None)
    assert isinstance(out, list) and all(isinstance(v, float) for v in out)
    np.testing.assert_allclose(out, scores.numpy(), atol=1e-6)
    # conversational prompts and completions (image items inside messages) give the same numbers
    conv_p = [[{"role": "system", "content": "be nice"}, {"role": "user", "content": p}] for p in PROMPTS]
    conv_c = [[{"role": "assistant", "content": [{"type": "image", "image": images[i]}]}] for i in range(2)]
    np.testing.assert_allclose(fn(conv_p, conv_c), out, atol=1e-6)
    with pytest.raises(ValueError, match="completions"):
        fn(PROMPTS, [images[0]])
    with pytest.raises(ValueError, match=r"completions\[1\]"):
        fn(PROMPTS, [images[0], [{"role": "assistant", "content": [{"type": "text", "text": "no image"}]}]])


def test_flow_grpo_form(reward, images):
    fn = reward.flow_grpo()
    scores, stds = reward(PROMPTS, images)
    s, meta = fn(images, PROMPTS, [{}, {}])
    assert s.dtype == np.float32 and s.shape == (2,) and meta["std"].shape == (2,)
    np.testing.assert_allclose(s, scores.numpy(), atol=1e-6)
    np.testing.assert_allclose(meta["std"], stds.numpy(), atol=1e-6)
    u8 = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # (B, H, W, 3) as numpy harnesses pass
    s8, _ = fn(u8, PROMPTS, None)
    np.testing.assert_allclose(s8, s, atol=0.05)


def test_client_forms_use_the_same_formula_and_send_images_unresized(reward, images, monkeypatch):
    """RewardClient's forms on a stubbed server that scores with the same local Scorer."""
    client = RewardClient("http://127.0.0.1:9")
    sent = []

    def fake_score(prompts, imgs, dims=None, **kw):
        sent.append(imgs)
        out = reward.scorer.score(list(prompts), imgs, dims=dims)
        return {"mean": out.mean.numpy(), "std": out.std.numpy(), "overall": out.overall.numpy(), "dims": out.dims}

    monkeypatch.setattr(client, "score", fake_score)
    monkeypatch.setattr(client, "info", lambda refresh=False: {"dims": reward.scorer.dims,
                                                               "reward_weights": reward.scorer.config.reward_weights})
    local, local_std = reward(PROMPTS, images)
    np.testing.assert_allclose(client.trl_reward_fn(uncertainty_lambda=0.5)(PROMPTS, list(images)), local.numpy(),
                               atol=1e-5)
    s, meta = client.flow_grpo_reward_fn(uncertainty_lambda=0.5)(images, PROMPTS, {})
    np.testing.assert_allclose(s, local.numpy(), atol=1e-5)
    np.testing.assert_allclose(meta["std"], local_std.numpy(), atol=1e-5)
    assert tuple(sent[-1].shape[-2:]) == (48, 48)  # no 64-px resize before sending


def test_prompt_and_completion_extraction_errors_name_the_field():
    assert prompt_text([{"role": "user", "content": [{"type": "text", "text": "a cat"}]}]) == "a cat"
    with pytest.raises(ValueError, match=r"prompts\[3\]"):
        prompt_text(42, "prompts[3]")
    assert completion_image({"image": "x.png"}) == "x.png"
    base = lambda prompts, imgs: (torch.tensor([float(len(p)) for p in prompts]), torch.zeros(len(prompts)))  # noqa: E731
    assert as_trl_reward(base, "len")(["ab", "abc"], ["i", "j"]) == [2.0, 3.0]
    assert as_flow_grpo_reward(base)(["i"], ["abcd"], None)[0].tolist() == [4.0]
