"""Formula discovery: many small pipeline runs ("candidates"), then a Pareto choice.

One KAN pipeline is a lottery: the result depends on the seed, the width, the regulariser, the
scale of the data and on whether the formula is a sum of 1-D functions at all. Discovery runs a
deterministic list of candidate configurations, most promising first, and keeps the formulas
that are not beaten on both complexity and test error.

The four steps are separate so that a service can spread the candidates over workers:

    specs = candidates(dataset, budget)                    # list[CandidateSpec], JSON via to_dict
    results = [run_candidate(dataset, s) for s in specs]   # one child job each; CandidateResult
    front = pareto_front(results)                          # non-dominated, simplest first
    best = choose(front)                                   # the documented rule below

and `discover` does all of it in-process, sequentially, within a `Budget` (stopping early when a
candidate is `good_enough`). Everything crossing a process boundary (Budget, CandidateSpec,
CandidateResult, DiscoveryEvent, DiscoveryResult) converts to and from plain JSON dicts.

Candidate families (`CandidateSpec.family`):
- ``"kan"``: `kan_core.pipeline.run_pipeline` with the spec's `PipelineConfig` (width, grid,
  stages, library, transform: standardisation and/or log space).
- ``"product"`` / ``"product_additive"``: a KAN with a multiplication node (`kan_core.product`),
  ``c * prod_i f_i(x_i) + d`` (plus ``sum_i g_i(x_i)`` for the additive variant), initialised by
  alternating least squares, then the spec's stages; the factors of the symbolic product are
  balanced before the final fit.

The service never needs the true formula: candidates are ranked on held-out test error and size.
Candidate order uses only properties of the data (number of inputs, signs of inputs and target).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import sympy
import torch
from sympy.functions.elementary.hyperbolic import InverseHyperbolicFunction

from kan_core.constants import sharpen_constants
from kan_core.data import Dataset
from kan_core.errors import KANError, TrainingCancelled
from kan_core.expr import STORED_LIMITS, ExpressionError
from kan_core.expr import parse as parse_expression
from kan_core.formula import evaluate_formula, formula_complexity, formula_latex, simplify_is_safe, tidy_formula
from kan_core.pipeline import (
    ModelConfig,
    PipelineConfig,
    PipelineResult,
    PolishStage,
    ProgressEvent,
    PruneStage,
    SymbolicStage,
    TrainStage,
    run_pipeline,
)
from kan_core.product import als_init, balance_products, separable_product_kan
from kan_core.transform import TransformConfig, fit_transform

Family = Literal["kan", "product", "product_additive"]
FAMILIES: tuple[str, ...] = ("kan", "product", "product_additive")
Status = Literal["ok", "no_formula", "failed", "cancelled", "timeout"]

# Functions auto_symbolic may choose in discovery: the seed library plus the reciprocals, cosine and
# the hyperbolic pair (velocity addition is tanh(arctanh(a) + arctanh(b))).
DISCOVERY_LIBRARY: tuple[str, ...] = (
    "x", "x^2", "x^3", "x^4", "1/x", "1/x^2", "sqrt", "1/sqrt", "exp", "log", "sin", "cos", "tanh", "arctanh", "abs",
)  # fmt: skip

EXACT_R2 = 1 - 1e-6  # choose(): fits at least this good count as exact, the simplest of them wins
GOOD_ENOUGH_R2 = 1 - 1e-10  # good_enough(): the test split is fit to numerical precision...
GOOD_ENOUGH_COMPLEXITY = 40  # ...by a formula of at most this many expression-tree nodes


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


# ----------------------------------------------------------------------------------------------
# JSON-able records


@dataclass(frozen=True)
class Budget:
    """How much discovery may spend: at most ``max_candidates`` candidates and ``max_seconds``
    of wall time in all (`discover` stops a running candidate at the deadline); each candidate at
    most ``candidate_seconds`` (None: whatever is left)."""

    max_candidates: int = 12
    max_seconds: float = 120.0
    candidate_seconds: float | None = None

    def __post_init__(self) -> None:
        _require(isinstance(self.max_candidates, int) and self.max_candidates >= 1,
                 f"max_candidates must be an integer >= 1, got {self.max_candidates!r}")
        _require(math.isfinite(self.max_seconds) and self.max_seconds > 0,
                 f"max_seconds must be finite and > 0, got {self.max_seconds!r}")
        _require(self.candidate_seconds is None or (math.isfinite(self.candidate_seconds) and self.candidate_seconds > 0),
                 f"candidate_seconds must be None or finite and > 0, got {self.candidate_seconds!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        return _from_dict(cls, data, "budget")


@dataclass(frozen=True)
class CandidateSpec:
    """One configuration to try. ``id`` is unique within a `candidates` list and stable for the
    same dataset and arguments; ``priority`` is its 0-based rank (lower runs first).

    ``pipeline`` holds the model (width, grid, seed...), the stages and the transform. For the
    product families, ``pipeline.model.width`` is ignored (the network is built from the number of
    inputs: ``product_rank`` separable products, summed) and ``als_restarts`` random starts
    initialise it. ``retry_weight_simple``: further
    ``weight_simple`` values for the symbolic stage, tried on the same trained network while the
    formula is not exact (see `run_candidate`).
    """

    id: str
    family: Family
    pipeline: PipelineConfig
    priority: int = 0
    als_restarts: int = 6
    product_rank: int = 1
    retry_weight_simple: tuple[float, ...] = (0.3,)
    label: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.id), "id must be a non-empty string")
        _require(self.family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        _require(isinstance(self.pipeline, PipelineConfig),
                 f"pipeline must be a PipelineConfig, got {type(self.pipeline).__name__}")
        _require(isinstance(self.als_restarts, int) and self.als_restarts >= 1,
                 f"als_restarts must be an integer >= 1, got {self.als_restarts!r}")
        _require(isinstance(self.product_rank, int) and self.product_rank >= 1,
                 f"product_rank must be an integer >= 1, got {self.product_rank!r}")
        object.__setattr__(self, "retry_weight_simple", tuple(self.retry_weight_simple))
        _require(all(isinstance(w, (int, float)) and 0 <= w <= 1 for w in self.retry_weight_simple),
                 f"retry_weight_simple values must be in [0, 1], got {list(self.retry_weight_simple)}")

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "family": self.family, "pipeline": self.pipeline.to_dict(),
                "priority": self.priority, "als_restarts": self.als_restarts, "product_rank": self.product_rank,
                "retry_weight_simple": list(self.retry_weight_simple), "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateSpec:
        _require(isinstance(data, Mapping), f"candidate spec: expected an object, got {type(data).__name__}")
        data = dict(data)
        if "pipeline" in data:
            data["pipeline"] = PipelineConfig.from_dict(data["pipeline"])
        return _from_dict(cls, data, "candidate spec")


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate produced. ``formula`` is sympy's string of the formula in the dataset's
    variable names (None when the run gave none); `expr` parses it back. Metrics are those of the
    *formula* (not the network) on the test and training splits, in the original units;
    ``complexity`` is `kan_core.formula.formula_complexity` (expression-tree nodes)."""

    spec_id: str
    family: str
    status: Status
    seconds: float
    var_names: tuple[str, ...]
    formula: str | None = None
    latex: str | None = None
    complexity: int | None = None
    test_rmse: float | None = None
    test_r2: float | None = None
    train_rmse: float | None = None
    train_r2: float | None = None
    network_test_rmse: float | None = None  # the trained network before/without the formula
    error: str | None = None
    label: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "var_names", tuple(self.var_names))

    @property
    def has_formula(self) -> bool:
        return self.formula is not None and self.test_rmse is not None and self.complexity is not None

    @property
    def expr(self) -> sympy.Expr | None:
        """The formula as a sympy expression over plain symbols named `var_names`."""
        return None if self.formula is None else parse_formula(self.formula, self.var_names)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["var_names"] = list(self.var_names)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateResult:
        return _from_dict(cls, data, "candidate result")


