"""A formula's floating-point constants, refitted and rounded against data.

`symbolic_formula` rounds the constants it could not snap to 4 significant digits: readable, but a
right formula with a constant such as 1/sqrt(2*pi) = 0.398942... then fits only to ~1e-4, and
discovery cannot tell it from an approximation (its early stop wants R² >= 1 - 1e-10). Here:

- `refit_constants`: Levenberg-Marquardt (`kan_core.lstsq`) on the formula itself, every `sympy.Float` of the
  expression a parameter (integers, fractions and multiples of pi that were snapped stay exact),
  with the Jacobian from sympy's derivatives; no constant may grow past MAX_GROWTH times its start
  (flat directions would otherwise trade exactness for absurd values); the fit is kept only when it
  lowers the RMSE;
- `round_constants`: the fewest significant digits (4, 5, 6, 8, 10, 12) that cost at most
  ``rel_tol`` of the RMSE, or bring it below ``abs_tol`` (so an exact fit keeps enough digits to stay
  exact and a noisy one goes back to 4);
- `sharpen_constants`: refit, snap the constants the refit made exactly nice (1.5000000001 -> 3/2,
  with `clean_constants` at a 1e-9 tolerance; 1e-18 -> 0), then round: what discovery does to every
  formula.

Formulas are ours (never user text); evaluation is sympy.lambdify with numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy

from kan_core.formula import clean_constants, evaluate_formula, real_values
from kan_core.lstsq import levenberg_marquardt

ROUNDING_DIGITS: tuple[int, ...] = (4, 5, 6, 8, 10, 12)
MAX_CONSTANTS = 40  # more floats than this: no refit (the formula is then no candidate for exactness anyway)
MAX_POINTS = 2000  # rows used by the refit (evenly spaced when there are more)
MAX_GROWTH = 100.0  # a refitted constant stays within this factor of max(|start|, 1)


@dataclass(frozen=True)
class ConstantFit:
    """``expr`` with the refitted constants (the input when nothing improved); RMSE before and
    after on the fitted rows; ``iterations`` accepted LM steps; ``skipped``: why nothing was fitted."""

    expr: sympy.Expr
    rmse_before: float
    rmse_after: float
    iterations: int
    n_constants: int
    skipped: str = ""


def _check(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != len(var_names) or x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x must be (N, {len(var_names)}) and y (N,), got {x.shape} and {y.shape}")
    unknown = {s.name for s in expr.free_symbols} - set(var_names)
    if unknown:
        raise ValueError(f"formula uses variables not in var_names: {sorted(unknown)}")
    return x, y


def _rmse(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> float:
    """RMSE of ``expr`` on (x, y); inf where it is not finite (or not real) on some row."""
    rmse = float(np.sqrt(np.mean((evaluate_formula(expr, var_names, x) - y) ** 2)))
    return rmse if math.isfinite(rmse) else math.inf


def refit_constants(
    expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray, *, steps: int = 30,
) -> ConstantFit:
    """Fit the Float constants of ``expr`` (over plain symbols ``var_names``) to ``x (N, n) -> y (N,)``
    by Levenberg-Marquardt, at most ``steps`` Jacobian evaluations on at most MAX_POINTS rows."""
    x, y = _check(expr, var_names, x, y)
    if not (isinstance(steps, int) and steps >= 0):
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if x.shape[0] > MAX_POINTS:
        idx = np.linspace(0, x.shape[0] - 1, MAX_POINTS).round().astype(int)
        x, y = x[idx], y[idx]
    # real symbols, so that sympy differentiates abs() and sqrt() as real functions; Dummy, so that no
    # variable name can clash with them
    reals = [sympy.Dummy(f"v{i}", real=True) for i in range(len(var_names))]
    body = expr.xreplace({sympy.Symbol(v): r for v, r in zip(var_names, reals)})
    floats = sorted(body.atoms(sympy.Float), key=lambda f: (float(f), str(f)))
    before = _rmse(expr, var_names, x, y)
    if not floats or len(floats) > MAX_CONSTANTS or steps == 0 or not math.isfinite(before):
        why = ("no constants" if not floats else f"{len(floats)} constants" if len(floats) > MAX_CONSTANTS
               else "steps = 0" if steps == 0 else "not finite on the data")
        return ConstantFit(expr, before, before, 0, len(floats), why)
    params = [sympy.Dummy(f"c{i}", real=True) for i in range(len(floats))]
    template = body.xreplace(dict(zip(floats, params)))
    derivatives = [sympy.diff(template, p) for p in params]
    if any(d.has(sympy.Derivative, sympy.Subs) for d in derivatives):
        return ConstantFit(expr, before, before, 0, len(floats), "no closed-form derivative")
    n = len(y)
    try:
        f = sympy.lambdify([*reals, *params], template, modules="numpy")
        jac = sympy.lambdify([*reals, *params], derivatives, modules="numpy")
    except (TypeError, ValueError, SyntaxError, NameError) as exc:  # a printer limit on odd expressions
        return ConstantFit(expr, before, before, 0, len(floats), f"cannot compile: {type(exc).__name__}")
    columns = list(x.T)

    def residual(theta: np.ndarray) -> np.ndarray | None:  # None where not finite (or not real)
        with np.errstate(all="ignore"):
            r = real_values(f(*columns, *theta), n) - y
        return r if np.isfinite(r).all() else None

    def jacobian(theta: np.ndarray) -> np.ndarray | None:
        with np.errstate(all="ignore"):
            out = np.stack([real_values(c, n) for c in jac(*columns, *theta)], axis=1)  # (N, P)
        return out if np.isfinite(out).all() else None

    start = np.array([float(v) for v in floats])
    # a flat direction can carry constants off to huge values that cancel each other ((u - 2e16)**2
    # terms): steps past this bound are refused, like steps that raise the loss
    bound = MAX_GROWTH * np.maximum(np.abs(start), 1.0)

    def bounded_residual(theta: np.ndarray) -> np.ndarray | None:
        return residual(theta) if np.all(np.abs(theta) <= bound) else None

    if residual(start) is None:
        return ConstantFit(expr, before, before, 0, len(floats), "not finite on the data")
    fit = levenberg_marquardt(bounded_residual, jacobian, start, steps=steps, floor=1e-30 * (1.0 + float(y @ y)))
    theta, loss, accepted = fit.theta, fit.loss, fit.iterations
    after = math.sqrt(loss / n)
    if not after < before:
        return ConstantFit(expr, before, before, accepted, len(floats), "no improvement")
    fitted = template.xreplace({p: sympy.Float(float(v), 17) for p, v in zip(params, theta)})
    fitted = fitted.xreplace({r: sympy.Symbol(v) for v, r in zip(var_names, reals)})
    return ConstantFit(fitted, before, after, accepted, len(floats))


def round_constants(
    expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray, *,
    digits: Sequence[int] = ROUNDING_DIGITS, rel_tol: float = 0.01, abs_tol: float | None = None,
) -> sympy.Expr:
    """``expr`` with its Floats rounded to the fewest of ``digits`` significant digits whose RMSE on
    (x, y) is at most ``(1 + rel_tol)`` times the unrounded one, or at most ``abs_tol`` (default
    1e-7 times the standard deviation of y: R² stays above 1 - 1e-13). Unrounded when none is."""
    x, y = _check(expr, var_names, x, y)
    if not digits or any(not (isinstance(d, int) and d >= 1) for d in digits):
        raise ValueError(f"digits must be integers >= 1, got {list(digits)}")
    floats = list(expr.atoms(sympy.Float))
    if not floats:
        return expr
    reference = _rmse(expr, var_names, x, y)
    limit = max(reference * (1 + rel_tol), 1e-7 * float(np.std(y)) if abs_tol is None else abs_tol)
    for d in sorted(digits):
        rounded = expr.xreplace({f: sympy.Float(f"{float(f):.{d}g}", d) for f in floats})
        if _rmse(rounded, var_names, x, y) <= limit:
            return rounded
    return expr


SNAP_TOL = 1e-9  # a refitted constant this close (relative) to p/q or p*pi/q is taken to be it
ZERO_TOL = 1e-12  # ...and one this small (absolute) to be 0, when the fit agrees


def sharpen_constants(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> sympy.Expr:
    """`refit_constants`; then the refitted constants within SNAP_TOL of a simple number snap to it
    (`clean_constants`: integers, p/q and p*pi/q with q <= 4); then `round_constants`."""
    fit = refit_constants(expr, var_names, x, y)
    out = _zero_tiny(clean_constants(fit.expr, digits=17, tol=SNAP_TOL), var_names, x, y)
    return round_constants(out, var_names, x, y)


def _zero_tiny(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> sympy.Expr:
    """Floats below ZERO_TOL in magnitude set to 0 (``(T - 0.86)**1.9e-18`` -> 1), kept only when
    that leaves the fit as it was (RMSE within a relative 1e-6, or below 1e-7 std(y))."""
    tiny = {f: sympy.Integer(0) for f in expr.atoms(sympy.Float) if abs(float(f)) < ZERO_TOL}
    if not tiny:
        return expr
    x, y = _check(expr, var_names, x, y)
    zeroed = expr.xreplace(tiny)
    limit = max(_rmse(expr, var_names, x, y) * (1 + 1e-6), 1e-7 * float(np.std(y)))
    return zeroed if _rmse(zeroed, var_names, x, y) <= limit else expr
