"""Evaluation: pure metric functions (numpy / torch in, numbers out).

(The metric functions themselves — pairwise accuracy, acc_23, KL / JS / W1, SRCC / PLCC — are `zreward.metrics`,
below the trainers, which use them for their held-out checks.)
- `calibration`: Thurstone P(a ≻ b), ECE with per-bin data, reliability-diagram PNG.
- `bootstrap`: percentile bootstrap resampling whole prompts; every metric takes (R, N) weights to vectorise it.
- `gsb`: Good/Same/Bad net score between two generators with its interval.
- `cost`: timing, throughput, generated tokens per item, peak memory; `speed`: several models' images/s on the same
  images, each alone.
- `runner` / `model_metrics`: score Scorers on a canonical split and compute every metric above (`zreward eval`).
- `report`, `demo_report`: report.json / report.md with plots, for `zreward eval` and `zreward demo`.
- `cli`: the `zreward eval` verb.
"""
