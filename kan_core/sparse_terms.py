"""The dictionary of candidate terms for `kan_core.sparse`, and snapping of fitted coefficients.

A term is only added where it is defined and finite on the data (negative powers for variables
bounded away from 0, roots and logs for positive ones, asin on [-1, 1]). Terms that are linear
combinations of others (sinh, cosh, acos) are left out: exp(x) and exp(-x), asin and the constant
span them. Column sizes are bounded: pair products use a short factor list, and the factor list
shrinks as the number of inputs grows.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import sympy

MAX_COLUMNS = 3000  # dictionary size cap (the support search is O(rows * columns * terms))


@dataclass
class Dictionary:
    """``values (N, D)``: the terms on the data; ``exprs``: their formulas; ``tiers``: their
    complexity class (0 powers and monomials, 1 functions of one variable, 2 functions of pairs);
    ``denominators``: for the rational family's columns ``y*q``, column index -> (q, q's values)."""

    values: np.ndarray
    exprs: list[sympy.Expr]
    tiers: np.ndarray
    denominators: dict[int, tuple[sympy.Expr, np.ndarray]] = field(default_factory=dict)

    def select(self, keep: np.ndarray) -> Dictionary:
        """The columns ``keep`` (indices, ascending) of this dictionary."""
        pos = {int(j): k for k, j in enumerate(keep)}
        dens = {pos[j]: q for j, q in self.denominators.items() if j in pos}
        return Dictionary(self.values[:, keep], [self.exprs[j] for j in keep], self.tiers[keep], dens)

    def upto(self, tier: int) -> Dictionary:
        """The columns of tier <= ``tier``."""
        return self.select(np.flatnonzero(self.tiers <= tier))

    def logs(self) -> Dictionary:
        """The columns ``log(x_i)`` (for monomials through ``log y``)."""
        return self.select(np.array([j for j, e in enumerate(self.exprs)
                                     if isinstance(e, sympy.log) and e.args[0].is_Symbol], dtype=int))

    def concat(self, other: Dictionary) -> Dictionary:
        off = self.values.shape[1]
        dens = {**self.denominators, **{off + j: q for j, q in other.denominators.items()}}
        return Dictionary(np.column_stack([self.values, other.values]), [*self.exprs, *other.exprs],
                          np.concatenate([self.tiers, other.tiers]), dens)

    def with_rational(self, X: np.ndarray, symbols: list[sympy.Symbol], y: np.ndarray,
                      exclude: sympy.Expr | None = None, ratios: bool = False) -> Dictionary:
        """This dictionary plus columns ``y*q`` for low-degree monomials q (x_i, x_i**2, x_i*x_j;
        x**3 and x**4 too for a single input; with ``ratios``, x_i/x_j and x_i**2/x_j**2 for x_j
        away from 0), but ``exclude``."""
        qs: list[tuple[sympy.Expr, np.ndarray]] = []
        for i in range(len(symbols)):
            qs += [(symbols[i], X[:, i]), (symbols[i] ** 2, X[:, i] ** 2)]
        if ratios:
            away = [bool(np.abs(X[:, j]).min() > 1e-3 * np.abs(X[:, j]).max()) for j in range(len(symbols))]
            for i, j in itertools.permutations(range(len(symbols)), 2):
                if away[j]:
                    qs += [(symbols[i] / symbols[j], X[:, i] / X[:, j]), (symbols[i] ** 2 / symbols[j] ** 2, (X[:, i] / X[:, j]) ** 2)]
        if len(symbols) == 1:  # one input: denominators up to degree 4 cost four columns
            qs += [(symbols[0] ** p, X[:, 0] ** p) for p in (3, 4)]
        for i, j in itertools.combinations(range(len(symbols)), 2):
            qs.append((symbols[i] * symbols[j], X[:, i] * X[:, j]))
        qs = [(q, v) for q, v in qs if exclude is None or q != exclude]
        extra = Dictionary(np.column_stack([y * v for _, v in qs]), [sympy.Symbol("y") * q for q, _ in qs],
                           np.zeros(len(qs), dtype=int), {k: q for k, q in enumerate(qs)})
        return self.concat(extra)


def _unary(x: np.ndarray, s: sympy.Symbol, n_vars: int) -> list[tuple[sympy.Expr, Callable[[np.ndarray], np.ndarray]]]:
    """Single-variable terms valid on x's range."""
    lo, hi = float(x.min()), float(x.max())
    amax = max(abs(lo), abs(hi))
    away = (lo > 0 or hi < 0) and min(abs(lo), abs(hi)) > 1e-3 * amax
    terms: list[tuple[sympy.Expr, Callable]] = []
    top = 6 if n_vars == 1 else 5 if n_vars == 2 else 4
    terms += [(s**p, lambda v, p=p: v**p) for p in range(1, top + 1)]
    if away:
        terms += [(s**-p, lambda v, p=p: v**-float(p)) for p in (1, 2, 3)]
    if lo >= 0:
        terms += [(sympy.sqrt(s), np.sqrt), (s ** sympy.Rational(3, 2), lambda v: v**1.5)]
    if lo > 0 and away:
        terms.append((1 / sympy.sqrt(s), lambda v: v**-0.5))
    if lo > 0:  # finite however close to 0 the inputs come (x**y on [0, 1] is exp(y*log(x)))
        terms.append((sympy.log(s), np.log))
    terms += [(sympy.sin(s), np.sin), (sympy.cos(s), np.cos), (sympy.atan(s), np.arctan),
              (sympy.tanh(s), np.tanh), (sympy.sin(s**2), lambda v: np.sin(v**2)),
              (sympy.cos(s**2), lambda v: np.cos(v**2)), (sympy.exp(-(s**2)), lambda v: np.exp(-(v**2))),
              (sympy.sin(sympy.pi * s), lambda v: np.sin(np.pi * v)), (sympy.cos(sympy.pi * s), lambda v: np.cos(np.pi * v))]
    if amax <= 30:
        terms += [(sympy.exp(s), np.exp), (sympy.exp(-s), lambda v: np.exp(-v))]
    if lo > -1:
        terms.append((sympy.log(s + 1), np.log1p))
    terms.append((sympy.log(s**2 + 1), lambda v: np.log1p(v**2)))
    if amax <= 1:
        terms.append((sympy.asin(s), np.arcsin))
    return terms


