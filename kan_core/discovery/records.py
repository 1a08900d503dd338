"""Discovery's JSON-able records: what to spend, what to try, what came out, progress.

Everything crossing a process boundary (Budget, CandidateSpec, CandidateResult, DiscoveryEvent,
DiscoveryResult) converts to and from plain JSON dicts; a stored formula is read back with the
whitelist parser, never evaluated.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import sympy

from kan_core.expr import STORED_LIMITS, ExpressionError
from kan_core.expr import parse as parse_expression
from kan_core.pipeline import FAMILIES, PipelineConfig

Family = Literal["kan", "product", "product_additive", "sparse", "structure"]
Status = Literal["ok", "no_formula", "failed", "cancelled", "timeout"]

__all__ = ["FAMILIES", "Budget", "CandidateResult", "CandidateSpec", "DiscoveryEvent", "DiscoveryResult",
           "Family", "Status", "parse_formula"]


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


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

    ``pipeline`` is all of the run: the network (``pipeline.model``, its ``family`` included), the
    stages and the transform. ``retry_weight_simple``: further ``weight_simple`` values for the
    symbolic stage, tried on the same trained network while the formula is not exact (see
    `run_candidate`).
    """

    id: str
    pipeline: PipelineConfig
    priority: int = 0
    retry_weight_simple: tuple[float, ...] = (0.3,)
    label: str = ""

    def __post_init__(self) -> None:
        _require(isinstance(self.id, str) and bool(self.id), "id must be a non-empty string")
        _require(isinstance(self.pipeline, PipelineConfig),
                 f"pipeline must be a PipelineConfig, got {type(self.pipeline).__name__}")
        object.__setattr__(self, "retry_weight_simple", tuple(self.retry_weight_simple))
        _require(all(isinstance(w, (int, float)) and 0 <= w <= 1 for w in self.retry_weight_simple),
                 f"retry_weight_simple values must be in [0, 1], got {list(self.retry_weight_simple)}")

    @property
    def family(self) -> str:
        """The network family, ``pipeline.model.family``."""
        return self.pipeline.model.family

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON; ``family`` repeats ``pipeline.model.family`` for readers of stored jobs."""
        return {"id": self.id, "family": self.family, "pipeline": self.pipeline.to_dict(),
                "priority": self.priority, "retry_weight_simple": list(self.retry_weight_simple), "label": self.label}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CandidateSpec:
        """Inverse of `to_dict`. Top-level ``family``, ``als_restarts`` and ``product_rank`` (where
        records written before they moved into ``pipeline.model`` kept them) set those model fields."""
        _require(isinstance(data, Mapping), f"candidate spec: expected an object, got {type(data).__name__}")
        data = dict(data)
        moved = {k: data.pop(k) for k in _MOVED_TO_MODEL if k in data and data[k] is not None}
        pipeline = PipelineConfig.from_dict(data.get("pipeline", {}))
        if moved:
            try:
                model = replace(pipeline.model, **moved)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"candidate spec: {exc}") from None
            pipeline = replace(pipeline, model=model)
        data["pipeline"] = pipeline
        return _from_dict(cls, data, "candidate spec")


_MOVED_TO_MODEL = ("family", "als_restarts", "product_rank")


@dataclass(frozen=True)
class CandidateResult:
    """What one candidate produced. ``formula`` is sympy's string of the formula in the dataset's
    variable names (None when the run gave none); `expr` parses it back. Metrics are those of the
    *formula* (not the network), in the original units: ``val_*`` on the validation rows carved
    from the training split (`kan_core.validation`: what selection and early stopping use),
    ``test_*`` on the test split (reported only), ``train_*`` on all training rows;
    ``noise_rmse``: the noise level when the formula's residual is white noise (at the noise
    floor), else None; ``complexity`` is `kan_core.formula.formula_complexity` (tree nodes)."""

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
    network_test_rmse: float | None = None  # the trained network before/without the formula (validation rows)
    error: str | None = None
    label: str = ""
    structure: dict[str, Any] | None = None  # "structure" family: how the formula was built (kan_core.recurse)
    val_rmse: float | None = None
    val_r2: float | None = None
    noise_rmse: float | None = None

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
    (``result`` holds the CandidateResult dict), "done". ``best_r2``: best formula validation R² so far."""

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
    why discovery ended: "good_enough", "noise_floor" (a simple formula fits down to the data's
    noise), "candidates" (all run), "time", "cancelled"."""

    results: tuple[CandidateResult, ...]
    front: tuple[CandidateResult, ...]
    chosen: CandidateResult | None
    seconds: float
    stopped: Literal["good_enough", "noise_floor", "candidates", "time", "cancelled"]
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


def check_var_names(var_names: Sequence[str] | None, n: int) -> tuple[str, ...]:
    """``var_names`` as a tuple of ``n`` distinct identifiers (default ``x_1 .. x_n``); ValueError else."""
    if var_names is None:
        return tuple(f"x_{i + 1}" for i in range(n))
    names = tuple(str(v) for v in var_names)
    _require(len(names) == n and len(set(names)) == n and all(v.isidentifier() for v in names),
             f"var_names must be {n} distinct identifiers, got {list(names)}")
    return names
