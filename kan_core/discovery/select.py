"""Choosing among candidate results: the Pareto front (complexity vs validation error), the
documented choice on it, and the early-stop tests. Everything here reads the validation metrics
(rows carved from the training split), never the test split; records written before validation
existed (no ``val_*``) fall back to their test metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

from kan_core.discovery.records import CandidateResult

EXACT_R2 = 1 - 1e-6  # choose(): fits at least this good count as exact, the simplest of them wins
GOOD_ENOUGH_R2 = 1 - 1e-10  # good_enough(): the test split is fit to numerical precision...
GOOD_ENOUGH_COMPLEXITY = 40  # ...by a formula of at most this many expression-tree nodes


def val_rmse(r: CandidateResult) -> float | None:
    """The error selection uses: validation RMSE (test RMSE for records without validation)."""
    return r.val_rmse if r.val_rmse is not None else r.test_rmse


def val_r2(r: CandidateResult) -> float | None:
    """The R² selection uses: validation R² (test R² for records without validation)."""
    return r.val_r2 if r.val_rmse is not None else r.test_r2


def pareto_front(results: Sequence[CandidateResult]) -> list[CandidateResult]:
    """The results with a formula that no other result beats on both complexity and validation RMSE
    (at least as good on both, better on one), sorted by complexity, then error. Of results with
    equal (complexity, error) the first one is kept."""
    pts = [r for r in results if isinstance(r, CandidateResult) and r.has_formula and val_rmse(r) is not None]
    pts.sort(key=lambda r: (r.complexity, val_rmse(r)))
    front: list[CandidateResult] = []
    best_err = math.inf
    for r in pts:  # by complexity ascending: a point survives iff it beats every simpler one on error
        if val_rmse(r) < best_err:
            front.append(r)
            best_err = val_rmse(r)
    return front


def choose(
    front: Sequence[CandidateResult],
    *,
    exact_r2: float = EXACT_R2,
    rel_tol: float = 0.25,
) -> CandidateResult | None:
    """The formula to show (None for an empty front).

    1. If some formulas fit the validation rows with R² >= ``exact_r2`` (0.999999), or down to
       the data's noise (`at_noise_floor`), the simplest of them (fewest tree nodes; ties: lower
       error).
    2. Otherwise the simplest formula whose validation RMSE is within ``rel_tol`` (25%) of the best.
    """
    pts = [r for r in front if r.has_formula and val_rmse(r) is not None]
    if not pts:
        return None
    exact = [r for r in pts if is_exact(r, exact_r2=exact_r2) or r.noise_rmse is not None]
    if exact:
        return min(exact, key=lambda r: (r.complexity, val_rmse(r)))
    best = min(val_rmse(r) for r in pts)
    ok = [r for r in pts if val_rmse(r) <= best * (1 + rel_tol) + 1e-300]
    return min(ok, key=lambda r: (r.complexity, val_rmse(r)))


def good_enough(
    result: CandidateResult,
    *,
    r2: float = GOOD_ENOUGH_R2,
    max_complexity: int = GOOD_ENOUGH_COMPLEXITY,
) -> bool:
    """Early stop: a formula of at most ``max_complexity`` nodes that fits the validation rows to
    numerical precision (R² >= 1 - 1e-10). On noisy data this never holds: `at_noise_floor` is
    the early stop there."""
    score = val_r2(result)
    return (result.status == "ok" and result.has_formula and score is not None
            and score >= r2 and result.complexity <= max_complexity)


def at_noise_floor(result: CandidateResult, *, max_complexity: int = GOOD_ENOUGH_COMPLEXITY) -> bool:
    """Early stop on noisy data: a formula of at most ``max_complexity`` nodes whose residual on
    the training rows is white noise (``noise_rmse`` set, `kan_core.validation.noise_floor`):
    refining further would fit the noise."""
    return (result.status == "ok" and result.has_formula and result.noise_rmse is not None
            and result.complexity <= max_complexity)


def is_exact(result: CandidateResult, *, exact_r2: float = EXACT_R2) -> bool:
    """Whether ``result`` has a formula that fits the validation rows with R² >= ``exact_r2``."""
    score = val_r2(result)
    return result.has_formula and score is not None and score >= exact_r2