def _factors(x: np.ndarray, s: sympy.Symbol, n_vars: int) -> list[tuple[sympy.Expr, np.ndarray]]:
    """The short list of single-variable factors used in products."""
    lo, hi = float(x.min()), float(x.max())
    amax = max(abs(lo), abs(hi))
    away = (lo > 0 or hi < 0) and min(abs(lo), abs(hi)) > 1e-3 * amax
    out = [(s, x), (s**2, x**2)]
    if away:
        out += [(1 / s, 1 / x), (s**-2, x**-2.0)]
    if n_vars <= 4:
        out += [(sympy.sin(s), np.sin(x)), (sympy.cos(s), np.cos(x))]
        if lo > 0 and away:
            out += [(sympy.sqrt(s), np.sqrt(x)), (1 / sympy.sqrt(s), x**-0.5)]
        if lo > 0:
            out.append((sympy.log(s), np.log(x)))
        if amax <= 30:
            out += [(sympy.exp(-s), np.exp(-x))]
    if n_vars <= 3:
        out += [(s**3, x**3)]
    return out


MAX_MONOMIAL_VARS = 6  # `monomials` only up to this many inputs (3**n columns)


def monomials(X: np.ndarray, symbols: list[sympy.Symbol], skip: set[sympy.Expr]) -> Dictionary:
    """Products ``prod x_i**p_i`` with p_i in {-1, 0, 1} (-1 only for inputs away from 0) of at
    least three inputs, but those in ``skip``: the exponents of Boltzmann factors
    (``m*g*x/(kb*T)``), beyond the pairs and triples of `build_dictionary`. Empty beyond
    MAX_MONOMIAL_VARS inputs."""
    n = len(symbols)
    vals: list[np.ndarray] = []
    exprs: list[sympy.Expr] = []
    if n <= MAX_MONOMIAL_VARS:
        lo, hi = X.min(axis=0), X.max(axis=0)
        amax = np.maximum(np.abs(lo), np.abs(hi))
        away = ((lo > 0) | (hi < 0)) & (np.minimum(np.abs(lo), np.abs(hi)) > 1e-3 * amax)
        for p in itertools.product(*[(-1, 0, 1) if away[i] else (0, 1) for i in range(n)]):
            if sum(1 for e in p if e) < 3:
                continue
            expr = sympy.Mul(*(symbols[i] ** e for i, e in enumerate(p) if e))
            if expr not in skip:
                with np.errstate(all="ignore"):
                    vals.append(np.prod([X[:, i] ** float(e) for i, e in enumerate(p) if e], axis=0))
                exprs.append(expr)
    values = np.column_stack(vals) if vals else np.zeros((X.shape[0], 0))
    return Dictionary(values, exprs, np.ones(len(exprs), dtype=int))


