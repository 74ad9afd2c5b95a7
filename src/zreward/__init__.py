"""zreward: reward models that predict a distribution over rubric scores (Z-Reward).

Heavy modules (torch, transformers) are imported lazily so that `import zreward` and `zreward --help` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_scorer"]


def load_scorer(path_or_name, device: str = "cpu", dtype=None, add_level_tokens: bool = False, **options):
    """Load a saved `Scorer` directory, a plain HF VLM directory, or a hub name when the user has network.

    For scoring: a model whose rubric levels are not single tokens is refused (LevelTokenError naming the level and
    its pieces) rather than given new, untrained level tokens; trainers pass `add_level_tokens=True`.
    `options` (lora, gradient_checkpointing, family, config_overrides) are documented in
    `zreward.models.load.load_components`.
    """
    from zreward.models.scorer import load_scorer as _load  # deferred: `import zreward` does not load torch

    return _load(path_or_name, device=device, dtype=dtype, add_level_tokens=add_level_tokens, **options)
