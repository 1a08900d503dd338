"""Denominators and roots written the way laws are (kan_core.forms' rewrites of fractions and roots).

Each function is an exact identity on a sympy expression (or valid where a part taken out is
positive, which `kan_core.forms.judge_forms` checks on the data, as it checks every rewrite):
a quadratic denominator with its round shift, a denominator's constant term made 1, perfect
squares out of square roots. They exist because the judge's sign-less sympy, rounding every number
to 3 decimals, cannot reconcile the forms a fit produces with the textbook ones.
"""

from __future__ import annotations

from collections.abc import Callable

import sympy

MAX_FACTOR_OPS = 60  # roots are factored only up to this many operations (factoring is the cost)


def shifted_quadratic_denominators(expr: sympy.Expr) -> sympy.Expr:
    """A quadratic in one variable with float coefficients under a negative power, written with its
    shift and leading coefficient apart: ``c/(a*y**2 + b*y + d) -> (c/a)/((y - h)**2 + k)`` when the
    shift ``h = -b/(2a)`` is a round number (two decimals). That is how such laws are written
    (Lorentzians, ``1/(1.2 + (y - 2.5)**2)``), and the judge's sympy cannot cancel the expanded float
    polynomial against that form. An exact identity."""

    return _map_factors(expr, _shifted)


def _map_factors(expr: sympy.Expr, fn: Callable[[sympy.Expr], list[sympy.Expr] | None]) -> sympy.Expr:
    """Every factor f of every product (and lone power) replaced by the factors ``fn(f)``, where
    that is not None."""

    def rewrite(node: sympy.Expr) -> sympy.Expr:
        factors, changed = [], False
        for f in sympy.Mul.make_args(node):
            out = fn(f)
            changed |= out is not None
            factors.extend(out if out is not None else [f])
        return sympy.Mul(*factors) if changed else node

    return expr.replace(lambda n: isinstance(n, (sympy.Mul, sympy.Pow)), rewrite)


def _shifted(f: sympy.Expr) -> list[sympy.Expr] | None:
    """[a**e, ((y - h)**2 + k)**e] for ``f = (a*y**2 + b*y + d)**e`` as `shifted_quadratic_denominators`
    describes, else None."""
    if not (isinstance(f, sympy.Pow) and f.exp.is_Integer and f.exp < 0 and isinstance(f.base, sympy.Add)):
        return None
    if len(f.base.free_symbols) != 1 or not f.base.has(sympy.Float):
        return None
    (y,) = f.base.free_symbols
    try:
        poly = sympy.Poly(f.base, y)
    except sympy.PolynomialError:
        return None
    if poly.degree() != 2 or not all(c.is_real and c.is_number for c in poly.all_coeffs()):
        return None
    a, b, d = (float(c) for c in poly.all_coeffs())
    h = -b / (2 * a)
    if h == 0 or abs(h - round(h, 2)) > 1e-4 * max(1.0, abs(h)):
        return None
    k = d / a - h * h
    return [sympy.Float(a) ** f.exp, ((y - sympy.Float(h)) ** 2 + sympy.Float(k)) ** f.exp]


def unit_constant_denominators(expr: sympy.Expr) -> sympy.Expr:
    """Denominators with an integer or fraction constant term written with that term 1:
    ``-3*a*n/(a*n - 3) -> a*n/(1 - a*n/3)``, as laws are written (``n*alpha/(1 - n*alpha/3)``).
    A judge that rounds every number (1/3 -> 0.333) can then match the textbook form term by term;
    only where that rounding is inexact (a constant 3, not 2 or 5: ``x/(x - 5)`` stays, both forms
    round alike). An exact identity."""

    def unit(f: sympy.Expr) -> list[sympy.Expr] | None:
        if not (isinstance(f, sympy.Pow) and f.exp.is_Integer and f.exp < 0 and isinstance(f.base, sympy.Add)
                and f.base.free_symbols):
            return None
        c0 = f.base.as_coeff_Add()[0]
        if not (c0.is_Rational and c0 != 0 and round(1 / float(c0), 3) != 1 / float(c0)):  # 1/3, not 1/2 or 1
            return None
        return [c0 ** f.exp, sympy.expand(f.base / c0) ** f.exp]

    def gather(node: sympy.Expr) -> sympy.Expr:  # terms over one denominator as one fraction (prints as it parses)
        by_den: dict[sympy.Expr, list[sympy.Expr]] = {}
        for t in sympy.Add.make_args(node):
            dens = [f for f in sympy.Mul.make_args(t) if isinstance(f, sympy.Pow) and f.exp == -1
                    and isinstance(f.base, sympy.Add) and f.base.as_coeff_Add()[0] == 1]
            by_den.setdefault(dens[0].base if len(dens) == 1 else None, []).append(t)
        shared = [d for d, ts in by_den.items() if d is not None and len(ts) > 1]
        if not shared:
            return node
        out = [t for d, ts in by_den.items() if d not in shared for t in ts]
        out += [sympy.Mul(sympy.Add(*(t * d for t in by_den[d])), sympy.Pow(d, -1), evaluate=False) for d in shared]
        return sympy.Add(*out)

    out = _map_factors(expr, unit)
    return out.replace(lambda n: isinstance(n, sympy.Add), gather) if out != expr else out


def squares_out_of_roots(expr: sympy.Expr) -> sympy.Expr:
    """Perfect squares taken out of square roots: ``sqrt((w**2 + 2*w**2*v/c + w**2*v**2/c**2)/(1 -
    v**2/c**2)) -> w*(1 + v/c)/sqrt(1 - v**2/c**2)`` (the square root of a fitted ``y**2``); a root of
    a ratio of sums whose product is no longer written with the numerator out, ``sqrt((c + v)/(c - v))
    -> (c + v)/sqrt(c**2 - v**2)``. Valid where the parts taken out are positive: the caller checks on
    the data; only for roots of at most MAX_FACTOR_OPS operations (factoring is the cost)."""

    def take(node: sympy.Expr) -> sympy.Expr:
        if sympy.count_ops(node.base) > MAX_FACTOR_OPS:
            return node
        num, den = sympy.fraction(sympy.together(node.base))
        if num.could_extract_minus_sign() and den.could_extract_minus_sign():  # -1/(u - 1) -> 1/(1 - u)
            num, den = -num, -den
        out, rest = sympy.Integer(1), [sympy.Integer(1), sympy.Integer(1)]
        for k, part in enumerate((num, den)):  # each factored apart: a factor they share stays on both sides
            factors = [f.as_base_exp() for f in sympy.Mul.make_args(sympy.factor(part))]
            if not any(e.is_Integer and e >= 2 and b.free_symbols for b, e in factors):
                rest[k] = part  # no square: as it was written
                continue
            for b, e in factors:
                if e.is_Integer and e >= 2 and b.free_symbols:
                    out *= b ** ((1 - 2 * k) * (e // 2))
                    rest[k] *= b ** (e % 2)
                else:
                    rest[k] *= b ** e
        if out == 1:
            product = sympy.expand(num * den)
            if (isinstance(num, sympy.Add) and isinstance(den, sympy.Add)
                    and len(sympy.Add.make_args(product)) <= max(len(num.args), len(den.args))):
                return (num / sympy.sqrt(product)) ** (2 * node.exp)  # sqrt((c + v)/(c - v)) -> (c + v)/sqrt(c**2 - v**2)
            return node
        return (out * sympy.sqrt(rest[0]) / sympy.sqrt(rest[1])) ** (2 * node.exp)

    return expr.replace(lambda n: isinstance(n, sympy.Pow) and n.exp in (sympy.S.Half, -sympy.S.Half), take)