def term_tier(expr: sympy.Expr) -> int:
    """0: integer powers of one variable or a product of two; 1: other monomials (roots, three
    variables); 2: a function of one variable (times its powers); 3: anything else."""
    if expr.has(sympy.Function):
        return 2 if len(expr.free_symbols) == 1 else 3
    integer = all(p.exp.is_Integer for p in expr.atoms(sympy.Pow))
    return 0 if integer and len(expr.free_symbols) <= 2 else 1


def build_dictionary(X: np.ndarray, symbols: list[sympy.Symbol]) -> Dictionary:
    """Single-variable terms, functions of pair sums, differences and products, products of pairs
    (and of triples, for monomials), each finite on every row of ``X (N, n)``. ``tiers``: see
    `term_tier`."""
    n = len(symbols)
    vals: list[np.ndarray] = []
    exprs: list[sympy.Expr] = []
    tiers: list[int] = []

    def add(expr: sympy.Expr, v: np.ndarray, _tier: int = 0) -> None:
        if len(vals) < MAX_COLUMNS and v.shape == (X.shape[0],) and np.isfinite(v).all() and np.ptp(v) > 0:
            vals.append(v)
            exprs.append(expr)
            tiers.append(term_tier(expr))

    def is_fn(e: sympy.Expr) -> bool:
        return e.has(sympy.Function)

    with np.errstate(all="ignore"):
        facs = [_factors(X[:, i], symbols[i], n) for i in range(n)]
        for i in range(n):
            x, s = X[:, i], symbols[i]
            for expr, fn in _unary(x, s, n):
                add(expr, fn(x), 1 if is_fn(expr) else 0)
            if n <= 2:  # a whole period over a unit interval, alone and times x (few columns: more
                for fn, f in ((sympy.sin, np.sin), (sympy.cos, np.cos)):  # correlated ones mislead the search)
                    add(fn(2 * sympy.pi * s), f(2 * np.pi * x))
                    add(s * fn(2 * sympy.pi * s), x * f(2 * np.pi * x))
            for pe, pv in facs[i][:2]:  # x, x**2 times a function of the same variable
                for fe, fv in facs[i][2:]:
                    if is_fn(fe):
                        add(pe * fe, pv * fv, 1)
            if n <= 2:  # products of two functions of the same variable: sin(x**2)*cos(x)
                fns = [(e, fn(x)) for e, fn in _unary(x, s, n) if e.has(sympy.sin, sympy.cos, sympy.exp)]
                for (fe, fv), (ge, gv) in itertools.combinations(fns, 2):
                    add(fe * ge, fv * gv)
            else:  # of those, only sin(x)*cos(x) (sin(2x)/2) with more inputs
                add(sympy.sin(s) * sympy.cos(s), np.sin(x) * np.cos(x))
        for i, j in itertools.combinations(range(n), 2):
            a, b, sa, sb = X[:, i], X[:, j], symbols[i], symbols[j]
            for (fe, fv), (ge, gv) in itertools.product(facs[i], facs[j]):
                add(fe * ge, fv * gv, 2 if is_fn(fe) or is_fn(ge) else 0)
            for comb, v in ((sa + sb, a + b), (sa - sb, a - b), (sa * sb, a * b)):
                add(sympy.sin(comb), np.sin(v), 2)
                add(sympy.cos(comb), np.cos(v), 2)
            if n <= 5:  # functions of a squared radius, as the one-variable sin(x**2), sin(pi*x), exp(-x**2)
                r2, v = sa**2 + sb**2, a**2 + b**2
                for e, f in ((sympy.sin(r2), np.sin(v)), (sympy.cos(r2), np.cos(v)), (sympy.exp(-r2), np.exp(-v)),
                             (sympy.sin(sympy.pi * r2), np.sin(np.pi * v)),
                             (sympy.cos(sympy.pi * r2), np.cos(np.pi * v))):
                    add(e, f)
        if n >= 3:
            for idx in itertools.combinations(range(n), 3):
                monos = [[f for f in facs[i] if not is_fn(f[0])][: 4 if n <= 5 else 2] for i in idx]
                for combo in itertools.product(*monos):
                    add(sympy.Mul(*(e for e, _ in combo)), np.prod([v for _, v in combo], axis=0), 0)
            powers = [[f for f in facs[i] if not is_fn(f[0]) and f[0] != symbols[i] ** 3] for i in range(n)]
            for k in range(n):  # a function of one variable times a product of two others
                fns = [f for f in facs[k] if f[0].has(sympy.sin, sympy.cos)]
                for i, j in itertools.combinations([m for m in range(n) if m != k], 2):
                    for (fe, fv), (ae, av), (be, bv) in itertools.product(fns, powers[i], powers[j]):
                        add(fe * ae * be, fv * av * bv)
            for i, j in itertools.combinations(range(n), 2):  # a function of a pair times a third variable
                a, b, sa, sb = X[:, i], X[:, j], symbols[i], symbols[j]
                for comb, v in ((sa + sb, a + b), (sa - sb, a - b), (sa * sb, a * b)):
                    for fn, f in ((sympy.sin, np.sin), (sympy.cos, np.cos)):
                        for k in (m for m in range(n) if m not in (i, j)):
                            for pe, pv in powers[k][:1] + powers[k][2:3]:
                                add(fn(comb) * pe, f(v) * pv)
    values = np.column_stack(vals) if vals else np.zeros((X.shape[0], 0))
    return Dictionary(values, exprs, np.array(tiers, dtype=int))


