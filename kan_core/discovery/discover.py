"""Discovery in-process: the candidates one after another within a budget, then the choice."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kan_core.data import Dataset
from kan_core.discovery.candidates import DISCOVERY_LIBRARY, candidates
from kan_core.discovery.records import Budget, CandidateResult, DiscoveryEvent, DiscoveryResult, check_var_names
from kan_core.discovery.run import run_candidate
from kan_core.discovery.select import at_noise_floor, choose, good_enough, pareto_front, val_r2
from kan_core.threads import one_blas_thread


def discover(
    dataset: Dataset,
    budget: Budget | None = None,
    on_progress: Callable[[DiscoveryEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    var_names: Sequence[str] | None = None,
    seed: int = 0,
    library: Sequence[str] = DISCOVERY_LIBRARY,
) -> DiscoveryResult:
    """Run `candidates` one after another within ``budget``, stopping early at the first
    `good_enough` result (or, on noisy data, the first `at_noise_floor`), and return every result,
    their Pareto front and `choose`'s pick. Candidates are chosen on validation rows carved from
    the training split (`kan_core.validation`); the test split only measures them.

    Time: a candidate is started only while time is left, and is stopped at the budget's deadline
    (or after ``budget.candidate_seconds``), so the overshoot is bounded by one training step plus
    a symbolic fit and formula cleaning. ``should_stop()`` True ends discovery ("cancelled") with
    the results so far. ``on_progress(DiscoveryEvent)``: candidate starts and ends, pipeline steps.
    """
    with one_blas_thread():  # numpy's small problems (sparse search, constants): threads cost more than they gain
        return _discover(dataset, budget, on_progress, should_stop, var_names, seed, library)


def _discover(dataset: Dataset, budget: Budget | None, on_progress: Callable[[DiscoveryEvent], None] | None,
              should_stop: Callable[[], bool] | None, var_names: Sequence[str] | None, seed: int,
              library: Sequence[str]) -> DiscoveryResult:
    budget = Budget() if budget is None else budget
    specs = candidates(dataset, budget, seed=seed, library=library)
    names = check_var_names(var_names, dataset.n_var)
    start = time.monotonic()
    deadline = start + budget.max_seconds
    results: list[CandidateResult] = []
    stopped: str = "candidates"  # the reason discovery ended (DiscoveryResult.stopped)
    best_r2: list[float | None] = [None]

    def emit(phase: str, index: int, spec_id: str | None, **kw: Any) -> None:
        if on_progress is not None:
            on_progress(DiscoveryEvent(phase, index, len(specs), spec_id, time.monotonic() - start, best_r2[0], **kw))

    for index, spec in enumerate(specs):
        if should_stop is not None and should_stop():
            stopped = "cancelled"
            break
        left = deadline - time.monotonic()
        if left <= 0:
            stopped = "time"
            break
        limit = left if budget.candidate_seconds is None else min(left, budget.candidate_seconds)
        emit("candidate_start", index, spec.id)

        def forward(event: DiscoveryEvent, index: int = index) -> None:
            emit("step", index, event.spec_id, pipeline=event.pipeline)

        res = run_candidate(dataset, spec, forward if on_progress is not None else None, should_stop,
                            var_names=names, max_seconds=limit)
        results.append(res)
        score = val_r2(res) if res.has_formula else None
        if score is not None and (best_r2[0] is None or score > best_r2[0]):
            best_r2[0] = score
        emit("candidate_end", index, spec.id, result=res.to_dict())
        if res.status == "cancelled":
            stopped = "cancelled"
            break
        if good_enough(res):
            stopped = "good_enough"
            break
        if at_noise_floor(res):
            stopped = "noise_floor"
            break
        if res.status == "timeout" and time.monotonic() >= deadline:
            stopped = "time"
            break
    front = pareto_front(results)
    out = DiscoveryResult(tuple(results), tuple(front), choose(front), time.monotonic() - start, stopped, len(specs))
    emit("done", len(results), None)
    return out
