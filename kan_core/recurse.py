"""Divide and conquer on a formula's structure (AI Feynman's recursion, with KAN leaves).

`solve_structure(x, y, x_test, y_test, names, ...)` fits a surrogate (`kan_core.structure`), then,
first that applies:

1. additive split ``f = a_1(x_G1) + ... + a_k(x_Gk)``: every part but the largest is solved on the
   surrogate's values with the other variables held at a data row, the largest on the real
   residuals ``y - sum of the others``;
2. multiplicative split ``f = a_1(x_G1) * ... * a_k(x_Gk)`` (f of one sign), the same with ``y / prod``;
3. a symmetry of a pair: ``x_i - x_j``, ``x_i + x_j``, ``x_i / x_j`` or ``x_i * x_j`` becomes one new
   variable (real data, one variable fewer);
4. an invertible transform of the target (square, inverse, inverse square, sqrt) under which the
   target splits additively: the split runs on the transformed real data, the result is inverted;
5. otherwise a leaf: the remaining (smaller) problem goes to ``leaf_solver(problem, seconds,
   should_stop) -> (formula | None, info)`` (discovery passes its own candidates, with `sparse_leaf`
   first); one variable entering as ``x**2`` only is first replaced by ``u = x**2``.

Every node records the test that justified it (`kan_core.structure.StructureTest.to_dict`); the
tree (`StructureResult.tree`, JSON) says how the formula was built. Parts are composed back and the
constants of the whole formula refitted together on the real data (`kan_core.constants`).
``should_stop`` and the deadline are checked before every surrogate fit, test round and leaf.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sympy

from kan_core import metrics
from kan_core.constants import sharpen_constants
from kan_core.errors import TrainingCancelled
from kan_core.formula import clean_constants, evaluate_formula
from kan_core.sparse import fit_sparse
from kan_core.structure import TRANSFORMS, Surrogate, StructureTest, even_test, find_symmetries, fit_surrogate, separable_groups

MAX_DEPTH = 6
SPLIT_TRANSFORMS = ("square", "inverse", "inverse_square", "sqrt")
EXACT_R2 = 1 - 1e-9  # a leaf on real data this good ends its search


@dataclass
class Problem:
    """A (sub)problem: rows ``x (N, n)`` -> ``y (N,)`` and a test split, variables ``names``;
    ``approximate``: the targets come from the surrogate (exact only to its error ``noise``)."""

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    names: tuple[str, ...]
    approximate: bool = False
    noise: float = 0.0

    @property
    def n_var(self) -> int:
        return self.x.shape[1]

    def target_r2(self, factor: float = 5.0) -> float:
        """R² at which a leaf counts as solved: numerical precision on real data; on surrogate data,
        an error within ``factor`` times the surrogate's (2 for a leaf that ends the search at once,
        5 for the simplest of those found)."""
        if not self.approximate:
            return EXACT_R2
        rel = self.noise / (float(np.std(self.y)) + 1e-300)
        return 1 - max(1e-9, (factor * rel) ** 2)


LeafSolver = Callable[[Problem, float, Callable[[], bool]], "tuple[sympy.Expr | None, dict[str, Any]]"]


@dataclass
class _Context:
    deadline: float
    should_stop: Callable[[], bool] | None
    leaf_solver: LeafSolver
    seed: int
    require_structure: bool = False
    counter: list[int] = field(default_factory=lambda: [0])
    shares: list[float] = field(default_factory=list)  # the first part of a split leaves time for the second

    def stop(self) -> bool:
        return (self.should_stop is not None and self.should_stop()) or time.monotonic() >= self.deadline

    def check(self) -> None:
        if self.stop():
            raise TrainingCancelled("structure search stopped")

    def left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def fresh_name(self, taken: Sequence[str]) -> str:
        while True:
            self.counter[0] += 1
            name = f"u{self.counter[0]}"
            if name not in taken:
                return name


@dataclass(frozen=True)
class StructureResult:
    """``expr``: the composed formula over the original names (None: no formula); ``tree``: how."""

    expr: sympy.Expr | None
    tree: dict[str, Any]


def solve_structure(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, names: Sequence[str], *,
    max_seconds: float, should_stop: Callable[[], bool] | None = None,
    leaf_solver: LeafSolver, seed: int = 0, require_structure: bool = False,
) -> StructureResult:
    """The recursion of the module docstring on ``x (N, n) -> y (N,)``; constants of the composed
    formula refitted on (x, y). TrainingCancelled when ``should_stop()`` turns True or the
    ``max_seconds`` run out before any formula is composed. ``require_structure``: when no test
    splits the whole problem, return no formula (tree node "none") instead of solving it as one leaf."""
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError(f"max_seconds must be finite and > 0, got {max_seconds!r}")
    names = tuple(names)
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64).reshape(-1)
    x_test, y_test = np.asarray(x_test, np.float64), np.asarray(y_test, np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[1] != len(names) or x_test.shape[1:] != x.shape[1:]:
        raise ValueError(f"x and x_test must be (N, {len(names)}), got {x.shape} and {x_test.shape}")
    ctx = _Context(time.monotonic() + max_seconds, should_stop, leaf_solver, seed, require_structure)
    expr, tree = _solve(Problem(x, y, x_test, y_test, names), ctx, 0)
    if expr is not None:
        try:
            expr = sharpen_constants(expr, names, x, y)
        except (ValueError, TypeError, ArithmeticError):
            pass
        tree["formula"] = str(expr)
    return StructureResult(expr, tree)


# ----------------------------------------------------------------------------------------------
# the recursion


def _solve(p: Problem, ctx: _Context, depth: int) -> tuple[sympy.Expr | None, dict[str, Any]]:
    ctx.check()
    start = time.monotonic()
    if p.n_var >= 2 and depth < MAX_DEPTH:
        sur = fit_surrogate(p.x, p.y, p.x_test, p.y_test, seed=ctx.seed, should_stop=ctx.stop)
        if math.isfinite(sur.rmse):
            for attempt in (_additive, _multiplicative, _symmetry, _transformed):
                ctx.check()
                out = attempt(p, sur, ctx, depth)
                if out is not None and out[0] is not None:
                    out[1]["seconds"] = round(time.monotonic() - start, 3)
                    return out
    if depth == 0 and ctx.require_structure:
        return None, _node("none", p, None, start, reason="no separability, symmetry or transform test passed")
    return _leaf(p, ctx, depth, start)


def _leaf(p: Problem, ctx: _Context, depth: int, start: float) -> tuple[sympy.Expr | None, dict[str, Any]]:
    """A leaf, with one even variable of a 1-D problem replaced by its square first."""
    if p.n_var == 1 and (p.x.min() < 0 < p.x.max()):
        sur = fit_surrogate(p.x, p.y, p.x_test, p.y_test, hidden=(16, 16), seed=ctx.seed, should_stop=ctx.stop)
        test = even_test(sur, p.x, 0, seed=ctx.seed)
        if test.passed:
            u = ctx.fresh_name(p.names)
            child = Problem(p.x**2, p.y, p.x_test**2, p.y_test, (u,), p.approximate, p.noise)
            expr, tree = _plain_leaf(child, ctx, time.monotonic())
            sub = None if expr is None else expr.xreplace({sympy.Symbol(u): sympy.Symbol(p.names[0]) ** 2})
            return sub, _node("substitute", p, sub, start, test=test.to_dict(p.names), variable=u,
                              definition=f"{p.names[0]}**2", children=[tree])
    return _plain_leaf(p, ctx, start)


def _plain_leaf(p: Problem, ctx: _Context, start: float) -> tuple[sympy.Expr | None, dict[str, Any]]:
    ctx.check()
    expr, info = ctx.leaf_solver(p, ctx.left() * math.prod(ctx.shares), ctx.stop)
    return expr, _node("leaf", p, expr, start, source="surrogate" if p.approximate else "data", **info)


def _node(kind: str, p: Problem, expr: sympy.Expr | None, start: float, **kw: Any) -> dict[str, Any]:
    return {"node": kind, "variables": list(p.names), "formula": None if expr is None else str(expr),
            "seconds": round(time.monotonic() - start, 3), **kw}


def _evaluate(expr: sympy.Expr, names: Sequence[str], x: np.ndarray) -> np.ndarray:
    return evaluate_formula(expr, list(names), x)


def _center_row(x: np.ndarray) -> np.ndarray:
    """The data row nearest the median point (in units of each column's spread)."""
    med, spread = np.median(x, 0), x.std(0) + 1e-300
    return x[int(np.argmin((((x - med) / spread) ** 2).sum(1)))]


def _subproblem(p: Problem, cols: list[int], y: np.ndarray, y_test: np.ndarray, approximate: bool,
                noise: float) -> Problem:
    return Problem(p.x[:, cols], y, p.x_test[:, cols], y_test, tuple(p.names[c] for c in cols), approximate, noise)


def _split(p: Problem, sur: Surrogate, ctx: _Context, depth: int, groups: list[list[int]],
           tests: list[StructureTest], op: str) -> tuple[sympy.Expr | None, dict[str, Any]] | None:
    """``f = a_1(x_G1) op ... op a_k(x_Gk)``: every group but the largest from the surrogate with the
    other variables held at a central data row (one surrogate for all of them), the largest from
    the real data with the others taken out."""
    start = time.monotonic()
    last = max(groups, key=len)
    firsts = [g for g in groups if g is not last]
    x0 = _center_row(p.x)
    noise = max(sur.rmse, p.noise)
    exprs, trees = [], []
    acc, acc_test = (np.zeros(len(p.y)), np.zeros(len(p.y_test))) if op == "add" else (
        np.ones(len(p.y)), np.ones(len(p.y_test)))
    exact, err = not p.approximate, 0.0
    for cols in firsts:
        def held(x: np.ndarray, cols: list[int] = cols) -> np.ndarray:
            z = np.repeat(x0[None, :], len(x), 0)
            z[:, cols] = x[:, cols]
            return z

        ya, ya_test = sur(held(p.x)), sur(held(p.x_test))
        if op == "mul" and not (TRANSFORMS["log"].valid(ya) and TRANSFORMS["log"].valid(ya_test)):
            return None
        part = _subproblem(p, cols, ya, ya_test, True, noise)
        ctx.shares.append(A_SHARE / len(firsts))
        try:
            a_expr, a_tree = _solve(part, ctx, depth + 1)
        finally:
            ctx.shares.pop()
        if a_expr is None:
            return None
        a_expr = _snapped(a_expr, part)
        rel = math.sqrt(max(0.0, 1 - _r2(a_expr, part.names, part.x_test, ya_test)))  # a's error on its data
        err += rel * float(np.std(ya_test)) if op == "add" else rel * float(np.std(ya_test)) / (
            float(np.mean(np.abs(ya_test))) + 1e-300)
        if op == "add":  # a's constant is f's value at the held point: it belongs to the last part (a
            # sum's parts are known up to a constant, and a product + constant would hide its structure)
            a_expr = sympy.Add(*(t for t in sympy.Add.make_args(a_expr) if t.free_symbols)) if a_expr.free_symbols else a_expr
        # the last part's data stays exact when no part has a fitted constant left that its values
        # depend on (a mul split's overall factor and an add split's constant only rescale or shift)
        exact = exact and not (a_expr.as_coeff_Mul()[1] if op == "mul" else a_expr).atoms(sympy.Float)
        with np.errstate(all="ignore"):
            a_val, a_val_test = _evaluate(a_expr, part.names, part.x), _evaluate(a_expr, part.names, part.x_test)
            acc, acc_test = (acc + a_val, acc_test + a_val_test) if op == "add" else (acc * a_val, acc_test * a_val_test)
        exprs.append(a_expr)
        trees.append(a_tree)
    with np.errstate(all="ignore"):
        yb, yb_test = (p.y - acc, p.y_test - acc_test) if op == "add" else (p.y / acc, p.y_test / acc_test)
    if not (np.isfinite(yb).all() and np.isfinite(yb_test).all()):
        return None
    b_noise = p.noise + noise + err if op == "add" else (p.noise / (float(np.mean(np.abs(p.y))) + 1e-300) + err
                                                        ) * float(np.mean(np.abs(yb))) + noise
    b_expr, b_tree = _solve(_subproblem(p, last, yb, yb_test, not exact, 0.0 if exact else b_noise), ctx, depth + 1)
    if b_expr is None:
        return None
    expr = sympy.Add(*exprs, b_expr) if op == "add" else sympy.Mul(*exprs, b_expr)
    justified = [t.to_dict(p.names) for t in tests if t.passed][:8]
    return expr, _node("split", p, expr, start, op=op, groups=[[p.names[c] for c in g] for g in groups],
                       tests=justified, children=[*trees, b_tree])


A_SHARE = 0.4  # the parts of a split solved from the surrogate get at most this share of the time left, together
SNAP_TOL = 1e-3  # a part fitted on surrogate values: constants this close to a simple number snap to it


def _snapped(expr: sympy.Expr, p: Problem) -> sympy.Expr:
    """``expr`` (fitted on the surrogate's values of ``p``) with its constants within SNAP_TOL of an
    integer, p/q or p*pi/q snapped to it (``omega_0**0.9996 -> omega_0``), when that keeps the fit
    within the leaf tolerance; the parts solved from the real data then see exact values."""
    try:
        snapped = clean_constants(expr, digits=17, tol=SNAP_TOL)
    except (ValueError, TypeError, ArithmeticError):
        return expr
    return snapped if _r2(snapped, p.names, p.x_test, p.y_test) >= p.target_r2(5.0) else expr


def _additive(p: Problem, sur: Surrogate, ctx: _Context, depth: int):
    groups, tests = separable_groups(sur, p.x, seed=ctx.seed)
    return _split(p, sur, ctx, depth, groups, tests, "add") if len(groups) > 1 else None


def _multiplicative(p: Problem, sur: Surrogate, ctx: _Context, depth: int):
    if not TRANSFORMS["log"].valid(p.y):
        return None
    groups, tests = separable_groups(sur, p.x, transform="log", seed=ctx.seed)
    return _split(p, sur, ctx, depth, groups, tests, "mul") if len(groups) > 1 else None


_COMBINE = {"difference": lambda a, b: a - b, "sum": lambda a, b: a + b,
            "ratio": lambda a, b: a / b, "product": lambda a, b: a * b}


def _symmetry(p: Problem, sur: Surrogate, ctx: _Context, depth: int):
    start = time.monotonic()
    tests = [t for t in find_symmetries(sur, p.x, seed=ctx.seed, deadline=ctx.deadline) if t.passed]
    if not tests:
        return None
    test = tests[0]
    i, j = test.variables
    combine = _COMBINE[test.kind]
    u = ctx.fresh_name(p.names)
    keep = [c for c in range(p.n_var) if c not in (i, j)]

    def sub_x(x: np.ndarray) -> np.ndarray:
        return np.column_stack([combine(x[:, i], x[:, j]), x[:, keep]])

    child = Problem(sub_x(p.x), p.y, sub_x(p.x_test), p.y_test, (u, *(p.names[c] for c in keep)),
                    p.approximate, p.noise)
    c_expr, c_tree = _solve(child, ctx, depth + 1)
    if c_expr is None:
        return None
    definition = combine(sympy.Symbol(p.names[i]), sympy.Symbol(p.names[j]))
    expr = c_expr.xreplace({sympy.Symbol(u): definition})
    return expr, _node("substitute", p, expr, start, test=test.to_dict(p.names), variable=u,
                       definition=str(definition), children=[c_tree])


def _inverse(name: str, e: sympy.Expr, sign: int) -> sympy.Expr:
    s = sympy.Integer(sign)
    return {"square": lambda: s * sympy.sqrt(e), "inverse": lambda: 1 / e,
            "inverse_square": lambda: s / sympy.sqrt(e), "sqrt": lambda: s * e**2}[name]()


def _transformed(p: Problem, sur: Surrogate, ctx: _Context, depth: int):
    start = time.monotonic()
    for name in SPLIT_TRANSFORMS:
        t = TRANSFORMS[name]
        if not (t.valid(p.y) and t.valid(p.y_test)):
            continue
        ctx.check()
        groups, tests = separable_groups(sur, p.x, transform=name, seed=ctx.seed)
        if len(groups) < 2:
            continue
        sign = 1 if p.y[0] > 0 else -1
        with np.errstate(all="ignore"):
            noise = p.noise * float(np.median(np.abs(t.dg(p.y))))
            child = Problem(p.x, t.g(p.y), p.x_test, t.g(p.y_test), p.names, p.approximate, noise)
            gsur = _TransformedSurrogate(sur, t.g, float(np.median(np.abs(t.dg(p.y)))) * sur.rmse)
        out = _split(child, gsur, ctx, depth + 1, groups, tests, "add")
        if out is None or out[0] is None:
            continue
        expr = _inverse(name, out[0], sign)
        return expr, _node("transform", p, expr, start, transform=name, test=out[1]["tests"][:1],
                           children=[out[1]])
    return None


@dataclass(frozen=True)
class _TransformedSurrogate:
    """``g`` of a surrogate's values, with its error propagated at the data's typical slope."""

    base: Surrogate
    g: Callable[[np.ndarray], np.ndarray]
    rmse: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return self.g(self.base(x))


# ----------------------------------------------------------------------------------------------
# leaves


def sparse_leaf(p: Problem, seconds: float, stop: Callable[[], bool]) -> tuple[sympy.Expr, dict] | None:
    """`kan_core.sparse.fit_sparse` on the problem with at most 1, 2, then 6 terms: the simplest
    fit that reaches the problem's strict `Problem.target_r2` (factor 2) on the test split, else the
    one of highest test R² (None without any): a leaf solver's cheap first try (no network). Few
    terms first, because on surrogate data no fit is exact and the sparse search would keep adding
    terms."""
    deadline = time.monotonic() + seconds
    fits: list[tuple[sympy.Expr, dict]] = []
    for terms in (1, 2, 6):
        left = deadline - time.monotonic()
        if left <= 0 or stop():
            break
        fits += [(fit.expr, {"candidate": f"sparse:{fit.transform}", "complexity": fit.complexity,
                             "terms": fit.n_terms, "r2": _r2(fit.expr, p.names, p.x_test, p.y_test)})
                 for fit in fit_sparse(p.x, p.y, p.names, max_terms=terms, should_stop=stop, max_seconds=left)]
        good = [f for f in fits if f[1]["r2"] >= p.target_r2(2.0)]
        if good:
            return min(good, key=lambda f: (f[1]["complexity"], -f[1]["r2"]))
    return max(fits, key=lambda f: f[1]["r2"]) if fits else None


def _r2(expr: sympy.Expr, names: Sequence[str], x: np.ndarray, y: np.ndarray) -> float:
    """`kan_core.metrics.r2` of ``expr`` on ``(x, y)``, -inf where it is undefined (for ranking)."""
    try:
        r2 = metrics.r2(_evaluate(expr, names, x), y)
    except (ValueError, TypeError, ArithmeticError):
        return -math.inf
    return -math.inf if r2 is None else r2
