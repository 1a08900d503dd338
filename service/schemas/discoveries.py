"""Request and response bodies of /v1/discoveries and /v1/batches (separate from the ORM rows).

A discovery tries candidate pipelines (the engine's `kan_core.discovery.candidates`) as child jobs
and keeps the Pareto front of their formulas: complexity against test RMSE, no point beaten on both.
Budget caps that depend on the deployment (Settings.max_discovery_*) are checked by service.discovery.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from service.models import JobStatus
from service.schemas.common import Problem, StrictInput, UtcDatetime

DEFAULT_MAX_CANDIDATES = 16
DEFAULT_MAX_SECONDS = 120.0


_Input = StrictInput  # request bodies: unknown fields are errors, no value is coerced


class Budget(_Input):
    max_candidates: int = Field(DEFAULT_MAX_CANDIDATES, ge=1,
                                description="Most candidate pipelines tried (at most Settings.max_discovery_candidates).")
    max_seconds: float = Field(DEFAULT_MAX_SECONDS, gt=0,
                               description="After this, the discovery ends with the candidates that finished; the "
                                           "others are cancelled (at most Settings.max_discovery_seconds).")


class DiscoveryOptions(_Input):
    seed: int = Field(0, ge=0, le=2**31 - 1, description="Seed of the candidates' networks.")
    train_steps: int | None = Field(None, ge=1, description="Steps of every training stage of every candidate "
                                                            "(fewer: faster, rougher); null: the candidates' own.")


class DiscoveryCreate(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [
        {"dataset_id": "ds_0190c0ffee0000000000000000", "budget": {"max_candidates": 8, "max_seconds": 60}}]})

    dataset_id: str = Field(min_length=1, max_length=40)
    budget: Budget = Field(default_factory=Budget)
    options: DiscoveryOptions = Field(default_factory=DiscoveryOptions)


MAX_DATASET_DEPTH = 8  # a dataset body nests 3 deep ({"inputs": [[...]]}); deeper is no dataset


def _shallow(value: dict[str, Any]) -> dict[str, Any]:
    """Refuse nesting deeper than MAX_DATASET_DEPTH (it would overflow the serialiser's recursion)."""
    level: list[Any] = [value]
    for _ in range(MAX_DATASET_DEPTH):
        level = [v for node in level for v in (node.values() if isinstance(node, dict) else node)
                 if isinstance(v, (dict, list))]
        if not level:
            return value
    raise ValueError(f"nested more than {MAX_DATASET_DEPTH} levels deep; a dataset body is not")


class BatchItemCreate(_Input):
    # "exactly one of": in the schema as in _one_source (an explicit null counts as not given)
    model_config = ConfigDict(json_schema_extra={"oneOf": [
        {"required": ["dataset"], "properties": {"dataset": {"type": "object"}}},
        {"required": ["dataset_id"], "properties": {"dataset_id": {"type": "string"}}},
    ]})

    dataset: Annotated[dict[str, Any], AfterValidator(_shallow)] | None = Field(
        None, description="A dataset creation body (as POST /v1/datasets with JSON: arrays or an `expression`).")
    dataset_id: str | None = Field(None, min_length=1, max_length=40, description="An existing dataset instead.")

    @model_validator(mode="after")
    def _one_source(self) -> BatchItemCreate:
        if (self.dataset is None) == (self.dataset_id is None):
            raise ValueError("give exactly one of `dataset` and `dataset_id`")
        return self


class BatchCreate(_Input):
    model_config = ConfigDict(json_schema_extra={"examples": [{"items": [
        {"dataset": {"expression": "sin(x1) + x2**2", "ranges": {"x1": [-2, 2], "x2": [-1, 1]}, "n_train": 500}},
        {"dataset_id": "ds_0190c0ffee0000000000000000"}], "budget": {"max_candidates": 4}}]})

    items: list[BatchItemCreate] = Field(min_length=1, description="One discovery per item (at most Settings.max_batch_items).")
    budget: Budget = Field(default_factory=Budget)
    options: DiscoveryOptions = Field(default_factory=DiscoveryOptions)


# --------------------------------------------------------------------------------------------------
# responses


class CandidateRef(BaseModel):
    id: str | None = Field(None, description="The engine's candidate id, e.g. `01-product`.")
    family: str | None = Field(None, description="kan | product | product_additive | sparse | structure")
    label: str = Field("", description="What the candidate tries, in words.")


class FrontPoint(BaseModel):
    complexity: int = Field(description="Expression-tree nodes of the formula.")
    test_rmse: float = Field(description="RMSE of the formula on the test split, in the target's units.")
    r2: float | None = Field(None, description="R² of the formula on the test split.")
    train_rmse: float | None = Field(None, description="RMSE of the formula on the training split.")
    val_rmse: float | None = Field(
        None, description="RMSE on the validation rows (carved from the training split): what the front and the "
                          "choice are made on; the test split only measures.")
    noise_rmse: float | None = Field(
        None, description="The data's noise level when the formula's residual is white noise (it is at the noise "
                          "floor: discovery stops there), else null.")
    formula: str = Field(description="The formula in the dataset's feature names (sympy syntax).")
    latex: str
    variables: list[str] = Field(description="The formula's variables, in the order of the dataset's features.")
    job_id: str = Field(description="The candidate job that found it (see /v1/jobs).")
    candidate: CandidateRef
    structure: dict[str, Any] | None = Field(
        None, description="How a `structure` candidate built the formula: a tree of splits (`op` add | mul, the "
                          "variable `groups`), substitutions (`variable` = `definition`), target transforms and "
                          "leaves, each node with the `test`(s) that justified it (statistic vs threshold, in units "
                          "of the surrogate's error) and its `formula`; see docs/discovery.md. Null for other "
                          "candidates.")


class DiscoveryPredictResponse(BaseModel):
    formula: str = Field(description="The formula evaluated (the chosen one, or front[point]).")
    variables: list[str] = Field(description="Its variables: the input columns, in order.")
    outputs: list[list[float | None]] = Field(
        description="One row per input row, one column; null where the formula is not a finite number there.")


class DiscoveryProgress(BaseModel):
    candidates_done: int
    candidates_total: int
    best: FrontPoint | None = Field(None, description="The most accurate formula so far.")


class CandidateJob(BaseModel):
    job_id: str
    status: JobStatus


class DiscoveryPublic(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str
    budget: Budget
    options: DiscoveryOptions
    progress: DiscoveryProgress | None = None
    front: list[FrontPoint] = Field(default_factory=list,
                                    description="Non-dominated formulas, simplest first: none is both simpler and "
                                                "more accurate than another.")
    chosen: FrontPoint | None = Field(None, description="The formula the discovery picks from the front.")
    reason: str | None = Field(None, description="Why the search ended: all candidates finished, the deadline, a "
                                                 "good-enough formula, or a cancel.")
    error: dict[str, Any] | None = None
    candidates: list[CandidateJob] = Field(default_factory=list, description="The child jobs (see /v1/jobs).")
    created_at: UtcDatetime
    finished_at: UtcDatetime | None = None


class DiscoverySummary(BaseModel):
    id: str
    status: JobStatus
    dataset_id: str
    chosen: FrontPoint | None = None
    created_at: UtcDatetime
    finished_at: UtcDatetime | None = None


class BatchItemPublic(BaseModel):
    index: int
    status: JobStatus | Literal["rejected"]
    dataset_id: str | None = None
    discovery_id: str | None = None
    problem: Problem | None = Field(None, description="Why the item was rejected (its `field` names the item's field).")
    chosen: FrontPoint | None = None


class BatchPublic(BaseModel):
    id: str
    status: Literal["running", "finished"] = Field(description="finished once every accepted item's discovery ended.")
    budget: Budget
    items: list[BatchItemPublic]
    created_at: UtcDatetime
