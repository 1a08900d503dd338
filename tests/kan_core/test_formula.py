import math

import numpy as np
import pytest
import sympy
import torch

from kan_core.formula import (
    clean_constants,
    evaluate_formula,
    formula_complexity,
    formula_latex,
    symbolic_formula,
)
from kan_core.judge import is_solution
from kan_core.model import KAN

x1, x2, x3 = sympy.symbols("x_1 x_2 x_3")
F = sympy.Float


def seed_model(noise: float = 0.0) -> KAN:
    """[2, 1, 1] KAN fixed by hand to exp(sin(pi x1) + x2^2), constants perturbed by `noise`."""
    model = KAN([2, 1, 1], seed=0)
    e = noise
    model.layers[0].set_symbolic(0, 0, "sin", (math.pi * (1 + e), e, 1 - e, 0.3))
    model.layers[0].set_symbolic(1, 0, "x^2", (1 + e, -e, 1 + e, -0.3 + e))
    model.layers[1].set_symbolic(0, 0, "exp", (1 - e, e, 1 + e, -e))
    return model


def test_seed_formula_exact():
    (expr,) = symbolic_formula(seed_model())
    assert expr == sympy.exp(sympy.sin(sympy.pi * x1) + x2**2)


def test_seed_formula_cleans_small_deviations():
    (expr,) = symbolic_formula(seed_model(noise=2e-5))
    assert expr == sympy.exp(sympy.sin(sympy.pi * x1) + x2**2)
    assert is_solution(expr, "exp(sin(pi*x_1) + x_2**2)")


def test_formula_matches_model_numerically():
    model = seed_model(noise=3e-3)
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    want = model(x).detach().numpy()[:, 0]
    for simplify in (False, True):
        # tol=0: nothing snaps or is dropped, the formula is the network's function (to 10 digits)
        (expr,) = symbolic_formula(model, simplify=simplify, digits=10, tol=0)
        np.testing.assert_allclose(evaluate_formula(expr, ["x_1", "x_2"], x), want, rtol=1e-8)
    # default cleaning: each constant moves by at most ~tol = 1e-3 (relative)
    (expr,) = symbolic_formula(model)
    np.testing.assert_allclose(evaluate_formula(expr, ["x_1", "x_2"], x), want, rtol=2e-2)


def test_var_names_and_multiple_outputs():
    model = KAN([2, 2], seed=0)
    layer = model.layers[0]
    layer.set_symbolic(0, 0, "x", (1, 0, 2, 0))
    layer.set_symbolic(1, 0, "1/x", (1, 0, 1, 0))
    layer.set_symbolic(0, 1, "0", (1, 0, 0, 1.5))  # a constant edge
    layer.set_symbolic(1, 1, "sqrt", (1, 0, 1, 0))
    q, C = sympy.symbols("q C")
    exprs = symbolic_formula(model, ["q", "C"])
    assert exprs == [2 * q + 1 / C, sympy.sqrt(C) + sympy.Rational(3, 2)]


def test_masked_edges_are_skipped_and_spline_edges_rejected():
    model = KAN([2, 1], seed=0)
    model.layers[0].set_symbolic(0, 0, "sin", (1, 0, 1, 0))
    with pytest.raises(ValueError, match=r"edge \(l=0, i=1, j=0\) is still a spline"):
        symbolic_formula(model)
    with torch.no_grad():
        model.layers[0].mask[1, 0] = 0.0
    assert symbolic_formula(model) == [sympy.sin(x1)]


def test_var_names_validated():
    with pytest.raises(ValueError, match="name the 2 inputs"):
        symbolic_formula(seed_model(), ["a"])
    with pytest.raises(ValueError, match="distinct identifiers"):
        symbolic_formula(seed_model(), ["a", "a"])
    with pytest.raises(ValueError, match="distinct identifiers"):
        symbolic_formula(seed_model(), ["a", "1b"])


@pytest.mark.parametrize(
    "raw, clean",
    [
        (F(3.14159) * x1, sympy.pi * x1),
        (F(1.57081) * x1 + F(0.49998), sympy.pi * x1 / 2 + sympy.Rational(1, 2)),
        (F(2.0) * (F(3.0) * sympy.sin(x1) + F(1.0)), 6 * sympy.sin(x1) + 2),
        (sympy.sin(F(3.14159) * x1 + F(1e-5)), sympy.sin(sympy.pi * x1)),  # negligible phase
        (F(0.5) * sympy.exp(x1 + F(0.693147)), sympy.exp(x1)),  # e^0.693 = 2
        ((F(2.0) * x1 + F(1.0)) ** 2, 4 * (x1 + sympy.Rational(1, 2)) ** 2),
        (sympy.log(F(3.0) * x1 + F(6.0)), sympy.log(x1 + 2) + F(1.099)),
        (sympy.sin(F(3.0) * x1 + F(1.0 + math.pi / 2)), sympy.cos(3 * x1 + 1)),  # phase -> cos
        (x1 + F(5000.0), x1 + 5000),  # a big constant does not make x1 negligible
        (F(0.0205) * x1, F(0.0205) * x1),  # not near a simple number: kept (4 digits)
        (F(123.4567) * x1, F(123.5) * x1),
    ],
)
def test_clean_constants(raw, clean):
    assert str(clean_constants(raw)) == str(clean)  # str: kept floats are rounded to 4 digits


def test_clean_constants_drops_negligible_terms_only():
    expr = F(1.0) * x1 + F(2e-5) * x2 + F(0.5) * x3
    assert clean_constants(expr) == x1 + x3 / 2
    assert str(clean_constants(expr, tol=1e-6)) == "x_1 + 2.0e-5*x_2 + x_3/2"


