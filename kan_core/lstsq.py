"""Damped least squares (Levenberg-Marquardt): the one solver behind `polish` and `constants`.

Both refit a few dozen constants of a formula that is already nearly right, where a
Gauss-Newton step with Marquardt's diagonal damping reaches the exact constants in a handful of
iterations. Unlike `scipy.optimize.least_squares` this loop lets the caller refuse a step (a
residual of None: not finite, or outside a bound) and treats that like a step that raises the loss
(more damping), and it can be stopped between iterations.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Residual = Callable[[np.ndarray], "np.ndarray | None"]


@dataclass(frozen=True)
class LMResult:
    """``theta`` (P,) at the last accepted step; ``loss``: its sum of squared residuals (inf when
    the start was refused); ``iterations``: accepted steps; ``stopped``: ``should_stop`` ended it."""

    theta: np.ndarray
    loss: float
    iterations: int
    stopped: bool = False


def levenberg_marquardt(
    residual: Residual,
    jacobian: Residual,
    theta: np.ndarray,
    *,
    steps: int,
    floor: float = 0.0,
    should_stop: Callable[[], bool] | None = None,
) -> LMResult:
    """Minimise ``|residual(theta)|^2`` from ``theta (P,)``, at most ``steps`` Jacobian evaluations.

    ``residual(theta) -> (N,)`` and ``jacobian(theta) -> (N, P)`` return None to refuse a point
    (not finite, out of bounds). Damping starts at 1e-3, is divided by ~3 after an accepted step and
    multiplied by 10 after a refused one (up to 1e12: then the fit has converged). Stops early when
    the loss is at most ``floor``, a step gains less than a relative 1e-12, or ``should_stop()``.
    """
    theta = np.asarray(theta, dtype=np.float64).copy()
    res = residual(theta)
    if res is None:
        return LMResult(theta, math.inf, 0)
    res = np.asarray(res, dtype=np.float64)
    loss, lam, accepted = float(res @ res), 1e-3, 0
    for _ in range(steps):
        if should_stop is not None and should_stop():
            return LMResult(theta, loss, accepted, stopped=True)
        if not math.isfinite(loss) or loss <= floor:
            break
        jac = jacobian(theta)
        if jac is None:
            break
        jac = np.asarray(jac, dtype=np.float64)  # (N, P)
        grad, hess = jac.T @ res, jac.T @ jac
        diag = np.diag(hess).copy()
        diag += 1e-12 * float(diag.max()) + 1e-300
        improved, gain = False, 0.0
        while lam <= 1e12:
            try:
                step = np.linalg.solve(hess + lam * np.diag(diag), -grad)
            except np.linalg.LinAlgError:  # singular even with damping: damp more
                lam *= 10
                continue
            new_res = residual(theta + step)
            new_loss = math.inf if new_res is None else float(np.asarray(new_res, dtype=np.float64) @ new_res)
            if math.isfinite(new_loss) and new_loss < loss:
                gain = (loss - new_loss) / loss
                theta, res, loss = theta + step, np.asarray(new_res, dtype=np.float64), new_loss
                lam, improved, accepted = max(lam * 0.3, 1e-12), True, accepted + 1
                break
            lam *= 10
        if not improved or gain < 1e-12:
            break
    return LMResult(theta, loss, accepted)
