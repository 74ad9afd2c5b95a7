"""Rollouts in bounded generate calls (`gen_batch`): chunk layout, and the same chains as one call where sampling
is deterministic."""
from __future__ import annotations

import pytest
import torch

from zreward.trainers import rollout as R

PROMPTS = ["a red circle", "a blue square", "two green stars"]
DIMS = ["alignment", "realism"]


@pytest.mark.parametrize("b, d, g, gen_batch", [(3, 2, 2, None), (3, 2, 2, 100), (3, 2, 2, 8), (3, 2, 2, 4),
                                                (3, 2, 2, 2), (3, 2, 2, 1), (5, 4, 8, 64), (1, 4, 8, 16)])
def test_generation_chunks_cover_all_groups_in_order_within_bound(b, d, g, gen_batch):
    chunks = R.generation_chunks(b, d, g, gen_batch)
    pairs = [(i, j) for bs, ds in chunks for i in range(b)[bs] for j in range(d)[ds]]
    assert pairs == [(i, j) for i in range(b) for j in range(d)]  # every (image, dim) once, in order
    sizes = [len(range(b)[bs]) * len(range(d)[ds]) * g for bs, ds in chunks]
    if gen_batch:
        assert all(n <= max(gen_batch, g) for n in sizes)  # a group of G is never split
    else:
        assert len(chunks) == 1


@pytest.fixture(scope="module")
def deterministic_scorer(tmp_path_factory):
    """A tiny scorer whose next-token distribution is one-hot (lm_head scaled up): sampling equals argmax."""
    from zreward.models.tiny import init_tiny
    from zreward.models.scorer import load_scorer

    out = init_tiny("qwen2_vl", tmp_path_factory.mktemp("tiny_chunks"), preset="tiny", seed=0)
    sc = load_scorer(out)
    with torch.no_grad():
        sc.model.get_output_embeddings().weight.mul_(1e4)
    return sc


def test_chunked_rollout_equals_one_call(deterministic_scorer):
    sc = deterministic_scorer
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    runs = {}
    for gen_batch in (None, 8, 4, 2):
        torch.manual_seed(0)
        runs[gen_batch] = R.rollout(sc, PROMPTS, images, DIMS, group_size=2, max_new_tokens=6, temperature=1.0,
                                    gen_batch=gen_batch).chains
    one = runs[None]
    assert one.image_index == [0] * 4 + [1] * 4 + [2] * 4 and one.dim_index == [0, 0, 1, 1] * 3
    assert sum(len(c) for c in one.chain_ids) > 12  # real chains, not all empty
    for gen_batch, cb in runs.items():
        assert cb.image_index == one.image_index and cb.dim_index == one.dim_index, gen_batch
        assert cb.prompt_ids == one.prompt_ids and cb.chain_ids == one.chain_ids, gen_batch
        assert cb.texts == one.texts


def test_generation_batch_from_model_config(deterministic_scorer, monkeypatch):
    from zreward.trainers.common import ModelConfig

    assert ModelConfig(generation_batch=4).generation_batch == 4
    sc = deterministic_scorer
    calls = []
    real = sc.generate_chains
    monkeypatch.setattr(sc, "generate_chains", lambda p, *a, **k: calls.append(len(p)) or real(p, *a, **k))
    monkeypatch.setattr(sc, "generation_batch", 4)  # as build_scorer sets it from model.generation_batch
    R.rollout(sc, PROMPTS, torch.rand(3, 3, 64, 64), DIMS, group_size=2, max_new_tokens=2, temperature=1.0)
    assert calls == [1, 1, 1]  # 4 sequences (one image × 2 dims × 2 chains) per call
