"""Evaluation: pure metric functions (numpy / torch in, numbers out).

- `metrics`: pairwise accuracy (non-tie; acc_23 with tie calibration; per dimension), KL / JS / W1 against
  annotator histograms, SRCC / PLCC.
- `calibration`: Thurstone P(a ≻ b), ECE with per-bin data, reliability-diagram PNG.
- `bootstrap`: percentile bootstrap resampling whole prompts; every metric takes (R, N) weights to vectorise it.
- `gsb`: Good/Same/Bad net score between two generators with its interval.
- `cost`: timing, throughput, generated tokens per item, peak memory.
- `runner` / `model_metrics`: score Scorers on a canonical split and compute every metric above (`zreward eval`).
- `report`, `demo_report`: report.json / report.md with plots, for `zreward eval` and `zreward demo`.
- `cli`: the `zreward eval` verb.
"""
