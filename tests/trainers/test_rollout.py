"""Shared RL stages (zreward.trainers.rollout): score token, moments, batching — hand-computed."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.trainers import rollout as R

LEVELS = torch.tensor([1.0, 2.0, 3.0])


def _logits(*rows):
    return torch.log(torch.tensor(rows, dtype=torch.float32))


def test_with_score_token_appends_level_logprob_and_its_gradient():
    tok = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]])
    mask = torch.tensor([[1, 1], [1, 0]])
    lg = torch.tensor([[0.0, 1.0, 2.0], [2.0, 0.0, 0.0]], requires_grad=True)
    logp, m = R.with_score_token(tok, mask, lg, torch.tensor([2, 0]))
    lsm = torch.log_softmax(lg.detach(), -1)
    assert logp.shape == (2, 3) and m.tolist() == [[1, 1, 1], [1, 0, 1]]
    assert torch.allclose(logp[:, :2], tok)
    assert torch.allclose(logp[:, 2], torch.stack([lsm[0, 2], lsm[1, 0]]))
    logp[0, 2].backward()  # d log p_k / d logits = onehot_k − p
    assert torch.allclose(lg.grad[0], torch.tensor([0.0, 0.0, 1.0]) - lsm[0].exp())
    assert lg.grad[1].eq(0).all()


def test_group_moments_hand_values():
    # 1 image, 2 dims, G = 2: dim 0 chains μ = 1 and 3 → 2; dim 1 chains μ = 2 and 2 → 2 with std 0 and 1
    lg = _logits([1, 1e-12, 1e-12], [1e-12, 1e-12, 1], [1e-12, 1, 1e-12], [0.5, 1e-12, 0.5])
    mu, sd = R.group_moments(lg, LEVELS, n_images=1, n_dims=2, group_size=2)
    assert torch.allclose(mu, torch.tensor([[2.0, 2.0]]), atol=1e-5)
    assert torch.allclose(sd, torch.tensor([[0.0, 0.5]]), atol=1e-4)


def test_micro_batches_keep_prompt_groups_whole():
    groups = np.array([7, 7, 3, 3, 3, 9])
    parts = R.micro_batches(groups, 2)
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3, 4], [5]]
    assert [p.tolist() for p in R.micro_batches(groups, None)] == [[0, 1, 2, 3, 4, 5]]


def test_step_dims_is_seeded_subset():
    dims = ["a", "b", "c", "d"]
    assert R.step_dims(dims, None, 0, 5) == dims
    s = R.step_dims(dims, 2, 0, 5)
    assert len(s) == 2 and set(s) <= set(dims) and s == R.step_dims(dims, 2, 0, 5)
    assert len({tuple(R.step_dims(dims, 1, 0, k)) for k in range(30)}) > 1


def test_labels_per_chain_order():
    lab = R.Labels(mos=torch.tensor([[1.0, 2.0], [3.0, 4.0]]), std=torch.zeros(2, 2),
                   target=torch.eye(2).expand(2, 2, 2).clone(), mask=torch.tensor([[True, False], [True, True]]))
    mos, target, mask = lab.per_chain(2)
    assert mos.tolist() == [1, 1, 2, 2, 3, 3, 4, 4]
    assert mask.tolist() == [True, True, False, False, True, True, True, True]
    assert target.shape == (8, 2) and target[2].tolist() == [0.0, 1.0]


def test_rollout_order_and_subset(tiny_model):
    from zreward.models.scorer import load_scorer

    sc = load_scorer(tiny_model)
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    ro = R.rollout(sc, ["a red circle", "a blue square", "two green stars"], images, ["alignment", "realism"],
                   group_size=2, max_new_tokens=5, temperature=1.0)
    assert len(ro.chains.chain_ids) == 3 * 2 * 2 and ro.n_images == 3
    assert ro.chains.image_index == [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]
    assert ro.chains.dim_index == [0, 0, 1, 1] * 3
    assert all(len(c) <= 5 for c in ro.chains.chain_ids)
    sub, rows = R.subset(ro, np.array([2]))
    assert rows.tolist() == [8, 9, 10, 11] and sub.chains.image_index == [2, 2, 2, 2]
    assert sub.chains.chain_ids == ro.chains.chain_ids[8:]
    cf = R.score_chains(sc, sub)
    assert cf.level_logits.shape == (4, 9) and cf.token_logprobs.shape[0] == 4


def test_with_guides_replaces_the_last_sample_of_each_group():
    from zreward.models.scorer import ChainBatch

    # 2 images x 2 dims x G = 3 samples; group k holds chains 3k .. 3k + 2
    cb = ChainBatch([0] * 6 + [1] * 6, [0, 0, 0, 1, 1, 1] * 2, [[9]] * 12, [[i] for i in range(12)],
                    [f"s{i}" for i in range(12)])
    ro = R.Rollout(cb, None, n_images=2, n_dims=2, group_size=3, gen_tokens=12)
    out = R.with_guides(ro, [[70, 71], [], [72], [73, 74, 75]], ["g0", "", "g2", "g3"])
    assert out.chains.chain_ids == [[0], [1], [70, 71], [3], [4], [5], [6], [7], [72], [9], [10], [73, 74, 75]]
    assert out.chains.texts[2] == "g0" and out.chains.texts[5] == "s5" and out.chains.texts[11] == "g3"
    assert out.chains.image_index == cb.image_index and out.chains.prompt_ids == cb.prompt_ids
    assert ro.chains.chain_ids[2] == [2]  # the input rollout is left as it was
    with pytest.raises(ValueError, match="4 .*groups"):
        R.with_guides(ro, [[1]] * 3, ["a"] * 3)
    cb.sampling_logprobs = [[0.0]] * 12
    with pytest.raises(ValueError, match="engine"):
        R.with_guides(ro, [[1]] * 4, ["a"] * 4)
