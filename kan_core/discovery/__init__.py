"""Formula discovery: many small pipeline runs ("candidates"), then a Pareto choice.

One KAN pipeline is a lottery: the result depends on the seed, the width, the regulariser, the
scale of the data and on whether the formula is a sum of 1-D functions at all. Discovery runs a
deterministic list of candidate configurations, most promising first, and keeps the formulas that
are not beaten on both complexity and test error. The steps are separate so that a service can
spread the candidates over workers:

    specs = candidates(dataset, budget)                    # candidates.py: list[CandidateSpec]
    results = [run_candidate(dataset, s) for s in specs]   # run.py: pipeline, then evaluate
    front = pareto_front(results)                          # select.py: non-dominated, simplest first
    best = choose(front)                                   # select.py: the documented rule

`discover` (discover.py) does all of it in-process within a `Budget`, stopping early at a
`good_enough` result; records.py holds the JSON-able records, simplify.py the formula rewrites.
The service never needs the true formula: candidates are ranked on the error on validation rows
carved from the training split (`kan_core.validation`) and on size; the test split only measures.
"""

from kan_core.discovery.candidates import DISCOVERY_LIBRARY, candidates
from kan_core.discovery.discover import discover
from kan_core.discovery.records import (
    FAMILIES,
    Budget,
    CandidateResult,
    CandidateSpec,
    DiscoveryEvent,
    DiscoveryResult,
    Family,
    Status,
    parse_formula,
)
from kan_core.discovery.run import formula_metrics, run_candidate
from kan_core.discovery.select import (
    EXACT_R2,
    GOOD_ENOUGH_COMPLEXITY,
    GOOD_ENOUGH_R2,
    at_noise_floor,
    choose,
    good_enough,
    is_exact,
    pareto_front,
    val_r2,
    val_rmse,
)
from kan_core.discovery.simplify import MAX_POLISH_FUNCTIONS, MAX_POLISH_OPS, polish_formula

__all__ = [
    "DISCOVERY_LIBRARY", "EXACT_R2", "FAMILIES", "GOOD_ENOUGH_COMPLEXITY", "GOOD_ENOUGH_R2", "MAX_POLISH_FUNCTIONS",
    "MAX_POLISH_OPS", "Budget", "CandidateResult", "CandidateSpec", "DiscoveryEvent", "DiscoveryResult", "Family",
    "Status", "at_noise_floor", "candidates", "choose", "discover", "formula_metrics", "good_enough", "is_exact",
    "pareto_front", "parse_formula", "polish_formula", "run_candidate", "val_r2", "val_rmse",
]
