"""Discovery with units: Buckingham π groups first, then the search on the dimensionless problem.

With the units of every input and of the target (`kan_core.units`), the only dimensionally
consistent formulas are ``y = prod x_i^a_i * F(pi_1, ..., pi_k)``. `discover_with_units` reduces the
dataset to the groups (fewer variables: a pendulum's period from its length, g and a mass is
``sqrt(L/g) * C``, no search at all), runs `discover` on that, and writes every formula back in the
original variables, measured on the original rows (validation rows are the same rows: the split
depends only on the number of rows). Units that allow no consistent formula are refused
(`kan_core.units.DimensionError`) before anything runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import sympy

from kan_core.constants import sharpen_constants
from kan_core.data import Dataset
from kan_core.discovery.discover import discover
from kan_core.discovery.records import (
    Budget,
    CandidateResult,
    CandidateSpec,
    DiscoveryEvent,
    DiscoveryResult,
    check_var_names,
)
from kan_core.discovery.run import formula_metrics, run_candidate
from kan_core.discovery.select import choose, pareto_front
from kan_core.formula import formula_complexity, formula_latex
from kan_core.units import DimensionError, PiGroups, buckingham
from kan_core.validation import noise_floor, round_to_noise, train_arrays, validation_split


def reduce_dataset(dataset: Dataset, groups: PiGroups) -> Dataset:
    """``dataset`` in the π groups: inputs ``(N, k)`` (a constant column ``pi_0`` when k = 0), target
    the dimensionless ``y / prod x_i^a_i``; same rows, same order."""
    def part(x, y):
        p, q = groups.reduce(x.detach().cpu().numpy(), y.detach().cpu().numpy()[:, 0])
        return (p if p.shape[1] else np.ones((p.shape[0], 1))), q

    (p, q), (pt, qt) = part(dataset.train_input, dataset.train_label), part(dataset.test_input, dataset.test_label)
    return Dataset.from_arrays(p, q, pt, qt, dtype=dataset.train_input.dtype, device=dataset.train_input.device)


def discover_with_units(
    dataset: Dataset,
    input_units: Sequence[Any],
    target_unit: Any,
    budget: Budget | None = None,
    on_progress: Callable[[DiscoveryEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    var_names: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[DiscoveryResult, PiGroups]:
    """`discover` on the dimensionless problem; every result is written back in ``var_names`` and
    measured on ``dataset`` (validation, test and training rows as `run_candidate` does), so every
    formula returned is dimensionally consistent. Also returns the groups used. With no group
    (k = 0) the formula is ``C * prod x_i^a_i`` and only C is fitted. DimensionError (a ValueError)
    when the units allow no consistent formula or the data no reduction (values <= 0 under a
    fractional power); ValueError on bad arguments."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if dataset.n_out != 1:
        raise ValueError(f"discovery needs a single target, the dataset has {dataset.n_out}")
    names = check_var_names(var_names, dataset.n_var)
    groups = buckingham(input_units, target_unit, names)
    reduced = reduce_dataset(dataset, groups)
    start = time.monotonic()
    if not groups.groups:
        result = _constant_times(dataset, groups, names, start)
        front = pareto_front([result])
        return DiscoveryResult((result,), tuple(front), choose(front), time.monotonic() - start, "candidates",
                               1), groups
    out = discover(reduced, budget, on_progress, should_stop, var_names=groups.group_names, seed=seed)
    results = tuple(_expanded(r, dataset, groups, names) for r in out.results)
    front = pareto_front(results)
    return replace(out, results=results, front=tuple(front), chosen=choose(front),
                   seconds=time.monotonic() - start), groups


def _constant_times(dataset: Dataset, groups: PiGroups, names: tuple[str, ...], start: float) -> CandidateResult:
    """k = 0: ``y = C * prod x_i^a_i``, C by least squares on the fitting rows."""
    search = validation_split(dataset).search
    x, y = train_arrays(search)
    scale = np.asarray(sympy.lambdify([sympy.Symbol(n) for n in names], groups.scale_expr(), "numpy")(*x.T),
                       dtype=np.float64) * np.ones(x.shape[0])
    c = float(scale @ y / (scale @ scale))
    expr = sharpen_constants(sympy.Float(c) * groups.scale_expr(), names, x, y)
    base = CandidateResult("dimensional", "dimensional", "ok", 0.0, names, formula=str(expr),
                           label="C * the target's dimensional prefactor (no dimensionless group)")
    return replace(_measured(base, expr, dataset, names), seconds=time.monotonic() - start)


def _expanded(res: CandidateResult, dataset: Dataset, groups: PiGroups, names: tuple[str, ...]) -> CandidateResult:
    """``res`` (over the groups) written back in the original variables and measured there."""
    base = replace(res, var_names=names, formula=None, latex=None, complexity=None, test_rmse=None, test_r2=None,
                   train_rmse=None, train_r2=None, val_rmse=None, val_r2=None, noise_rmse=None)
    if not res.has_formula:
        return base
    try:
        expr = groups.expand(res.expr)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return replace(base, status="failed", error=f"rewrite: {type(exc).__name__}: {exc}"[:500])
    return _measured(replace(base, formula=str(expr)), expr, dataset, names)


def _measured(res: CandidateResult, expr: sympy.Expr, dataset: Dataset, names: tuple[str, ...]) -> CandidateResult:
    held = validation_split(dataset)
    x_fit, y_fit = train_arrays(held.search)
    x_all, y_all = train_arrays(dataset)
    sigma = noise_floor(expr, names, x_all, y_all)
    if sigma is not None:
        expr = round_to_noise(expr, names, x_fit, y_fit, sigma)
    val = formula_metrics(expr, names, held.search)
    metrics = formula_metrics(expr, names, dataset)
    if val["test_rmse"] is None or metrics["test_rmse"] is None:
        return replace(res, status="failed", formula=str(expr), error="the formula is not finite on every row")
    return replace(res, formula=str(expr), latex=formula_latex(expr), complexity=formula_complexity(expr),
                   val_rmse=val["test_rmse"], val_r2=val["test_r2"], noise_rmse=sigma, **metrics)


def column_units(units: Mapping[str, Any], feature_names: Sequence[str], target_name: str) -> tuple[list[Any], Any]:
    """The inputs' units in column order and the target's, from a mapping column -> unit."""
    missing = [n for n in (*feature_names, target_name) if n not in units]
    if missing:
        raise DimensionError(f"no unit for column(s) {', '.join(missing)}")
    return [units[n] for n in feature_names], units[target_name]


def run_candidate_with_units(dataset: Dataset, spec: CandidateSpec, input_units: Sequence[Any], target_unit: Any,
                             on_progress: Callable[[DiscoveryEvent], None] | None = None,
                             should_stop: Callable[[], bool] | None = None, *, var_names: Sequence[str] | None = None,
                             max_seconds: float | None = None) -> CandidateResult:
    """`run_candidate` on the dimensionless problem (``spec`` from `candidates` of `reduce_dataset`),
    its formula written back in ``var_names`` and measured on ``dataset``: what a service worker runs
    for one candidate of a dataset with units. DimensionError as `discover_with_units`."""
    names = check_var_names(var_names, dataset.n_var)
    groups = buckingham(input_units, target_unit, names)
    res = run_candidate(reduce_dataset(dataset, groups), spec, on_progress, should_stop,
                        var_names=groups.group_names or ("pi_0",), max_seconds=max_seconds)
    return _expanded(res, dataset, groups, names)
