"""Symbolic formulas of fully symbolic KANs: compose, clean, print, evaluate.

`symbolic_formula` composes the network layer by layer: node j of layer l + 1 is the sum over the
active edges i -> j of ``c * f(a * node_i + b) + d``. The raw expression carries every fitted float;
`clean_constants` makes it readable. Each pass moves a constant by at most `tol` (relative), drops
only terms below `tol` of their sum's scale, or rounds to `digits` significant digits:

1. distribute numeric factors over sums (``2*(3*sin(x) + 1) -> 6*sin(x) + 2``);
2. pull constants out of functions where that is an identity: ``exp(u + k) -> e^k exp(u)``,
   ``(k*u + m)^p -> k^p (u + m/k)^p``, ``log(k*u + m) -> log(k) + log(u + m/k)`` (k > 0),
   and prefer ``cos(u)`` to ``sin(u + π/2)`` when that makes the phase nicer;
3. drop terms of a sum whose coefficient is below `tol` times the largest coefficient of a
   non-constant term of that sum (``sin(3.1416*x + 1e-5) -> sin(3.1416*x)``);
4. snap numbers within `tol` of an integer, a simple fraction p/q (q <= 4) or a multiple of π
   (pπ/q, q <= 4) to that number;
5. round the remaining floats to `digits` significant digits.

Then `symbolic_formula` optionally simplifies, cheaply and with a size guard: it tries a few
rewrites (expand, cancel, ...; `sympy.simplify` itself only on small expressions) and keeps the
one of lowest `formula_complexity`. Nothing here parses user text: expressions are built by us.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import sympy
import torch
from sympy.functions.elementary.hyperbolic import HyperbolicFunction, InverseHyperbolicFunction
from sympy.functions.elementary.trigonometric import InverseTrigonometricFunction, TrigonometricFunction

from kan_core.time_cap import TimeCapExceeded, time_cap

MAX_SIMPLIFY_OPS = 30  # sympy.simplify only up to this many operations (~0.3 s; 55 ops took 5 s)
MAX_REWRITE_OPS = 400  # cheaper rewrites (expand, cancel) only below this many


# ----------------------------------------------------------------------------------------------
# composing


def symbolic_formula(
    model: torch.nn.Module,
    var_names: Sequence[str] | None = None,
    *,
    simplify: bool = True,
    digits: int = 4,
    tol: float = 1e-3,
) -> list[sympy.Expr]:
    """One sympy expression per model output, in the variables `var_names` (default x_1..x_n).

    Every active edge must be symbolic: ValueError naming the first spline edge (l, i, j).
    `digits`, `tol`: see `clean_constants`. simplify=False skips the (bounded) simplification.
    """
    n_in = model.layers[0].mask.shape[0]
    names = [f"x_{k + 1}" for k in range(n_in)] if var_names is None else list(var_names)
    if len(names) != n_in:
        raise ValueError(f"var_names must name the {n_in} inputs, got {len(names)}: {names}")
    if not all(isinstance(n, str) and n.isidentifier() for n in names) or len(set(names)) != n_in:
        raise ValueError(f"var_names must be distinct identifiers, got {names}")
    nodes: list[sympy.Expr] = [sympy.Symbol(n) for n in names]
    for l, layer in enumerate(model.layers):
        nodes = _layer_formula(layer, l, nodes)
        combine = getattr(layer, "combine_exprs", None)  # multiplication nodes (kan_core.product)
        if combine is not None:
            nodes = combine(nodes)
    out = [clean_constants(e, digits=digits, tol=tol) for e in nodes]
    if simplify:
        out = [_bounded_simplify(e, digits, tol) for e in out]
    return out


def tidy_formula(expr: sympy.Expr, *, digits: int = 4, tol: float = 1e-3, simplify: bool = True) -> sympy.Expr:
    """`clean_constants`, then (unless ``simplify`` is False) the bounded simplification that
    `symbolic_formula` applies: for expressions built elsewhere, e.g. composed with transforms."""
    out = clean_constants(expr, digits=digits, tol=tol)
    return _bounded_simplify(out, digits, tol) if simplify else out


def _layer_formula(layer: torch.nn.Module, l: int, inputs: list[sympy.Expr]) -> list[sympy.Expr]:
    """The layer's outputs as expressions of its inputs (raw floats)."""
    mask = layer.mask.detach().cpu()  # (I, O)
    sym_mask = layer.sym_mask.detach().cpu()
    affine = layer.sym_affine.detach().cpu().tolist()  # I x O x 4
    I, O = mask.shape
    outputs = []
    for j in range(O):
        terms = []
        for i in range(I):
            if mask[i, j] == 0:
                continue
            fn = layer.symbolic_function(i, j) if sym_mask[i, j] != 0 else None
            if fn is None:
                raise ValueError(
                    f"edge (l={l}, i={i}, j={j}) is still a spline: fix it with fix_symbolic or "
                    "auto_symbolic (or prune it) before asking for a formula"
                )
            a, b, c, d = (sympy.Float(v) for v in affine[i][j])
            terms.append(c * fn.sympy(a * inputs[i] + b) + d)
        outputs.append(sympy.Add(*terms))
    return outputs


