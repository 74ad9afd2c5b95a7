"""The RL loop with a rollout engine: truncated importance weights on the PG tokens when the engine returns its own
sampling log-probs (gradient checked by hand), the weight sync after each update, and the engine settings checked."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zreward.losses import distribution_rewards, masked_advantages
from zreward.models.engine import HFEngine
from zreward.models.scorer import load_scorer
from zreward.trainers import gdso, grpo, rl
from zreward.trainers import rollout as R
from zreward.trainers.rl import MicroBatch

CAP = 3.0


def _offset(k: int) -> float:
    """engine log-prob = trainer log-prob − offset: even tokens e^2 ≈ 7.39 → capped at 3, odd tokens e^−0.5."""
    return 2.0 if k % 2 == 0 else -0.5


def _weight(k: int) -> float:
    return min(math.exp(_offset(k)), CAP)


def _engine_rollout(tiny_model, small_world, dims: int, g: int):
    """A rollout whose chains carry fake engine log-probs (the trainer's minus `_offset`), plus the scorer/labels."""
    from zreward.trainers.data import load_train_data

    sc = load_scorer(tiny_model)
    data = load_train_data(small_world / "train", max_images=4)
    idx = np.arange(4)
    lab = R.batch_labels(data, idx, list(range(dims)), sc.levels)
    lab.mask[:] = True
    torch.manual_seed(0)
    ro = R.rollout(sc, [data.prompts[i] for i in idx], data.image_batch(idx), data.dims[:dims], g, 4, 1.0)
    with torch.no_grad():
        cf = R.score_chains(sc, ro)
    ro.chains.sampling_logprobs = [[cf.token_logprobs[i, k].item() - _offset(k) for k in range(len(c))]
                                   for i, c in enumerate(ro.chains.chain_ids)]
    assert sum(map(len, ro.chains.chain_ids)) > 0
    return sc, ro, lab, data.group[idx]


def test_gdso_pg_gradient_is_weighted_by_truncated_importance_weights(tiny_model, small_world, leafy_score_chains):
    """d loss / d logp[i, t] = −A_i · w_t / |chain_i| / N with w_t = min(exp(old − engine), C) (on-policy ratio 1)."""
    sc, ro, lab, groups = _engine_rollout(tiny_model, small_world, dims=2, g=2)
    captured = leafy_score_chains
    g = gdso.GDSOConfig(max_new_tokens=4, dist_weight=0.0, pair_weight=0.0, tis_cap=CAP)
    loss, st, state = gdso.gdso_losses(g, sc, MicroBatch(ro, None, lab, groups), None, None)
    loss.backward()
    cf = captured["cf"]
    m = cf.token_mask.float()
    w = torch.tensor([[_weight(k) for k in range(m.shape[1])]]) * m
    rewards = distribution_rewards(cf.level_logits, sc.levels, lab.per_chain(2)[0])
    adv = masked_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), 2, std_floor=0.1)
    expected = -adv.unsqueeze(1) * w / m.sum(1, keepdim=True).clamp(min=1) / m.shape[0]
    assert torch.allclose(cf.token_logprobs.grad, expected, atol=1e-5)
    assert cf.token_logprobs.grad.abs().sum() > 0
    even = m[:, 0::2].sum() / m.sum()
    assert st["tis_capped_frac"].item() == pytest.approx(even.item(), abs=1e-6)
    assert st["tis_weight_mean"].item() == pytest.approx(((w * m).sum() / m.sum()).item(), rel=1e-5)
    assert st["tis_logp_diff_abs"].item() > 0.5


def test_grpo_score_token_gets_weight_one(tiny_model, small_world):
    """The score token is chosen by the trainer, not sampled by the engine: its weight is 1; chain tokens as above."""
    sc, ro, lab, groups = _engine_rollout(tiny_model, small_world, dims=1, g=3)
    g = grpo.GRPOConfig(max_new_tokens=4, tis_cap=CAP)
    _, st, state = grpo.grpo_losses(g, sc, MicroBatch(ro, None, lab, groups), None, None)
    w = state.is_weights
    for i, c in enumerate(ro.chains.chain_ids):
        assert w[i, :len(c)].tolist() == pytest.approx([_weight(k) for k in range(len(c))], rel=1e-5)
    assert torch.all(w[:, -1] == 1.0)  # the score-token column (and padding)
    assert "tis_capped_frac" in st


def test_hf_rollouts_get_no_correction(tiny_model, small_world):
    sc, ro, lab, groups = _engine_rollout(tiny_model, small_world, dims=1, g=2)
    ro.chains.sampling_logprobs = None  # what the hf engine returns
    _, st, state = gdso.gdso_losses(gdso.GDSOConfig(max_new_tokens=4), sc, MicroBatch(ro, None, lab, groups), None,
                                    None)
    assert state.is_weights is None and "tis_weight_mean" not in st


def test_rl_loop_syncs_the_engine_after_each_update(tiny_model, small_world, tmp_path, monkeypatch):
    events = []

    class Recording(HFEngine):
        def generate(self, model, prompts, sampling):
            events.append("g")
            return super().generate(model, prompts, sampling)

        def sync_weights(self, model):
            events.append("s")

        def release(self):
            events.append("r")

    monkeypatch.setattr(rl, "start_engine", lambda g, scorer, loop: Recording())
    cfg = gdso.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(small_world / "train"), None
    cfg.data.prompts_per_batch, cfg.data.max_per_prompt = 1, 2
    cfg.run.output_dir, cfg.run.max_steps, cfg.run.progress = str(tmp_path / "run"), 2, False
    cfg.gdso.group_size, cfg.gdso.max_new_tokens, cfg.gdso.dims_per_step = 2, 2, 1
    gdso.train(cfg)
    # start (resume point) sync; per step: the PG rollout + the eval-temperature rollout, release, update, sync
    assert "".join(events) == "sggrsggrs"


def test_engine_settings_are_checked():
    with pytest.raises(ValueError, match=r"gdso.engine=vllm needs vLLM.*pip install 'zreward\[vllm\]'"):
        gdso.GDSOConfig(engine="vllm")
    with pytest.raises(ValueError, match="grpo.engine must be one of"):
        grpo.GRPOConfig(engine="sglang")
    with pytest.raises(ValueError, match="grpo.tis_cap"):
        grpo.GRPOConfig(tis_cap=0.0)
    from zreward.trainers.risd import TeacherConfig

    with pytest.raises(ValueError, match="teacher.engine=vllm needs vLLM"):
        TeacherConfig(engine="vllm")


def test_eval_engine_vllm_is_refused_clearly(tiny_model, small_world, tmp_path, capsys):
    from zreward.eval.cli import main

    rc = main(["--model", str(tiny_model), "--data", str(small_world / "test"), "--out", str(tmp_path / "ev"),
               "--reasoning", "--engine", "vllm"])
    assert rc == 2 and "--engine=vllm needs vLLM" in capsys.readouterr().err
