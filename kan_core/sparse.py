"""Sparse regression over a dictionary of terms: ``t(y) = c_0 + sum_k c_k g_k(x)``.

A cheap first guess for formulas that are short sums of library terms (``x**3 + x**2 + x``,
``sin(x) + sin(y**2)``, ``m*(u**2 + v**2)/2``), monomials (through ``log y``), reciprocal sums
(through ``1/y``), roots of sums (``y**2``, ``1/y**2``) and low-degree rationals ``P/Q``
(linearised: ``y = P - y*(Q - 1)``, columns ``y*q_k``). No network is trained: the dictionary's
columns (`kan_core.sparse_terms`) are scaled to unit norm and the support is chosen by a beam
search of forward selection with orthogonal projections (SINDy-like, but exact subsets of up to
``max_terms`` terms, which thresholded least squares misses on correlated columns such as x and
x**3); the coefficients of the chosen support are then refitted on all rows, snapped to simple
numbers where that costs nothing, and the formula is mapped back through the target transform.

`fit_sparse` is the entry point; it never raises for data it cannot fit (it returns fewer or no
candidates) and checks ``should_stop`` / ``max_seconds`` between transforms and selection steps.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import sympy

from kan_core import metrics
from kan_core.formula import evaluate_formula, formula_complexity
from kan_core.sparse_terms import Dictionary, build_dictionary, nice_number

EXACT_REL_RMSE = 1e-7  # rmse / std(y) below this on the training rows: the formula is taken as exact
MAX_ROWS = 2000  # rows fitted (evenly spaced when there are more; the caller measures on all of them)
SELECT_ROWS = 400  # rows used by the support search (evenly spaced); refits use every row
STLSQ_MAX_COLUMNS = 250  # thresholded least squares only on dictionaries up to this wide
MIN_PROJECTED_NORM = 1e-7  # a column this close to the span of the chosen ones is skipped

TIERS: tuple[int, ...] = (0, 1, 2, 3)
TRANSFORMS: tuple[str, ...] = ("y", "log", "1/y", "rational", "y^2", "1/y^2", "sqrt", "asin", "asinh")
MAX_SINH_ARG = 30.0  # sinh(y) only for |y| up to this (beyond, its values span too many decades)
ONE_INPUT_TRANSFORMS = ("asinh",)  # rare in laws of several variables, and slow there (I.34.1's fit: 5 s -> 20 s)
MAX_TIER = {"rational": 2, "y^2": 2, "1/y^2": 1, "sqrt": 1}  # the highest tier tried with these transforms


@dataclass(frozen=True)
class SparseFit:
    """One candidate: ``expr`` (sympy, plain symbols named like the inputs) fitted with target
    transform ``transform``; ``n_terms`` dictionary terms besides the constant; RMSE and R² on the
    rows it was fitted to (original units; `kan_core.metrics`, so R² is None for an inexact fit of a
    constant target); ``exact`` when rmse/std(y) < EXACT_REL_RMSE."""

    expr: sympy.Expr
    transform: str
    n_terms: int
    rmse: float
    r2: float | None
    complexity: int
    exact: bool


def fit_sparse(
    X: np.ndarray,
    y: np.ndarray,
    names: Sequence[str],
    *,
    max_terms: int = 6,
    transforms: Sequence[str] = TRANSFORMS,
    beam: int = 4,
    should_stop: Callable[[], bool] | None = None,
    max_seconds: float | None = None,
    max_results: int = 6,
) -> list[SparseFit]:
    """Candidates for ``y ~ f(X)`` (``X (N, n)``, ``y (N,)``, variables ``names``), best first:
    exact fits by ascending complexity, then the rest by ascending RMSE; at most ``max_results``.
    At most MAX_ROWS rows are used. Terms are tried in tiers, simplest first (powers and monomials; functions of one variable;
    functions of pairs), each tier with every transform; the first tier with an exact fit ends the
    search. Returns what it has when ``should_stop()`` is True or after ``max_seconds``."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    names = [str(n) for n in names]
    if X.ndim != 2 or X.shape[1] != len(names) or X.shape[0] != y.shape[0]:
        raise ValueError(f"X must be (N, {len(names)}) and y (N,), got {X.shape} and {y.shape}")
    if not (isinstance(max_terms, int) and max_terms >= 1):
        raise ValueError(f"max_terms must be an integer >= 1, got {max_terms!r}")
    unknown = [t for t in transforms if t not in TRANSFORMS]
    if unknown:
        raise ValueError(f"unknown transform(s) {unknown}; known: {', '.join(TRANSFORMS)}")
    if X.shape[0] < 8 or not (np.isfinite(X).all() and np.isfinite(y).all()):
        return []
    if X.shape[0] > MAX_ROWS:  # the dictionary is (rows, up to 3000 columns): bound its memory
        rows = np.linspace(0, X.shape[0] - 1, MAX_ROWS).round().astype(int)
        X, y = X[rows], y[rows]
    deadline = None if max_seconds is None else time.monotonic() + max_seconds

    def stop() -> bool:
        return (should_stop is not None and should_stop()) or (deadline is not None and time.monotonic() >= deadline)

    symbols = [sympy.Symbol(n) for n in names]
    full = build_dictionary(X, symbols)
    y_std = float(np.std(y))
    tol = EXACT_REL_RMSE * y_std if y_std > 0 else 1e-300
    found: dict[tuple[str, tuple[int, ...], int], _Raw] = {}
    for tier in TIERS:
        for name in transforms:
            if stop():
                break
            wanted = tier <= MAX_TIER.get(name, TIERS[-1]) and (X.shape[1] == 1 or name not in ONE_INPUT_TRANSFORMS)
            target = _transform(name, y) if wanted else None
            if target is None:
                continue
            cols = _columns(full, tier, name, X, symbols, y)
            supports = _beam_search(cols.values, target.t, max_terms, beam, stop)
            raws = [r for s in supports if (r := _refit(cols, s, target, y)) is not None]
            if not any(r.rmse <= tol for r in raws) and not stop():
                raws += [r for s in _stlsq_mixed(cols, supports, target.t, max_terms) if (r := _refit(cols, s, target, y))]
            for r in raws:
                found.setdefault((name, r.support, tier), r)
            if any(r.rmse <= tol for r in raws):
                break  # transforms are in order of preference: the first exact one is kept
        if stop() or any(r.rmse <= tol for r in found.values()):
            break
    exact = sorted((r for r in found.values() if r.rmse <= tol), key=lambda r: len(r.support))
    chosen = exact[: 2 * max_results] or sorted(found.values(), key=lambda r: r.rmse)[:max_results]
    fits = [f for r in chosen if (f := _to_formula(r, X, y, names, tol)) is not None]
    return _rank(fits)[:max_results]