def test_clean_constants_validates():
    with pytest.raises(ValueError, match="sympy expression"):
        clean_constants("x + 1")
    with pytest.raises(ValueError, match="digits"):
        clean_constants(x1, digits=0)


def test_simplify_finds_products():
    # what a [2, 2, 1] KAN writes for x1 * x2: ((x1 + x2)^2 - (x1 - x2)^2) / 4
    model = KAN([2, 2, 1], seed=0)
    l0, l1 = model.layers
    l0.set_symbolic(0, 0, "x", (1, 0, 1, 0))
    l0.set_symbolic(1, 0, "x", (1, 0, 1, 0))
    l0.set_symbolic(0, 1, "x", (1, 0, 1, 0))
    l0.set_symbolic(1, 1, "x", (1, 0, -1, 0))
    l1.set_symbolic(0, 0, "x^2", (1, 0, 0.25, 0))
    l1.set_symbolic(1, 0, "x^2", (1, 0, -0.25, 0))
    assert symbolic_formula(model) == [x1 * x2]
    assert symbolic_formula(model, simplify=False)[0] != x1 * x2


def test_latex_and_complexity():
    expr = sympy.exp(sympy.sin(sympy.pi * x1) + x2**2)
    assert formula_latex(expr) == r"e^{x_{2}^{2} + \sin{\left(\pi x_{1} \right)}}"
    assert formula_complexity(expr) == 9
    assert formula_complexity(x1) == 1 and formula_complexity(2 * x1) == 3
    with pytest.raises(ValueError):
        formula_complexity("x")


def test_evaluate_formula():
    expr = sympy.sqrt(x1) + x2
    X = np.array([[4.0, 1.0], [-1.0, 0.0]])
    got = evaluate_formula(expr, ["x_1", "x_2"], X)
    assert got[0] == 3.0 and np.isnan(got[1])  # off-domain -> NaN, no warning
    assert evaluate_formula(sympy.Integer(2), ["x_1"], torch.zeros(3, 1)).tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(ValueError, match="not in var_names"):
        evaluate_formula(expr, ["x_1", "y"], X)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        evaluate_formula(expr, ["x_1", "x_2"], X[:, :1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_formula(expr, ["x_1", "x_2"], np.array([[np.nan, 1.0]]))


@pytest.mark.timeout(120)  # a hang guard, not a speed test
def test_simplify_is_not_tried_on_nested_function_formulas(monkeypatch):
    """sympy.simplify ran for over ten minutes on this 26-operation formula (trigsimp -> factor)."""
    from kan_core.expr import STORED_LIMITS, parse
    from kan_core.formula import simplify_is_safe, tidy_formula

    text = ("17.09 - 10.61/sqrt(sqrt(exp(0.2385*m_0) + 6.841) + 0.2459*tanh(9.449*atanh(0.05893*c - 0.4562)"
            " + 3.152) - 0.1892*tanh(5.709*atanh(0.09233*c - 0.7223) + 2.985) - 2.469)")
    expr = parse(text, ["m_0", "c"], limits=STORED_LIMITS)
    assert not simplify_is_safe(expr)

    def refused(*args, **kwargs):
        raise AssertionError("tidy_formula called sympy.simplify on a formula simplify_is_safe refuses")

    with monkeypatch.context() as patch:
        patch.setattr(sympy, "simplify", refused)
        tidy_formula(expr)
    x1, x2 = sympy.symbols("x_1 x_2")
    assert simplify_is_safe(sympy.exp(x1 + x2**2) / x1)


@pytest.mark.timeout(120)  # a hang guard: trigsimp ran for minutes on each of these before simplify_is_safe refused trig functions
@pytest.mark.parametrize("text, names", [
    ("0.2542*(sin(0.4976*theta - 0.239) - 1.082 - 0.38/(sigma - 3.721))**2"
     " + 0.05531*cos(0.944*(sigma - 2.32)**2 + 6.888 - 670.8/(theta + 8.076)**2) + 0.06169", ["sigma", "theta"]),
    ("0.04432*exp(-4.561*sqrt(-0.005918*d2 + 0.02373*n - 0.005453 + (d1 + 1.8)**(-2)) + 4.505*sin(-0.02707*d1"
     " + 0.3919*sqrt(d2 - 0.652) + 0.5525 + 2.358/(n + 1.671)**2)) + 0.03737", ["d1", "d2", "n"]),
])
def test_simplify_is_not_tried_on_formulas_with_trig_functions(text, names):
    from kan_core.expr import STORED_LIMITS, parse
    from kan_core.formula import simplify_is_safe, tidy_formula

    expr = parse(text, names, limits=STORED_LIMITS)
    assert not simplify_is_safe(expr)
    assert tidy_formula(expr).free_symbols == expr.free_symbols


def test_trig_and_hyperbolic_formulas_are_never_simplified():
    from kan_core.formula import simplify_is_safe

    x = sympy.Symbol("x")
    assert not simplify_is_safe(sympy.sin(x) ** 2 + 1) and not simplify_is_safe(sympy.tanh(sympy.atanh(x) + 1))
    assert simplify_is_safe(sympy.exp(sympy.log(x) + 1))

def test_formulas_in_many_variables_are_never_simplified():
    """exptrigsimp's multivariate gcds ran for over ten minutes on a 21-operation formula in six
    π groups; a small formula in five variables is still simplified."""
    from kan_core.formula import MAX_SIMPLIFY_SYMBOLS, simplify_is_safe

    xs = sympy.symbols(f"p1:{MAX_SIMPLIFY_SYMBOLS + 2}")
    assert simplify_is_safe(sympy.exp(sum(xs[:-1])) / xs[0])
    assert not simplify_is_safe(sympy.exp(sum(xs)) / xs[0])
