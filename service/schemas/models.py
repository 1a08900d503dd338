"""Request and response bodies of the /v1/models routes (separate from the ORM rows in service.models)."""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Annotated, Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from service.schemas.common import StrictInput, UtcDatetime

if TYPE_CHECKING:
    from service.models import Model

# A finite JSON number: ints are accepted, booleans, strings, NaN and infinities are not.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class PredictMode(str, enum.Enum):
    network = "network"   # the KAN itself (splines and symbolic edges)
    formula = "formula"   # the closed-form formula of every output


class FormulaOut(BaseModel):
    output: int = Field(description="Output column index.")
    name: str | None = Field(None, description="The dataset's name for this output column.")
    text: str = Field(description="sympy expression over the `variables` (sympy's printing: `Abs`, `**`, `pi`, `E`).")
    latex: str
    complexity: int | None = None
    variables: list[str] = Field(description="Input symbols, in input-column order.")
    r2: float | None = Field(None, description="R² of the formula on the dataset's test split.")
    rmse: float | None = Field(None, description="RMSE of the formula on the dataset's test split.")


class ModelSummary(BaseModel):
    id: str
    job_id: str
    dataset_id: str
    parent_model_id: str | None
    width: list[int] = Field(description="Nodes per layer, after pruning.")
    has_formula: bool = Field(description="Whether a closed-form formula is stored for every output.")
    created_at: UtcDatetime

    @classmethod
    def _row_fields(cls, row: Model) -> dict[str, Any]:
        return {
            "id": row.id, "job_id": row.job_id, "dataset_id": row.dataset_id, "parent_model_id": row.parent_model_id,
            "width": row.width, "has_formula": bool(row.formulas), "created_at": row.created_at,
        }

    @classmethod
    def from_row(cls, row: Model) -> Self:
        return cls(**cls._row_fields(row))


class ModelDetail(ModelSummary):
    metrics: dict[str, Any] = Field(description="Per pipeline stage: seconds, train/test RMSE, width; and the final RMSEs.")
    formulas: list[FormulaOut] | None = Field(None, description="Stored formulas, one per output, when the pipeline found them.")
    config: dict[str, Any] = Field(description="The kan_core.io model config (versioned JSON); also GET .../config.")

    @classmethod
    def from_row(cls, row: Model, formulas: list[dict[str, Any]] | None = None) -> Self:
        return cls(**cls._row_fields(row), metrics=row.metrics, config=row.kan_config, formulas=formulas)


class PredictRequest(StrictInput):
    """Rows in one of three shapes: positional `inputs`; `columns` naming the values of each of `rows`;
    or `records`, one object per row (exactly one shape). Named columns are matched to the input
    names in any order, all must be there and no other (service.named_inputs checks both)."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"inputs": [[0.1, -0.4], [0.5, 0.2]]},
        {"columns": ["x2", "x1"], "rows": [[-0.4, 0.1], [0.2, 0.5]]},
        {"records": [{"x1": 0.1, "x2": -0.4}, {"x1": 0.5, "x2": 0.2}]},
    ]})

    inputs: list[Annotated[list[FiniteFloat], Field(min_length=1)]] | None = Field(
        None, min_length=1, description="Rows of input values, one column per model input, in input order."
    )
    columns: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, min_length=1, description="The input names of the values in each of `rows`.")
    rows: list[Annotated[list[FiniteFloat], Field(min_length=1)]] | None = Field(
        None, min_length=1, description="Rows of values in the order of `columns`.")
    records: list[dict[Annotated[str, Field(max_length=64)], FiniteFloat]] | None = Field(
        None, min_length=1, description="One object per row: input name -> value.")


class PredictResponse(BaseModel):
    mode: PredictMode
    outputs: list[list[float | None]] = Field(
        description="One row per input row, one column per model output; null where the value is not a finite number."
    )


class FormulaResponse(BaseModel):
    model_id: str
    source: str = Field(description="`stored` (written when the model was made) or `computed` (derived on request).")
    formulas: list[FormulaOut]


class SymbolicFit(BaseModel):
    function: str = Field(description="Name from the kan_core function library.")
    affine: list[float] = Field(description="(a, b, c, d): the edge is c * f(a*x + b) + d.")
    r2: float | None = Field(None, description="R² of the function against the spline it replaced, on the sample.")


class Curve(BaseModel):
    x: list[float]
    y: list[float | None]


class EdgeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    layer: int
    in_: int = Field(alias="in", serialization_alias="in")
    out: int
    active: bool = Field(description="False where pruning removed the edge.")
    kind: Literal["spline", "symbolic"]
    knots: list[float] = Field(description="The edge's extended knot row (G + 2k + 1 values).")
    coefficients: list[float] = Field(description="Its G + k B-spline coefficients.")
    scale_base: float = Field(description="Weight of the silu(x) branch.")
    scale_sp: float = Field(description="Weight of the spline branch.")
    curve: Curve = Field(description="The edge's activation sampled over the range of its inputs.")
    symbolic: SymbolicFit | None = Field(None, description="Present where the edge is a fixed symbolic function.")
    importance: float | None = Field(None, description="Attribution score of the edge on the training sample.")


class SplinesResponse(BaseModel):
    model_id: str
    width: list[int]
    n_samples: int = Field(description="Training rows the curves and importances were computed on.")
    edges: list[EdgeOut]
