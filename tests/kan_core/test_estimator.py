"""KANRegressor (kan_core.estimator): discovery as a scikit-learn regressor.

The seed formula exp(sin(pi*a) + b^2) is recovered from a DataFrame (judged by kan_core.judge) and
its front, sympy, LaTeX and predictions read back; scikit-learn's estimator checks run through
``parametrize_with_checks`` (the ones that fit are slow: each fit is a discovery run); without
scikit-learn and pandas (blocked in a subprocess) the estimator still fits and predicts.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sympy
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

import kan_core
from kan_core.estimator import EQUATION_COLUMNS, KANRegressor
from kan_core.judge import is_solution

REPO = Path(__file__).resolve().parents[2]
SEED_FORMULA = "exp(sin(pi*a) + b**2)"
# Plenty of time and the default candidates: on any machine discovery ends when a candidate fits
# exactly ("good_enough", usually the first), so the outcome never depends on the machine's speed.
BUDGET = 600.0


def _seed_data(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    x = np.random.default_rng(seed).uniform(-1, 1, (n, 2))
    return pd.DataFrame(x, columns=["a", "b"]), np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2)


@pytest.fixture(scope="module")
def seed_fit() -> tuple[KANRegressor, list]:
    X, y = _seed_data(400, seed=0)
    events: list = []
    model = KANRegressor(budget=BUDGET, seed=0).fit(X, y, on_progress=events.append)
    return model, events


def test_recovers_the_seed_formula_from_a_dataframe(seed_fit):
    model, _ = seed_fit
    assert model.variable_names_ == ("a", "b") and list(model.feature_names_in_) == ["a", "b"]
    assert model.n_features_in_ == 2 and model.result_.stopped == "good_enough"
    assert is_solution(model.sympy(), SEED_FORMULA, ["a", "b"]), model.sympy()
    X_new, y_new = _seed_data(50, seed=1)
    np.testing.assert_allclose(model.predict(X_new), y_new, rtol=1e-6)
    assert model.score(X_new, y_new) > 1 - 1e-9


def test_equations_front_and_best(seed_fit):
    model, _ = seed_fit
    table = model.equations_
    assert isinstance(table, pd.DataFrame) and tuple(table.columns) == EQUATION_COLUMNS
    assert table["complexity"].is_monotonic_increasing and table["chosen"].sum() == 1
    assert (np.diff(table["test_rmse"]) < 0).all()  # a Pareto front: simpler rows fit worse
    best = model.get_best()
    assert best["chosen"] and best["equation"] == str(model.sympy()) and best["sympy_format"] == model.sympy()
    assert best["equation"] == table["equation"].iloc[model.best_index_]
    assert "\\sin" in model.latex() and model.latex() == best["latex"]
    for i in range(len(table)):  # every row predicts with its own formula
        expr = model.sympy(i)
        assert isinstance(expr, sympy.Expr) and {s.name for s in expr.free_symbols} <= {"a", "b"}
        assert model.predict(pd.DataFrame([[0.1, 0.2]], columns=["a", "b"]), index=i).shape == (1,)


def test_progress_events_reach_the_callback(seed_fit):
    _, events = seed_fit
    phases = [e.phase for e in events]
    assert phases[0] == "candidate_start" and phases[-1] == "done" and "candidate_end" in phases


def test_numpy_input_gets_default_names_and_variable_names_override():
    x = np.random.default_rng(2).uniform(0.5, 2, (60, 2))
    y = 3 * x[:, 0] - 2 * x[:, 1] ** 2
    model = KANRegressor(budget=BUDGET).fit(x, y)
    assert model.variable_names_ == ("x_1", "x_2") and not hasattr(model, "feature_names_in_")
    assert is_solution(model.sympy(), "3*x_1 - 2*x_2**2", ["x_1", "x_2"]), model.sympy()
    named = clone(model).fit(x, y, variable_names=["mass", "speed"])
    assert is_solution(named.sympy(), "3*mass - 2*speed**2", ["mass", "speed"]), named.sympy()


@pytest.mark.parametrize("params, match", [
    ({"budget": 0}, "budget"), ({"budget": float("inf")}, "budget"), ({"max_candidates": 0}, "max_candidates"),
    ({"candidate_seconds": -1.0}, "candidate_seconds"), ({"test_size": 1.0}, "test_size"),
    ({"library": []}, "library"), ({"seed": 1.5}, "seed"),
])
def test_bad_parameters_raise_value_error_at_fit(params, match):
    model = KANRegressor(**params)  # stored unchanged, as scikit-learn requires
    assert all(getattr(model, k) is v for k, v in params.items())
    with pytest.raises(ValueError, match=match):
        model.fit(np.zeros((10, 2)), np.zeros(10))


@pytest.mark.parametrize("columns", [["sin", "b"], ["a b", "c"], ["lambda", "x"]])
def test_column_names_that_cannot_be_formula_names_are_refused(columns):
    X = pd.DataFrame(np.ones((10, 2)), columns=columns)
    with pytest.raises(ValueError, match="variable_names="):
        KANRegressor().fit(X, np.ones(10))


def test_unfitted_and_wrong_shapes(seed_fit):
    with pytest.raises(NotFittedError):
        KANRegressor().predict(np.zeros((2, 2)))
    with pytest.raises(NotFittedError):
        KANRegressor().sympy()
    model, _ = seed_fit
    with pytest.raises(ValueError, match="(?i)feature names"):
        model.predict(pd.DataFrame(np.zeros((2, 3)), columns=["a", "b", "c"]))
    with pytest.raises(ValueError, match="index"):
        model.sympy(len(model.equations_))
    with pytest.raises(ValueError, match="sample"):
        KANRegressor().fit(np.zeros((3, 2)), np.zeros(3))


def test_package_export():
    assert kan_core.KANRegressor is KANRegressor


def test_works_without_scikit_learn_and_pandas():
    """Both imports blocked in a fresh interpreter: the soft base class and a list of dicts."""
    code = textwrap.dedent("""
        import sys
        sys.modules["sklearn"] = None  # makes `import sklearn...` raise ImportError
        sys.modules["pandas"] = None
        import numpy as np
        from kan_core import KANRegressor
        from kan_core import estimator
        assert not estimator.HAVE_SKLEARN
        x = np.random.default_rng(0).uniform(-1, 1, (40, 2))
        y = 2 * x[:, 0] + np.sin(x[:, 1])
        model = KANRegressor(budget=600)
        try:
            model.predict(x)
            raise SystemExit("predict before fit did not raise")
        except ValueError as exc:
            assert "not fitted" in str(exc)
        assert model.set_params(seed=3) is model and model.get_params()["seed"] == 3
        model.fit(x, y)
        assert isinstance(model.equations_, list) and isinstance(model.get_best(), dict)
        assert model.get_best()["chosen"] and model.score(x, y) > 0.999999
        assert np.allclose(model.predict(x), y)
        print(repr(model), model.sympy())
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "KANRegressor(budget=600" in done.stdout and "x_1" in done.stdout