# ----------------------------------------------------------------------------------------------
# cleaning


def clean_constants(expr: sympy.Expr, *, digits: int = 4, tol: float = 1e-3) -> sympy.Expr:
    """`expr` with readable constants (passes 1-5 of the module docstring).

    tol: relative tolerance for snapping a number and for dropping a term of a sum.
    digits: significant digits kept on the floats that did not snap.
    """
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    if not (isinstance(digits, int) and digits >= 1):
        raise ValueError(f"digits must be an integer >= 1, got {digits!r}")
    if not 0 <= tol < 0.1:
        raise ValueError(f"tol must be in [0, 0.1), got {tol}")
    for _ in range(2):  # snapping can expose new constants to pull out (exp(0.9999*u + 1))
        expr = _distribute(expr)
        expr = _bottom_up(expr, lambda e: _pull_constants(e, tol))
        expr = _distribute(expr)
        expr = _bottom_up(expr, lambda e: _drop_small_terms(e, tol))
        expr = _map_floats(expr, lambda v: _nice_number(v, tol))
    return _map_floats(expr, lambda v: _round_significant(v, digits))


def _distribute(expr: sympy.Expr) -> sympy.Expr:
    """Products over sums, everywhere: 2*(3*sin(x) + 1) -> 6*sin(x) + 2 (powers, exp, log untouched)."""
    return sympy.expand(expr, deep=True, mul=True, multinomial=False, power_exp=False, power_base=False, log=False)


def _bottom_up(expr: sympy.Expr, rule: Callable[[sympy.Expr], sympy.Expr]) -> sympy.Expr:
    """Apply `rule` to every node, children first."""
    if not expr.args:
        return rule(expr)
    return rule(expr.func(*(_bottom_up(a, rule) for a in expr.args)))


def _map_floats(expr: sympy.Expr, fn: Callable[[float], sympy.Expr | None]) -> sympy.Expr:
    """Replace each Float v by fn(v) (kept when fn returns None)."""
    reps = {}
    for f in expr.atoms(sympy.Float):
        new = fn(float(f))
        if new is not None:
            reps[f] = new
    return expr.xreplace(reps) if reps else expr


def _split_constant(arg: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr]:
    """arg = k + u with k the numeric term of a sum (0 if none)."""
    if isinstance(arg, sympy.Add):
        k, u = arg.as_coeff_Add()
        return k, u
    return sympy.Integer(0), arg


def _leading_coefficient(arg: sympy.Add) -> sympy.Expr:
    """The numeric coefficient of the non-constant term with the largest one (in magnitude)."""
    coeffs = [t.as_coeff_Mul()[0] for t in arg.args if not t.is_number]
    return max(coeffs, key=lambda c: abs(float(c))) if coeffs else sympy.Integer(1)


def _pull_constants(e: sympy.Expr, tol: float) -> sympy.Expr:
    if isinstance(e, sympy.exp):
        k, u = _split_constant(e.args[0])
        if k != 0 and not u.is_number:
            return sympy.exp(k) * sympy.exp(u)
    elif isinstance(e, sympy.Pow) and isinstance(e.base, sympy.Add) and e.exp.is_number:
        k = _leading_coefficient(e.base)
        if k != 1 and k != 0 and (e.exp.is_integer or k > 0):
            return k**e.exp * _distribute(e.base / k) ** e.exp
    elif isinstance(e, sympy.log) and isinstance(e.args[0], sympy.Add | sympy.Mul):
        arg = e.args[0]
        k = _leading_coefficient(arg) if isinstance(arg, sympy.Add) else arg.as_coeff_Mul()[0]
        if k.is_number and k > 0 and k != 1:
            return sympy.log(k) + sympy.log(_distribute(arg / k))
    elif isinstance(e, sympy.sin | sympy.cos):
        return _nicer_phase(e, tol)
    return e


