"""Request and response bodies of the /v1/jobs routes (separate from the ORM rows in service.models).

The pipeline schemas mirror `kan_core.pipeline` field for field, with the same defaults (read from the
dataclasses) and the same JSON shape as `PipelineConfig.to_dict()`: a job's stored config is
`{"model": ..., "stages": [...]}` and the worker rebuilds the engine config with
`PipelineConfig.from_dict`. A job trains a plain KAN (`ModelConfig.family` "kan"; the other families
are discovery's candidates) with the train, prune, symbolic and refine stages;
tests/service/test_schema_sync.py fails when the engine gains a field these schemas do not list.
Limits that depend on the deployment (Settings.max_width, max_steps...) and on the dataset
(first/last width) are checked by service.jobs, which names the offending field the same way
pydantic does (`stages[3].fixes[0].function`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)

from kan_core import pipeline as kp
from kan_core.functions import DEFAULT_LIBRARY, SEED_LIBRARY_NAMES
from service.models import JobKind, JobStatus
from service.schemas.common import StrictInput, UtcDatetime

MAX_STAGES = 32
MAX_FIXES = 1024
_M, _T, _P, _S, _R, _F = kp.ModelConfig, kp.TrainStage, kp.PruneStage, kp.SymbolicStage, kp.RefineStage, kp.EdgeFix


def _known_function(name: str) -> str:
    if name not in DEFAULT_LIBRARY:
        raise ValueError(f"unknown symbolic function {name!r}; known: {', '.join(DEFAULT_LIBRARY)}")
    return name


FunctionName = Annotated[
    str,
    Field(min_length=1, max_length=32, description="A name from the function library.",
          json_schema_extra={"enum": list(DEFAULT_LIBRARY)}),
    AfterValidator(_known_function),
]
StageName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]


_Input = StrictInput  # request bodies: unknown fields are errors, no value is coerced

MAX_GRID_RANGE = 1e6
GridEnd = Annotated[float, Field(ge=-MAX_GRID_RANGE, le=MAX_GRID_RANGE)]


# --------------------------------------------------------------------------------------------------
# pipeline


class ModelSpec(_Input):
    width: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=2,
        description="Nodes per layer; the first is the number of dataset features, the last the number of targets. "
                    "Omitted: [n_features, 5, n_targets].",
        examples=[[2, 5, 1]],
    )
    grid: int = Field(_M.grid, ge=1, description="Spline grid intervals.")
    k: int = Field(_M.k, ge=1, le=5, description="Spline order.")
    seed: int = Field(_M.seed, ge=0, le=2**31 - 1)
    dtype: Literal["float32", "float64"] = _M.dtype
    device: Literal["cpu", "cuda", "auto"] = Field(
        _M.device, description="`cuda` jobs go to the GPU queue; `auto` uses a GPU when its worker has one."
    )
    grid_range: Annotated[tuple[GridEnd, GridEnd], Field(strict=False)] = Field(
        _M.grid_range, description=f"Initial knot range [lo, hi], within ±{MAX_GRID_RANGE:g} (grid updates "
                                   "follow the data from there).")
    grid_eps: float = Field(_M.grid_eps, ge=0.0, le=1.0)
    noise_scale: float = Field(_M.noise_scale, ge=0.0, le=10.0, description="Scale of the initial spline noise.")

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ModelSpec:
        if not self.grid_range[0] < self.grid_range[1]:
            raise ValueError("grid_range must be [lo, hi] with lo < hi")
        return self


class _TrainOptions(_Input):
    name: StageName = _T.name
    opt: Literal["LBFGS", "Adam"] = _T.opt
    steps: int = Field(_T.steps, ge=1)
    lr: float = Field(_T.lr, gt=0.0)
    batch: int = Field(_T.batch, ge=-1, description="Rows per step; -1: the full training split.")
    lamb: float = Field(_T.lamb, ge=0.0, description="Overall regularisation strength.")
    lamb_l1: float = Field(_T.lamb_l1, ge=0.0)
    lamb_entropy: float = Field(_T.lamb_entropy, ge=0.0)
    lamb_coef: float = Field(_T.lamb_coef, ge=0.0)
    lamb_coefdiff: float = Field(_T.lamb_coefdiff, ge=0.0)
    update_grid: bool = _T.update_grid
    grid_update_num: int = Field(_T.grid_update_num, ge=0)
    stop_grid_update_step: int = Field(_T.stop_grid_update_step, ge=0)

    @model_validator(mode="after")
    def _batch_not_zero(self) -> Any:
        if self.batch == 0:
            raise ValueError("batch must be -1 (full batch) or >= 1")
        return self


# A stage of `stages` says its `kind` (the union's discriminator, required in the schema as by the server).
class TrainStageSpec(_TrainOptions):
    kind: Literal["train"]


class RetrainSpec(_TrainOptions):
    """The training after a symbolic job's fixes: a train stage on its own, so `kind` may be left out."""

    kind: Literal["train"] = "train"
    name: StageName = "retrain"