# scikit-learn's checks. No check is skipped or expected to fail; ones that do not apply are not
# generated (sample weights: fit takes none; multi-output: one target). The checks that fit run a
# discovery each (the sparse candidate only: deterministic, seconds), so they are slow.
CHECKS_WITHOUT_A_FIT = {
    "check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
    "check_no_attributes_set_in_init", "check_estimators_unfitted", "check_do_not_raise_errors_in_init_or_set_params",
    "check_mixin_order", "check_parameters_default_constructible", "check_get_params_invariance",
    "check_set_params", "check_complex_data", "check_estimators_empty_data_messages", "check_estimator_sparse_tag",
    "check_estimator_sparse_array", "check_estimator_sparse_matrix", "check_fit1d", "check_fit2d_1sample",
    "check_requires_y_none", "check_supervised_y_no_nan", "check_estimators_partial_fit_n_features",
    "check_array_api_input",
}  # fmt: skip
_checks = parametrize_with_checks([KANRegressor(budget=BUDGET, max_candidates=1)])


def _marked(item: tuple) -> object:
    name = item[1].func.__name__
    return item if name in CHECKS_WITHOUT_A_FIT else pytest.param(*item, marks=pytest.mark.slow)


@pytest.mark.parametrize(_checks.args[0], [_marked(item) for item in _checks.args[1]], **_checks.kwargs)
def test_scikit_learn_estimator_checks(estimator, check):
    check(estimator)
