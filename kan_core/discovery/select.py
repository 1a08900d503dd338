"""Choosing among candidate results: the Pareto front (complexity vs test error), the documented
choice on it, and the early-stop test."""

from __future__ import annotations

import math
from collections.abc import Sequence

from kan_core.discovery.records import CandidateResult

EXACT_R2 = 1 - 1e-6  # choose(): fits at least this good count as exact, the simplest of them wins
GOOD_ENOUGH_R2 = 1 - 1e-10  # good_enough(): the test split is fit to numerical precision...
GOOD_ENOUGH_COMPLEXITY = 40  # ...by a formula of at most this many expression-tree nodes


def pareto_front(results: Sequence[CandidateResult]) -> list[CandidateResult]:
    """The results with a formula that no other result beats on both complexity and test RMSE
    (at least as good on both, better on one), sorted by complexity, then error. Of results with
    equal (complexity, error) the first one is kept."""
    pts = [r for r in results if isinstance(r, CandidateResult) and r.has_formula]
    pts.sort(key=lambda r: (r.complexity, r.test_rmse))
    front: list[CandidateResult] = []
    best_err = math.inf
    for r in pts:  # by complexity ascending: a point survives iff it beats every simpler one on error
        if r.test_rmse < best_err:
            front.append(r)
            best_err = r.test_rmse
    return front


def choose(
    front: Sequence[CandidateResult],
    *,
    exact_r2: float = EXACT_R2,
    rel_tol: float = 0.25,
) -> CandidateResult | None:
    """The formula to show (None for an empty front).

    1. If some formulas fit the test split with R² >= ``exact_r2`` (0.999999), the simplest of
       them (fewest tree nodes; ties: lower error).
    2. Otherwise the simplest formula whose test RMSE is within ``rel_tol`` (25%) of the best.
    """
    pts = [r for r in front if r.has_formula]
    if not pts:
        return None
    exact = [r for r in pts if r.test_r2 is not None and r.test_r2 >= exact_r2]
    if exact:
        return min(exact, key=lambda r: (r.complexity, r.test_rmse))
    best = min(r.test_rmse for r in pts)
    ok = [r for r in pts if r.test_rmse <= best * (1 + rel_tol) + 1e-300]
    return min(ok, key=lambda r: (r.complexity, r.test_rmse))


def good_enough(
    result: CandidateResult,
    *,
    r2: float = GOOD_ENOUGH_R2,
    max_complexity: int = GOOD_ENOUGH_COMPLEXITY,
) -> bool:
    """Early stop: a formula of at most ``max_complexity`` nodes that fits the test split to
    numerical precision (R² >= 1 - 1e-10). On noisy data this never holds: discovery then uses
    its whole budget."""
    return (result.status == "ok" and result.has_formula and result.test_r2 is not None
            and result.test_r2 >= r2 and result.complexity <= max_complexity)


def is_exact(result: CandidateResult, *, exact_r2: float = EXACT_R2) -> bool:
    """Whether ``result`` has a formula that fits the test split with R² >= ``exact_r2``."""
    return result.has_formula and result.test_r2 is not None and result.test_r2 >= exact_r2
