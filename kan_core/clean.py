"""Cleaner formulas: junk removed, trigonometric identities applied, forms the judge can read.

Fitted formulas carry parts that do nothing on the data (``- 0.5025*sin(6.8e-8*d + 1.571) +
0.5025`` is ~0), identities a reader would apply (``2*cos(x/2 + pi/4)**2 - 1`` is ``-sin(x)``) and
forms that sympy cannot compare with the textbook one (``1/sqrt(m**-2 - v**2/(c**2*m**2))`` for
``m/sqrt(1 - v**2/c**2)``). `clean_formula` applies, in order:

1. `collapse_constants`: the largest subexpressions that are constant on the data (within a
   tolerance of the fit) become their mean value, and small terms of sums whose removal leaves
   the formula's values as they were are removed;
2. `rational_exponents`: float exponents close to a simple fraction become it (``x**0.5 ->
   sqrt(x)``), when the formula fits as before;
3. `trig_rewrites`: a few targeted sympy rewrites (fu's TR rules: power reduction, product to
   sum, sum to angle; expand_trig), only on small expressions (they are polynomial-time
   rewrites, unlike trigsimp, which hung on formulas of ~20 operations);
4. `kan_core.forms.judge_forms`: forms the judge's sign-less sympy can compare with a textbook
   formula (``sqrt(a)*sqrt(b) -> sqrt(a*b)`` on positive data, a logistic through exp, ...).
   Discovery runs it again last, after its own rewrites.

Steps 1-2 are kept only while the formula fits the data as before, steps 3-4 only when they
agree with the input on the data (relative 1e-9); nothing here prints, reads files or parses text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import sympy
from sympy.simplify.fu import TR5, TR7, TR8, TR10i, TR11

from kan_core.formula import formula_complexity
from kan_core.forms import MAX_CLEAN_NODES, DataCheck, check_args, judge_forms
from kan_core.time_cap import TimeCapExceeded, time_cap

SMALL_TERM = 1e-3  # only terms this small next to their sum are candidates for removal
MAX_TRIG_OPS = 60  # trigonometric rewrites only up to this many operations...
MAX_TRIG_FUNCTIONS = 8  # ...and this many trigonometric functions
MAX_TRIG_DEGREE = 4  # products of more sin/cos factors than this are not turned into sums
MAX_EXPONENT_DENOMINATOR = 6  # float exponents snap to fractions p/q with q up to this


def clean_formula(
    expr: sympy.Expr, names: Sequence[str], X: np.ndarray, y: np.ndarray | None = None, *, rtol: float = 1e-9,
) -> sympy.Expr:
    """`collapse_constants`, `rational_exponents`, `trig_rewrites` and `judge_forms` on ``expr`` (over plain
    symbols ``names``; ``X (N, n)`` the data's inputs, ``y (N,)`` its target if known)."""
    check_args(expr, names, X)
    if formula_complexity(expr) > MAX_CLEAN_NODES or not expr.free_symbols:
        return expr
    out = expr
    for step in (lambda e: collapse_constants(e, names, X, y, rtol=rtol),
                 lambda e: rational_exponents(e, names, X, y, rtol=rtol),
                 lambda e: trig_rewrites(e, names, X)):
        try:
            with time_cap():
                out = step(out)
        except TimeCapExceeded:  # sympy's algebra can run for minutes: that step is skipped
            pass
    return judge_forms(out, names, X)


# ----------------------------------------------------------------------------------------------
# 1. constant parts


def collapse_constants(
    expr: sympy.Expr, names: Sequence[str], X: np.ndarray, y: np.ndarray | None = None, *, rtol: float = 1e-9,
) -> sympy.Expr:
    """Subexpressions constant on the rows of X replaced by their mean (largest first), then terms
    of sums dropped, each change kept only while the formula fits as before: RMSE against ``y``
    at most 0.1% worse or below ``rtol * std(y)``; without y, within ``rtol * std`` of the formula."""
    check_args(expr, names, X)
    if formula_complexity(expr) > MAX_CLEAN_NODES or not expr.free_symbols:
        return expr
    data = DataCheck(expr, names, X, y, rtol)
    if data.values(expr) is None:
        return expr
    current = expr
    for node in _nodes_largest_first(expr):
        if node is current or not node.free_symbols or node.is_Symbol or not current.has(node):
            continue
        v = data.values(node)
        if v is None or float(np.ptp(v)) > 1e-6 * (1.0 + float(np.abs(v).max())):
            continue
        trial = current.xreplace({node: sympy.Float(float(np.mean(v)), 15)})
        if trial.free_symbols and data.fits(trial):
            current = trial
    for _ in range(3):  # drop small terms of sums (a constant left over is a term too)
        changed = False
        for node in _nodes_largest_first(current):
            if not isinstance(node, sympy.Add) or not current.has(node):
                continue
            total = data.values(node)
            for term in node.args:
                v = data.values(term) if total is not None else None
                if v is None or float(np.abs(v).max()) > SMALL_TERM * float(np.abs(total).max()):
                    continue
                trial = current.xreplace({node: node - term})
                if trial.free_symbols and data.fits(trial):
                    current, changed = trial, True
                    break
            if changed:
                break
        if not changed:
            break
    return current


def rational_exponents(
    expr: sympy.Expr, names: Sequence[str], X: np.ndarray, y: np.ndarray | None = None, *, rtol: float = 1e-9,
) -> sympy.Expr:
    """Float exponents within 1e-3 (relative) of a fraction p/q with q <= MAX_EXPONENT_DENOMINATOR
    written as that fraction (``x**0.6667 -> x**(2/3)``, ``L**0.5 -> sqrt(L)``: roots the judge's
    sympy can join and compare), kept only when the formula fits as before (`collapse_constants`'s test)."""
    check_args(expr, names, X)
    floats = {p for p in sympy.preorder_traversal(expr) if isinstance(p, sympy.Pow) and p.exp.is_Float}
    if not floats or not expr.free_symbols:
        return expr
    reps = {}
    for p in floats:
        q = sympy.Rational(float(p.exp)).limit_denominator(MAX_EXPONENT_DENOMINATOR)
        if q != 0 and abs(float(q) - float(p.exp)) <= 1e-3 * abs(float(q)):
            reps[p] = sympy.Pow(p.base, q)
    trial = expr.xreplace(reps) if reps else expr
    if trial is expr:
        return expr
    data = DataCheck(expr, names, X, y, rtol)
    return trial if data.values(expr) is not None and data.fits(trial) else expr


def _nodes_largest_first(expr: sympy.Expr) -> list[sympy.Expr]:
    nodes = {n for n in sympy.preorder_traversal(expr) if n.args}
    return sorted(nodes, key=lambda n: (-formula_complexity(n), sympy.default_sort_key(n)))


# ----------------------------------------------------------------------------------------------
# 2. trigonometric identities


_TRIG_REWRITES: tuple[Callable[[sympy.Expr], sympy.Expr], ...] = (
    TR7,  # cos(u)**2 -> (1 + cos(2u))/2
    TR8,  # products and powers of sin/cos -> sums
    lambda e: TR10i(TR8(e)),  # ...then sums back into one angle
    TR10i,  # sin(a)cos(b) + cos(a)sin(b) -> sin(a + b)
    lambda e: TR5(e),  # sin(u)**2 -> 1 - cos(u)**2
    lambda e: TR11(e),  # sin(2u) -> 2 sin(u) cos(u)
    sympy.expand_trig,
    lambda e: sympy.expand(TR8(_small_or_none(sympy.expand_trig(e)))),
)


def _small_or_none(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` when it has at most MAX_TRIG_OPS operations, else ValueError (the rewrite is
    skipped): expand_trig of sin(5x)**3 is a degree-15 polynomial that TR8 would spend seconds on."""
    if sympy.count_ops(expr) > MAX_TRIG_OPS:
        raise ValueError("too large to rewrite")
    return expr


def _trig_degree(expr: sympy.Expr) -> int:
    """The largest number of sin/cos/tan factors (powers counted) in one product of ``expr``:
    product-to-sum (TR8) makes up to 2**(degree - 1) terms of such a product."""
    def degree(node: sympy.Expr) -> int:
        total = 0
        for f in sympy.Mul.make_args(node):
            base, e = f.as_base_exp()
            if isinstance(base, (sympy.sin, sympy.cos, sympy.tan)):
                total += int(abs(e)) if e.is_Integer else 1
        return total
    return max((degree(n) for n in sympy.preorder_traversal(expr) if isinstance(n, (sympy.Mul, sympy.Pow))), default=0)


def trig_rewrites(expr: sympy.Expr, names: Sequence[str], X: np.ndarray) -> sympy.Expr:
    """The simplest (fewest trigonometric functions, then fewest nodes) of a few rewrites by
    trigonometric identities that agrees with ``expr`` on X; only for expressions with at most
    MAX_TRIG_OPS operations and MAX_TRIG_FUNCTIONS trigonometric functions, and product-to-sum
    rewrites only for products of at most MAX_TRIG_DEGREE of them (the cost bound: no timer)."""
    check_args(expr, names, X)
    trig = [f for f in sympy.preorder_traversal(expr) if isinstance(f, (sympy.sin, sympy.cos, sympy.tan))]
    if not trig or len(trig) > MAX_TRIG_FUNCTIONS or sympy.count_ops(expr) > MAX_TRIG_OPS:
        return expr
    data = DataCheck(expr, names, X, None, 1e-9)
    best, best_key = expr, _trig_key(expr)
    rewrites = _TRIG_REWRITES if _trig_degree(expr) <= MAX_TRIG_DEGREE else (TR7, TR10i, TR5, TR11)
    for rewrite in rewrites:
        try:
            cand = rewrite(expr)
        except Exception:  # sympy's rewrites raise assorted errors on odd inputs; skip that one
            continue
        key = _trig_key(cand)
        if key < best_key and data.same(cand):
            best, best_key = cand, key
    return best


def _trig_key(expr: sympy.Expr) -> tuple[int, int]:
    n = sum(1 for f in sympy.preorder_traversal(expr) if isinstance(f, sympy.Function))
    return n, formula_complexity(expr)
