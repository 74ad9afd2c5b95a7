"""GRPO advantages and the clipped policy-gradient loss on hand-computed numbers."""
from __future__ import annotations

import math

import pytest
import torch

from zreward.losses import clipped_pg_loss, group_relative_advantages, k3_kl


def _t(*v: float) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.float64)


def test_group_advantages_hand_values():
    adv = group_relative_advantages(_t(1.0, 2.0, 3.0, 5.0, 5.0, 5.0), group_size=3)
    # group 1: mean 2, Bessel std 1; group 2: zero spread -> 0
    torch.testing.assert_close(adv, _t(-1 / 1.0001, 0.0, 1 / 1.0001, 0.0, 0.0, 0.0))
    # Bessel, not population std: [0, 1] has std sqrt(.5)
    adv2 = group_relative_advantages(_t(0.0, 1.0), group_size=2, eps=0.0)
    torch.testing.assert_close(adv2, _t(-0.5 / math.sqrt(0.5), 0.5 / math.sqrt(0.5)))


def test_batch_and_none_scaling():
    r = _t(1.0, 3.0, 2.0, 2.0)
    # group means 2, 2 -> centred [-1, 1, 0, 0]; batch std (Bessel) = sqrt(2/3)
    std = math.sqrt(2 / 3)
    torch.testing.assert_close(group_relative_advantages(r, 2, scale="batch"),
                               _t(-1 / (std + 1e-4), 1 / (std + 1e-4), 0.0, 0.0))
    torch.testing.assert_close(group_relative_advantages(r, 2, scale="none"), _t(-1.0, 1.0, 0.0, 0.0))
    # "batch" subtracts the group mean, not the batch mean
    adv = group_relative_advantages(_t(0.0, 2.0, 10.0, 12.0), 2, scale="batch", eps=0.0)
    torch.testing.assert_close(adv[0], -adv[1])
    assert adv[0] == adv[2]


def test_zero_spread_and_group_of_one_are_exactly_zero():
    # 0.3 six times: the float32 mean is not exactly 0.3 (r − mean = 3e-8, /1e-4 would give 3e-4), yet the
    # advantage must be exactly 0
    r = torch.full((6,), 0.3)
    assert (r - r.mean()).abs().max() > 0
    for scale in ("group", "batch", "none"):
        assert torch.equal(group_relative_advantages(r, 6, scale=scale), torch.zeros(6))
    for scale in ("group", "batch", "none"):
        adv1 = group_relative_advantages(_t(0.3, -2.0, 7.0), 1, scale=scale)
        assert torch.equal(adv1, torch.zeros(3, dtype=torch.float64))
    assert torch.equal(group_relative_advantages(_t(4.0), 1, scale="batch"), _t(0.0))


def test_advantage_errors():
    with pytest.raises(ValueError, match="groups of group_size=4"):
        group_relative_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match=r"rewards\[1\] = nan"):
        group_relative_advantages(_t(1.0, float("nan")), 2)
    with pytest.raises(ValueError, match="scale="):
        group_relative_advantages(torch.zeros(2), 2, scale="std")


def _on_policy_case():
    logp = torch.log(_t(0.5, 0.25, 0.9, 0.4, 0.8, 0.7)).view(2, 3).requires_grad_(True)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    return logp, mask, _t(1.0, -3.0)


@pytest.mark.parametrize("aggregation,kwargs,expected,grad", [
    # on-policy ratio 1 -> token loss -A; row 0: two tokens of -1, row 1: one token of +3
    ("seq_mean", {}, 1.0, [[-0.25, -0.25, 0.0], [1.5, 0.0, 0.0]]),   # (−1 + 3) / 2
    ("token_mean", {}, 1 / 3, [[-1 / 3, -1 / 3, 0.0], [1.0, 0.0, 0.0]]),  # (−2 + 3) / 3 tokens
    ("fixed_norm", {"max_len": 4}, 0.125, [[-0.125, -0.125, 0.0], [0.375, 0.0, 0.0]]),  # 1 / (2·4)
    ("fixed_norm", {}, 1 / 6, [[-1 / 6, -1 / 6, 0.0], [0.5, 0.0, 0.0]]),  # max_len defaults to T = 3
])
def test_aggregations_hand_values(aggregation, kwargs, expected, grad):
    logp, mask, adv = _on_policy_case()
    loss, stats = clipped_pg_loss(logp, logp.detach(), adv, mask, aggregation=aggregation, **kwargs)
    assert abs(loss.item() - expected) < 1e-12
    loss.backward()
    torch.testing.assert_close(logp.grad, _t(*sum(grad, [])).view(2, 3))
    assert stats["ratio_mean"].item() == pytest.approx(1.0) and stats["clip_frac"].item() == 0.0


