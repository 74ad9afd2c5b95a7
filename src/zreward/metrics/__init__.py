"""Metrics of reward models (pure functions: numpy / torch / lists in, floats out), below the trainers and eval.

One definition per quantity, used by the trainers' held-out checks and by `zreward eval` alike:
- `scores`: pairwise accuracy (non-tie; acc_23 with tie calibration; per dimension), KL / JS / W1 against
  annotator histograms, SRCC / PLCC.
- `arrays`: the input conversion and item-weight helpers they share (weights = bootstrap resample multiplicities,
  `zreward.eval.bootstrap`).
Layer: depends on `zreward.data` and `zreward.losses` only.
"""
from zreward.metrics.scores import (
    accuracy_by_dim,
    accuracy_with_ties,
    js,
    kl,
    label_signs,
    pairwise_accuracy,
    plcc,
    srcc,
    w1,
)

__all__ = ["label_signs", "pairwise_accuracy", "accuracy_with_ties", "accuracy_by_dim", "kl", "js", "w1", "srcc",
           "plcc"]
