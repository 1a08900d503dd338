"""Refitting and rounding a formula's float constants against data (kan_core.constants)."""

import numpy as np
import pytest
import sympy

from kan_core.constants import refit_constants, round_constants, sharpen_constants

THETA, X1, X2 = sympy.symbols("theta x1 x2")


def gaussian_data(n: int = 800, noise: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 3, (n, 1))
    y = np.exp(-x[:, 0] ** 2 / 2) / np.sqrt(2 * np.pi)
    return x, y + rng.normal(0, noise, n) if noise else y


def test_refit_recovers_a_constant_that_was_rounded_to_four_digits() -> None:
    x, y = gaussian_data()
    fit = refit_constants(0.3989 * sympy.exp(-THETA**2 / 2), ["theta"], x, y)
    (constant,) = fit.expr.atoms(sympy.Float)
    assert float(constant) == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-12)
    assert fit.rmse_before > 1e-6 and fit.rmse_after < 1e-14 and fit.iterations >= 1 and fit.n_constants == 1
    assert fit.expr.has(sympy.Rational(-1, 2))  # the snapped exponent is not a parameter


def test_refit_fits_constants_inside_functions_and_several_variables() -> None:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (500, 2))
    y = 1.7 * np.sin(2.3 * x[:, 0] + 0.4) + 0.6 * x[:, 1] ** 2
    start = 1.65 * sympy.sin(2.25 * X1 + 0.45) + 0.62 * X2**2
    fit = refit_constants(start, ["x1", "x2"], x, y)
    assert fit.rmse_after < 1e-12 < fit.rmse_before
    got = sorted(float(f) for f in fit.expr.atoms(sympy.Float))
    assert got == pytest.approx([0.4, 0.6, 1.7, 2.3], rel=1e-9)


def test_refit_leaves_a_formula_without_floats_or_with_a_worse_fit_alone() -> None:
    x, y = gaussian_data()
    exact = sympy.exp(-THETA**2 / 2) / sympy.sqrt(2 * sympy.pi)
    assert refit_constants(exact, ["theta"], x, y).skipped == "no constants"
    off_domain = sympy.Float(0.5) * sympy.log(THETA - 2)  # log of negatives on half the rows
    fit = refit_constants(off_domain, ["theta"], x, y)
    assert fit.expr == off_domain and fit.skipped


def test_rounding_keeps_digits_only_where_the_fit_needs_them() -> None:
    x, y = gaussian_data()
    exact = sympy.Float(1 / np.sqrt(2 * np.pi), 17) * sympy.exp(-THETA**2 / 2)
    kept = round_constants(exact, ["theta"], x, y)
    assert str(kept) == "0.39894228*exp(-theta**2/2)"  # 8 digits: R² stays above 1 - 1e-13
    x, noisy = gaussian_data(noise=1e-3)
    assert str(round_constants(exact, ["theta"], x, noisy)) == "0.3989*exp(-theta**2/2)"  # noise dwarfs digit 5


def test_sharpen_turns_a_rounded_right_formula_into_an_exact_fit() -> None:
    x, y = gaussian_data()
    sharp = sharpen_constants(0.3989 * sympy.exp(-THETA**2 / 2), ["theta"], x, y)
    pred = sympy.lambdify([THETA], sharp, "numpy")(x[:, 0])
    r2 = 1 - np.sum((pred - y) ** 2) / np.sum((y - y.mean()) ** 2)
    assert r2 > 1 - 1e-12


def test_bad_arguments_raise_value_error() -> None:
    x, y = gaussian_data(10)
    with pytest.raises(ValueError, match="sympy expression"):
        refit_constants("0.4*theta", ["theta"], x, y)
    with pytest.raises(ValueError, match="x must be"):
        refit_constants(0.4 * THETA, ["theta", "other"], x, y)
    with pytest.raises(ValueError, match="not in var_names"):
        round_constants(0.4 * X1, ["theta"], x, y)
    with pytest.raises(ValueError, match="digits"):
        round_constants(0.4 * THETA, ["theta"], x, y, digits=[0])


def test_sharpen_snaps_constants_the_refit_made_exactly_simple() -> None:
    rng = np.random.default_rng(2)
    x = rng.uniform(-2, 2, (400, 2))
    y = 1.5 * x[:, 0] ** 2 + np.sin(np.pi * x[:, 1])
    start = 1.49 * X1**2 + 1.01 * sympy.sin(3.1 * X2 + 0.002)
    assert sharpen_constants(start, ["x1", "x2"], x, y) == sympy.Rational(3, 2) * X1**2 + sympy.sin(sympy.pi * X2)


def test_sharpen_drops_a_factor_whose_refitted_exponent_is_zero() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(1, 5, (300, 2))
    y = x[:, 0] * np.exp(-x[:, 1])
    t, n0 = sympy.symbols("t n0")
    start = n0 * sympy.exp(-t) * (t - sympy.Float(0.8636)) ** sympy.Float(1.855e-18)
    assert sharpen_constants(start, ["n0", "t"], x, y) == n0 * sympy.exp(-t)


def test_refit_keeps_constants_within_a_bounded_growth() -> None:
    """c*(x - a)**2 + e fits the line x + 1/2 better and better as a -> -infinity with c = -1/(2a) -> 0:
    the refit may not follow that flat direction to absurd constants."""
    rng = np.random.default_rng(4)
    x = rng.uniform(1, 5, (300, 1))
    y = x[:, 0] + 0.5
    start = sympy.Float(0.1) * (X1 + sympy.Float(3.0)) ** 2 + sympy.Float(0.2)
    fit = refit_constants(start, ["x1"], x, y, steps=3000)  # unbounded, a reaches -318 by then
    assert fit.rmse_after < fit.rmse_before
    assert max(abs(float(f)) for f in fit.expr.atoms(sympy.Float)) <= 100 * 3.0, fit.expr
