"""Units and dimensional analysis: SI exponent vectors, and Buckingham π groups.

A unit is read by a small whitelist parser (never evaluated): SI base and derived unit symbols,
optionally with an SI prefix (``km``, ``ms``, ``uA``), joined by ``*``, ``/``, ``·`` or spaces,
raised by ``^`` or ``**`` to an integer or a fraction (``s^-2``, ``m^(1/2)``), parentheses, and
``1`` for a dimensionless column (``kg*m/s^2``, ``J/(mol K)``). A unit is also accepted as its
exponents: seven numbers in BASE order, or a mapping ``{"m": 1, "s": -2}``. Prefixes and scale
factors do not change a dimension, and a dimension is all that dimensional analysis needs.

`buckingham` turns the units of the inputs and of the target into the reduction that Buckingham's
π theorem allows: ``y = prod x_i^a_i * F(pi_1, ..., pi_k)`` with dimensionless groups
``pi_j = prod x_i^e_ji`` (an integer basis of the null space of the inputs' dimension matrix); a
formula found for ``F`` over the groups is dimensionally consistent by construction, and
`PiGroups.expand` writes it back in the original variables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import sympy

BASE: tuple[str, ...] = ("m", "kg", "s", "A", "K", "mol", "cd")  # SI base units, in exponent-vector order
Dimension = tuple[Fraction, ...]  # exponents of BASE

_DERIVED: dict[str, str] = {  # symbol -> definition in earlier symbols
    "g": "kg", "N": "kg*m/s^2", "J": "N*m", "W": "J/s", "Pa": "N/m^2", "Hz": "1/s", "C": "A*s", "V": "W/A",
    "ohm": "V/A", "Ohm": "V/A", "Ω": "V/A", "S": "A/V", "F": "C/V", "Wb": "V*s", "T": "Wb/m^2", "H": "Wb/A",
    "rad": "1", "sr": "1", "eV": "J", "L": "m^3", "min": "s", "h": "s", "Bq": "1/s", "Gy": "J/kg", "lm": "cd",
    "lx": "cd/m^2", "bar": "Pa", "atm": "Pa", "M": "mol/m^3",
}
_PREFIXES = {"Y", "Z", "E", "P", "G", "M", "k", "h", "da", "d", "c", "m", "u", "µ", "μ", "n", "p", "f", "a"}
_TOKEN = re.compile(r"\s*(?:(?P<num>\d+)|(?P<name>[A-Za-zµμΩ]+)|(?P<op>\*\*|[*/^()·.\-+]))")
MAX_UNIT_LENGTH = 200


class UnitError(ValueError):
    """A unit string or exponent vector that cannot be read."""


class DimensionError(ValueError):
    """No dimensionally consistent formula exists for the given units (or the data does not allow one)."""


def _vec(**exps: int) -> Dimension:
    return tuple(Fraction(exps.get(b, 0)) for b in BASE)


_ONE: Dimension = _vec()
_UNITS: dict[str, Dimension] = {b: _vec(**{b: 1}) for b in BASE}


def _add(a: Dimension, b: Dimension, k: Fraction = Fraction(1)) -> Dimension:
    return tuple(x + k * y for x, y in zip(a, b))


def _symbol(name: str) -> Dimension:
    if name in _UNITS:
        return _UNITS[name]
    for size in (2, 1):  # a prefix (da, or one letter) before a known symbol
        if len(name) > size and name[:size] in _PREFIXES and name[size:] in _UNITS:
            return _UNITS[name[size:]]
    raise UnitError(f"unknown unit {name!r}; known: {', '.join(sorted(_UNITS))} (with SI prefixes)")


class _Parser:
    """Recursive descent over: expr := factor (('*' | '/' | '·' | '.' | juxtaposition) factor)*;
    factor := atom (('^' | '**') exponent)?; atom := name | '1' | '(' expr ')';
    exponent := ['-' | '+'] int | '(' ['-'] int ['/' int] ')'."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.strip()
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if m is None or m.end() == pos:
                raise UnitError(f"unexpected character {text[pos]!r} at position {pos + 1}")
            kind = m.lastgroup or "op"
            self.tokens.append((kind, m.group(kind)))
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
        self.i = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if tok is None or (value is not None and tok[1] != value):
            raise UnitError(f"expected {value!r}" if value else "unexpected end of the unit")
        self.i += 1
        return tok

    def parse(self) -> Dimension:
        out = self.expr()
        if self.peek() is not None:
            raise UnitError(f"unexpected {self.peek()[1]!r}")
        return out

    def expr(self) -> Dimension:
        out = self.factor()
        while (tok := self.peek()) is not None and tok[1] != ")":
            if tok[1] in ("*", "·", "."):
                self.take()
                out = _add(out, self.factor())
            elif tok[1] == "/":
                self.take()
                out = _add(out, self.factor(), Fraction(-1))
            elif tok[0] in ("name", "num") or tok[1] == "(":
                out = _add(out, self.factor())  # juxtaposition: "kg m"
            else:
                raise UnitError(f"unexpected {tok[1]!r}")
        return out

    def factor(self) -> Dimension:
        base = self.atom()
        tok = self.peek()
        if tok is not None and tok[1] in ("^", "**"):
            self.take()
            power = self.exponent()
            return tuple(power * e for e in base)
        return base

    def atom(self) -> Dimension:
        kind, value = self.take()
        if kind == "name":
            return _symbol(value)
        if kind == "num":
            if value != "1":
                raise UnitError(f"a number in a unit must be 1 (dimensionless), got {value!r}")
            return _ONE
        if value == "(":
            out = self.expr()
            self.take(")")
            return out
        raise UnitError(f"unexpected {value!r}")

    def exponent(self) -> Fraction:
        paren = self.peek() is not None and self.peek()[1] == "("
        if paren:
            self.take("(")
        sign = 1
        if self.peek() is not None and self.peek()[1] in ("-", "+"):
            sign = -1 if self.take()[1] == "-" else 1
        kind, value = self.take()
        if kind != "num":
            raise UnitError(f"an exponent must be an integer or (p/q), got {value!r}")
        power = Fraction(int(value))
        if paren:
            if self.peek() is not None and self.peek()[1] == "/":
                self.take()
                kind, den = self.take()
                if kind != "num" or int(den) == 0:
                    raise UnitError(f"bad exponent denominator {den!r}")
                power /= int(den)
            self.take(")")
        return sign * power


