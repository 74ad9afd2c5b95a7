"""zreward: reward models that predict a distribution over rubric scores (Z-Reward).

Heavy modules (torch, transformers) are imported lazily so that `import zreward` and `zreward --help` stay fast.
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_scorer"]


def load_scorer(path_or_name, device: str = "cpu", dtype=None):
    """Load a saved `Scorer` directory (or a hub name when the user has network). See `zreward.serve.scorer`."""
    from zreward.serve.scorer import load_scorer as _load

    return _load(path_or_name, device=device, dtype=dtype)
