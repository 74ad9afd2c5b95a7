"""The score layer's model side: VLM families, tiny builders, level readout, differentiable preprocessing, loading.

- `families`: the supported HF VLM families and how they differ (as data).
- `level_readout`: restricted-softmax readout, expectation, std, in-level mass, reward (the one implementation).
- `preprocess`: image tensor → each family's `pixel_values` with torch ops (differentiable).
- `batch`: batched model inputs with per-family padding rules.
- `load`: load model/tokenizer/preprocessing with dtype / LoRA / checkpointing, single-token level check.
- `tiny`, `tiny_tokenizer`: random small models for tests and the embedded demo (`zreward model init`).
- `scorer_config`: `zreward.json` and the per-dimension weight lookup.
- `scorer`: the `Scorer` (the one scoring contract used by trainers, eval, align and serve), `load_scorer`.
- `yesno`: the Scorer's yes/no (RewardDance) mode: the pairwise question, answer tokens, P(yes) readout.
"""
from __future__ import annotations

# Default family for the embedded demo and tests: the fastest Qwen family on CPU (benchmarks/bench_scorer.py; 1m
# preset, 1 thread, img per CPU-second direct/reasoning: qwen2_vl 85/23, qwen2_5_vl 83/23, qwen3_vl 75/21,
# qwen3_5 35/12 — Qwen3.5 runs its gated-delta-net layers through the slow PyTorch fallback on CPU).
DEFAULT_FAMILY = "qwen2_vl"