for _name, _definition in _DERIVED.items():  # each defined in symbols known before it
    _UNITS[_name] = _Parser(_definition).parse()


def parse_unit(unit: Any) -> Dimension:
    """The SI exponents of ``unit``: a unit string (see the module docstring), seven numbers in
    BASE order, or a mapping base symbol -> exponent. UnitError (a ValueError) otherwise."""
    if isinstance(unit, str):
        if len(unit) > MAX_UNIT_LENGTH:
            raise UnitError(f"a unit has at most {MAX_UNIT_LENGTH} characters")
        if not unit.strip():
            raise UnitError("empty unit (write 1 for a dimensionless column)")
        return _Parser(unit).parse()
    if isinstance(unit, Mapping):
        unknown = [k for k in unit if k not in BASE]
        if unknown:
            raise UnitError(f"unknown base unit(s) {unknown}; the base units are {', '.join(BASE)}")
        return tuple(_fraction(unit.get(b, 0)) for b in BASE)
    if isinstance(unit, Sequence) and len(unit) == len(BASE):
        return tuple(_fraction(e) for e in unit)
    raise UnitError(f"a unit is a string, {len(BASE)} exponents or a mapping of base units, got {unit!r}")


def _fraction(value: Any) -> Fraction:
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or not math.isfinite(value):
        raise UnitError(f"an exponent must be a finite number, got {value!r}")
    return Fraction(value).limit_denominator(12)


def format_dimension(dim: Dimension) -> str:
    """``kg*m/s^2`` style text of a dimension ("1" when dimensionless)."""
    def part(b: str, e: Fraction) -> str:
        e = abs(e)
        return b if e == 1 else f"{b}^{e}" if e.denominator == 1 else f"{b}^({e})"
    num = [part(b, e) for b, e in zip(BASE, dim) if e > 0]
    den = [part(b, e) for b, e in zip(BASE, dim) if e < 0]
    text = "*".join(num) or "1"
    return text + ("/" + (den[0] if len(den) == 1 else "(" + "*".join(den) + ")") if den else "")