@dataclass(frozen=True)
class DiscoveryEvent:
    """Progress of `discover` / `run_candidate`. ``phase``: "candidate_start", "step" (a pipeline
    step or stage boundary; ``pipeline`` holds that `ProgressEvent` as a dict), "candidate_end"
    (``result`` holds the CandidateResult dict), "done". ``best_r2``: best formula test R² so far."""

    phase: Literal["candidate_start", "step", "candidate_end", "done"]
    candidate_index: int
    n_candidates: int
    spec_id: str | None
    elapsed: float
    best_r2: float | None = None
    pipeline: dict[str, Any] | None = None
    result: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DiscoveryResult:
    """``results``: every candidate run, in run order; ``front``: their Pareto front (simplest
    first); ``chosen``: `choose(front)` (None when no candidate produced a formula); ``stopped``:
    why discovery ended: "good_enough", "candidates" (all run), "time", "cancelled"."""

    results: tuple[CandidateResult, ...]
    front: tuple[CandidateResult, ...]
    chosen: CandidateResult | None
    seconds: float
    stopped: Literal["good_enough", "candidates", "time", "cancelled"]
    n_candidates: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "results": [r.to_dict() for r in self.results],
            "front": [r.to_dict() for r in self.front],
            "chosen": None if self.chosen is None else self.chosen.to_dict(),
            "seconds": self.seconds, "stopped": self.stopped, "n_candidates": self.n_candidates,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DiscoveryResult:
        _require(isinstance(data, Mapping), f"discovery result: expected an object, got {type(data).__name__}")
        try:
            return cls(
                tuple(CandidateResult.from_dict(r) for r in data["results"]),
                tuple(CandidateResult.from_dict(r) for r in data["front"]),
                None if data["chosen"] is None else CandidateResult.from_dict(data["chosen"]),
                float(data["seconds"]), data["stopped"], int(data["n_candidates"]),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"discovery result: missing or bad field {exc}") from None


