"""Units (a whitelist parser, never eval) and Buckingham π discovery on known cases."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import sympy

from kan_core.data import Dataset
from kan_core.discovery import Budget
from kan_core.discovery.dimensional import discover_with_units
from kan_core.units import BASE, DimensionError, UnitError, buckingham, format_dimension, parse_unit


@pytest.mark.parametrize(("unit", "expected"), [
    ("kg*m/s^2", {"kg": 1, "m": 1, "s": -2}), ("N", {"kg": 1, "m": 1, "s": -2}),
    ("kg m s^-2", {"kg": 1, "m": 1, "s": -2}),
    ("J/(mol K)", {"kg": 1, "m": 2, "s": -2, "mol": -1, "K": -1}), ("m^(1/2)", {"m": Fraction(1, 2)}),
    ("km/h", {"m": 1, "s": -1}), ("1", {}), ("rad", {}), ("ms", {"s": 1}), ("Ohm", {"kg": 1, "m": 2, "s": -3, "A": -2}),
    ({"m": 1, "s": -2}, {"m": 1, "s": -2}), ([1, 0, -2, 0, 0, 0, 0], {"m": 1, "s": -2}),
])
def test_units_parse_to_si_exponents(unit, expected):
    assert parse_unit(unit) == tuple(Fraction(expected.get(b, 0)) for b in BASE)


@pytest.mark.parametrize("bad", ["", "kg*", "foo", "m^x", "2*m", "m//s", "(m", "__import__('os')", "m;s", [1, 2],
                                 {"meter": 1}])
def test_bad_units_are_refused(bad):
    with pytest.raises(UnitError):
        parse_unit(bad)


def test_pendulum_groups_mass_drops_out():
    groups = buckingham(["kg", "m", "m/s^2"], "s", ["m", "L", "g"])
    assert groups.groups == ()  # no dimensionless group: T = C * sqrt(L/g)
    assert groups.scale == (0, Fraction(1, 2), Fraction(-1, 2))
    assert groups.scale_expr() == sympy.sqrt(sympy.Symbol("L")) / sympy.sqrt(sympy.Symbol("g"))


def test_no_consistent_groups_is_refused_with_a_reason():
    with pytest.raises(DimensionError, match=r"target's units \(kg\).*x: m, t: s.*no dimensionally consistent"):
        buckingham(["m", "s"], "kg", ["x", "t"])


def _rows(f, ranges, n, rng):
    x = np.column_stack([rng.uniform(lo, hi, n) for lo, hi in ranges])
    return x, f(x)


def test_pendulum_period_from_noisy_data_with_units():
    rng = np.random.default_rng(0)
    period = lambda x: 2 * np.pi * np.sqrt(x[:, 1] / x[:, 2])  # noqa: E731  (m, L, g)
    ranges = [(0.1, 5), (0.2, 3), (1, 20)]
    (x, y), (xt, yt) = _rows(period, ranges, 400, rng), _rows(period, ranges, 400, rng)
    data = Dataset.from_arrays(x, y + rng.normal(0, 0.01 * y.std(), y.shape), xt, yt)
    out, groups = discover_with_units(data, ["kg", "m", "m/s^2"], "s", var_names=["m", "L", "g"])
    assert out.chosen is not None and "m" not in {str(s) for s in out.chosen.expr.free_symbols}
    assert out.chosen.formula == "2*pi*sqrt(L/g)"  # one radical, as written for positive L and g
    assert out.chosen.test_r2 == pytest.approx(1.0) and out.chosen.noise_rmse is not None


def test_groups_are_searched_and_written_back_in_the_original_variables():
    rng = np.random.default_rng(1)
    rng_ = lambda x: x[:, 0] ** 2 * np.sin(2 * x[:, 2]) / x[:, 1]  # noqa: E731  (v, g, theta)
    ranges = [(1, 10), (5, 15), (0.1, 1.4)]
    (x, y), (xt, yt) = _rows(rng_, ranges, 400, rng), _rows(rng_, ranges, 400, rng)
    out, groups = discover_with_units(Dataset.from_arrays(x, y, xt, yt), ["m/s", "m/s^2", "rad"], "m",
                                      Budget(max_candidates=3, max_seconds=300), var_names=["v", "g", "theta"])
    assert groups.group_names == ("pi_1",) and format_dimension(parse_unit("m/s^2")) == "m/s^2"
    v, g, theta = sympy.symbols("v g theta")
    assert sympy.simplify(out.chosen.expr - v ** 2 * sympy.sin(2 * theta) / g) == 0
    assert all(r.var_names == ("v", "g", "theta") for r in out.results)


def test_a_fractional_power_of_a_negative_column_is_refused():
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, (50, 2))
    data = Dataset.from_arrays(x, np.ones(50), x, np.ones(50))
    with pytest.raises(DimensionError, match="fractional power"):
        discover_with_units(data, ["m", "m/s^2"], "s", var_names=["L", "g"])


def test_formulas_are_written_with_one_radical_only_where_the_values_agree():
    from kan_core.forms import radical_form

    a, d, x, g, p, r = sympy.symbols("A d x g p r")
    positive = np.array([[1.0, 2.0, 3.0], [4.0, 0.5, 2.0]])  # (N, 3)
    assert radical_form(sympy.sqrt(a) * sympy.sqrt(a / d ** 2), ["A", "d"], positive[:, :2]) == a / d
    assert radical_form(sympy.sqrt(g) * sympy.sqrt(p) / sympy.sqrt(r), ["g", "p", "r"], positive) == sympy.sqrt(g * p / r)
    rows = np.array([[-2.0], [3.0]])  # (N, 1)
    assert radical_form(sympy.sqrt(x ** 2), ["x"], rows) == sympy.sqrt(x ** 2)  # |x| is not x at x = -2
    assert radical_form(sympy.sqrt(x ** 2), ["x"], np.abs(rows)) == x


def test_the_scale_written_back_in_front_of_pi_groups_is_multiplied_in_where_shorter():
    """y = x1 * F(groups) reads as the textbook formula: the judge cannot reconcile ``I1*(1 + I2/I1)``
    or ``x1*sqrt(1 - 2*x2/x1 + ...)`` with ``I1 + I2`` or a distance; a negative scale is left alone."""
    from kan_core.forms import radical_form
    from kan_core.judge import is_solution

    i1, i2, d, x1, x2, y1, y2 = sympy.symbols("I1 I2 delta x1 x2 y1 y2")
    rng = np.random.default_rng(0)
    rows = rng.uniform(1, 5, (100, 4))  # (N, 4), positive
    intensity = i1 * (2 * sympy.sqrt(i2 / i1) * sympy.cos(d) + 1 + i2 / i1)
    out = radical_form(intensity, ["I1", "I2", "delta"], rows[:, :3])
    assert out == i1 + i2 + 2 * sympy.sqrt(i1 * i2) * sympy.cos(d)
    distance = x1 * sympy.sqrt(1 - 2 * x2 / x1 + x2**2 / x1**2 + y1**2 / x1**2 - 2 * y1 * y2 / x1**2 + y2**2 / x1**2)
    out = radical_form(distance, ["x1", "x2", "y1", "y2"], rows)
    assert not isinstance(out, sympy.Mul) and is_solution(str(out), "sqrt((x2 - x1)**2 + (y2 - y1)**2)")
    negative = rows.copy()
    negative[0, 0] = -1.0  # x1 < 0 on one row: x1*sqrt(u) is not sqrt(x1**2*u)
    assert radical_form(x1 * sympy.sqrt(1 + x2 / x1**2), ["x1", "x2", "y1", "y2"], negative) == x1 * sympy.sqrt(1 + x2 / x1**2)