class PruneStageSpec(_Input):
    kind: Literal["prune"]
    name: StageName = _P.name
    node_th: float = Field(_P.node_th, ge=0.0)
    edge_th: float = Field(_P.edge_th, ge=0.0)


class EdgeFixSpec(_Input):
    layer: int = Field(ge=0, description="Layer index, 0 = the input layer.")
    in_: int = Field(alias="in", ge=0, description="Input node of the edge within its layer.")
    out: int = Field(ge=0, description="Output node of the edge within its layer.")
    function: FunctionName
    fit: bool = Field(_F.fit, description="Fit the affine parameters (a, b, c, d) to the edge's current activation.")


class _SymbolicOptions(_Input):
    fixes: list[EdgeFixSpec] = Field(
        default_factory=list, max_length=MAX_FIXES,
        description="Edges fixed by hand, applied first.",
        examples=[[{"layer": 0, "in": 0, "out": 0, "function": "sin"}]],
    )
    auto: bool = Field(_S.auto, description="Then fit the best library function to every remaining spline edge.")
    lib: list[FunctionName] = Field(
        default_factory=lambda: list(SEED_LIBRARY_NAMES), min_length=1, description="Functions `auto` may choose from."
    )
    weight_simple: float = Field(_S.weight_simple, ge=0.0, le=1.0,
                                 description="Trade-off between fit (0) and simplicity (1) in `auto`.")
    r2_threshold: float = Field(_S.r2_threshold, le=1.0,
                                description="`auto` leaves an edge a spline when no function reaches this R² "
                                            "(at most 1).")


class SymbolicStageSpec(_SymbolicOptions):
    kind: Literal["symbolic"]
    name: StageName = _S.name


class RefineStageSpec(_Input):
    kind: Literal["refine"]
    name: StageName = _R.name
    grid: int = Field(_R.grid, ge=1, description="New number of grid intervals.")


