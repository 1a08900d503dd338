"""Goodness of fit: RMSE and R², one definition for the engine and the service.

R² of a constant target (zero total variance) is decided here, once: 1.0 for an exact fit, None
(undefined) otherwise. Non-finite predictions give None for both, so a record never holds NaN.
"""

from __future__ import annotations

import math

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor


def _as_float64(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


def rmse(pred: ArrayLike, y: ArrayLike) -> float:
    """Root mean squared error of ``pred`` against ``y`` (same shape); NaN or inf pass through."""
    pred, y = _as_float64(pred), _as_float64(y)
    if pred.shape != y.shape:
        raise ValueError(f"predictions {pred.shape} and targets {y.shape} differ in shape")
    with np.errstate(all="ignore"):
        return float(np.sqrt(np.mean((pred - y) ** 2)))


def r2(pred: ArrayLike, y: ArrayLike) -> float | None:
    """Coefficient of determination of ``pred`` against ``y (M,)``: ``1 - SSE / SST``. A constant
    target (SST = 0) gives 1.0 for an exact fit and None otherwise; non-finite predictions None."""
    pred, y = _as_float64(pred).reshape(-1), _as_float64(y).reshape(-1)
    if pred.shape != y.shape:
        raise ValueError(f"predictions {pred.shape} and targets {y.shape} differ in shape")
    with np.errstate(all="ignore"):
        sse = float(np.sum((pred - y) ** 2))
    if not math.isfinite(sse):
        return None
    sst = float(np.sum((y - y.mean()) ** 2))
    if sst > 0:
        return 1.0 - sse / sst
    return 1.0 if sse == 0 else None


def fit_metrics(pred: ArrayLike, y: ArrayLike) -> dict[str, float | None]:
    """``{"rmse", "r2"}`` of ``pred (M,)`` against ``y (M,)``; None where not finite."""
    e = rmse(_as_float64(pred).reshape(-1), _as_float64(y).reshape(-1))
    return {"rmse": e if math.isfinite(e) else None, "r2": r2(pred, y)}
