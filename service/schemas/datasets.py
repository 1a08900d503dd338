"""Request and response bodies of the /v1/datasets routes (separate from the ORM row in service.models).

Pydantic checks what one value at a time can tell (types, finite numbers, name syntax, ranges of
options); service.datasets checks shapes and the deployment's limits (ragged rows, row and column
counts), naming the offending field the same way (`inputs[3]`, `ranges.x1`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from service import expr
from service.schemas.common import StrictInput, UtcDatetime

DEFAULT_TEST_FRACTION = 0.2
MAX_SEED = 2**63 - 1

# A finite JSON number: ints are accepted; booleans, strings, NaN and infinities are not.
FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Row = list[FiniteFloat]
VariableName = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=expr.NAME_PATTERN,
          description="An identifier usable in formulas: letters, digits and '_', not starting with a digit "
                      "or '__', and not a function or constant name (sin, exp, pi, E...)."),
]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED, description="Seed of the random split / sampling (numpy Generator).")]
Units = Annotated[
    dict[VariableName, Annotated[str, Field(max_length=200)]] | None,
    Field(description="The unit of every column, feature and target (`{\"L\": \"m\", \"g\": \"m/s^2\", \"T\": "
                      "\"s\"}`): SI symbols with prefixes, `*`, `/`, `^` and `1` for dimensionless (see "
                      "docs/units-and-noise.md). Discovery then reduces the columns to dimensionless groups."),
]
DatasetName = Annotated[str, Field(min_length=1, max_length=200)]
DatasetSource = Literal["json", "csv", "expression"]


def _column_as_rows(value: Any) -> Any:
    """A flat list of numbers is one target column: [1, 2] -> [[1], [2]]."""
    if isinstance(value, list) and value and not any(isinstance(v, list) for v in value):
        return [[v] for v in value]
    return value


Targets = Annotated[
    list[Row],
    BeforeValidator(_column_as_rows, json_schema_input_type=list[Row] | list[FiniteFloat]),
    Field(description="One row of target values per input row, or a flat list for a single target."),
]


class DatasetCreateArrays(StrictInput):
    """A dataset given as JSON arrays. Without `test_inputs`/`test_targets` the rows are shuffled
    (with `seed`) and `test_fraction` of them become the test split."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "product", "feature_names": ["a", "b"], "inputs": [[0.1, 0.2], [0.3, -0.5], [0.9, 0.4], [-0.2, 0.7]],
        "targets": [0.02, -0.15, 0.36, -0.14], "test_fraction": 0.25, "seed": 0,
    }]})

    name: DatasetName | None = None
    feature_names: list[VariableName] | None = Field(None, description="One per input column; default x1, x2, ...")
    target_names: list[VariableName] | None = Field(
        None, description="One per target column; default y (or y1, y2, ...)."
    )
    inputs: list[Row] = Field(description="Rows of input values (train rows when test_inputs is given).")
    targets: Targets
    test_inputs: list[Row] | None = Field(None, description="An explicit test split (then test_fraction is ignored).")
    test_targets: Targets | None = None
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, gt=0, lt=1, description="Share of rows held out for testing.")
    seed: Seed = 0
    units: Units = None


class DatasetCreateSynthetic(StrictInput):
    """A dataset sampled from a formula: inputs uniform in `ranges`, targets = expression (+ noise)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "seed formula", "expression": "exp(sin(pi*x1) + x2**2)",
        "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 1000, "n_test": 1000, "seed": 0,
    }]})

    name: DatasetName | None = None
    expression: str = Field(
        min_length=1, max_length=expr.MAX_LENGTH,
        description=f"Numbers, the variables of `ranges`, + - * / **, pi, E and the functions "
                    f"{', '.join(sorted(expr.FUNCTIONS))}.",
    )
    ranges: dict[VariableName, Annotated[tuple[FiniteFloat, FiniteFloat], Field(strict=False)]] = Field(
        min_length=1,
        description="[low, high] per input variable, in column order; variables may be unused by the expression.",
    )
    target_name: VariableName = "y"
    n_train: int = Field(1000, ge=1)
    n_test: int = Field(1000, ge=1)
    seed: Seed = 0
    noise: FiniteFloat = Field(0.0, ge=0, description="Standard deviation of Gaussian noise added to the targets.")
    units: Units = None


class CsvOptions(StrictInput):
    """Options of a CSV upload: multipart form fields next to `file`, or query parameters of a
    `text/csv` body. The CSV has a header row naming every column. Form fields and query values are
    text by nature, so they are converted (`"0.3"` -> 0.3); unknown names are still errors."""

    model_config = ConfigDict(strict=False)

    name: DatasetName | None = None
    targets: str | None = Field(
        None, max_length=10_000, description="Comma-separated target column names; default: the last column."
    )
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, gt=0, lt=1)
    seed: Seed = 0
    units: str | None = Field(
        None, max_length=10_000,
        description="Comma-separated `column=unit` pairs (`L=m, g=m/s^2, T=s`) for every column. A CSV may "
                    "instead give a units row right after the header (a row of units, no numbers).")


class ColumnSummary(BaseModel):
    """Statistics of one column over all rows (train and test). Null only if a value overflows a float."""

    name: str
    role: Literal["feature", "target"]
    min: float | None
    max: float | None
    mean: float | None
    std: float | None


class DatasetSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str | None
    source: DatasetSource
    expression: str | None = Field(description="The generating formula of a synthetic dataset.")
    feature_names: list[str]
    target_names: list[str]
    n_train: int
    n_test: int
    units: dict[str, str] | None = Field(None, description="The unit of every column, when the dataset has units.")
    created_at: UtcDatetime


class DatasetPublic(DatasetSummary):
    columns: list[ColumnSummary]


class DatasetData(BaseModel):
    """A window of one split's rows."""

    split: Literal["train", "test"]
    offset: int
    total: int = Field(description="Rows in the split.")
    feature_names: list[str]
    target_names: list[str]
    inputs: list[list[float]]
    targets: list[list[float]]
