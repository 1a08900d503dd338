"""Sparse regression over a dictionary of terms: ``t(y) = c_0 + sum_k c_k g_k(x)``.

A cheap first guess for formulas that are short sums of library terms (``x**3 + x**2 + x``,
``sin(x) + sin(y**2)``, ``m*(u**2 + v**2)/2``), monomials (through ``log y``), reciprocal sums
(through ``1/y``), roots of sums (``y**2``, ``1/y**2``) and low-degree rationals ``P/Q`` (of y, and of
``y**2`` with pair ratios in Q: ``w*(1 + v/c)/sqrt(1 - v**2/c**2)``)
(linearised: ``y = P - y*(Q - 1)``, columns ``y*q_k``; where Q has no constant term, as in
``(a*b + c*d)/(a + c)``, normalised by one of its terms instead: ``y*q_0 = P - y*(Q - q_0)``), and
such sums times a monomial prefactor (`_prefactors`). No network is trained: the dictionary's
columns (`kan_core.sparse_terms`) are scaled to unit norm and the support is chosen by a beam
search (`kan_core.sparse_search`) of forward selection with orthogonal projections (SINDy-like,
but exact subsets of up to ``max_terms`` terms, which thresholded least squares misses on
correlated columns such as x and x**3); the coefficients of the chosen support are then refitted on all rows, snapped to simple
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
import sympy

from kan_core import metrics
from kan_core.formula import evaluate_formula, formula_complexity
from kan_core.sparse_search import beam_search, stlsq_mixed
from kan_core.sparse_terms import Dictionary, build_dictionary, monomials, nice_number
from kan_core.threads import one_blas_thread

EXACT_REL_RMSE = 1e-7  # rmse / std(y) below this on the training rows: the formula is taken as exact
MAX_ROWS = 2000  # rows fitted (evenly spaced when there are more; the caller measures on all of them)

TIERS: tuple[int, ...] = (0, 1, 2, 3)
TRANSFORMS: tuple[str, ...] = ("y", "log", "1/y", "rational", "y^2", "1/y^2", "sqrt", "asin", "asinh", "rational-q",
                               "log(1+1/y)", "rational-y^2")
LOG_LIKE = ("log", "log(1+1/y)")  # targets whose dictionary leads with the logs of the inputs (monomials)
SPARSER_AFTER = 3  # an exact fit of more terms than this lets the later transforms (and the next tier) look for a sparser one
MAX_SINH_ARG = 30.0  # sinh(y) only for |y| up to this (beyond, its values span too many decades)
ONE_INPUT_TRANSFORMS = ("asinh",)  # rare in laws of several variables, and slow there (I.34.1's fit: 5 s -> 20 s)
PREFACTOR_AFTER_TIER = 2  # after this tier, y divided by its monomial prefactor is tried (tiers up to this one)
PREFACTOR_TOL = 0.15  # an exponent of the log-log fit this close to an integer is taken as that
# the highest tier tried with these transforms
MAX_TIER = {"rational": 2, "rational-q": 1, "y^2": 3, "1/y^2": 1, "sqrt": 1, "log(1+1/y)": 1, "rational-y^2": 1}


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
    with one_blas_thread():  # small least-squares problems: threads cost more than they gain
        return _fit_sparse(X, y, names, max_terms, transforms, beam, should_stop, max_seconds, max_results)


def _fit_sparse(X: np.ndarray, y: np.ndarray, names: Sequence[str], max_terms: int, transforms: Sequence[str],
                beam: int, should_stop: Callable[[], bool] | None, max_seconds: float | None,
                max_results: int, *, tiers: Sequence[int] = TIERS, full: Dictionary | None = None,
                prefactor: bool = True) -> list[SparseFit]:
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
    full = build_dictionary(X, symbols) if full is None else full
    y_std = float(np.std(y))
    tol = EXACT_REL_RMSE * y_std if y_std > 0 else 1e-300
    found: dict[tuple[str, str, tuple[int, ...], int], _Raw] = {}
    sparsest, exact_tier = max_terms + 1, None  # terms of the sparsest exact fit so far, and its tier
    short = min(SPARSER_AFTER, max_terms)  # an exact fit of at most this many terms ends the search
    for tier in tiers:
        fewest = sparsest - 1  # after an exact fit, later transforms and the next tier only look for sparser ones
        if tier == PREFACTOR_AFTER_TIER + 1 and prefactor and exact_tier is None and not stop():
            scaled = _with_prefactor(X, y, names, symbols, tol, lambda z: _fit_sparse(
                X, z, names, max_terms, transforms, beam, stop, None, max_results,
                tiers=TIERS[: PREFACTOR_AFTER_TIER + 1], full=full, prefactor=False))
            if scaled:
                return scaled[:max_results]
        for name in transforms:
            if stop():
                break
            wanted = tier <= MAX_TIER.get(name, TIERS[-1]) and (X.shape[1] == 1 or name not in ONE_INPUT_TRANSFORMS)
            for target in _targets(name, y, X, symbols) if wanted else []:
                if stop():
                    break
                cols = _columns(full, tier, target, X, symbols, y)
                supports = beam_search(cols.values, target.t, fewest, beam, stop)
                new = [r for s in supports if (r := _refit(cols, s, target, y)) is not None]
                if not any(r.rmse <= tol for r in new) and not stop():
                    new += [r for s in stlsq_mixed(cols, supports, target.t, fewest, stop) if (r := _refit(cols, s, target, y))]
                for r in new:
                    found.setdefault((name, str(target.den0[0]), r.support, tier), r)
                exact_terms = [len(r.support) for r in new if r.rmse <= tol]
                if exact_terms:  # a rational of 6 terms can pass for exact on a short range (1/sqrt(1 - u**2)):
                    sparsest = min(sparsest, *exact_terms)  # the transforms after it may still hold a sparser one
                    fewest = sparsest - 1
                    break
            if sparsest <= short:
                break  # transforms are in order of preference: a short exact fit is kept
        exact_tier = tier if exact_tier is None and sparsest <= max_terms else exact_tier
        # a long exact fit (a 6-term series of log y for exp(u) - 1 on a short range) lets the next
        # tier, whose functions it lacked, look for a sparser one; a short one ends the search
        if stop() or sparsest <= short or (exact_tier is not None and tier > exact_tier):
            break
    exact = sorted((r for r in found.values() if r.rmse <= tol), key=lambda r: len(r.support))
    chosen = exact[: 2 * max_results] or sorted(found.values(), key=lambda r: r.rmse)[:max_results]
    fits = [f for r in chosen if (f := _to_formula(r, X, y, names, tol)) is not None]
    return _rank(fits)[:max_results]


def _prefactors(X: np.ndarray, y: np.ndarray, symbols: list) -> list[tuple[sympy.Expr, np.ndarray]]:
    """Monomials ``prod x_i**p_i`` (p_i a nonzero integer, inputs > 0 only) that the least-squares
    fit of ``log|y|`` on the inputs' logs comes within PREFACTOR_TOL of in each exponent: the
    units-like factor of ``m*c**2/sqrt(1 - v**2/c**2)``, whose rest is simpler. One from the plain
    fit, one from a trimmed fit (the rows the rest of y takes far from a monomial, as log|sin| near
    0, left out), where they differ; none is 1."""
    pos = [i for i in range(X.shape[1]) if float(X[:, i].min()) > 0 and np.ptp(np.log(X[:, i])) > 1e-3]
    a = np.abs(y)
    rows = a > 1e-3 * float(np.median(a)) if float(np.median(a)) > 0 else a > 0
    if not pos or rows.sum() < 8:
        return []
    A = np.column_stack([np.ones(int(rows.sum())), np.log(X[rows][:, pos])])  # (R, 1 + k)
    t = np.log(a[rows])
    keep_rows = np.ones(len(t), dtype=bool)
    out: list[tuple[sympy.Expr, np.ndarray]] = []
    for trim in range(4):
        coef = np.linalg.lstsq(A[keep_rows], t[keep_rows], rcond=None)[0]
        res = np.abs(t - A @ coef)
        keep_rows = res <= np.quantile(res, 0.7)
        if trim not in (0, 3):
            continue
        whole = np.round(coef[1:])
        keep = [(pos[k], int(h)) for k, h in enumerate(whole) if h != 0 and abs(coef[1 + k] - h) <= PREFACTOR_TOL]
        expr = sympy.Mul(*(symbols[i] ** p for i, p in keep))
        if keep and all(expr != e for e, _ in out):
            out.append((expr, np.prod([X[:, i] ** float(p) for i, p in keep], axis=0)))
    return out


def _with_prefactor(X: np.ndarray, y: np.ndarray, names: list[str], symbols: list, tol: float,
                    fit: Callable[[np.ndarray], list[SparseFit]]) -> list[SparseFit]:
    """The exact fits of ``y / M`` (``fit(y / M)``, M each of `_prefactors`) times M, measured on
    y, from the first M that has one; [] if none has."""
    for M, values in _prefactors(X, y, symbols):
        out = []
        for f in fit(y / values):
            if f.exact:
                expr = M * f.expr
                pred = evaluate_formula(expr, names, X)
                if np.isfinite(pred).all() and (error := metrics.rmse(pred, y)) <= tol:
                    out.append(SparseFit(expr, f"{f.transform}*monomial", f.n_terms, error, metrics.r2(pred, y),
                                         formula_complexity(expr), True))
        if out:
            return _rank(out)
    return []


# ----------------------------------------------------------------------------------------------
# target transforms and columns


@dataclass(frozen=True)
class _Target:
    name: str
    t: np.ndarray  # (N,) the transformed target
    back: Callable[[sympy.Expr], sympy.Expr]  # formula of t -> formula of y
    back_values: Callable[[np.ndarray], np.ndarray]  # values of t -> values of y
    den0: tuple[sympy.Expr, np.ndarray] = (sympy.Integer(1), np.ones(1))  # rational: Q's normalised term
    base: np.ndarray | None = None  # rational: what P/Q fits (y, or y**2 for "rational-y^2"); None: y

    @property
    def rational(self) -> bool:
        return self.name in ("rational", "rational-q", "rational-y^2")


def _targets(name: str, y: np.ndarray, X: np.ndarray, symbols: list) -> list[_Target]:
    """The targets of transform ``name``: one, except for ``rational-q`` (``y*q_0`` for each
    q_0 = x_i, x_i**2 that varies); [] where the transform is invalid for y."""
    if name != "rational-q":
        target = _transform(name, y)
        return [] if target is None else [target]
    out = []
    for i, s in enumerate(symbols):
        for p in (1, 2):
            q = X[:, i] ** p
            if np.ptp(q) > 0:
                out.append(_Target(name, y * q, lambda e: e, lambda v: v, (s**p, q)))
    return out


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
        if name == "rational-y^2" and (pos or neg):  # y = sqrt(P/Q): w*(1 + v/c)/sqrt(1 - v**2/c**2)
            return _Target(name, y**2, lambda e: sign * sympy.sqrt(e), lambda v: sign * np.sqrt(v), base=y**2)
        if name == "log(1+1/y)" and pos:  # y = 1/(exp(z) - 1), z a monomial: Bose-Einstein, Planck
            t = np.log(np.log1p(1.0 / y))
            if np.isfinite(t).all():
                return _Target(name, t, lambda e: 1 / (sympy.exp(sympy.exp(e)) - 1),
                               lambda v: 1.0 / np.expm1(np.exp(v)))
    return None


def _columns(full: Dictionary, tier: int, target: _Target, X: np.ndarray, symbols: list, y: np.ndarray) -> Dictionary:
    """The dictionary of ``tier`` for ``target``: for ``log y``, the logs of the inputs
    (monomials) one tier ahead of the rest; for the rationals, plus the ``y*q`` columns (but the
    normalised term's)."""
    if target.name in LOG_LIKE:
        logs = full.logs()
        below = tier - 1 if tier < TIERS[-1] else tier  # the widest tier has every term
        if tier == 0:
            return logs
        rest = logs.concat(full.select(np.flatnonzero(
            (full.tiers <= below) & ~np.isin(np.arange(len(full.exprs)), _log_index(full)))))
        return rest.concat(monomials(X, symbols, set(full.exprs)))
    cols = full.upto(tier)
    if not target.rational:
        return cols
    base = y if target.base is None else target.base
    return cols.with_rational(X, symbols, base, exclude=target.den0[0], ratios=target.base is not None)


def _log_index(full: Dictionary) -> list[int]:
    return [j for j, e in enumerate(full.exprs) if isinstance(e, sympy.log) and e.args[0].is_Symbol]


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
        if target.rational:
            dens = [k for k, j in enumerate(support, 1) if j in cols.denominators]
            num = M[:, [k for k in range(M.shape[1]) if k not in dens]] @ coef[[k for k in range(M.shape[1])
                                                                                 if k not in dens]]
            den = target.den0[1] - sum(coef[k] * cols.denominators[support[k - 1]][1] for k in dens)
            pred = target.back_values(num / den)
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
    if raw.target.rational:
        num = _number(coef[0]) + sum(c * e for c, e, j in terms if j not in cols.denominators)
        den = raw.target.den0[0] - sum(c * cols.denominators[j][0] for c, _, j in terms if j in cols.denominators)
        expr = raw.target.back(num / den)
    else:
        expr = raw.target.back(_number(coef[0]) + sum(c * e for c, e, _ in terms))
    if raw.target.name in LOG_LIKE:  # exp(c + a*log(x) + ...) -> e^c * x**a * ...
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
