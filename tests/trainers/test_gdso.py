"""GDSO trainer: a short run learns and saves a loadable reasoning scorer; exact resume; which terms get gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zreward.losses import distribution_rewards, masked_advantages
from zreward.trainers import gdso
from zreward.trainers import rollout as R
from zreward.trainers.rl import MicroBatch
from zreward.trainers.run_utils import read_metrics


def _cfg(tiny_model, world, out, steps=6, **g):
    cfg = gdso.Config()
    cfg.model.init_from = str(tiny_model)
    cfg.data.train, cfg.data.val = str(world / "train"), str(world / "val")
    cfg.data.prompts_per_batch, cfg.data.val_max_images, cfg.data.max_per_prompt = 2, 12, 3
    cfg.optim.lr = 3e-3
    cfg.run.output_dir, cfg.run.max_steps, cfg.run.progress = str(out), steps, False
    cfg.gdso.group_size, cfg.gdso.max_new_tokens, cfg.gdso.dims_per_step = 2, 4, 2
    for k, v in g.items():
        setattr(cfg.gdso, k, v)
    return cfg


def test_gdso_short_run_learns_and_saves(tiny_model, small_world, tmp_path):
    from zreward.models.scorer import load_scorer

    final = gdso.train(_cfg(tiny_model, small_world, tmp_path / "run", steps=8))
    m = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [e["step"] for e in m] == list(range(1, 9))
    for key in ("pg_loss", "dist_loss", "pair_loss", "reward_mean", "t_rollout", "t_score", "t_update",
                "gen_tok_per_s", "grad_norm", "lr"):
        assert all(np.isfinite(e[key]) for e in m), key
    first, last = m[0]["dist_loss"], np.mean([e["dist_loss"] for e in m[-2:]])
    assert last < 0.8 * first, (first, last)  # the pointwise term after each chain is learned
    assert m[-1]["reward_mean"] > m[0]["reward_mean"]  # distributions move towards the MOS → higher reward
    assert 0.0 <= m[-1]["val_acc"] <= 1.0 and m[-1]["val_pairs"] > 0
    sc = load_scorer(final)
    assert sc.config.mode == "reasoning" and sc.config.max_new_tokens == 4
    out = sc.score(["a red circle"], torch.rand(1, 3, 64, 64), reasoning=True, samples=2)
    assert out.probs.shape == (1, 4, 9) and torch.allclose(out.probs.sum(-1), torch.ones(1, 4), atol=1e-5)


def test_gdso_resume_gives_identical_losses(tiny_model, small_world, tmp_path):
    straight = tmp_path / "straight"
    kw = dict(kl_coef=0.1, ppo_epochs=2, dims_per_step=1, groups_per_micro=1)
    cfg = _cfg(tiny_model, small_world, straight, steps=2, **kw)
    cfg.data.val = None
    gdso.train(cfg)
    half = tmp_path / "half"
    cfg = _cfg(tiny_model, small_world, half, steps=1, **kw)
    cfg.data.val = None
    gdso.train(cfg)
    cfg.run.max_steps = 2
    gdso.train(cfg)  # resume="auto" picks up step_000001
    a, b = read_metrics(straight / "metrics.jsonl"), read_metrics(half / "metrics.jsonl")
    assert [e["step"] for e in b] == [1, 2]
    for key in ("loss", "pg_loss", "dist_loss", "pair_loss", "kl", "reward_mean"):
        assert [e[key] for e in a] == pytest.approx([e[key] for e in b], rel=1e-5, abs=1e-7), key
    assert a[-1]["kl"] > 0  # the reference (frozen initial model) is used and the policy moved away from it
    assert a[-1]["ratio_mean"] != 1.0  # the second PPO epoch is off-policy


def _one_micro(tiny_model, small_world, mask_value: bool, **g):
    from zreward.trainers.data import load_train_data
    from zreward.models.scorer import load_scorer

    cfg = _cfg(tiny_model, small_world, "unused", **g).gdso
    cfg.max_new_tokens = 4
    sc = load_scorer(tiny_model)
    data = load_train_data(small_world / "train", max_images=8)
    idx = np.arange(8)
    lab = R.batch_labels(data, idx, [0, 1], sc.levels)
    lab.mask[:] = mask_value
    torch.manual_seed(0)
    ro = R.rollout(sc, [data.prompts[i] for i in idx], data.image_batch(idx), data.dims[:2], 2, 4, 1.0)
    loss, st, _ = gdso.gdso_losses(cfg, sc, MicroBatch(ro, None, lab, data.group[idx]), None, None)
    return sc, loss, st, lab, ro


def test_unlabelled_items_get_no_loss_or_gradient(tiny_model, small_world):
    sc, loss, st, *_ = _one_micro(tiny_model, small_world, False)
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in sc.model.parameters())


def test_terms_match_the_loss_functions(tiny_model, small_world):
    from zreward.losses import kl_div_levels, score_gap_huber
    from zreward.trainers.data import within_group_pairs

    sc, loss, st, lab, ro = _one_micro(tiny_model, small_world, True)
    with torch.no_grad():
        cf = R.score_chains(sc, ro)
        mos_c, target_c, mask_c = lab.per_chain(2)
        assert st["dist_loss"].item() == pytest.approx(kl_div_levels(cf.level_logits, target_c).item(), rel=1e-5)
        mu, _ = R.group_moments(cf.level_logits, sc.levels, 8, 2, 2)
        ia, ib = within_group_pairs(np.repeat(np.arange(2), 4))  # 8 images = 2 prompts × 4 candidates
        exp = score_gap_huber(mu[ia] - mu[ib], lab.mos[ia] - lab.mos[ib])
        assert st["pair_loss"].item() == pytest.approx(exp.item(), rel=1e-5)
        assert st["pg_loss"].abs().item() < 1e-5  # on-policy, ratio 1: Σ A = 0 per group, seq_mean of −A
    assert loss.item() == pytest.approx((st["pg_loss"] + st["dist_loss"] + st["pair_loss"]).item(), rel=1e-5)


def test_pg_term_only_touches_chain_tokens(tiny_model, small_world, monkeypatch):
    """PG term alone: d loss / d logp[i, t] = −A_i / |chain_i| on real chain tokens, 0 on pads and level logits."""
    from zreward.models.scorer import ChainForward

    captured = {}
    real = R.score_chains

    def leafy(scorer, ro):
        cf = real(scorer, ro)
        leaves = ChainForward(cf.token_logprobs.detach().requires_grad_(), cf.token_mask,
                              cf.level_logits.detach().requires_grad_(), cf.in_level_mass)
        captured["cf"] = leaves
        return leaves

    monkeypatch.setattr(R, "score_chains", leafy)
    sc, loss, st, lab, ro = _one_micro(tiny_model, small_world, True, dist_weight=0.0, pair_weight=0.0)
    cf = captured["cf"]
    loss.backward()
    assert cf.level_logits.grad is None or cf.level_logits.grad.abs().max() == 0
    m = cf.token_mask.float()
    rewards = distribution_rewards(cf.level_logits, sc.levels, lab.per_chain(2)[0])
    adv = masked_advantages(rewards, torch.ones_like(rewards, dtype=torch.bool), 2, std_floor=0.1)
    n = m.shape[0]
    expected = -adv.unsqueeze(1) * m / m.sum(1, keepdim=True).clamp(min=1) / n
    assert torch.allclose(cf.token_logprobs.grad, expected, atol=1e-6)
    assert cf.token_logprobs.grad[m == 0].eq(0).all() and cf.token_logprobs.grad.abs().sum() > 0


def test_distribution_and_pair_terms_read_the_eval_chains(tiny_model, small_world):
    """With eval chains, L_dist and L_pair are computed on them (greedy here), L_PG on the rollout chains."""
    from zreward.losses import kl_div_levels, score_gap_huber
    from zreward.trainers.data import load_train_data, within_group_pairs

    sc, _, st_pg, lab, ro = _one_micro(tiny_model, small_world, True)
    data_idx = np.arange(8)
    data = load_train_data(small_world / "train", max_images=8)
    ev = R.rollout(sc, [data.prompts[i] for i in data_idx], data.image_batch(data_idx), data.dims[:2], 1, 4, 1.0,
                   do_sample=False)
    cfg = _cfg(tiny_model, small_world, "unused").gdso
    cfg.max_new_tokens = 4
    _, st, _ = gdso.gdso_losses(cfg, sc, MicroBatch(ro, ev, lab, data.group[data_idx]), None, None)
    with torch.no_grad():
        ce = R.score_chains(sc, ev)
        _, target_e, _ = lab.per_chain(1)
        assert st["dist_loss"].item() == pytest.approx(kl_div_levels(ce.level_logits, target_e).item(), rel=1e-5)
        mu, _ = R.group_moments(ce.level_logits, sc.levels, 8, 2, 1)
        ia, ib = within_group_pairs(data.group[data_idx])
        exp = score_gap_huber(mu[ia] - mu[ib], lab.mos[ia] - lab.mos[ib])
        assert st["pair_loss"].item() == pytest.approx(exp.item(), rel=1e-5)
    assert st["pg_loss"].item() == pytest.approx(st_pg["pg_loss"].item(), abs=1e-6)  # PG term: same rollout


def test_pair_outcome_reward_enters_the_advantages(tiny_model, small_world):
    from zreward.trainers.data import load_train_data

    sc, _, _, lab, ro = _one_micro(tiny_model, small_world, True)
    data = load_train_data(small_world / "train", max_images=8)
    cfg = _cfg(tiny_model, small_world, "unused", pair_reward_weight=2.0).gdso
    cfg.max_new_tokens = 4
    _, _, state = gdso.gdso_losses(cfg, sc, MicroBatch(ro, None, lab, data.group[np.arange(8)]), None, None)
    with torch.no_grad():
        cf = R.score_chains(sc, ro)
    base = distribution_rewards(cf.level_logits, sc.levels, lab.per_chain(2)[0])
    extra = state.rewards - base
    assert extra.min() >= 0 and extra.max() <= 2.0 + 1e-6 and extra.abs().sum() > 0


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="gdso.reward"):
        gdso.GDSOConfig(reward="nope")
    with pytest.raises(ValueError, match="gdso.group_size"):
        gdso.GDSOConfig(group_size=0)
    with pytest.raises(ValueError, match="gdso.eval_temperature"):
        gdso.GDSOConfig(eval_temperature=-0.1)
    with pytest.raises(ValueError, match="gdso.adv_std_floor"):
        gdso.GDSOConfig(adv_std_floor=-1.0)


def test_anchor_is_the_cold_start_loss_and_enters_the_logged_loss(tiny_model, small_world, tmp_path):
    """`gdso.anchor_weight`: the anchor term equals the reasoning cold start's own CE + KL on the same items (one
    definition: `sft.step_losses` with its per-token / per-row normalisers), and the logged loss includes it."""
    from zreward.models.scorer import load_scorer
    from zreward.trainers import sft
    from zreward.trainers.data import load_train_data
    from zreward.trainers.rl import anchor_loss

    data = load_train_data(small_world / "train")
    sc = load_scorer(tiny_model)
    dims = ["alignment", "plausibility"]
    idx = sft.group_batch(data, 2, 0, 0)
    scfg = sft.Config()
    scfg.sft.mode, scfg.sft.max_chain_tokens = "reasoning", 6
    chains = sft.tokenize_rationales(sc.tokenizer, data, idx, dims, 6)
    rows = float(data.mask[idx][:, data.dim_index(dims)].sum())
    norms = {"rows": rows, "pairs": 1.0, "ce": float(sum(len(c) + 1 for c in chains if c)), "caption": 1.0}
    with torch.no_grad():
        terms = sft.step_losses(scfg, sc, data, idx, dims, norms, torch.device("cpu"))
        got = anchor_loss(sc, data, idx, dims, 6)
    assert float(got) == pytest.approx(float(terms["ce"] + terms["kl"]), rel=1e-5)

    gdso.train(_cfg(tiny_model, small_world, tmp_path / "run", steps=2, anchor_weight=0.5, max_new_tokens=6))
    for e in read_metrics(tmp_path / "run" / "metrics.jsonl"):
        assert e["anchor_loss"] > 0
        assert e["loss"] == pytest.approx(e["pg_loss"] + e["dist_loss"] + e["pair_loss"] + 0.5 * e["anchor_loss"],
                                          rel=1e-5, abs=1e-6)
    with pytest.raises(ValueError, match="gdso.anchor_weight"):
        gdso.GDSOConfig(anchor_weight=-1.0)


def test_guide_rationale_puts_the_true_rationale_last_in_each_pg_group(tiny_model, small_world, tmp_path,
                                                                        monkeypatch):
    """`gdso.guide_rationale`: the PG chains the objective scores hold, as the last of each (image, dim) group, the
    record's true rationale cut to max_new_tokens − 1 (`sft.tokenize_rationales`, as the anchor reads it)."""
    from zreward.models.scorer import load_scorer
    from zreward.trainers import sft
    from zreward.trainers.data import load_train_data

    seen = []
    real = R.score_chains

    def spy(scorer, ro):
        seen.append(ro)
        return real(scorer, ro)

    monkeypatch.setattr(R, "score_chains", spy)
    cfg = _cfg(tiny_model, small_world, tmp_path / "run", steps=2, guide_rationale=True, eval_temperature=None,
               max_new_tokens=6)
    cfg.data.val = None
    gdso.train(cfg)
    data = load_train_data(small_world / "train")
    sc = load_scorer(tiny_model)
    dims = R.resolve_dims(None, data, sc)
    assert len(seen) == 2  # one PG rollout per step (no evaluation-temperature rollout)
    for step, ro in enumerate(seen):
        idx = sft.group_batch(data, 2, step, cfg.run.seed, max_per_prompt=3)
        sdims = R.step_dims(dims, 2, cfg.run.seed, step)
        guides = sft.tokenize_rationales(sc.tokenizer, data, idx, sdims, 5)
        assert any(guides)
        g = ro.group_size
        for k, guide in enumerate(guides):
            if guide:
                assert ro.chains.chain_ids[(k + 1) * g - 1] == guide
    with pytest.raises(ValueError, match="gdso.guide_rationale.*hf"):
        gdso.GDSOConfig(guide_rationale=True, engine="vllm")
    with pytest.raises(ValueError, match="gdso.guide_rationale.*group_size"):
        gdso.GDSOConfig(guide_rationale=True, group_size=1)
