"""Is a found formula a symbolic solution? The SRBench ground-truth rule (La Cava et al., 2021),
as stated in shared/benchmarks/README.md:

1. parse both formulas with the same plain symbols for the variables;
2. round every number to 3 decimals, numbers below 1e-4 in magnitude become 0;
3. simplify the found formula (and, as a second reading, the true one: "the same rounding and
   simplification");
4. it is a solution when ``true - found`` or ``found / true`` is a constant (zero included), after
   the same rounding and simplification. A found formula that is 0 or NaN never is.

"Every number" includes constants such as π and e and non-integer fractions (1/3 -> 0.333), but
not the rational exponents of powers (sqrt stays sqrt); a number that rounds to an integer
becomes that integer (1.0*x is x). So ``3.1416*x`` matches ``pi*x`` (both 3.142*x), as the README's
example requires.

Strings are parsed with sympy.parse_expr and a restricted namespace (the variables as Symbols and
the standard functions): they come from the benchmark file or our own formulas, never from web
users. sympy.simplify can take minutes on big expressions, so it only runs below a size cap
(cheaper rewrites above it), and a numerical test first rejects pairs whose difference and ratio
visibly vary at random complex points (no simplification can make those constant).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import sympy
from sympy.parsing.sympy_parser import parse_expr, standard_transformations

MAX_SIMPLIFY_OPS = 200  # sympy.simplify only below this many operations; cheaper rewrites above

_FUNCTIONS: dict[str, object] = {
    "sin": sympy.sin, "cos": sympy.cos, "tan": sympy.tan, "cot": sympy.cot,
    "asin": sympy.asin, "acos": sympy.acos, "atan": sympy.atan,
    "arcsin": sympy.asin, "arccos": sympy.acos, "arctan": sympy.atan,
    "sinh": sympy.sinh, "cosh": sympy.cosh, "tanh": sympy.tanh,
    "asinh": sympy.asinh, "acosh": sympy.acosh, "atanh": sympy.atanh, "arctanh": sympy.atanh,
    "exp": sympy.exp, "log": sympy.log, "ln": sympy.log, "sqrt": sympy.sqrt,
    "Abs": sympy.Abs, "abs": sympy.Abs, "sign": sympy.sign, "sgn": sympy.sign,
    "pi": sympy.pi, "E": sympy.E,
}  # fmt: skip
# what parse_expr's transformations need to build numbers and symbols; no builtins
_PARSER_GLOBALS: dict[str, object] = {
    "Integer": sympy.Integer, "Float": sympy.Float, "Rational": sympy.Rational,
    "Symbol": sympy.Symbol, "__builtins__": {},
}  # fmt: skip
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_solution(
    found: sympy.Expr | str,
    true: sympy.Expr | str,
    variables: Sequence[str | sympy.Symbol] | None = None,
) -> bool:
    """The SRBench rule (module docstring). `variables`: the variable names shared by both
    formulas (default: every name in them that is not a known function or constant)."""
    names = _variable_names(found, true, variables)
    f = _round_numbers(_as_expr(found, names, "found"))
    t = _round_numbers(_as_expr(true, names, "true"))
    if _is_zero_or_nan(f):
        return False
    if t == 0:
        raise ValueError("the true formula must not be 0")
    f = _round_numbers(_simplify(f))
    if _is_zero_or_nan(f):
        return False
    # the truth as written, and after the same simplification and rounding as the found formula
    # (else a constant that simplify brings out, e in exp(1 - x) -> E*exp(-x), is rounded on one
    # side only, and a formula would not solve itself)
    t_simple = _round_numbers(_simplify(t))
    truths = [t] if t_simple == t or _is_zero_or_nan(t_simple) else [t, t_simple]
    pairs = [e for tt in truths for e in (tt - f, f / tt) if _numerically_constant(e)]
    return any(_is_constant(_round_numbers(_simplify(_round_numbers(e)))) for e in pairs)


# ----------------------------------------------------------------------------------------------
# parsing


def _variable_names(
    found: sympy.Expr | str, true: sympy.Expr | str, variables: Sequence[str | sympy.Symbol] | None
) -> list[str]:
    if variables is not None:
        names = [v.name if isinstance(v, sympy.Symbol) else str(v) for v in variables]
        bad = [n for n in names if not n.isidentifier() or n in _FUNCTIONS]
        if bad:
            raise ValueError(f"variable names must be identifiers other than function names, got {bad}")
        return names
    names: set[str] = set()
    for e in (found, true):
        if isinstance(e, str):
            names |= {n for n in _IDENTIFIER.findall(e) if n not in _FUNCTIONS}
        elif isinstance(e, sympy.Basic):
            names |= {s.name for s in e.free_symbols}
    return sorted(names)


def _as_expr(e: sympy.Expr | str, names: list[str], what: str) -> sympy.Expr:
    """A sympy expression over plain Symbols named `names`."""
    symbols = {n: sympy.Symbol(n) for n in names}
    if isinstance(e, str):
        local = {**_FUNCTIONS, **symbols}
        try:
            expr = parse_expr(
                e, local_dict=local, global_dict=dict(_PARSER_GLOBALS), transformations=standard_transformations
            )
        except Exception as err:  # parse_expr raises many types (SyntaxError, NameError, TypeError...)
            raise ValueError(f"cannot parse the {what} formula {e!r}: {err}") from None
    elif isinstance(e, sympy.Basic):
        expr = e
    else:
        raise ValueError(f"the {what} formula must be a sympy expression or a string, got {type(e).__name__}")
    if not isinstance(expr, sympy.Expr):
        raise ValueError(f"the {what} formula is not an expression: {expr!r}")
    unknown = {s.name for s in expr.free_symbols} - set(names)
    if unknown:
        raise ValueError(f"the {what} formula uses names that are not variables: {sorted(unknown)}")
    # same plain symbols on both sides, whatever assumptions the caller's symbols carried
    return expr.xreplace({s: symbols[s.name] for s in expr.free_symbols})


# ----------------------------------------------------------------------------------------------
# rounding, simplifying, testing


def _round_numbers(expr: sympy.Expr) -> sympy.Expr:
    """Every numeric subexpression (but rational exponents) rounded to 3 decimals, |v| < 1e-4 -> 0,
    integral values -> Integer."""
    if expr.is_Integer or expr.is_Symbol:
        return expr
    if expr.is_number:
        v = complex(expr.evalf())
        if v.imag != 0 or not np.isfinite(v.real):
            return expr
        r = 0.0 if abs(v.real) < 1e-4 else round(v.real, 3)
        return sympy.Integer(int(r)) if r == int(r) else sympy.Float(r)
    if isinstance(expr, sympy.Pow) and expr.exp.is_Rational:
        return sympy.Pow(_round_numbers(expr.base), expr.exp)
    if not expr.args:
        return expr
    return expr.func(*(_round_numbers(a) for a in expr.args))


def _simplify(expr: sympy.Expr) -> sympy.Expr:
    if sympy.count_ops(expr) <= MAX_SIMPLIFY_OPS:
        return sympy.simplify(expr)
    return sympy.cancel(sympy.expand(expr))


def _is_zero_or_nan(expr: sympy.Expr) -> bool:
    return expr == 0 or expr.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo)


def _is_constant(expr: sympy.Expr) -> bool:
    """No variables left and a finite value (zero included)."""
    return expr == 0 or (not expr.free_symbols and not _is_zero_or_nan(expr))


def _numerically_constant(expr: sympy.Expr, n_points: int = 8, rtol: float = 1e-6) -> bool:
    """False when `expr` visibly varies over random complex points near the positive reals (so it
    cannot simplify to a constant); True when constant there or when the test is inconclusive."""
    symbols = sorted(expr.free_symbols, key=lambda s: s.name)
    if not symbols:
        return True
    rng = np.random.default_rng(0)
    shape = (len(symbols), n_points)
    pts = rng.uniform(0.5, 2.0, shape) * np.exp(1j * rng.uniform(-0.5, 0.5, shape))  # |z| in [0.5, 2]
    try:
        fn = sympy.lambdify(symbols, expr, modules="numpy")
        with np.errstate(all="ignore"):
            vals = np.broadcast_to(np.asarray(fn(*pts), dtype=complex), (n_points,))
    except Exception:  # an expression numpy cannot evaluate: leave it to the symbolic test
        return True
    if not np.isfinite(vals).all():
        return True
    return bool(np.abs(vals - vals[0]).max() <= rtol * (1.0 + np.abs(vals).max()))
