"""Throughput of several models on the same images, each timed alone: `time_models`.

Each model scores the same images as `zreward eval` scores them (`runner.score_spec`: the mode `resolve_mode` gives,
M chains at the temperature asked for) in whole passes: one, then, when that one took less than `min_seconds`, as many
more as the first pass's time says make about `min_seconds` in all (the model loaded once more for them; at most
`MAX_PASSES` in all). A fast direct model's pass of 100–200 images takes 1–3 s, and two students' rates moved
between 74 and 109 images/s over their 5–6 passes of the same 200 images (measured); a model's images/s is the
median over its passes of each pass's reported rate (`ModelScores.reported_img_per_s`: 1 / the median over calls of
seconds per image). The models run one after the other in this process: nothing else should run on the machine (the
demo's speed stage runs when every other stage has finished). What the median does not remove: the machine's state
from one run to the next.
"""
from __future__ import annotations

import math
import statistics

import torch

from zreward.eval.runner import EvalData, ModelSpec, score_spec

__all__ = ["MAX_PASSES", "time_models"]

MAX_PASSES = 50


def time_models(specs: list[ModelSpec], data: EvalData, *, min_seconds: float = 10.0, log=print,
                **score_kw) -> dict[str, dict]:
    """{name: {img_per_s, per_pass, passes, seconds, reasoning, samples, torch_threads}} of each spec on `data`.

    Args:
        min_seconds: the timed seconds a model's passes should add up to, about (at least one pass; the number of
            passes is extrapolated from the first one, at most `MAX_PASSES`).
        score_kw: `score_spec`'s scoring options (reasoning, samples, temperature, seed, batch_size, ...).
    """
    if not (min_seconds >= 0 and math.isfinite(min_seconds)):
        raise ValueError(f"min_seconds must be finite and >= 0, got {min_seconds}")
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    out = {}
    for spec in specs:
        passes = score_spec(spec, [data], log=log, **score_kw)
        first = passes[0].seconds
        if first < min_seconds and first > 0:  # more passes over the same images, the model loaded once more
            more = min(min_seconds / first, MAX_PASSES)  # capped before ceil: a tiny first pass cannot overflow
            passes += score_spec(spec, [data] * (math.ceil(more) - 1), log=lambda *_: None, **score_kw)
        for i, p in enumerate(passes):
            if not p.seconds > 0:
                raise ValueError(f"{spec.name}: scoring pass {i + 1} over {len(p.probs)} images took {p.seconds} "
                                 "s; nothing to time")
        per_pass = [p.reported_img_per_s for p in passes]
        out[spec.name] = {"img_per_s": statistics.median(per_pass), "per_pass": per_pass, "passes": len(passes),
                          "seconds": sum(p.seconds for p in passes), "reasoning": passes[0].reasoning,
                          "samples": passes[0].samples, "torch_threads": torch.get_num_threads()}
    return out
