"""Generalized JSD (checked against TRL's GKDTrainer.generalized_jsd_loss) and the RISD loss."""
from __future__ import annotations

import math
import os

import pytest
import torch

from zreward.losses import generalized_jsd, kl_div_levels, risd_kl
from zreward.models.level_readout import mean_over_chains

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")


def _trl_gjsd():
    # Plain import, no importorskip: trl is a test dependency and this comparison must run.
    from trl.experimental.gkd import GKDTrainer

    return GKDTrainer.generalized_jsd_loss


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0])
def test_gjsd_hand_values(beta):
    s, t = [0.5, 0.5], [0.75, 0.25]
    mix = [(1 - beta) * a + beta * b for a, b in zip(s, t)]
    if beta == 0:
        expected = _kl(t, s)  # forward KL(T||S) = 0.130812
    elif beta == 1:
        expected = _kl(s, t)  # reverse KL(S||T) = 0.143841
    else:
        expected = beta * _kl(t, mix) + (1 - beta) * _kl(s, mix)
    st = torch.tensor(s, dtype=torch.float64).log().view(1, 1, 2)
    te = torch.tensor(t, dtype=torch.float64).log().view(1, 1, 2)
    assert abs(generalized_jsd(st, te, beta=beta).item() - expected) < 1e-12
    if beta == 0.5:
        assert abs(expected - 0.0338220) < 1e-6


@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0])
@pytest.mark.parametrize("reduction", ["batchmean", "sum", "mean", "none"])
@pytest.mark.parametrize("with_labels", [False, True])
def test_gjsd_matches_trl(beta, temperature, reduction, with_labels):
    trl_loss = _trl_gjsd()
    g = torch.Generator().manual_seed(int(beta * 10) + int(temperature * 100) + 7 * with_labels)
    student = (3 * torch.randn(3, 5, 11, generator=g)).requires_grad_(True)
    teacher = 3 * torch.randn(3, 5, 11, generator=g)
    labels = None
    if with_labels:
        labels = torch.randint(0, 11, (3, 5), generator=g)
        labels[0, :2] = -100
        labels[2, :] = -100  # an all-masked row
    ours = generalized_jsd(student, teacher, beta=beta, temperature=temperature, reduction=reduction,
                           labels=labels)
    student_ref = student.detach().clone().requires_grad_(True)
    ref = trl_loss(student_ref, teacher, labels=labels, beta=beta, temperature=temperature, reduction=reduction)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(student.grad, student_ref.grad, rtol=1e-5, atol=1e-6)


def test_gjsd_num_items_in_batch_matches_trl():
    g = torch.Generator().manual_seed(11)
    s, t = torch.randn(2, 4, 7, generator=g), torch.randn(2, 4, 7, generator=g)
    labels = torch.tensor([[1, 2, -100, -100], [3, 4, 5, -100]])
    ref = _trl_gjsd()(s, t, labels=labels, beta=0.3, num_items_in_batch=torch.tensor(10))
    torch.testing.assert_close(generalized_jsd(s, t, beta=0.3, labels=labels, num_items_in_batch=torch.tensor(10)),
                               ref)


def test_gjsd_gradient_direction_and_all_masked():
    student = torch.zeros(1, 1, 3, requires_grad=True)
    teacher = torch.tensor([0.2, 0.3, 0.5]).log().view(1, 1, 3)
    generalized_jsd(student, teacher, beta=0.0).backward()
    # forward KL: d/dz = p_S − p_T
    torch.testing.assert_close(student.grad.view(3), torch.tensor([1 / 3 - 0.2, 1 / 3 - 0.3, 1 / 3 - 0.5]))
    student.grad = None
    labels = torch.full((1, 1), -100)
    for reduction in ("batchmean", "sum", "mean"):
        loss = generalized_jsd(student, teacher, beta=0.5, labels=labels, reduction=reduction)
        assert loss.item() == 0.0 and loss.requires_grad  # TRL gives NaN for "mean"; we give 0
    with pytest.raises(ValueError, match="beta"):
        generalized_jsd(student, teacher, beta=1.5)


def test_mean_over_chains_and_risd_hand_values():
    chains = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], dtype=torch.float64)  # (B=1, M=2, L=3)
    p_bar = mean_over_chains(chains)
    torch.testing.assert_close(p_bar, torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64))
    student = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64).log().requires_grad_(True)
    loss = risd_kl(p_bar, student)
    # KL([.5,.5,0] || [.5,.25,.25]) = .5 log 2 — not the mean of the per-chain KLs (log 2 + log 4)/2
    assert abs(loss.item() - 0.5 * math.log(2)) < 1e-12
    per_chain = kl_div_levels(student.detach().expand(2, 3), chains[0]).item()
    assert abs(per_chain - 1.5 * math.log(2)) < 1e-12
    loss.backward()
    torch.testing.assert_close(student.grad, torch.tensor([[0.0, -0.25, 0.25]], dtype=torch.float64))


def test_mean_over_chains_mask_and_risd_masked_dims():
    probs = torch.full((2, 3, 4, 9), 1 / 9)  # (B, M, D, L)
    probs[0, 0] = float("nan")  # a failed chain
    probs[0, 1, :, 0] += 0.5
    probs[0, 1] /= probs[0, 1].sum(-1, keepdim=True)
    chain_mask = torch.tensor([[False, True, True], [False, False, False]])
    p_bar = mean_over_chains(probs, chain_mask)
    assert p_bar.shape == (2, 4, 9)
    torch.testing.assert_close(p_bar[0], (probs[0, 1] + probs[0, 2]) / 2)
    assert torch.equal(p_bar[1], torch.zeros(4, 9))  # no valid chain
    student = torch.zeros(2, 4, 9, requires_grad=True)
    row_mask = chain_mask.any(1).view(2, 1).expand(2, 4)
    loss = risd_kl(p_bar, student, mask=row_mask)
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert torch.equal(student.grad[1], torch.zeros(4, 9))
    with pytest.raises(ValueError, match="risd_kl: target row"):
        risd_kl(p_bar, student)  # the zero rows are not distributions unless masked
