"""Array helpers every metric shares: input conversion (numpy / torch / lists → float64 numpy), item weights
(resample multiplicities, see `zreward.eval.bootstrap`) and the scalar-or-vector return convention."""
from __future__ import annotations

import numpy as np

__all__ = ["as_array", "as_weights", "finish"]


def as_array(x, what: str, field: str, dtype=np.float64) -> np.ndarray:
    """Converts numpy / torch / sequences to a numpy array of `dtype` (torch tensors are detached, moved to CPU).

    Raises:
        ValueError naming `what` and `field` if the values cannot be converted.
    """
    if hasattr(x, "detach"):  # torch.Tensor without importing torch here
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what}: {field}: expected numbers convertible to {np.dtype(dtype).name}, got {e}") from e


def as_weights(weights, n: int, what: str) -> tuple[np.ndarray, bool]:
    """Normalises item weights to a 2-D block.

    Args:
        weights: None (every item once), (N,) or (R, N) non-negative finite weights (resample multiplicities).
        n: number of items N.
        what: metric name for errors.

    Returns:
        (W, squeeze): W (R, N) float64; squeeze is True when the caller should return a scalar (weights was None
        or 1-D).
    """
    if weights is None:
        return np.ones((1, n)), True
    w = as_array(weights, what, "weights")
    squeeze = w.ndim == 1
    if squeeze:
        w = w[None, :]
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"{what}: weights has shape {np.shape(weights)}, expected ({n},) or (R, {n})")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{what}: weights must be finite and >= 0")
    return w, squeeze


def finish(values: np.ndarray, squeeze: bool):
    """Returns float(values[0]) when `squeeze`, else the (R,) array."""
    return float(values[0]) if squeeze else values