def _from_dict(cls: type, data: Mapping[str, Any], what: str) -> Any:
    _require(isinstance(data, Mapping), f"{what}: expected an object, got {type(data).__name__}")
    names = set(cls.__dataclass_fields__)
    unknown = sorted(set(data) - names)
    _require(not unknown, f"{what}: unknown field(s) {', '.join(unknown)}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ValueError(f"{what}: {exc}") from None


def parse_formula(text: str, var_names: Sequence[str]) -> sympy.Expr:
    """Parse a formula string written by this module (sympy's printer) over plain symbols named
    ``var_names``, with the whitelist parser (kan_core.expr, stored-formula limits): the text is
    never evaluated. ValueError (ExpressionError) for anything else."""
    _require(isinstance(text, str), f"formula must be a string, got {type(text).__name__}")
    try:
        return parse_expression(text, var_names, limits=STORED_LIMITS)
    except ExpressionError as exc:
        raise ValueError(f"cannot parse formula {text!r}: {exc}") from None


# ----------------------------------------------------------------------------------------------
# candidate generation


def _stages(lamb: float, lamb_entropy: float, steps: int, lib: Sequence[str], *, refit: int = 50,
            prune: bool = True, update_grid: bool = True) -> tuple:
    first = TrainStage(name="train", steps=steps, lamb=lamb, lamb_entropy=lamb_entropy, update_grid=update_grid)
    out = [first]
    if prune:
        out += [PruneStage(name="prune"), TrainStage(name="retrain", steps=50, update_grid=update_grid)]
    out += [SymbolicStage(name="auto_symbolic", lib=tuple(lib)), PolishStage(name="polish", steps=refit)]
    return tuple(out)


def _product_stages(lib: Sequence[str]) -> tuple:
    return (
        TrainStage(name="train", steps=30, update_grid=False),
        PruneStage(name="prune"),
        TrainStage(name="retrain", steps=20, update_grid=False),
        SymbolicStage(name="auto_symbolic", lib=tuple(lib)),
        PolishStage(name="polish", steps=50),
    )


def candidates(
    dataset: Dataset,
    budget: Budget | None = None,
    *,
    seed: int = 0,
    library: Sequence[str] = DISCOVERY_LIBRARY,
) -> list[CandidateSpec]:
    """The candidate configurations for ``dataset``, most promising first, at most
    ``budget.max_candidates`` of them. Deterministic: the same dataset and arguments give the same
    list. ``seed`` offsets every model seed (another list of equally ranked candidates).

    Order (each only where it applies to the data):
    1. log-additive: ``log y = sum_i f_i(x_i)`` (all targets > 0): products, ratios and powers of
       positive factors, a single-layer KAN in log space;
    2. separable product ``c prod_i f_i(x_i) + d`` (signed products and ratios), >= 2 inputs;
    3. product plus additive ``sum_i g_i(x_i) + c prod_i f_i(x_i)``, >= 2 inputs; then the same for
       ``log y`` (all targets > 0): ``n_0 exp(-m g x / (k_b T))``;
    4. additive ``y = sum_i f_i(x_i)``, a single-layer KAN; then (>= 3 inputs) a sum of two
       separable products (``n*T*(log(V2) - log(V1))``);
    5. ``[n, 5, 1]`` with a mild regulariser (lamb 0.002) on the raw data: compositions such as
       ``exp(sin(pi x1) + x2^2)`` or ``sqrt(x1^2 + x2^2)`` after pruning;
    6. the seed recipe on ``[n, 5, 1]`` (pykan's: lamb 0.01, entropy 10, prune, retrain);
    7. log-target ``[n, 5, 1]`` (all targets > 0);
    8. ``[n, 5, 1]`` mild on standardised inputs and target; ``[n, 4, 2, 1]``; then further seeds.
    Every symbolic stage is followed by a Levenberg-Marquardt polish of the constants; the final
    formula's constants are refitted once more on the formula itself and keep as many digits as the
    fit needs (`kan_core.constants.sharpen_constants`).
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    budget = Budget() if budget is None else budget
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be a Budget, got {type(budget).__name__}")
    if dataset.n_out != 1:
        raise ValueError(f"discovery needs a single target, the dataset has {dataset.n_out}")
    lib = tuple(library)
    _require(len(lib) > 0, "library must name at least one function")
    n = dataset.n_var
    y_pos = bool((dataset.train_label > 0).all()) and bool((dataset.test_label > 0).all())
    raw = TransformConfig()
    std_all = TransformConfig(standardize_inputs=True, standardize_target=True)
    log_y = TransformConfig(standardize_inputs=True, log_target=True)
    specs: list[tuple[str, Family, PipelineConfig, str, int]] = []

    def add(name: str, family: Family, model: ModelConfig, stages: tuple, transform: TransformConfig,
            label: str, rank: int = 1) -> None:
        specs.append((name, family, PipelineConfig(model=model, stages=stages, transform=transform), label, rank))

    wide = (n, 5, 1)
    mild = _stages(0.002, 2.0, 50, lib)
    recipe = _stages(0.01, 10.0, 20, lib)
    if y_pos:
        add("log-additive", "kan", ModelConfig(width=(n, 1), seed=seed), _stages(0.0, 0.0, 50, lib, prune=False),
            log_y, "log y = sum f_i(x_i), standardised inputs")
    if n >= 2:
        add("product", "product", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "c * prod f_i(x_i) + d (multiplication node, ALS init), standardised")
        add("product-additive", "product_additive", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "sum g_i(x_i) + c * prod f_i(x_i) (ALS init), standardised")
    if n >= 2 and y_pos:
        add("log-product-additive", "product_additive", ModelConfig(seed=seed), _product_stages(lib), log_y,
            "log y = sum g_i(x_i) + c * prod f_i(x_i) (ALS init): Boltzmann factors, Gaussians")
    add("additive", "kan", ModelConfig(width=(n, 1), seed=seed), _stages(0.0, 0.0, 50, lib, prune=False),
        std_all, "y = sum f_i(x_i), standardised")
    if n >= 3:
        add("product-rank2", "product", ModelConfig(seed=seed), _product_stages(lib), std_all,
            "two separable products, summed (ALS init), standardised", rank=2)
    add("mild", "kan", ModelConfig(width=wide, seed=seed), mild, raw, "[n,5,1], lamb 0.002, raw data")
    add("seed-recipe", "kan", ModelConfig(width=wide, seed=seed), recipe, raw, "pykan's seed recipe on [n,5,1]")
    if y_pos:
        add("log-kan", "kan", ModelConfig(width=wide, seed=seed), mild, log_y,
            "log y = KAN [n,5,1], lamb 0.002, standardised inputs")
    add("mild-std", "kan", ModelConfig(width=wide, seed=seed), mild, std_all, "[n,5,1], lamb 0.002, standardised")
    add("deep", "kan", ModelConfig(width=(n, 4, 2, 1), seed=seed), mild, raw, "[n,4,2,1], lamb 0.002, raw data")
    for extra in (1, 2, 3):
        add(f"mild-s{extra}", "kan", ModelConfig(width=wide, seed=seed + extra), mild, raw,
            f"[n,5,1], lamb 0.002, raw data, seed +{extra}")
        add(f"seed-recipe-s{extra}", "kan", ModelConfig(width=wide, seed=seed + extra), recipe, raw,
            f"seed recipe, seed +{extra}")
    out = [CandidateSpec(id=f"{i:02d}-{name}", family=family, pipeline=pipe, priority=i, label=label,
                         product_rank=rank, als_restarts=6 if rank == 1 else 8)
           for i, (name, family, pipe, label, rank) in enumerate(specs)]
    return out[: budget.max_candidates]


# ----------------------------------------------------------------------------------------------
# running one candidate


def run_candidate(
    dataset: Dataset,
    spec: CandidateSpec,
    on_progress: Callable[[DiscoveryEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    var_names: Sequence[str] | None = None,
    max_seconds: float | None = None,
) -> CandidateResult:
    """Run ``spec`` on ``dataset`` and return its formula with the formula's test metrics.

    The stages before the first symbolic stage train the network once; the symbolic stage and
    the ones after it run on a copy, first as configured and then, while the formula does not fit
    the test split exactly (R² < `EXACT_R2`), once more per ``spec.retry_weight_simple`` value
    (an accuracy-leaning auto_symbolic finds ``arctanh`` where the default prefers ``x``); the
    variant `choose` prefers is returned.

    Never raises for a failing run: a crash gives ``status="failed"`` (``error`` says why), a run
    without a fully symbolic network ``"no_formula"``, ``should_stop()`` returning True
    ``"cancelled"``, and running past ``max_seconds`` ``"timeout"`` (both checked before every
    training step, so the overshoot is one step plus the non-interruptible symbolic fit and
    formula cleaning). Bad arguments (not a Dataset / CandidateSpec, wrong names) raise ValueError.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if not isinstance(spec, CandidateSpec):
        raise ValueError(f"spec must be a CandidateSpec, got {type(spec).__name__}")
    if dataset.n_out != 1:
        raise ValueError(f"discovery needs a single target, the dataset has {dataset.n_out}")
    names = _names(var_names, dataset.n_var)
    _require(max_seconds is None or max_seconds > 0, f"max_seconds must be None or > 0, got {max_seconds!r}")
    start = time.monotonic()
    deadline = None if max_seconds is None else start + max_seconds
    timed_out = [False]

    def stop() -> bool:
        if should_stop is not None and should_stop():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            timed_out[0] = True
            return True
        return False

    def progress(event: ProgressEvent) -> None:
        if on_progress is not None:
            on_progress(DiscoveryEvent("step", 0, 1, spec.id, time.monotonic() - start, None, asdict(event)))

    def result(status: Status, **kw: Any) -> CandidateResult:
        return CandidateResult(spec.id, spec.family, status, time.monotonic() - start, names, label=spec.label, **kw)

    variants: list[CandidateResult] = []
    try:
        head = _train_head(dataset, spec, progress, stop, names)
        for weight in (None, *spec.retry_weight_simple):
            if variants and (variants[0].status != "ok" or any(_exact(v) for v in variants)):
                break
            run = _run_tail(dataset, spec, head, weight, progress, stop, names)
            variants.append(_evaluate(run, dataset, names, result))
    except TrainingCancelled:
        if not variants:
            return result("timeout" if timed_out[0] else "cancelled")
    except (KANError, ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        if not variants:
            return result("failed", error=f"{type(exc).__name__}: {exc}"[:500])
    best = choose(pareto_front(variants))
    return replace(best if best is not None else variants[0], seconds=time.monotonic() - start)


def _exact(r: CandidateResult) -> bool:
    return r.has_formula and r.test_r2 is not None and r.test_r2 >= EXACT_R2


def _names(var_names: Sequence[str] | None, n: int) -> tuple[str, ...]:
    if var_names is None:
        return tuple(f"x_{i + 1}" for i in range(n))
    names = tuple(str(v) for v in var_names)
    _require(len(names) == n and len(set(names)) == n and all(v.isidentifier() for v in names),
             f"var_names must be {n} distinct identifiers, got {list(names)}")
    return names


def _split(spec: CandidateSpec) -> int:
    """Index of the first symbolic stage (len(stages) when there is none)."""
    stages = spec.pipeline.stages
    return next((i for i, s in enumerate(stages) if isinstance(s, SymbolicStage)), len(stages))


def _train_head(dataset: Dataset, spec: CandidateSpec, progress, stop, names) -> PipelineResult:
    """The stages before the first symbolic stage, from a fresh network (product families: the
    ALS-initialised product network)."""
    pipe = spec.pipeline
    initial = None
    if spec.family != "kan":
        data = fit_transform(dataset, pipe.transform).apply(dataset)
        mc = pipe.model
        dtype = torch.float64 if mc.dtype == "float64" else torch.float32
        initial = separable_product_kan(dataset.n_var, additive=spec.family == "product_additive",
                                        rank=spec.product_rank, grid=mc.grid, k=mc.k, seed=mc.seed, dtype=dtype,
                                        grid_range=mc.grid_range, noise_scale=mc.noise_scale)
        als_init(initial, data.train_input, data.train_label, restarts=spec.als_restarts, seed=mc.seed,
                 should_stop=stop)
    return run_pipeline(dataset, replace(pipe, stages=pipe.stages[: _split(spec)]), on_progress=progress,
                        should_stop=stop, initial_model=initial, var_names=names)


def _run_tail(dataset: Dataset, spec: CandidateSpec, head: PipelineResult, weight: float | None,
              progress, stop, names) -> PipelineResult:
    """The symbolic stage (with ``weight_simple`` replaced unless None) and the stages after it, on a
    copy of the trained network; product networks get their symbolic factors balanced in between."""
    pipe = spec.pipeline
    split = _split(spec)
    tail = list(pipe.stages[split:])
    if not tail:
        return head
    if weight is not None:
        tail[0] = replace(tail[0], weight_simple=weight, name=f"{tail[0].name}_w{weight:g}")
    cut = 1 if spec.family != "kan" else len(tail)
    run = run_pipeline(dataset, replace(pipe, stages=tuple(tail[:cut])), on_progress=progress, should_stop=stop,
                       initial_model=head.model, var_names=names)
    if cut < len(tail):
        x = fit_transform(dataset, pipe.transform).apply(dataset).train_input
        balance_products(run.model, x.to(dtype=run.model.dtype, device=run.model.device))
        rest = run_pipeline(dataset, replace(pipe, stages=tuple(tail[cut:])), on_progress=progress,
                            should_stop=stop, initial_model=run.model, var_names=names)
        rest.stages[:0] = run.stages
        rest.history[:0] = run.history
        run = rest
    run.stages[:0] = head.stages
    run.history[:0] = head.history
    return run


def _evaluate(run: PipelineResult, dataset: Dataset, names: tuple[str, ...], result) -> CandidateResult:
    net_rmse = _network_rmse(run, dataset)
    if not run.formulas:
        return result("no_formula", network_test_rmse=net_rmse)
    try:
        x = dataset.train_input.detach().to("cpu", torch.float64).numpy()
        y = dataset.train_label.detach().to("cpu", torch.float64).numpy()[:, 0]
        expr = sharpen_constants(polish_formula(run.formulas[0], names, dataset), names, x, y)
        metrics = formula_metrics(expr, names, dataset)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return result("failed", error=f"formula: {type(exc).__name__}: {exc}"[:500], network_test_rmse=net_rmse)
    if metrics["test_rmse"] is None:
        return result("failed", error="the formula is not finite on the test split", formula=str(expr),
                      network_test_rmse=net_rmse)
    return result("ok", formula=str(expr), latex=formula_latex(expr), complexity=formula_complexity(expr),
                  network_test_rmse=net_rmse, **metrics)


def _network_rmse(run: PipelineResult, dataset: Dataset) -> float | None:
    with torch.no_grad():
        x = dataset.test_input.to(dtype=run.model.dtype, device=run.model.device)
        pred = run.transform.predict(run.model, x) if run.transform is not None else run.model(x)
        rmse = float((pred.cpu().double() - dataset.test_label.cpu().double()).pow(2).mean().sqrt())
    return rmse if math.isfinite(rmse) else None


# ----------------------------------------------------------------------------------------------
# formulas: polishing and measuring


MAX_POLISH_OPS = 60  # rewrites with positivity assumptions only up to this many operations...
MAX_POLISH_FUNCTIONS = 8  # ...and applied functions (factor/expand can blow up beyond)


def _combine_log_sums(expr: sympy.Expr) -> sympy.Expr:
    """``k1*log(a) + k2*log(b) -> log(a**k1 * b**k2)`` inside every sum whose log terms all have
    numeric coefficients (symbolic factors stay outside: ``n*(log(a) - log(b)) -> n*log(a/b)``).
    Valid where the log arguments are positive: call with positive symbols."""

    def numeric_logs(node: sympy.Basic) -> bool:
        if not isinstance(node, sympy.Add):
            return False
        logs = [t for t in node.args if t.has(sympy.log)]
        return len(logs) >= 2 and all(
            isinstance(t, sympy.log) or (isinstance(t, sympy.Mul) and len(t.args) == 2 and t.args[0].is_Number
                                         and isinstance(t.args[1], sympy.log)) for t in logs)

    return expr.replace(numeric_logs, lambda node: sympy.logcombine(node, force=False))


def _inverse_hyperbolic_as_log(expr: sympy.Expr) -> sympy.Expr:
    """atanh, asinh, acosh written as logs, which sympy cancels against exp at once:
    ``exp(2*atanh(z)) -> (1 + z)/(1 - z)`` (log-space KANs find such forms for rational formulas)."""
    return expr.replace(lambda node: isinstance(node, InverseHyperbolicFunction), lambda node: node.rewrite(sympy.log))


def _join_roots(expr: sympy.Expr) -> sympy.Expr:
    """In every product, the factors with the same root join under it: ``sqrt(a)*sqrt(b)/sqrt(c) ->
    sqrt(a*b/c)``, ``a**(1/3)*b**(2/3) -> (a*b**2)**(1/3)``. Valid for positive bases only: the
    caller checks the result on the data."""

    def join(node: sympy.Expr) -> sympy.Expr:
        groups: dict[int, list[sympy.Expr]] = {}
        for factor in node.args:
            if isinstance(factor, sympy.Pow) and factor.exp.is_Rational and not factor.exp.is_Integer:
                groups.setdefault(int(factor.exp.q), []).append(factor)
        if all(len(g) < 2 for g in groups.values()):
            return node
        rest = [f for f in node.args if not any(f in g for g in groups.values() if len(g) > 1)]
        joined = [sympy.Pow(sympy.Mul(*(f.base ** (f.exp * q) for f in g)), sympy.Rational(1, q))
                  for q, g in groups.items() if len(g) > 1]
        return sympy.Mul(*rest, *joined)

    return expr.replace(lambda node: isinstance(node, sympy.Mul), join)


MAX_READABLE_INTEGER = 10**6  # a rewrite whose rationals need more digits than this is no simplification


def _unreadable_numbers(expr: sympy.Expr) -> bool:
    """Whether ``expr`` holds a rational with a numerator or denominator over MAX_READABLE_INTEGER:
    `sympy.factor` turns floats into exact fractions, and can return ``1514...568*m*u**2/((u -
    20158755137248752)**2*...)`` (68 digits) for a formula with a dozen float constants."""
    return any(abs(r.p) > MAX_READABLE_INTEGER or r.q > MAX_READABLE_INTEGER for r in expr.atoms(sympy.Rational))


def _function_count(expr: sympy.Expr) -> int:
    """Number of applied functions (exp, sin, tanh, ...) in the tree; powers do not count."""
    return sum(1 for e in sympy.preorder_traversal(expr) if isinstance(e, sympy.Function))


def polish_formula(expr: sympy.Expr, var_names: Sequence[str], dataset: Dataset | None = None) -> sympy.Expr:
    """The simplest of a few equivalent forms of ``expr``: fewest applied functions first (so
    ``tanh(atanh(a) + atanh(b))`` becomes ``(a + b)/(a*b + 1)``, ``exp(log(a) - log(b))`` ``a/b`` and
    ``exp(2*atanh(1 - 2/(m + 1)))`` ``m``), then lowest `formula_complexity`; a rewrite may grow the
    tree by at most half.

    Variables whose values are all > 0 in ``dataset`` (both splits) are treated as positive while
    rewriting, so ``log(a) - log(b)`` may become ``log(a/b)`` and ``sqrt(c**2)`` ``c``; a rewrite
    is kept only when it agrees with ``expr`` on the test inputs (relative 1e-9). Size-guarded.
    """
    if not isinstance(expr, sympy.Basic):
        raise ValueError(f"expected a sympy expression, got {type(expr).__name__}")
    if sympy.count_ops(expr) > MAX_POLISH_OPS or _function_count(expr) > MAX_POLISH_FUNCTIONS:
        return expr
    names = list(var_names)
    positive: list[str] = []
    x_test = None
    if dataset is not None:
        xs = torch.cat([dataset.train_input, dataset.test_input]).detach().cpu()
        positive = [n for i, n in enumerate(names) if bool((xs[:, i] > 0).all())]
        x_test = dataset.test_input.detach().to("cpu", torch.float64).numpy()
    pos = {sympy.Symbol(n): sympy.Symbol(n, positive=True) for n in positive}
    back = {v: k for k, v in pos.items()}
    e = expr.xreplace(pos)
    rewrites: list[Callable[[sympy.Expr], sympy.Expr]] = [
        lambda u: _combine_log_sums(sympy.factor_terms(u)),
        lambda u: sympy.logcombine(sympy.factor_terms(u), force=False),
        lambda u: sympy.logcombine(sympy.factor(u), force=False),
        lambda u: sympy.powsimp(sympy.factor(u)),
        lambda u: sympy.cancel(sympy.expand_log(u)),
        lambda u: sympy.cancel(sympy.expand_trig(u)),
        lambda u: sympy.cancel(_inverse_hyperbolic_as_log(u)),
        # positive symbols keep sqrt(a*b) split as sqrt(a)*sqrt(b); plain ones let them be joined
        lambda u: _join_roots(u.xreplace(back)),
        sympy.factor_terms,
    ]
    if simplify_is_safe(e):
        rewrites.append(sympy.simplify)
    size0 = formula_complexity(expr)
    best, best_key = expr, (_function_count(expr), size0)
    ref = evaluate_formula(expr, names, x_test) if x_test is not None else None
    for rewrite in rewrites:
        try:
            out = rewrite(e).xreplace(back)
            forms = [out, tidy_formula(out, simplify=False)]  # as rewritten, and with constants snapped
        except Exception:  # sympy rewrites raise assorted errors on odd inputs; skip that rewrite
            continue
        for cand in forms:
            key = (_function_count(cand), formula_complexity(cand))
            if key >= best_key or key[1] > 1.5 * size0 + 2 or cand.has(sympy.nan, sympy.zoo, sympy.oo, -sympy.oo):
                continue
            if _unreadable_numbers(cand):
                continue
            if ref is not None:
                val = evaluate_formula(cand, names, x_test)
                if not np.allclose(val, ref, rtol=1e-9, atol=1e-12 * (1 + float(np.nanmax(np.abs(ref))))):
                    continue
            best, best_key = cand, key
    if best is not expr:  # snap the constants a rewrite produced (2.0 -> 2) when that costs nothing
        tidy = tidy_formula(best, simplify=False)
        if (_function_count(tidy), formula_complexity(tidy)) <= best_key and (
            ref is None or np.allclose(evaluate_formula(tidy, names, x_test), ref, rtol=1e-6)
        ):
            best = tidy
    return best


def formula_metrics(expr: sympy.Expr, var_names: Sequence[str], dataset: Dataset) -> dict[str, float | None]:
    """RMSE and R² of ``expr`` on both splits of ``dataset`` (single target); None where the
    formula is not finite on some row."""
    out: dict[str, float | None] = {}
    for split, x, y in (("test", dataset.test_input, dataset.test_label),
                        ("train", dataset.train_input, dataset.train_label)):
        yy = y.detach().to("cpu", torch.float64).numpy()[:, 0]
        pred = evaluate_formula(expr, list(var_names), x)
        if not np.isfinite(pred).all():
            out[f"{split}_rmse"] = out[f"{split}_r2"] = None
            continue
        sse = float(np.sum((pred - yy) ** 2))
        sst = float(np.sum((yy - yy.mean()) ** 2))
        out[f"{split}_rmse"] = math.sqrt(sse / len(yy))
        out[f"{split}_r2"] = 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0)
    return out


# ----------------------------------------------------------------------------------------------
# selection


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


# ----------------------------------------------------------------------------------------------
# all of it, in-process


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
    `good_enough` result, and return every result, their Pareto front and `choose`'s pick.

    Time: a candidate is started only while time is left, and is stopped at the budget's deadline
    (or after ``budget.candidate_seconds``), so the overshoot is bounded by one training step plus
    a symbolic fit and formula cleaning. ``should_stop()`` True ends discovery ("cancelled") with
    the results so far. ``on_progress(DiscoveryEvent)``: candidate starts and ends, pipeline steps.
    """
    budget = Budget() if budget is None else budget
    specs = candidates(dataset, budget, seed=seed, library=library)
    names = _names(var_names, dataset.n_var)
    start = time.monotonic()
    deadline = start + budget.max_seconds
    results: list[CandidateResult] = []
    stopped: str = "candidates"
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
        if res.has_formula and res.test_r2 is not None and (best_r2[0] is None or res.test_r2 > best_r2[0]):
            best_r2[0] = res.test_r2
        emit("candidate_end", index, spec.id, result=res.to_dict())
        if res.status == "cancelled":
            stopped = "cancelled"
            break
        if good_enough(res):
            stopped = "good_enough"
            break
        if res.status == "timeout" and time.monotonic() >= deadline:
            stopped = "time"
            break
    front = pareto_front(results)
    out = DiscoveryResult(tuple(results), tuple(front), choose(front), time.monotonic() - start, stopped, len(specs))
    emit("done", len(results), None)
    return out
