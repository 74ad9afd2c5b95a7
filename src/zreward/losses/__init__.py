"""Loss functions of zreward: pure torch functions (tensors in, tensor out), one file per family.

- distribution: KL / cross-entropy / EMD / JS between level logits and a target distribution, expected-score
  regression.
- pairwise: Thurstone fidelity, Bradley–Terry (with margin), score-gap Huber.
- policy: GRPO group-relative advantages (std floor / Dr. GRPO), clipped policy-gradient loss with k3 KL, truncated
  importance weights for a rollout engine's log-prob mismatch.
- rewards: the RL rewards (distribution, sampled level, within-prompt pair outcome).
- distill: TRL-compatible generalized JSD (GKD / OPD), RISD KL(p̄_T ‖ p_S) (the chain average p̄_T is
  `zreward.models.level_readout.mean_over_chains`).
- rewarddance: cross-entropy on P("yes").
"""
from __future__ import annotations

from zreward.losses.distill import generalized_jsd, risd_kl
from zreward.losses.distribution import (
    cross_entropy_levels,
    emd_levels,
    expected_score_loss,
    js_levels,
    kl_div_levels,
    masked_reduce,
)
from zreward.losses.pairwise import (
    bradley_terry,
    pair_target_thurstone,
    pair_target_win_prob,
    score_gap_huber,
    thurstone_fidelity,
)
from zreward.losses.policy import (
    clipped_pg_loss,
    group_relative_advantages,
    k3_kl,
    masked_advantages,
    truncated_is_weights,
)
from zreward.losses.rewarddance import yes_no_ce, yes_probability
from zreward.losses.rewards import distribution_rewards, pair_outcome_rewards, sampled_level_rewards

__all__ = [
    "kl_div_levels",
    "cross_entropy_levels",
    "emd_levels",
    "js_levels",
    "expected_score_loss",
    "masked_reduce",
    "thurstone_fidelity",
    "bradley_terry",
    "score_gap_huber",
    "pair_target_win_prob",
    "pair_target_thurstone",
    "group_relative_advantages",
    "masked_advantages",
    "distribution_rewards",
    "sampled_level_rewards",
    "pair_outcome_rewards",
    "clipped_pg_loss",
    "k3_kl",
    "truncated_is_weights",
    "generalized_jsd",
    "risd_kl",
    "yes_no_ce",
    "yes_probability",
]