def _without_union_tag(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """Report errors inside a stage at `stages[3].steps`, not pydantic's `stages[3].train.steps`."""
    try:
        return handler(value)
    except ValidationError as exc:
        tag = value.get("kind") if isinstance(value, dict) else None
        errors = []
        for err in exc.errors(include_url=False):
            loc = err["loc"][1:] if tag is not None and err["loc"][:1] == (tag,) else err["loc"]
            errors.append({k: v for k, v in {**err, "loc": loc}.items() if k in ("type", "loc", "input", "ctx")})
        raise ValidationError.from_exception_data(exc.title, errors) from None


StageSpec = Annotated[
    TrainStageSpec | PruneStageSpec | SymbolicStageSpec | RefineStageSpec,
    Field(discriminator="kind"),
    WrapValidator(_without_union_tag),
]
_stage_adapter: TypeAdapter[Any] = TypeAdapter(StageSpec)


def seed_stages() -> list[Any]:
    """The seed pipeline (kan_core.pipeline.seed_stages) as request schemas."""
    return [_stage_adapter.validate_python(s) for s in kp.PipelineConfig().to_dict()["stages"]]


class PipelineSpec(_Input):
    model: ModelSpec = Field(default_factory=ModelSpec)
    stages: list[StageSpec] = Field(
        default_factory=seed_stages, min_length=1, max_length=MAX_STAGES,
        description="Run in order. Default: the seed pipeline (train 20 LBFGS steps with lamb=0.01, "
                    "lamb_entropy=10; prune; train 50; auto_symbolic with the seed library; train 50).",
    )

    def pipeline_dict(self) -> dict[str, Any]:
        """The engine's `PipelineConfig.to_dict()` shape, stored as Job.config."""
        return self.model_dump(mode="json", by_alias=True, include={"model", "stages"})


class JobCreate(PipelineSpec):
    model_config = ConfigDict(json_schema_extra={"examples": [{"dataset_id": "ds_0190c0ffee0000000000000000"}]})

    dataset_id: str = Field(min_length=1, max_length=40)


class SymbolicJobCreate(_SymbolicOptions):
    """Derive a new model from an existing one: fix edges by hand and/or auto-fit the rest, then retrain."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "fixes": [{"layer": 0, "in": 0, "out": 0, "function": "sin"},
                  {"layer": 0, "in": 1, "out": 0, "function": "x^2"},
                  {"layer": 1, "in": 0, "out": 0, "function": "exp"}],
        "auto": False,
    }]})

    retrain: RetrainSpec | None = Field(
        default_factory=RetrainSpec,
        description="Training after the edges are fixed (fits the affine parameters); null: none.",
    )

    @model_validator(mode="after")
    def _does_something(self) -> SymbolicJobCreate:
        if not self.fixes and not self.auto:
            raise ValueError("nothing to do: give `fixes`, or set `auto` to true")
        return self

    def stages(self) -> list[Any]:
        symbolic = SymbolicStageSpec.model_validate(
            {**self.model_dump(by_alias=True, exclude={"retrain"}), "kind": "symbolic", "name": "symbolic"})
        return [symbolic] + ([self.retrain] if self.retrain is not None else [])


# --------------------------------------------------------------------------------------------------
# responses


class JobProgress(BaseModel):
    stage: str | None = Field(None, description="Name of the running stage.")
    stage_index: int = Field(0, description="0-based index of the running stage.")
    stages: int = Field(description="Number of stages in the pipeline.")
    step: int = Field(0, description="Steps done in the running stage.")
    steps: int = Field(0, description="Steps the running stage makes (0 for stages without steps).")
    train_rmse: float | None = None
    test_rmse: float | None = None


class HistoryPoint(BaseModel):
    stage: str
    stage_index: int
    step: int
    train_rmse: float | None = None
    test_rmse: float | None = None
    reg: float | None = None


class JobHistory(BaseModel):
    job_id: str
    status: JobStatus
    points: list[HistoryPoint] = Field(description="One point per training step of the current attempt, in order.")


class JobError(BaseModel):
    type: str = Field(description="What went wrong, e.g. WorkerLost, JobTimeout, NonFiniteLossError, ValueError.")
    detail: str


class CandidateConfig(BaseModel):
    """A discovery candidate as the engine stores it (kan_core.discovery.CandidateSpec.to_dict())."""

    id: str
    family: str = Field(description=" | ".join(kp.FAMILIES))
    label: str = ""
    priority: int = 0
    pipeline: dict[str, Any] = Field(
        description="The engine's PipelineConfig.to_dict(): model (its family, product_rank and als_restarts "
                    "included), stages, transform.")
    retry_weight_simple: list[float] = Field(default_factory=list)


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: JobKind
    status: JobStatus
    queue: str = Field(description="cpu | gpu")
    dataset_id: str
    parent_model_id: str | None = Field(None, description="The model a `symbolic` job derives from.")
    parent_job_id: str | None = Field(None, description="The discovery a `candidate` job belongs to.")
    model_id: str | None = Field(None, description="The model the job made, once it succeeded.")
    config: PipelineSpec | CandidateConfig = Field(
        description="The pipeline (train and symbolic jobs) or, for a `candidate` job, the engine's candidate spec.")
    result: dict[str, Any] | None = Field(
        None, description="A finished `candidate` job's outcome: its formula, complexity and test/train RMSE and R² "
                          "(kan_core.discovery.CandidateResult), or why it has none (`status`, `error`).")
    progress: JobProgress | None = None
    attempts: int = Field(description="Times a worker has started the job (a job whose worker dies is retried).")
    cancel_requested: bool
    error: JobError | None = None
    created_at: UtcDatetime
    started_at: UtcDatetime | None = None
    heartbeat_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None


class JobEnd(BaseModel):
    """Data of the SSE `end` event."""

    job_id: str
    status: JobStatus
    model_id: str | None = None
    error: JobError | None = None


class JobProgressEvent(BaseModel):
    """Data of the SSE `progress` event."""

    job_id: str
    status: JobStatus
    attempts: int
    progress: JobProgress | None = None

