"""Structure tests (kan_core.structure) and the recursion (kan_core.recurse).

The separability and symmetry tests run on an exact oracle (the true function, with a small nominal
error) so that each property is checked both ways without training; one test checks that a fitted
surrogate is accurate enough for the same answers, and the recursion tests compose exact formulas
from exact parts on real surrogates.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import sympy
import torch

from kan_core.data import make_dataset
from kan_core.discovery import CandidateResult, candidates, run_candidate
from kan_core.judge import is_solution
from kan_core.recurse import Problem, solve_structure
from kan_core.structure import (
    additive_test,
    even_test,
    find_symmetries,
    fit_surrogate,
    separable_groups,
    symmetry_test,
)


@dataclass(frozen=True)
class Exact:
    """The true function as an oracle, its nominal error a millionth of its spread."""

    f: Callable[[np.ndarray], np.ndarray]
    lo: np.ndarray
    hi: np.ndarray
    rmse: float = 1e-6

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.f(x)


def oracle(f, ranges, n=500, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(a, b, n) for a, b in ranges])
    lo, hi = np.array([r[0] for r in ranges], float), np.array([r[1] for r in ranges], float)
    return Exact(f, lo, hi, 1e-6 * float(np.std(f(x)))), x


def test_additive_separability_both_ways():
    sep, x = oracle(lambda x: np.sin(x[:, 0]) + x[:, 1] ** 2 + np.exp(x[:, 2]), [(-1, 1)] * 3)
    groups, tests = separable_groups(sep, x)
    assert groups == [[0], [1], [2]]
    assert all(t.passed for t in tests)
    joint, x = oracle(lambda x: np.sin(x[:, 0] * x[:, 1]) + x[:, 2], [(-1, 1)] * 3)
    groups, _ = separable_groups(joint, x)
    assert groups == [[0, 1], [2]]
    t = additive_test(joint, x, 0, 1)
    assert not t.passed and t.statistic > 100


def test_multiplicative_separability_is_additive_in_log():
    f, x = oracle(lambda x: x[:, 0] ** 2 * np.exp(-x[:, 1]) / x[:, 2], [(1, 3), (0, 1), (1, 2)])
    assert separable_groups(f, x, transform="log")[0] == [[0], [1], [2]]
    assert separable_groups(f, x)[0] == [[0, 1, 2]]  # not a sum
    g, x = oracle(lambda x: x[:, 0] + x[:, 1] * x[:, 2], [(1, 3), (0, 1), (1, 2)])
    assert separable_groups(g, x, transform="log")[0] == [[0, 1, 2]]


def test_transformed_target_separability():
    hypot, x = oracle(lambda x: np.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2), [(1, 2), (1, 2)])
    assert not additive_test(hypot, x, 0, 1).passed
    assert additive_test(hypot, x, 0, 1, transform="square").passed
    lens, x = oracle(lambda x: 1 / (1 / x[:, 0] + x[:, 1] / x[:, 2]), [(1, 5), (1, 5), (1, 5)])
    assert separable_groups(lens, x, transform="inverse")[0] == [[0], [1, 2]]
    assert separable_groups(lens, x, transform="square")[0] == [[0, 1, 2]]


@pytest.mark.parametrize(("kind", "f"), [
    ("difference", lambda a, b: np.exp(-(a - b) ** 2)),
    ("sum", lambda a, b: np.sin(a + b)),
    ("ratio", lambda a, b: np.sqrt(a / b) + a / b),
    ("product", lambda a, b: np.log(a * b) ** 2),
])
def test_pair_symmetries_both_ways(kind, f):
    sym, x = oracle(lambda x: f(x[:, 0], x[:, 1]) * x[:, 2], [(1, 3), (1, 3), (1, 2)])
    assert symmetry_test(sym, x, 0, 1, kind).passed
    assert not symmetry_test(sym, x, 0, 2, kind).passed
    found = [t for t in find_symmetries(sym, x) if t.passed]
    assert (found[0].kind, found[0].variables) == (kind, (0, 1))
    none, x = oracle(lambda x: x[:, 0] ** 2 + np.sin(x[:, 1]) + x[:, 2], [(1, 3), (1, 3), (1, 2)])
    assert not symmetry_test(none, x, 0, 1, kind).passed


def test_even_variable_both_ways():
    f, x = oracle(lambda x: np.cos(x[:, 0] ** 2) * x[:, 1], [(-1, 1), (-1, 1)])
    assert even_test(f, x, 0).passed
    assert not even_test(f, x, 1).passed
    positive, x = oracle(lambda x: x[:, 0] ** 2, [(1, 2)])
    assert not even_test(positive, x, 0).passed  # no mirror image in the range: no evidence


def test_fitted_surrogate_is_accurate_enough_for_the_tests():
    rng = np.random.default_rng(1)
    x, xt = rng.uniform(-1, 1, (400, 2)), rng.uniform(-1, 1, (400, 2))
    f = lambda x: np.sin(2 * x[:, 0]) + x[:, 1] ** 2  # noqa: E731
    sur = fit_surrogate(x, f(x), xt, f(xt), hidden=(16, 16), steps=30)
    assert sur.rmse < 1e-2 * np.std(f(x))
    assert additive_test(sur, x, 0, 1).passed
    g = lambda x: np.sin(2 * x[:, 0] * x[:, 1])  # noqa: E731
    sur = fit_surrogate(x, g(x), xt, g(xt), hidden=(16, 16), steps=30)
    assert not additive_test(sur, x, 0, 1).passed


def _library_leaf(p: Problem, seconds, stop):
    """Least squares of y on one of a few terms: c*g(x) + d for one variable (an exact leaf when the
    part is in the list), so that these tests check the recursion, not a leaf search."""
    terms = {"x": lambda s: s, "x**2": lambda s: s**2, "sin(x)": sympy.sin, "exp(x)": sympy.exp,
             "exp(-x)": lambda s: sympy.exp(-s), "1/x": lambda s: 1 / s}
    if p.n_var != 1:
        return None, {}
    s = sympy.Symbol(p.names[0])
    best = None
    for name, term in terms.items():
        col = sympy.lambdify(s, term(s), "numpy")(p.x[:, 0])
        A = np.column_stack([col, np.ones_like(col)])
        coef, *_ = np.linalg.lstsq(A, p.y, rcond=None)
        err = float(np.mean((A @ coef - p.y) ** 2))
        if best is None or err < best[0]:
            best = (err, sympy.Float(coef[0]) * term(s) + sympy.Float(coef[1]), name)
    return best[1], {"candidate": best[2]}


def _data(f, ranges, n=300, seed=0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(a, b, n) for a, b in ranges])
    xt = np.column_stack([rng.uniform(a, b, n) for a, b in ranges])
    return x, f(x), xt, f(xt)


def test_recursion_composes_an_exact_sum_and_product():
    x, y, xt, yt = _data(lambda x: np.sin(x[:, 0]) + 3 * x[:, 1] ** 2 * np.exp(x[:, 2]), [(0.5, 2), (0.5, 2), (0.1, 1)])
    out = solve_structure(x, y, xt, yt, ("a", "b", "c"), max_seconds=300, leaf_solver=_library_leaf)
    assert is_solution(out.expr, "sin(a) + 3*b**2*exp(c)", ["a", "b", "c"])
    tree = out.tree
    assert (tree["node"], tree["op"]) == ("split", "add")
    assert tree["groups"] == [["a"], ["b", "c"]]
    assert all(t["passed"] and t["test"] == "additive" for t in tree["tests"])
    product = tree["children"][1]
    assert (product["node"], product["op"], product["groups"]) == ("split", "mul", [["b"], ["c"]])


def test_recursion_substitutes_a_difference_and_inverts_a_transform():
    x, y, xt, yt = _data(lambda x: np.exp(x[:, 0] - x[:, 1]), [(0.5, 2), (0.5, 2)])
    out = solve_structure(x, y, xt, yt, ("p", "q"), max_seconds=300, leaf_solver=_library_leaf)
    # exp(p - q) is also a product exp(p) * exp(-q): either way the parts are exact
    assert is_solution(out.expr, "exp(p - q)", ["p", "q"])
    x, y, xt, yt = _data(lambda x: np.sqrt(x[:, 0] ** 2 + 1 / x[:, 1]), [(0.5, 2), (0.5, 2)])
    out = solve_structure(x, y, xt, yt, ("p", "q"), max_seconds=300, leaf_solver=_library_leaf)
    assert is_solution(out.expr, "sqrt(p**2 + 1/q)", ["p", "q"])
    assert (out.tree["node"], out.tree["transform"]) == ("transform", "square")
    assert out.tree["children"][0]["op"] == "add"


def test_solve_structure_rejects_bad_arguments():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError):
        solve_structure(x, np.zeros(10), x, np.zeros(10), ("a",), max_seconds=1, leaf_solver=_library_leaf)
    with pytest.raises(ValueError):
        solve_structure(x, np.zeros(10), x, np.zeros(10), ("a", "b"), max_seconds=0, leaf_solver=_library_leaf)


def test_structure_candidate_records_its_tree_and_gives_up_without_structure(monkeypatch):
    import kan_core.discovery.run as run_module

    monkeypatch.setattr(run_module, "STRUCTURE_SECONDS", 3600.0)  # no time limit: the outcome, not the speed
    sep = make_dataset(lambda x: torch.sin(x[:, 0]) + torch.exp(x[:, 1]), 2, n_train=300, n_test=300, seed=3)
    spec = next(s for s in candidates(sep) if s.family == "structure")
    res = run_candidate(sep, spec, var_names=["a", "b"])
    assert res.status == "ok" and is_solution(res.formula, "sin(a) + exp(b)", ["a", "b"]), res.formula
    assert (res.structure["node"], res.structure["op"]) == ("split", "add")
    assert res.structure["formula"] == res.formula
    assert CandidateResult.from_dict(json.loads(json.dumps(res.to_dict()))) == res
    joint = make_dataset(lambda x: x[:, 0] * x[:, 1] + torch.sin(x[:, 0] + x[:, 1] ** 2), 2, n_train=300,
                         n_test=300, seed=3)
    res = run_candidate(joint, spec)
    assert res.status == "no_formula" and res.structure["node"] == "none"


def test_structure_candidate_out_of_its_own_time_is_a_timeout_not_a_cancel(monkeypatch):
    import kan_core.discovery.run as run_module

    monkeypatch.setattr(run_module, "STRUCTURE_SECONDS", 0.05)  # the family's cap, not the caller's deadline
    data = make_dataset(lambda x: torch.sin(x[:, 0]) + torch.exp(x[:, 1]), 2, n_train=200, n_test=200, seed=3)
    spec = next(s for s in candidates(data) if s.family == "structure")
    assert run_candidate(data, spec).status == "timeout"
    assert run_candidate(data, spec, should_stop=lambda: True).status == "cancelled"
