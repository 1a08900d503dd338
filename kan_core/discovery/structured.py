"""The "structure" candidate family: `kan_core.recurse` with discovery's own candidates as leaves.

The recursion (surrogate, separability and symmetry tests, splits, substitutions, target
transforms) breaks the data into smaller problems; each leaf is solved here, cheapest first:
sparse regression over a dictionary of terms (`kan_core.recurse.sparse_leaf`), then the discovery
candidates of the small problem (all families but "structure" and "sparse"), until one reaches the
leaf's target R². ``run_one`` is `kan_core.discovery.run.run_candidate`, passed in by the run module
(which imports this one) so that no import cycle forms.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import sympy
import torch

from kan_core.data import Dataset
from kan_core.discovery.candidates import candidates
from kan_core.discovery.records import Budget, CandidateResult, CandidateSpec
from kan_core.formula import formula_complexity
from kan_core.recurse import Problem, StructureResult, solve_structure, sparse_leaf

RunOne = Callable[..., CandidateResult]
LEAF_FAMILIES_SKIPPED = ("structure", "sparse")  # no recursion inside a leaf; sparse runs first anyway
SPARSE_LEAF_SECONDS = (4.0, 10.0)  # the sparse try of a leaf: at most this long (surrogate data, real data)


def solve_dataset(dataset: Dataset, names: Sequence[str], *, max_seconds: float, should_stop: Callable[[], bool],
                  run_one: RunOne, seed: int = 0, on_progress: Callable | None = None) -> StructureResult:
    """`solve_structure` on the dataset's splits (float64 numpy), leaves solved by `leaf_solver`; no
    formula when the whole problem shows no structure (the other candidates solve it as it is)."""
    def arr(t: torch.Tensor):
        return t.detach().to("cpu", torch.float64).numpy()

    return solve_structure(arr(dataset.train_input), arr(dataset.train_label)[:, 0], arr(dataset.test_input),
                           arr(dataset.test_label)[:, 0], names, max_seconds=max_seconds, should_stop=should_stop,
                           leaf_solver=leaf_solver(run_one, on_progress), seed=seed, require_structure=True)


def leaf_solver(run_one: RunOne, on_progress: Callable | None = None,
                ) -> Callable[[Problem, float, Callable[[], bool]], tuple[sympy.Expr | None, dict]]:
    """A leaf solver for `solve_structure`: sparse regression, then the small problem's candidates,
    each at most a third of the time left, until one fits within twice the surrogate's error
    (`Problem.target_r2`; exactly on real data); then the simplest of those within five times.
    ``on_progress`` receives the leaf candidates' DiscoveryEvents."""

    def solve(p: Problem, seconds: float, stop: Callable[[], bool]) -> tuple[sympy.Expr | None, dict]:
        deadline = time.monotonic() + seconds
        strict, loose = p.target_r2(2.0), p.target_r2(5.0)
        sparse = sparse_leaf(p, min(seconds / 5, SPARSE_LEAF_SECONDS[0 if p.approximate else 1]), stop)
        if sparse is not None and sparse[1]["r2"] >= strict and (not p.approximate or sparse[1]["terms"] <= 2):
            return sparse  # (many terms can fit a surrogate's own error: then the candidates run too)
        found = [] if sparse is None else [(sparse[0], sparse[1], formula_complexity(sparse[0]))]
        data = Dataset.from_arrays(p.x, p.y, p.x_test, p.y_test)
        specs: list[CandidateSpec] = [s for s in candidates(data, Budget(max_candidates=40))
                                      if s.family not in LEAF_FAMILIES_SKIPPED]
        for spec in specs:
            left = deadline - time.monotonic()
            if stop() or left <= 0.5:
                break
            res = run_one(data, spec, on_progress, should_stop=stop, var_names=p.names, max_seconds=max(1.0, left / 3))
            if res.has_formula and res.test_r2 is not None:
                found.append((res.expr, {"candidate": res.spec_id, "r2": res.test_r2}, res.complexity))
                if res.test_r2 >= strict:
                    break
        if not found:
            return None, {}
        # the simplest within five times the surrogate's error, else the most accurate
        good = [f for f in found if f[1]["r2"] >= loose]
        best = min(good, key=lambda f: (f[2], -f[1]["r2"])) if good else max(found, key=lambda f: f[1]["r2"])
        return best[0], best[1]

    return solve
