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
from collections.abc import Callable, Sequence
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
from kan_core.discovery.run import measure_formula, run_candidate
from kan_core.discovery.select import choose, pareto_front
from kan_core.forms import judge_forms, radical_form
from kan_core.units import PiGroups, buckingham, column_units  # noqa: F401  (column_units: the service's)
from kan_core.validation import train_arrays, validation_split


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
    """`discover` on the dimensionless problem (`reduce_dataset`), every result written back in
    ``var_names`` and measured on ``dataset`` (`write_back`), so every formula returned is
    dimensionally consistent; also returns the groups. With no group (k = 0) F is a constant
    (`constant_times`). DimensionError (a ValueError) when the units allow no consistent formula or
    the data no reduction (values <= 0 under a fractional power); ValueError on bad arguments."""
    if not isinstance(dataset, Dataset) or dataset.n_out != 1:
        raise ValueError("discovery needs a kan_core Dataset with a single target")
    names = check_var_names(var_names, dataset.n_var)
    groups = buckingham(input_units, target_unit, names)
    reduced = reduce_dataset(dataset, groups)
    start = time.monotonic()
    if groups.groups:
        out = discover(reduced, budget, on_progress, should_stop, var_names=groups.group_names, seed=seed)
        results = tuple(write_back(r, dataset, groups) for r in out.results)
    else:
        out = DiscoveryResult((), (), None, 0.0, "candidates", 1)
        results = (measure_formula(constant_times(dataset, groups), dataset, names),)
    front = pareto_front(results)
    return replace(out, results=results, front=tuple(front), chosen=choose(front),
                   seconds=time.monotonic() - start), groups


def constant_times(dataset: Dataset, groups: PiGroups) -> CandidateResult:
    """k = 0: ``y = C * prod x_i^a_i`` with C by least squares on the fitting rows (a search over
    the constant column would only spend its budget), not yet measured."""
    x, y = train_arrays(validation_split(dataset).search)  # x (N, n), y (N,)
    scale = np.broadcast_to(np.asarray(sympy.lambdify([sympy.Symbol(n) for n in groups.names], groups.scale_expr(),
                                                      "numpy")(*x.T), dtype=np.float64), y.shape)
    expr = sharpen_constants(sympy.Float(float(scale @ y / (scale @ scale))) * groups.scale_expr(), groups.names, x, y)
    expr = radical_form(expr, groups.names, x)
    return CandidateResult("dimensional", "dimensional", "ok", 0.0, groups.names, formula=str(expr),
                           label="C * the target's dimensional prefactor (no dimensionless group)")


def write_back(res: CandidateResult, dataset: Dataset, groups: PiGroups) -> CandidateResult:
    """``res`` (over ``groups.group_names``) written back in ``groups.names`` and measured on
    ``dataset`` as `run_candidate` measures its own results (`measure_formula`)."""
    base = replace(res, var_names=groups.names, formula=None, latex=None, complexity=None, test_rmse=None,
                   test_r2=None, train_rmse=None, train_r2=None, val_rmse=None, val_r2=None, noise_rmse=None)
    if not res.has_formula:
        return base
    try:
        x = train_arrays(dataset)[0]
        expr = judge_forms(radical_form(groups.expand(res.expr), groups.names, x), groups.names, x)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return replace(base, status="failed", error=f"rewrite: {type(exc).__name__}: {exc}"[:500])
    return measure_formula(replace(base, formula=str(expr)), dataset, groups.names)


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
    return write_back(res, dataset, groups)