@dataclass(frozen=True)
class PiGroups:
    """``y = prod x_i^scale_i * F(pi_1..pi_k)`` with ``pi_j = prod x_i^groups[j][i]`` dimensionless.
    ``names``: the input variables; ``group_names``: ``pi_1 ..`` (F's variables)."""

    names: tuple[str, ...]
    scale: tuple[Fraction, ...]  # (n,) exponents of the target's dimensional prefactor
    groups: tuple[tuple[int, ...], ...]  # (k, n) integer exponents of each dimensionless group
    group_names: tuple[str, ...]

    def scale_expr(self) -> sympy.Expr:
        return _monomial(self.names, self.scale)

    def group_exprs(self) -> tuple[sympy.Expr, ...]:
        return tuple(_monomial(self.names, g) for g in self.groups)

    def reduce(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``x (N, n)``, ``y (N,)`` -> the groups ``(N, k)`` and the dimensionless target ``(N,)``.
        DimensionError when a fractional or negative power meets a zero or negative value."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(all="ignore"):
            groups = np.column_stack([_power(x, g, self.names) for g in self.groups]) if self.groups else (
                np.zeros((x.shape[0], 0)))
            target = np.asarray(y, dtype=np.float64).reshape(-1) / _power(x, self.scale, self.names)
        if not (np.isfinite(groups).all() and np.isfinite(target).all()):
            raise DimensionError("the dimensionless groups are not finite on every row (a zero where a "
                                 "negative power applies)")
        return groups, target

    def expand(self, expr: sympy.Expr) -> sympy.Expr:
        """A formula for F over `group_names` as a formula for y over `names`."""
        subs = {sympy.Symbol(g): e for g, e in zip(self.group_names, self.group_exprs())}
        return sympy.powsimp(self.scale_expr() * expr.xreplace(subs), force=True)


def _monomial(names: Sequence[str], exps: Sequence[Fraction | int]) -> sympy.Expr:
    out = sympy.Integer(1)
    for name, e in zip(names, exps):
        if e:
            out *= sympy.Symbol(name) ** sympy.Rational(Fraction(e).numerator, Fraction(e).denominator)
    return out


def _power(x: np.ndarray, exps: Sequence[Fraction | int], names: Sequence[str]) -> np.ndarray:
    out = np.ones(x.shape[0])
    for j, e in enumerate(exps):
        e = Fraction(e)
        if e == 0:
            continue
        col = x[:, j]
        if e.denominator != 1 and not bool((col > 0).all()):
            raise DimensionError(f"column {names[j]!r} enters with the fractional power {e} but has values <= 0")
        out = out * (col ** float(e) if e.denominator != 1 else col ** int(e))
    return out


def buckingham(input_units: Sequence[Any], target_unit: Any, names: Sequence[str]) -> PiGroups:
    """The Buckingham π reduction for inputs ``names`` with units ``input_units`` and a target with
    ``target_unit`` (each as `parse_unit` takes it). DimensionError when the target's dimension is
    no product of powers of the inputs' (no dimensionally consistent formula exists)."""
    names = tuple(str(n) for n in names)
    if len(input_units) != len(names):
        raise ValueError(f"{len(names)} inputs but {len(input_units)} units")
    dims = [parse_unit(u) for u in input_units]
    target = parse_unit(target_unit)
    d_x = sympy.Matrix([[sympy.Rational(d[i].numerator, d[i].denominator) for d in dims] for i in range(len(BASE))])
    d_y = sympy.Matrix([sympy.Rational(t.numerator, t.denominator) for t in target])
    try:
        solution, params = d_x.gauss_jordan_solve(d_y)
    except ValueError:
        have = ", ".join(f"{n}: {format_dimension(d)}" for n, d in zip(names, dims))
        raise DimensionError(f"the target's units ({format_dimension(target)}) are no product of powers of the "
                             f"inputs' units ({have}): no dimensionally consistent formula exists") from None
    solution = solution.xreplace({p: 0 for p in params})
    scale = tuple(Fraction(int(sympy.fraction(v)[0]), int(sympy.fraction(v)[1])) for v in solution)
    groups = []
    for vec in d_x.nullspace():
        den = sympy.ilcm(1, *[sympy.fraction(v)[1] for v in vec])
        ints = [int(v * den) for v in vec]
        g = math.gcd(*ints) or 1
        ints = [i // g for i in ints]
        if next(i for i in ints if i) < 0:
            ints = [-i for i in ints]
        groups.append(tuple(ints))
    return PiGroups(names, scale, tuple(groups), tuple(f"pi_{j + 1}" for j in range(len(groups))))


def column_units(units: Mapping[str, Any], feature_names: Sequence[str], target_name: str) -> tuple[list[Any], Any]:
    """The inputs' units in column order and the target's, from a mapping column -> unit;
    DimensionError naming the columns without one."""
    missing = [n for n in (*feature_names, target_name) if n not in units]
    if missing:
        raise DimensionError(f"no unit for column(s) {', '.join(missing)}")
    return [units[n] for n in feature_names], units[target_name]