def _nicer_phase(e: sympy.Expr, tol: float) -> sympy.Expr:
    """sin(u + b) == cos(u + b - π/2) == -sin(u + b - π) == ...: when b is within tol of
    kπ/2 + m with m = 0 or a simple number |m| <= 1, use that form: sin(3x + 2.5708) -> cos(3x + 1)."""
    b, u = _split_constant(e.args[0])
    if not isinstance(b, sympy.Float) or u.is_number:
        return e
    quarter = [sympy.sin, sympy.cos, lambda t: -sympy.sin(t), lambda t: -sympy.cos(t)]  # f(t + k π/2)
    start = 0 if isinstance(e, sympy.sin) else 1
    for k in range(4):
        shifted = math.remainder(float(b) - k * math.pi / 2, 2 * math.pi)  # in [-π, π]
        nice = sympy.Integer(0) if abs(shifted) <= tol else _nice_number(shifted, tol)
        if nice is not None and abs(float(nice)) <= 1:
            return quarter[(start + k) % 4](u + nice)
    return e


def _drop_small_terms(e: sympy.Expr, tol: float) -> sympy.Expr:
    """Drop terms of a sum whose numeric coefficient is below tol * the largest coefficient of a
    non-constant term (a constant alone never makes the variable terms negligible: x + 5000)."""
    if not isinstance(e, sympy.Add):
        return e
    mags = [abs(float(t.as_coeff_Mul()[0])) for t in e.args]
    varying = [m for t, m in zip(e.args, mags) if not t.is_number]
    if not varying:
        return e
    floor = tol * max(varying)
    keep = [t for t, m in zip(e.args, mags) if m >= floor]
    return sympy.Add(*keep) if len(keep) < len(e.args) else e


def _nice_number(v: float, tol: float) -> sympy.Expr | None:
    """The first of p/q, pπ/q (q = 1, 2, 3, 4) within tol * min(|v|, 1) of v, or None.

    The tolerance is relative for |v| < 1 and absolute beyond, so a large number only snaps to a
    value that matches it to ~3 decimals, not to whatever integer is nearest.
    """
    if v == 0 or not math.isfinite(v):
        return None
    window = tol * min(abs(v), 1.0)
    for unit in (sympy.Integer(1), sympy.pi):
        scaled = abs(v) / float(unit)
        for q in (1, 2, 3, 4):
            p = round(scaled * q)
            if p > 0 and abs(scaled - p / q) * float(unit) <= window:
                return int(math.copysign(1, v)) * sympy.Rational(p, q) * unit
    return None


def _round_significant(v: float, digits: int) -> sympy.Float:
    return sympy.Float(f"{v:.{digits}g}", digits)


# ----------------------------------------------------------------------------------------------
# simplifying


MAX_SIMPLIFY_FUNCTIONS = 3  # sympy.simplify only with at most this many applied functions...
MAX_SIMPLIFY_NESTING = 2  # ...nested at most this deep (exp(sin(x)) is 2), none trig-like (see below)
MAX_SIMPLIFY_SYMBOLS = 5  # ...in at most this many variables
_TRIG_LIKE = (TrigonometricFunction, InverseTrigonometricFunction, HyperbolicFunction, InverseHyperbolicFunction)


def _function_depth(expr: sympy.Basic) -> int:
    if not expr.args:
        return 0
    inner = max(_function_depth(a) for a in expr.args)
    return inner + 1 if isinstance(expr, sympy.Function) else inner


