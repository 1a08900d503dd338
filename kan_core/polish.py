"""Levenberg-Marquardt polish of the symbolic edges' affine parameters.

After ``auto_symbolic`` a network is a formula with a few dozen constants: ``c * f(a*x + b) + d`` on
every edge. Refitting them with LBFGS (pykan's way) stalls in the flat valleys such formulas have
(``c*log(a*x + b) + d`` is unchanged along ``(a, b) -> (s*a, s*b)``, ``d -> d - c*log(s)``), leaving
constants wrong in the third digit. Levenberg-Marquardt (`kan_core.lstsq`) on the residuals of the
training data uses the Jacobian (forward-mode, one vectorised pass per parameter) and, when the
formula is right, reaches the exact constants in a handful of iterations.

Only active symbolic edges are fitted; spline edges, if any remain, make the polish a no-op
(forward-mode differentiation does not go through the spline basis).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call, jacfwd

from kan_core.errors import TrainingCancelled
from kan_core.lstsq import levenberg_marquardt


@dataclass(frozen=True)
class PolishReport:
    """``rmse_before`` / ``rmse_after`` on the fitted points; ``iterations`` accepted LM steps;
    ``skipped``: why nothing was fitted ("" when it ran)."""

    rmse_before: float
    rmse_after: float
    iterations: int
    n_params: int
    skipped: str = ""


def polish_symbolic(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    steps: int = 50,
    max_points: int = 2000,
    should_stop: Callable[[], bool] | None = None,
) -> PolishReport:
    """Fit the affine parameters of ``model``'s active symbolic edges to ``x (B, n_in) -> y (B, n_out)``
    by Levenberg-Marquardt (at most ``steps`` Jacobian evaluations; ``max_points`` rows, evenly
    spaced, when B is larger). The parameters are changed in place only when the fit improves.
    ``should_stop()`` is asked every iteration (True raises `TrainingCancelled`, parameters kept
    at the last accepted step)."""
    if not (isinstance(steps, int) and steps >= 0 and isinstance(max_points, int) and max_points >= 2):
        raise ValueError(f"need steps >= 0 and max_points >= 2, got {steps!r} and {max_points!r}")
    model._check_input(x)
    ref = model.layers[0].sym_affine
    x = x.to(dtype=ref.dtype, device=ref.device)
    y = y.to(dtype=ref.dtype, device=ref.device)
    if y.dim() == 1:
        y = y[:, None]
    if y.shape != (x.shape[0], model.width[-1]):
        raise ValueError(f"y must have shape ({x.shape[0]}, {model.width[-1]}), got {tuple(y.shape)}")
    if x.shape[0] > max_points:
        idx = torch.linspace(0, x.shape[0] - 1, max_points, device=x.device).round().long()
        x, y = x[idx], y[idx]
    target = y.reshape(-1)

    names = [f"layers.{l}.sym_affine" for l in range(model.depth)]
    masks = {}
    for name, layer in zip(names, model.layers):
        active = (layer.mask > 0) & (layer.sym_mask > 0)  # (I, O)
        masks[name] = active.unsqueeze(-1).expand(-1, -1, 4).reshape(-1).nonzero().flatten()
    n_params = sum(len(m) for m in masks.values())
    with torch.no_grad():
        before = _rmse(model(x).reshape(-1) - target)
    if not model.is_symbolic():
        return PolishReport(before, before, 0, n_params, "spline edges remain")
    if n_params == 0 or steps == 0:
        return PolishReport(before, before, 0, n_params, "nothing to fit" if n_params == 0 else "steps = 0")
    base = {n: layer.sym_affine.detach() for n, layer in zip(names, model.layers)}

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        out, off = {}, 0
        for n in names:
            pos = masks[n]
            flat = base[n].reshape(-1).index_put((pos,), theta[off:off + len(pos)])
            out[n] = flat.reshape(base[n].shape)
            off += len(pos)
        return out

    def residual(theta: torch.Tensor) -> torch.Tensor:
        return functional_call(model, unflatten(theta), (x,)).reshape(-1) - target

    start = torch.cat([base[n].reshape(-1)[masks[n]] for n in names])

    def as_torch(theta: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(theta, dtype=start.dtype, device=start.device)

    def residual_np(theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return residual(as_torch(theta)).detach().cpu().double().numpy()

    def jacobian_np(theta: np.ndarray) -> np.ndarray:
        return jacfwd(residual)(as_torch(theta)).detach().cpu().double().numpy()  # (B*O, P)

    floor = 1e-30 * (1.0 + float(target @ target))
    fit = levenberg_marquardt(residual_np, jacobian_np, start.detach().cpu().double().numpy(), steps=steps,
                              floor=floor, should_stop=should_stop)
    _write(model, names, unflatten(as_torch(fit.theta)))
    if fit.stopped:
        raise TrainingCancelled("polish cancelled")
    return PolishReport(before, math.sqrt(fit.loss / len(target)), fit.iterations, n_params)


def _rmse(r: torch.Tensor) -> float:
    return float(r.pow(2).mean().sqrt())


@torch.no_grad()
def _write(model: torch.nn.Module, names: list[str], values: dict[str, torch.Tensor]) -> None:
    for name, layer in zip(names, model.layers):
        layer.sym_affine.copy_(values[name])
