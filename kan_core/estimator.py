"""`KANRegressor`: formula discovery as a scikit-learn regressor, in the style of PySR's PySRRegressor.

``fit(X, y)`` splits the rows into a training and a test part (``test_size``, shuffled with
``seed``), runs `kan_core.discovery.discover` in-process within ``budget`` seconds and
``max_candidates`` candidates, and keeps the Pareto front of the formulas found (complexity vs
test RMSE). ``predict`` evaluates the chosen formula (`kan_core.discovery.choose`) or any row of
``equations_``; ``sympy()``, ``latex()`` and ``get_best()`` give it as an expression, as LaTeX and as
a table row. Columns of a pandas DataFrame become the formula's variable names.

scikit-learn and pandas are optional: with scikit-learn installed the class derives from its
``BaseEstimator``/``RegressorMixin`` (clone, pipelines, grid search, ``check_estimator``); without it
a small base gives the same ``get_params``/``set_params``/``score``. ``equations_`` is a DataFrame
when pandas is installed, else a list of dicts.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import sympy

from kan_core.data import Dataset
from kan_core.discovery import DISCOVERY_LIBRARY, Budget, CandidateResult, DiscoveryEvent, discover
from kan_core.expr import is_valid_name
from kan_core.formula import evaluate_formula
from kan_core.metrics import r2 as r2_score

MIN_SAMPLES = 4  # a training and a test part of at least one row each, after `test_size`
EQUATION_COLUMNS = ("complexity", "test_rmse", "test_r2", "train_rmse", "train_r2", "equation", "sympy_format",
                    "latex", "family", "candidate", "chosen")


class _ParamsBase:
    """scikit-learn's parameter protocol without scikit-learn: constructor arguments are the
    parameters, stored unchanged under their own names; ``score`` is R² of ``predict``."""

    @classmethod
    def _get_param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        return sorted(p.name for p in sig.parameters.values() if p.name != "self")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params: Any) -> _ParamsBase:
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid: {valid}")
            setattr(self, name, value)
        return self

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported without scikit-learn")
        value = r2_score(self.predict(X), np.asarray(y, dtype=np.float64).reshape(-1))
        return float("nan") if value is None else value

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"


try:  # optional: see the module docstring
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.utils.validation import check_is_fitted, validate_data

    _BASES: tuple[type, ...] = (RegressorMixin, BaseEstimator)
    HAVE_SKLEARN = True
except ImportError:  # pragma: no cover - exercised by a subprocess test with scikit-learn blocked
    _BASES = (_ParamsBase,)
    HAVE_SKLEARN = False


class KANRegressor(*_BASES):  # type: ignore[misc]
    """Discover a formula ``y = f(X)`` with Kolmogorov-Arnold networks and sparse regression.

    Parameters (stored unchanged, validated in ``fit``):

    - ``budget``: seconds discovery may spend in all (`kan_core.discovery.Budget.max_seconds`);
    - ``max_candidates``: candidate configurations tried at most, most promising first;
    - ``candidate_seconds``: at most this long per candidate (None: whatever is left);
    - ``seed``: the split's shuffle and every model seed; the same data, parameters and enough
      budget give the same formula;
    - ``library``: the functions symbolic fitting may use (None: `DISCOVERY_LIBRARY`);
    - ``test_size``: the fraction of rows held out to rank the formulas.

    Fitted attributes: ``n_features_in_``, ``feature_names_in_`` (DataFrame input),
    ``variable_names_``, ``result_`` (the `DiscoveryResult`), ``equations_`` (the front, simplest
    first; ``chosen`` marks the formula ``predict`` uses by default), ``best_index_``.
    """

    def __init__(
        self,
        budget: float = 60.0,
        max_candidates: int = 12,
        candidate_seconds: float | None = None,
        seed: int = 0,
        library: Sequence[str] | None = None,
        test_size: float = 0.25,
    ):
        self.budget = budget
        self.max_candidates = max_candidates
        self.candidate_seconds = candidate_seconds
        self.seed = seed
        self.library = library
        self.test_size = test_size

    # ------------------------------------------------------------------------------------------
    # fitting

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        variable_names: Sequence[str] | None = None,
        on_progress: Callable[[DiscoveryEvent], None] | None = None,
    ) -> KANRegressor:
        """Run discovery on ``X (n, d)``, ``y (n,)``. ``variable_names``: the formula's names for
        the columns (default: a DataFrame's column names, else ``x_1 .. x_d``); each must be a
        valid formula name (`kan_core.expr.is_valid_name`: not ``sin``, ``pi``, a keyword...).
        ``on_progress(DiscoveryEvent)``: discovery's progress events. ValueError on bad input or
        when no candidate produced a formula."""
        budget = self._budget()
        library = tuple(DISCOVERY_LIBRARY if self.library is None else self.library)
        if not library or not all(isinstance(f, str) for f in library):
            raise ValueError(f"library must be None or a non-empty sequence of function names, got {self.library!r}")
        if not (isinstance(self.test_size, (int, float)) and 0 < self.test_size < 1):
            raise ValueError(f"test_size must be a fraction in (0, 1), got {self.test_size!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        x, y_arr = self._validate_fit(X, y)
        names = self._names(variable_names, x.shape[1])
        rows = np.random.default_rng(int(self.seed)).permutation(x.shape[0])
        n_test = min(max(1, round(self.test_size * x.shape[0])), x.shape[0] - 1)
        test, train = rows[:n_test], rows[n_test:]
        dataset = Dataset.from_arrays(x[train], y_arr[train], x[test], y_arr[test])
        result = discover(dataset, budget, on_progress, var_names=names, seed=int(self.seed), library=library)
        if result.chosen is None:
            why = "; ".join(f"{r.spec_id}: {r.status}" + (f" ({r.error})" if r.error else "") for r in result.results)
            raise ValueError(f"discovery found no formula within the budget ({why or 'no candidate ran'}); "
                             "give it more time (budget) or more candidates (max_candidates)")
        self.variable_names_ = names
        self.result_ = result
        self.best_index_ = result.front.index(result.chosen)
        self.equations_ = _table([_row(r, r is result.chosen) for r in result.front])
        return self

    def _budget(self) -> Budget:
        for name in ("budget", "candidate_seconds"):
            value = getattr(self, name)
            if value is None and name == "candidate_seconds":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a finite number of seconds > 0, got {value!r}")
        if isinstance(self.max_candidates, bool) or not isinstance(self.max_candidates, (int, np.integer)) \
                or self.max_candidates < 1:
            raise ValueError(f"max_candidates must be an integer >= 1, got {self.max_candidates!r}")
        return Budget(max_candidates=int(self.max_candidates), max_seconds=float(self.budget),
                      candidate_seconds=None if self.candidate_seconds is None else float(self.candidate_seconds))

    def _validate_fit(self, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        """float64 ``X (n, d)`` and ``y (n,)``, finite, at least `MIN_SAMPLES` rows; sets
        ``n_features_in_`` (and ``feature_names_in_`` for a DataFrame with string column names)."""
        if HAVE_SKLEARN:
            return validate_data(self, X, y, dtype=np.float64, y_numeric=True, ensure_min_samples=MIN_SAMPLES)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y is None")
        columns = getattr(X, "columns", None)
        if columns is not None and all(isinstance(c, str) for c in columns):
            self.feature_names_in_ = np.asarray(list(columns), dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        x = self._validate_x(X, reset=True)
        y_arr = np.asarray(y, dtype=np.float64)
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = y_arr[:, 0]
        if y_arr.shape != (x.shape[0],):
            raise ValueError(f"y must have shape ({x.shape[0]},), got {y_arr.shape}")
        if not np.isfinite(y_arr).all():
            raise ValueError("y contains NaN or infinite values")
        if x.shape[0] < MIN_SAMPLES:
            raise ValueError(f"{type(self).__name__} needs at least {MIN_SAMPLES} samples, got {x.shape[0]} sample(s)")
        return x, y_arr

    def _validate_x(self, X: Any, reset: bool = False) -> np.ndarray:
        """float64 ``X (n, d)``, finite; ``d`` checked against the fit unless ``reset``."""
        if HAVE_SKLEARN:
            return validate_data(self, X, reset=reset, dtype=np.float64)
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"X must be a non-empty 2-D array (samples, features), got shape {x.shape}")
        if not np.isfinite(x).all():
            raise ValueError("X contains NaN or infinite values")
        if reset:
            self.n_features_in_ = x.shape[1]
        elif x.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {x.shape[1]} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input")
        return x

    def _names(self, variable_names: Sequence[str] | None, n: int) -> tuple[str, ...]:
        if variable_names is None:
            columns = getattr(self, "feature_names_in_", None)
            variable_names = [str(c) for c in columns] if columns is not None else [f"x_{i + 1}" for i in range(n)]
        names = tuple(variable_names)
        bad = [v for v in names if not isinstance(v, str) or not is_valid_name(v)]
        if len(names) != n or len(set(names)) != n or bad:
            raise ValueError(f"variable names must be {n} distinct formula names (letters, digits, _; not a "
                             f"function or constant such as sin or pi), got {list(names)}"
                             + (f"; rename {bad} or pass variable_names=" if bad else ""))
        return names

    # ------------------------------------------------------------------------------------------
    # using the result

    def _fitted(self) -> None:
        if HAVE_SKLEARN:
            check_is_fitted(self, "result_")
        elif not hasattr(self, "result_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet: call fit first")

    def _result(self, index: int | None) -> CandidateResult:
        self._fitted()
        front = self.result_.front
        if index is None:
            return front[self.best_index_]
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(front) <= index < len(front):
            raise ValueError(f"index must be an integer row of equations_ (0 .. {len(front) - 1}), got {index!r}")
        return front[int(index)]

    def predict(self, X: Any, index: int | None = None) -> np.ndarray:
        """``(n,)`` float64: the chosen formula (or row ``index`` of ``equations_``) on ``X``;
        NaN where the formula is off its domain."""
        self._fitted()
        x = self._validate_x(X)
        return evaluate_formula(self.sympy(index), self.variable_names_, x)

    def sympy(self, index: int | None = None) -> sympy.Expr:
        """The chosen formula (or row ``index`` of ``equations_``) as a sympy expression over
        plain symbols named ``variable_names_``."""
        return self._result(index).expr

    def latex(self, index: int | None = None) -> str:
        """The chosen formula (or row ``index``) as LaTeX (sympy's printer)."""
        return self._result(index).latex or sympy.latex(self.sympy(index))

    def get_best(self) -> Any:
        """The chosen formula's row of ``equations_``: a pandas Series, or a dict without pandas."""
        self._fitted()
        table = self.equations_
        return table.iloc[self.best_index_] if hasattr(table, "iloc") else table[self.best_index_]


def _row(r: CandidateResult, chosen: bool) -> dict[str, Any]:
    return {"complexity": r.complexity, "test_rmse": r.test_rmse, "test_r2": r.test_r2, "train_rmse": r.train_rmse,
            "train_r2": r.train_r2, "equation": r.formula, "sympy_format": r.expr, "latex": r.latex,
            "family": r.family, "candidate": r.spec_id, "chosen": chosen}


def _table(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas
    except ImportError:
        return rows
    with warnings.catch_warnings():  # sympy objects in an object column
        warnings.simplefilter("ignore")
        return pandas.DataFrame(rows, columns=list(EQUATION_COLUMNS))


__all__ = ["EQUATION_COLUMNS", "MIN_SAMPLES", "KANRegressor"]