# ----------------------------------------------------------------------------------------------
# target transforms and columns


@dataclass(frozen=True)
class _Target:
    name: str
    t: np.ndarray  # (N,) the transformed target
    back: Callable[[sympy.Expr], sympy.Expr]  # formula of t -> formula of y
    back_values: Callable[[np.ndarray], np.ndarray]  # values of t -> values of y


def _transform(name: str, y: np.ndarray) -> _Target | None:
    """The transformed target and its inverse maps, or None where the transform is invalid for y."""
    pos, neg = bool((y > 0).all()), bool((y < 0).all())
    sign = 1 if pos else -1
    with np.errstate(all="ignore"):
        if name in ("y", "rational"):
            return _Target(name, y, lambda e: e, lambda v: v)
        if name == "log" and (pos or neg):
            return _Target(name, np.log(sign * y), lambda e: sign * sympy.exp(e), lambda v: sign * np.exp(v))
        if name == "1/y" and (pos or neg):
            return _Target(name, 1.0 / y, lambda e: 1 / e, lambda v: 1.0 / v)
        if name == "y^2" and (pos or neg):
            return _Target(name, y**2, lambda e: sign * sympy.sqrt(e), lambda v: sign * np.sqrt(v))
        if name == "1/y^2" and (pos or neg):
            return _Target(name, y**-2.0, lambda e: sign / sympy.sqrt(e), lambda v: sign / np.sqrt(v))
        if name == "sqrt" and bool((y >= 0).all()):
            return _Target(name, np.sqrt(y), lambda e: e**2, lambda v: v**2)
        if name == "asin" and float(np.abs(y).max()) <= math.pi / 2:
            return _Target(name, np.sin(y), sympy.asin, np.arcsin)
        if name == "asinh" and float(np.abs(y).max()) <= MAX_SINH_ARG:
            return _Target(name, np.sinh(y), sympy.asinh, np.arcsinh)
    return None


