"""Throughput of several models on the same images, each timed alone: `time_models`.

Each model is loaded once and scores the same images as `zreward eval` scores them (`runner.score_spec`: the mode
`resolve_mode` gives, M chains at the temperature asked for), in whole passes until its timed seconds reach
`min_seconds` (a fast direct model's single pass of a few hundred images takes ≈ 2 s, and its rate moves by ±10% from
one pass to the next); its images/s is the median over its passes of each pass's reported rate
(`ModelScores.reported_img_per_s`: 1 / the median over calls of seconds per image). The models run one after the
other in this process: nothing else should run on the machine (the demo's speed stage runs when every other stage
has finished).
"""
from __future__ import annotations

import math
import statistics

from zreward.eval.runner import EvalData, ModelSpec, score_spec

__all__ = ["time_models"]


def time_models(specs: list[ModelSpec], data: EvalData, *, min_seconds: float = 10.0, log=print,
                **score_kw) -> dict[str, dict]:
    """{name: {img_per_s, per_pass, passes, seconds, reasoning, samples}} of each spec on `data`.

    Args:
        min_seconds: a model is scored in whole passes until its timed seconds reach this (at least one pass).
        score_kw: `score_spec`'s scoring options (reasoning, samples, temperature, seed, batch_size, ...).
    """
    if not min_seconds >= 0:
        raise ValueError(f"min_seconds must be >= 0, got {min_seconds}")
    out = {}
    for spec in specs:
        passes = score_spec(spec, [data], log=log, **score_kw)
        if passes[0].seconds < min_seconds:  # more passes over the same images, the model loaded once more
            more = math.ceil(min_seconds / max(passes[0].seconds, 1e-9)) - 1
            passes += score_spec(spec, [data] * more, log=lambda *_: None, **score_kw)
        per_pass = [p.reported_img_per_s for p in passes]
        out[spec.name] = {"img_per_s": statistics.median(per_pass), "per_pass": per_pass, "passes": len(passes),
                          "seconds": sum(p.seconds for p in passes), "reasoning": passes[0].reasoning,
                          "samples": passes[0].samples}
    return out