def test_clipping_hand_values_and_stats():
    old = torch.log(_t(0.2, 0.2, 0.2)).view(3, 1)
    ratios = _t(1.5, 1.5, 0.5).view(3, 1)
    logp = (old + ratios.log()).requires_grad_(True)
    adv = _t(1.0, -1.0, -1.0)
    loss, stats = clipped_pg_loss(logp, old, adv, torch.ones(3, 1))
    # row 0: clipped to 1.2 -> -1.2, no grad; row 1: pessimistic unclipped 1.5; row 2: clipped .8 -> .8, no grad
    assert abs(loss.item() - (-1.2 + 1.5 + 0.8) / 3) < 1e-12
    loss.backward()
    torch.testing.assert_close(logp.grad, _t(0.0, 0.5, 0.0).view(3, 1))  # d(−ρA)/dlogp = ρ = 1.5, / 3
    assert stats["clip_high_frac"].item() == pytest.approx(1 / 3)
    assert stats["clip_low_frac"].item() == pytest.approx(1 / 3)
    assert stats["clip_frac"].item() == pytest.approx(2 / 3)
    # clip-higher: eps_high .28 leaves ratio 1.25 unclipped, .2 clips it
    lp = (old[:1] + math.log(1.25))
    assert clipped_pg_loss(lp, old[:1], _t(1.0), torch.ones(1, 1), eps_high=0.28)[0].item() == pytest.approx(-1.25)
    assert clipped_pg_loss(lp, old[:1], _t(1.0), torch.ones(1, 1))[0].item() == pytest.approx(-1.2)


def test_k3_kl_term():
    logp = torch.log(_t(0.5, 0.5)).view(1, 2).requires_grad_(True)
    ref = torch.log(_t(0.25, 0.5)).view(1, 2)
    k3 = 0.5 + math.log(2.0) - 1  # exp(log .5) − log .5 − 1
    torch.testing.assert_close(k3_kl(logp, ref), _t(k3, 0.0).view(1, 2))
    loss, stats = clipped_pg_loss(logp, logp.detach(), _t(0.0), torch.ones(1, 2), ref_logp=ref, kl_coef=0.1,
                                  aggregation="token_mean")
    assert abs(loss.item() - 0.1 * k3 / 2) < 1e-12
    assert abs(stats["kl"].item() - k3 / 2) < 1e-12
    loss.backward()
    # d k3 / d logp = 1 − exp(ref − logp): (1 − .5) > 0 -> lowering the loss moves logp towards ref
    torch.testing.assert_close(logp.grad, _t(0.1 * 0.5 / 2, 0.0).view(1, 2))
    with pytest.raises(ValueError, match="needs ref_logp"):
        clipped_pg_loss(logp, logp.detach(), _t(0.0), torch.ones(1, 2), kl_coef=0.1)


def test_all_masked_row_and_batch_and_padding_nan():
    logp, _, adv = _on_policy_case()
    mask = torch.tensor([[1, 1, 0], [0, 0, 0]])
    loss, _ = clipped_pg_loss(logp, logp.detach(), adv, mask)
    assert abs(loss.item() - (-1.0 / 2)) < 1e-12  # row 1 adds 0 but counts in the mean over B, as in TRL
    padded = logp.detach().clone()
    padded[0, 2] = float("-inf")  # padding position
    padded.requires_grad_(True)
    loss_pad, _ = clipped_pg_loss(padded, padded.detach(), adv, mask, aggregation="token_mean",
                                  ref_logp=padded.detach(), kl_coef=0.1)
    assert loss_pad.item() == pytest.approx(-1.0)
    loss_pad.backward()
    torch.testing.assert_close(padded.grad, _t(-0.5, -0.5, 0.0, 0.0, 0.0, 0.0).view(2, 3))
    none, stats = clipped_pg_loss(logp, logp.detach(), adv, torch.zeros(2, 3))
    assert none.item() == 0.0 and none.requires_grad
    none.backward()
    assert torch.equal(logp.grad, torch.zeros(2, 3, dtype=torch.float64))
    assert stats["ratio_mean"].item() == 0.0


