"""Array helpers every metric shares: input conversion (numpy / torch / lists → float64 numpy), item weights
(resample multiplicities, see `zreward.eval.bootstrap`), the scalar-or-vector return convention, and the
conversion of three-way judgements (pair labels, GSB verdicts) to {−1, 0, +1}."""
from __future__ import annotations

import numpy as np

__all__ = ["as_array", "as_weights", "finish", "ternary_codes"]


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


def ternary_codes(x, codes: dict[str, int], what: str, field: str, expected: str,
                  fold_case: bool = False) -> np.ndarray:
    """(N,) strings (looked up in `codes`, lower-cased first when `fold_case`) or numbers in {+1, 0, −1} → (N,) int64.

    Raises:
        ValueError naming `what`, `field` and the first bad index; `expected` says what is accepted.
    """
    arr = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{what}: {field} has shape {arr.shape}, expected (N,)")
    if arr.dtype.kind in "US" or arr.dtype == object:
        out = np.empty(arr.shape, dtype=np.int64)
        for i, v in enumerate(arr.tolist()):  # strings: small, one-off conversion
            c = (codes.get(v.lower() if fold_case else v) if isinstance(v, str)
                 else (v if v in (-1, 0, 1) else None))
            if c is None:
                raise ValueError(f"{what}: {field}[{i}] = {v!r}, expected {expected}")
            out[i] = c
        return out
    bad = ~np.isin(arr, (-1, 0, 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{what}: {field}[{i}] = {arr[i].item()!r}, expected {expected}")
    return arr.astype(np.int64)
