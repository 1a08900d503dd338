import pytest
import sympy

from kan_core.judge import is_solution

SEED = "exp(sin(pi*x1)+x2**2)"


def test_readme_examples():
    assert is_solution("1.0*exp(1.00002*x2**2 + 1.0*sin(3.1416*x1))", SEED)
    assert not is_solution("0.0205*(0.0265 - 10.0*x2)**2 + 1.6394*sin(3.1543*x1 - 0.0025) + 1.174", SEED)


@pytest.mark.parametrize(
    "found",
    [
        "-exp(sin(pi*x1) + x2**2)",  # sign flip: found / true = -1
        "2.5*exp(sin(pi*x1) + x2**2)",  # scale
        "exp(sin(pi*x1) + x2**2) + 3",  # offset: true - found = -3
        "exp(x2**2)*exp(sin(3.14159*x1))",  # same function, other form
    ],
)
def test_constant_scale_or_offset_is_a_solution(found):
    assert is_solution(found, SEED)


@pytest.mark.parametrize(
    "found",
    [
        "2.5*exp(sin(pi*x1) + x2**2) + 3",  # scale *and* offset: neither difference nor ratio is constant
        "exp(cos(pi*x1) + x2**2)",  # wrong function
        "exp(sin(3.2*x1) + x2**2)",  # wrong constant inside
        "exp(sin(pi*x1) + x2**2 + 0.001*x1)",  # a small but not negligible extra term
        "0",
        "nan",
        "0*x1",
    ],
)
def test_not_a_solution(found):
    assert not is_solution(found, SEED)


def test_rounding_rules():
    assert is_solution("x1 + 0.00005*x2", "x1")  # below 1e-4: dropped
    assert is_solution("0.333*x1**2 + sin(x2)", "x1**2/3 + sin(x2)")  # 1/3 rounds to 0.333
    assert is_solution("1.0001*m0*(1.0 - 1.0*v**2/c**2)**(-0.5)", "m0/sqrt(1-v**2/c**2)")


def test_simplification_is_applied():
    assert is_solution("0.25*(x1 + x2)**2 - 0.25*(x1 - x2)**2", "x1*x2")
    assert is_solution("exp(log(x1) - log(x2))", "x1/x2")
    assert is_solution("Y/(2.0*sigma + 2.0)", "Y/(2*(1+sigma))")


def test_variable_names_that_are_sympy_functions():
    # gamma and beta are sympy functions; here they must be plain variables
    assert is_solution("pr*V/(gamma - 1)", "pr*V/(gamma-1)", ["gamma", "pr", "V"])
    assert is_solution("beta*(1 + alpha*cos(theta))", "beta*(1+alpha*cos(theta))")


def test_sympy_expressions_with_assumptions_are_accepted():
    x1, x2 = sympy.symbols("x1 x2", real=True)
    found = sympy.exp(sympy.Float(1.0001) * x2**2 + sympy.sin(sympy.pi * x1))
    assert is_solution(found, SEED)
    assert is_solution(found, SEED, variables=[sympy.Symbol("x1"), "x2"])


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="cannot parse"):
        is_solution("exp(x1", SEED)
    with pytest.raises(ValueError, match="not variables"):
        is_solution("x1 + y", "x1", variables=["x1"])
    with pytest.raises(ValueError, match="cannot parse"):
        is_solution("__import__('os')", "x1")
    with pytest.raises(ValueError, match="must not be 0"):
        is_solution("x1", "0")
    with pytest.raises(ValueError, match="sympy expression or a string"):
        is_solution(1.5, "x1")


def test_big_wrong_formula_is_rejected_quickly():
    x1, x2 = sympy.symbols("x1 x2")
    big = sum(sympy.Float(0.1 * k + 0.05) * sympy.sin(sympy.Float(1 + 0.1 * k) * x1 + k * x2) for k in range(60))
    assert not is_solution(big, SEED)


@pytest.mark.parametrize("formula", ["1/(1+exp(-(x-1)))", "x/(1 + exp(2 - x))", "exp(1 - x)*x"])
def test_a_formula_solves_itself(formula):
    """simplify brings e out of exp(1 - x) (-> E*exp(-x)); the rounding of E to 2.718 must then
    apply to both sides, as the README's 'same rounding and simplification' says."""
    assert is_solution(formula, formula, ["x"])
    assert is_solution(f"2*({formula})", formula, ["x"])
    assert not is_solution(f"{formula} + x", formula, ["x"])