def test_per_token_advantages_and_shape_errors():
    logp = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    loss, _ = clipped_pg_loss(logp, logp.detach(), _t(2.0, -4.0).view(1, 2), torch.ones(1, 2))
    assert loss.item() == pytest.approx(1.0)  # (−2 + 4) / 2
    with pytest.raises(ValueError, match=r"advantages has shape \(3,\)"):
        clipped_pg_loss(logp, logp.detach(), torch.zeros(3), torch.ones(1, 2))
    with pytest.raises(ValueError, match="aggregation="):
        clipped_pg_loss(logp, logp.detach(), torch.zeros(1), torch.ones(1, 2), aggregation="dapo")


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_match_trl_formula_on_random_rewards(scale):
    from trl.trainer.utils import nanstd

    g = torch.Generator().manual_seed(3)
    rewards = torch.rand(24, generator=g)
    G = 4
    # TRL v1.16 GRPOTrainer._generate_and_score_completions, sum_then_normalize branch
    mean = rewards.view(-1, G).mean(1).repeat_interleave(G)
    std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G) if scale != "batch" else \
        nanstd(rewards).expand_as(rewards)
    ref = rewards - mean
    if scale != "none":
        ref = ref / (std + 1e-4)
    torch.testing.assert_close(group_relative_advantages(rewards, G, scale=scale), ref)


@pytest.mark.parametrize("loss_type,aggregation", [("grpo", "seq_mean"), ("bnpo", "token_mean"),
                                                   ("dapo", "token_mean"), ("dr_grpo", "fixed_norm")])
@pytest.mark.parametrize("kl_coef", [0.0, 0.04])
def test_clipped_pg_loss_matches_trl_grpo(loss_type, aggregation, kl_coef):
    """Runs TRL v1.16 `GRPOTrainer._compute_loss` on a stand-in `self` (no model) and compares loss and grads."""
    from collections import defaultdict
    from types import SimpleNamespace

    from trl import GRPOTrainer

    g = torch.Generator().manual_seed(5)
    B, T, max_len = 4, 6, 8
    logp = (-2 * torch.rand(B, T, generator=g)).requires_grad_(True)
    old = logp.detach() + 0.4 * torch.randn(B, T, generator=g)  # ratios well outside [0.8, 1.28]
    ref = logp.detach() + 0.3 * torch.randn(B, T, generator=g)
    adv = torch.randn(B, generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.3).long()
    mask[2] = 0  # an all-masked row

    identity = lambda x, **_: x  # noqa: E731
    fake = SimpleNamespace(
        top_entropy_quantile=1.0, off_policy_mask_threshold=None, importance_sampling_level="token",
        beta=kl_coef, loss_type=loss_type, epsilon_low=0.2, epsilon_high=0.28, use_vllm=False,
        vllm_importance_sampling_correction=False, aux_loss_enabled=False, _entropy_bonus_enabled=False,
        model=SimpleNamespace(training=True), current_gradient_accumulation_steps=1, max_completion_length=max_len,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        accelerator=SimpleNamespace(num_processes=1, sync_gradients=True, gather=identity, reduce=identity,
                                    gather_for_metrics=identity),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
    )
    trl_logp = logp.detach().clone().requires_grad_(True)
    fake._get_per_token_logps_and_entropies = lambda *a, **k: (trl_logp, torch.zeros(B, T), None)
    inputs = {"prompt_ids": torch.zeros(B, 1, dtype=torch.long), "prompt_mask": torch.ones(B, 1, dtype=torch.long),
              "completion_ids": torch.zeros(B, T, dtype=torch.long), "completion_mask": mask,
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    ref_loss = GRPOTrainer._compute_loss(fake, None, inputs)
    loss, stats = clipped_pg_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, ref_logp=ref, kl_coef=kl_coef,
                                  aggregation=aggregation, max_len=max_len)
    torch.testing.assert_close(loss, ref_loss)
    loss.backward()
    ref_loss.backward()
    torch.testing.assert_close(logp.grad, trl_logp.grad)
    assert stats["clip_low_frac"].item() == pytest.approx(fake._metrics["train"]["clip_ratio/low_mean"][0])
    assert stats["clip_high_frac"].item() == pytest.approx(fake._metrics["train"]["clip_ratio/high_mean"][0])
    assert 0 < stats["clip_frac"].item() < 1
    if kl_coef:
        assert stats["kl"].item() == pytest.approx(fake._metrics["train"]["kl"][0])