def _columns(full: Dictionary, tier: int, name: str, X: np.ndarray, symbols: list, y: np.ndarray) -> Dictionary:
    """The dictionary of ``tier`` for transform ``name``: for ``log y``, the logs of the inputs
    (monomials) one tier ahead of the rest; for ``rational``, plus the ``y*q`` columns."""
    if name == "log":
        logs = full.logs()
        below = tier - 1 if tier < TIERS[-1] else tier  # the widest tier has every term
        return logs if tier == 0 else logs.concat(full.select(np.flatnonzero(
            (full.tiers <= below) & ~np.isin(np.arange(len(full.exprs)), _log_index(full)))))
    cols = full.upto(tier)
    return cols.with_rational(X, symbols, y) if name == "rational" else cols


def _log_index(full: Dictionary) -> list[int]:
    return [j for j, e in enumerate(full.exprs) if isinstance(e, sympy.log) and e.args[0].is_Symbol]


# ----------------------------------------------------------------------------------------------
# support search


def _prepare(A: np.ndarray, t: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``rows`` of A and t, centred (the constant is always in the model), columns scaled to
    unit norm; ``ok``: the columns that are not constant."""
    A = A[rows] - A[rows].mean(axis=0)
    t = t[rows] - t[rows].mean()
    norms = np.linalg.norm(A, axis=0)
    ok = norms > 1e-12 * (1.0 + norms.max(initial=0.0))
    return np.where(ok, A / np.where(ok, norms, 1.0), 0.0), t, ok


def _beam_search(
    A: np.ndarray, t: np.ndarray, max_terms: int, beam: int, stop: Callable[[], bool]
) -> list[tuple[int, ...]]:
    """Supports (sorted column indices) of sizes 1..max_terms with small least-squares residual
    for ``t ~ c_0 + A[:, S] c`` on at most SELECT_ROWS rows: the best of each size along a beam of
    forward-selection paths (each path keeps A projected off its chosen columns); stops after the
    first size that fits t to rounding error."""
    n = A.shape[0]
    rows = np.linspace(0, n - 1, min(n, SELECT_ROWS)).round().astype(int)
    A, t, ok = _prepare(A, t, rows)
    tss = float(t @ t)
    if tss <= 1e-300 or A.shape[1] == 0:
        return []
    # a state: (support, A projected off the support's span, the squared norms of those columns, residual)
    states: list[tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]] = [((), A, ok.astype(float), t)]
    found: list[tuple[int, ...]] = []
    for _ in range(max_terms):
        if stop() or not states:
            break
        pool: dict[tuple[int, ...], tuple[float, int, int]] = {}
        for s, (support, P, pn2, r) in enumerate(states):
            valid = ok & (pn2 > MIN_PROJECTED_NORM**2)
            valid[list(support)] = False
            score = np.where(valid, (r @ P) ** 2 / np.where(valid, pn2, 1.0), -1.0)
            k = min(beam, int(valid.sum()))
            for j in np.argpartition(-score, k - 1)[:k] if k else []:
                key = tuple(sorted((*support, int(j))))
                rss = float(r @ r) - float(score[j])
                if key not in pool or rss < pool[key][0]:
                    pool[key] = (rss, s, int(j))
        new = []
        for key, (_, s, j) in sorted(pool.items(), key=lambda kv: kv[1][0])[:beam]:
            _, P, pn2, r = states[s]
            q = P[:, j] / np.linalg.norm(P[:, j])  # (R,) the new direction
            qP = q @ P  # (D,)
            new.append((key, P - np.outer(q, qP), pn2 - qP**2, r - q * (q @ r)))
        states = new
        if not states:
            break
        found.append(states[0][0])
        if float(states[0][3] @ states[0][3]) <= 1e-20 * tss:
            return found
    # no exact path: swap moves on each support (a wrong early pick stays on every forward path)
    refined = [s for s in (_swap(A, t, ok, s, stop) for s in found if len(s) >= 2) if s not in found]
    return found + refined


def _best_addition(A: np.ndarray, t: np.ndarray, ok: np.ndarray, base: list[int]) -> tuple[float, int]:
    """(residual sum of squares, column) of the best column to add to ``base``; (inf, -1) if none."""
    if base:
        Q = np.linalg.qr(A[:, base])[0]  # (R, k)
        P, r = A - Q @ (Q.T @ A), t - Q @ (Q.T @ t)
    else:
        P, r = A, t
    pn2 = np.einsum("ij,ij->j", P, P)
    valid = ok & (pn2 > MIN_PROJECTED_NORM**2)
    valid[base] = False
    if not valid.any():
        return math.inf, -1
    score = np.where(valid, (r @ P) ** 2 / np.where(valid, pn2, 1.0), -1.0)
    j = int(np.argmax(score))
    return float(r @ r) - float(score[j]), j


def _swap(A: np.ndarray, t: np.ndarray, ok: np.ndarray, support: tuple[int, ...],
          stop: Callable[[], bool], rounds: int = 3) -> tuple[int, ...]:
    """``support`` after swap moves (drop one column, add the best other one) while they lower the
    residual, at most ``rounds`` passes."""
    best = list(support)
    best_rss = _best_addition(A, t, ok, best[:-1])[0] if len(best) > 1 else math.inf
    for _ in range(rounds):
        improved = False
        for i in range(len(best)):
            if stop():
                return tuple(sorted(best))
            base = best[:i] + best[i + 1:]
            rss, j = _best_addition(A, t, ok, base)
            if j >= 0 and j != best[i] and rss < best_rss * (1 - 1e-9):
                best, best_rss, improved = base + [j], rss, True
                break
        if not improved:
            break
    return tuple(sorted(best))


def _stlsq(A: np.ndarray, t: np.ndarray, max_terms: int) -> list[tuple[int, ...]]:
    """Sequentially thresholded least squares (SINDy), for the case where the whole dictionary
    fits t exactly but forward selection took a wrong first step: from the full least-squares fit,
    drop the columns with small scaled coefficients while the fit stays exact. [] unless an exact
    support of at most ``max_terms`` columns comes out (or when the dictionary is too wide)."""
    n, d = A.shape
    if d == 0 or d > STLSQ_MAX_COLUMNS or 1.5 * d > n:
        return []
    rows = np.linspace(0, n - 1, min(n, max(SELECT_ROWS, int(1.5 * d)))).round().astype(int)
    A, t, ok = _prepare(A, t, rows)
    limit = 1e-20 * float(t @ t)
    keep = np.flatnonzero(ok)
    coef = _lstsq(A[:, keep], t)
    r = t - A[:, keep] @ coef
    if float(r @ r) > limit:
        return []
    for thr in (1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        small = np.abs(coef) < thr * np.abs(coef).max()
        if not small.any():
            continue
        trial = keep[~small]
        c = _lstsq(A[:, trial], t)
        r = t - A[:, trial] @ c
        if float(r @ r) > limit:
            break
        keep, coef = trial, c
    return [tuple(int(j) for j in keep)] if 0 < len(keep) <= max_terms else []


def _stlsq_mixed(cols: Dictionary, supports: list[tuple[int, ...]], t: np.ndarray,
                 max_terms: int) -> list[tuple[int, ...]]:
    """`_stlsq` on the whole dictionary where it is narrow enough; otherwise on its simplest terms
    plus every column the forward search picked: ``I1 + I2 + 2*sqrt(I1*I2)*cos(d)``, where the
    search finds the cosine term but approximates ``I1 + I2`` by other products."""
    if cols.values.shape[1] <= STLSQ_MAX_COLUMNS:
        return _stlsq(cols.values, t, max_terms)
    picked = sorted({j for s in supports for j in s})
    low = np.flatnonzero(cols.tiers <= 1)
    if len(low) + len(picked) > STLSQ_MAX_COLUMNS:
        low = np.flatnonzero(cols.tiers == 0)
    sub = np.union1d(low, np.array(picked, dtype=int))
    if len(sub) > STLSQ_MAX_COLUMNS:
        return []
    return [tuple(int(sub[k]) for k in s) for s in _stlsq(cols.values[:, sub], t, max_terms)]


def _lstsq(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least squares by pivoted QR (LAPACK gelsy: several times faster than numpy's SVD here)."""
    return scipy.linalg.lstsq(A, t, lapack_driver="gelsy", check_finite=False)[0]


# ----------------------------------------------------------------------------------------------
# refit, snap, map back


@dataclass(frozen=True)
class _Raw:
    cols: Dictionary
    support: tuple[int, ...]
    coef: np.ndarray  # (1 + k,) constant first
    target: _Target
    rmse: float  # original units, all rows


def _refit(cols: Dictionary, support: tuple[int, ...], target: _Target, y: np.ndarray) -> _Raw | None:
    """Least squares of the support on every row (scaled columns), coefficients snapped to nice
    numbers where the fit allows, and the RMSE of the result in y's units (None if not finite)."""
    if not support:
        return None
    t = target.t
    M = np.column_stack([np.ones(len(t)), cols.values[:, list(support)]])  # (N, 1 + k)
    scale = np.linalg.norm(M, axis=0)
    scale[scale == 0] = 1.0
    if np.linalg.cond(M / scale) > 1e12:
        return None
    coef = _snap(M, t, np.linalg.lstsq(M / scale, t, rcond=None)[0] / scale)
    with np.errstate(all="ignore"):
        if target.name == "rational":
            dens = [k for k, j in enumerate(support, 1) if j in cols.denominators]
            num = M[:, [k for k in range(M.shape[1]) if k not in dens]] @ coef[[k for k in range(M.shape[1])
                                                                                 if k not in dens]]
            den = 1.0 - sum(coef[k] * cols.denominators[support[k - 1]][1] for k in dens)
            pred = num / den
        else:
            pred = target.back_values(M @ coef)
    rmse = float(np.sqrt(np.mean((pred - y) ** 2)))
    return _Raw(cols, support, coef, target, rmse) if math.isfinite(rmse) else None


def _snap(M: np.ndarray, t: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Coefficients within a relative 1e-6 of a nice number (integer, p/q, p*pi/q; tiny -> 0) are
    fixed to it and the others refitted, when that leaves the residual within 1e-6 relative (or at
    rounding level); otherwise ``coef`` unchanged."""
    fixed = {i: float(v) for i, c in enumerate(coef) if (v := nice_number(float(c))) is not None}
    if not fixed:
        return coef
    free = [i for i in range(len(coef)) if i not in fixed]
    rest = t - M[:, list(fixed)] @ np.array(list(fixed.values()))
    out = coef.copy()
    for i, v in fixed.items():
        out[i] = v
    if free:
        out[free] = np.linalg.lstsq(M[:, free], rest, rcond=None)[0]
    before = float(np.linalg.norm(M @ coef - t))
    after = float(np.linalg.norm(M @ out - t))
    floor = 1e-12 * (1.0 + float(np.linalg.norm(t)))
    return out if after <= max(before * (1 + 1e-6), floor) else coef


def _to_formula(raw: _Raw, X: np.ndarray, y: np.ndarray, names: list[str], tol: float) -> SparseFit | None:
    """The sympy formula of a refitted support in y's units, measured again from the formula."""
    cols, coef = raw.cols, raw.coef
    terms = [(_number(c), cols.exprs[j], j) for c, j in zip(coef[1:], raw.support)]
    if raw.target.name == "rational":
        num = _number(coef[0]) + sum(c * e for c, e, j in terms if j not in cols.denominators)
        den = 1 - sum(c * cols.denominators[j][0] for c, _, j in terms if j in cols.denominators)
        expr = num / den
    else:
        expr = raw.target.back(_number(coef[0]) + sum(c * e for c, e, _ in terms))
    if raw.target.name == "log":  # exp(c + a*log(x) + ...) -> e^c * x**a * ...
        expr = sympy.powsimp(sympy.expand(expr, power_exp=True, mul=False, multinomial=False, log=False))
        expr = expr.replace(lambda e: isinstance(e, sympy.exp) and e.args[0].has(sympy.log),
                            lambda e: sympy.powdenest(e, force=True))  # exp(y*log(x)) -> x**y (x > 0 here)
    pred = evaluate_formula(expr, names, X)
    if not np.isfinite(pred).all():
        return None
    error = metrics.rmse(pred, y)
    return SparseFit(expr, raw.target.name, len(raw.support), error, metrics.r2(pred, y), formula_complexity(expr),
                     error <= tol)


def _number(v: float) -> sympy.Expr:
    """An exact number when ``v`` is (to 1e-12) a nice one, else a Float."""
    nice = nice_number(float(v), tol=1e-12)
    return nice if nice is not None else sympy.Float(float(v))


def _rank(fits: list[SparseFit]) -> list[SparseFit]:
    exact = sorted((f for f in fits if f.exact), key=lambda f: (f.complexity, f.rmse))
    rest = sorted((f for f in fits if not f.exact), key=lambda f: (f.rmse, f.complexity))
    seen: set[str] = set()
    out = []
    for f in exact + rest:
        key = str(f.expr)
        if key not in seen:
            seen.add(key)
            out.append(f)
    return out