def simplify_is_safe(expr: sympy.Expr) -> bool:
    """Whether `sympy.simplify` is cheap enough to try: at most MAX_SIMPLIFY_OPS operations and
    MAX_SIMPLIFY_FUNCTIONS applied functions nested at most MAX_SIMPLIFY_NESTING deep, none of them
    trigonometric or hyperbolic, in at most MAX_SIMPLIFY_SYMBOLS variables. Why: trigsimp can run
    for minutes on a 20-operation formula with a single sine, factor/expand blow up on deeply nested
    ones whatever their operation count, and exptrigsimp's polynomial gcds over many variables ran
    for over ten minutes on a 21-operation formula in six π groups (the formulas that did it are in
    the commit history of this function)."""
    if sympy.count_ops(expr) > MAX_SIMPLIFY_OPS or len(expr.free_symbols) > MAX_SIMPLIFY_SYMBOLS:
        return False
    functions = [e for e in sympy.preorder_traversal(expr) if isinstance(e, sympy.Function)]
    return (len(functions) <= MAX_SIMPLIFY_FUNCTIONS and not any(isinstance(f, _TRIG_LIKE) for f in functions)
            and _function_depth(expr) <= MAX_SIMPLIFY_NESTING)


def _bounded_simplify(expr: sympy.Expr, digits: int, tol: float) -> sympy.Expr:
    """The lowest-complexity of a few equivalent rewrites, each cleaned again; size-guarded."""
    ops = sympy.count_ops(expr)
    if ops > MAX_REWRITE_OPS:
        return expr
    rewrites: list[Callable[[sympy.Expr], sympy.Expr]] = [
        lambda e: sympy.expand(e, deep=True, power_exp=False, log=False),  # products of sums cancel
        lambda e: sympy.expand(e, deep=True, log=False),  # exp(log(x1) - log(x2)) -> x1/x2
        sympy.cancel,
    ]
    if simplify_is_safe(expr):
        rewrites.append(sympy.simplify)
    best, best_size = expr, formula_complexity(expr)
    for rewrite in rewrites:
        try:
            with time_cap():
                cand = clean_constants(rewrite(expr), digits=digits, tol=tol)
        except TimeCapExceeded:  # sympy's algebra can run for minutes on a small formula
            continue
        size = formula_complexity(cand)
        if size < best_size and not cand.has(sympy.nan, sympy.zoo):
            best, best_size = cand, size
    return best


# ----------------------------------------------------------------------------------------------
# printing, measuring, evaluating


def formula_latex(expr: sympy.Expr) -> str:
    """LaTeX of the expression (sympy's printer)."""
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    return sympy.latex(expr)


def formula_complexity(expr: sympy.Expr) -> int:
    """Number of nodes of the expression tree (operators, functions, symbols and numbers).

    ``exp(sin(pi*x_1) + x_2**2)`` has 9: exp, +, sin, *, pi, x_1, **, x_2, 2. This is the
    "model size" of SRBench; unlike sympy.count_ops it also counts leaves, so x and 2*x differ.
    """
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    return sum(1 for _ in sympy.preorder_traversal(expr))


def evaluate_formula(
    expr: sympy.Expr, var_names: Sequence[str], X: np.ndarray | torch.Tensor
) -> np.ndarray:
    """Evaluate `expr` on the rows of X (B, len(var_names)): -> (B,) float64 (NaN off-domain).

    Uses sympy.lambdify with numpy; `expr` is one of our formulas, never user text.
    """
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    names = list(var_names)
    X = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
    if X.ndim != 2 or X.shape[1] != len(names):
        raise ValueError(f"X must be (batch, {len(names)}) for variables {names}, got {X.shape}")
    X = X.astype(np.float64)
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values")
    symbols = [sympy.Symbol(n) for n in names]
    unknown = {s.name for s in expr.free_symbols} - set(names)
    if unknown:
        raise ValueError(f"formula uses variables not in var_names: {sorted(unknown)}")
    fn = sympy.lambdify(symbols, expr, modules="numpy")
    with np.errstate(all="ignore"):
        out = fn(*X.T)
    return real_values(out, X.shape[0]).copy()


def real_values(values: object, n: int) -> np.ndarray:
    """A lambdified formula's result as (n,) float64: scalars broadcast, complex values with a
    non-negligible imaginary part (off the real domain) become NaN."""
    out = np.asarray(values)
    if np.iscomplexobj(out):
        out = np.where(np.abs(out.imag) <= 1e-12 * (1 + np.abs(out.real)), out.real, np.nan)
    return np.broadcast_to(out.astype(np.float64, copy=False), (n,))