# ----------------------------------------------------------------------------------------------
# nice numbers


def _nice_table() -> list[tuple[float, sympy.Expr]]:
    table: dict[float, sympy.Expr] = {}
    for q in range(1, 13):
        for p in range(1, 13 * q):
            r = sympy.Rational(p, q)
            table.setdefault(float(r), r)
    for q in (1, 2, 3, 4, 6, 8):
        for p in (1, 2, 3, 4):
            table.setdefault(float(sympy.Rational(p, q) * sympy.pi), sympy.Rational(p, q) * sympy.pi)
            table.setdefault(float(sympy.Rational(p, q) / sympy.pi), sympy.Rational(p, q) / sympy.pi)
    return sorted(table.items())


_NICE = _nice_table()
_NICE_KEYS = np.array([k for k, _ in _NICE])


def nice_number(v: float, tol: float = 1e-6) -> sympy.Expr | None:
    """The exact simple number (0, p/q with q <= 12 and |p/q| < 13, p*pi/q, p/(q*pi)) within a
    relative ``tol`` of ``v``; None if there is none."""
    if not math.isfinite(v):
        return None
    if abs(v) < 1e-13:
        return sympy.Integer(0)
    a = abs(v)
    if a < 1e6 and abs(a - round(a)) <= tol * a:
        return sympy.Integer(round(v))
    k = int(np.searchsorted(_NICE_KEYS, a))
    for idx in (k - 1, k):
        if 0 <= idx < len(_NICE) and abs(_NICE[idx][0] - a) <= tol * a:
            return _NICE[idx][1] if v > 0 else -_NICE[idx][1]
    return None
