"""Datasets: built from JSON arrays, CSV text or a formula; validated, split into train and test, packed
as float64 safetensors bytes, stored, listed and deleted. No HTTP here: bad input raises
`service.errors.InvalidInput` naming the field at fault (`inputs[3]`, `ranges.x1`, `targets`) before
anything is written.

The worker reads a stored dataset back with `load_arrays(row)`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from service import expr, idempotency
from service.config import Settings
from service.errors import Conflict, InvalidInput
from service.ids import new_id
from service.models import Dataset, IdempotencyRecord, Job, Model
from service.schemas.common import decode_cursor, split_page
from service.schemas.datasets import CsvOptions, DatasetCreateArrays, DatasetCreateSynthetic
from service.tenancy import get_owned, owned

if TYPE_CHECKING:
    import torch

    from kan_core.data import Dataset as KanDataset

log = logging.getLogger(__name__)

ARRAY_KEYS = ("train_input", "train_label", "test_input", "test_label")
IDEMPOTENCY_ENDPOINT = "POST /v1/datasets"
MAX_CONFLICT_IDS = 20  # referencing jobs/models listed in a 409


@dataclass(frozen=True)
class DatasetArrays:
    """The four float64 arrays of a dataset: inputs (n, d) and labels (n, o) of each split."""

    train_input: np.ndarray
    train_label: np.ndarray
    test_input: np.ndarray
    test_label: np.ndarray

    @property
    def n_train(self) -> int:
        return int(self.train_input.shape[0])

    @property
    def n_test(self) -> int:
        return int(self.test_input.shape[0])


@dataclass(frozen=True)
class CsvUpload:
    """A CSV document and its options; `field` names where it came from (`file` or `body`)."""

    data: bytes
    options: CsvOptions
    field: str = "file"


DatasetRequest = DatasetCreateArrays | DatasetCreateSynthetic | CsvUpload


@dataclass(frozen=True)
class BuiltDataset:
    source: Literal["json", "csv", "expression"]
    feature_names: list[str]
    target_names: list[str]
    arrays: DatasetArrays
    name: str | None = None
    expression: str | None = None


# --------------------------------------------------------------------------------------------------
# packing


def pack(arrays: DatasetArrays) -> bytes:
    """safetensors bytes of the four arrays, as float64."""
    return save_safetensors({key: np.ascontiguousarray(getattr(arrays, key), dtype=np.float64) for key in ARRAY_KEYS})


def unpack(data: bytes) -> DatasetArrays:
    tensors = load_safetensors(data)
    return DatasetArrays(**{key: tensors[key] for key in ARRAY_KEYS})


def load_arrays(
    dataset: Dataset, *, dtype: torch.dtype | str = "float64", device: torch.device | str | None = None
) -> KanDataset:
    """A stored dataset as the engine's `kan_core.data.Dataset` (what a worker trains on)."""
    import torch

    from kan_core.data import Dataset as KanDataset

    arrays = unpack(dataset.arrays)
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return KanDataset.from_arrays(
        arrays.train_input, arrays.train_label, arrays.test_input, arrays.test_label, dtype=torch_dtype, device=device
    )


# --------------------------------------------------------------------------------------------------
# validation helpers


def check_names(features: Sequence[str], targets: Sequence[str], *, features_field: str, targets_field: str) -> None:
    """Every name usable as a formula variable, and no name used twice. The field templates may use
    `{i}` and `{name}`: "feature_names[{i}]", "ranges.{name}"."""
    seen: set[str] = set()
    for template, names in ((features_field, features), (targets_field, targets)):
        for i, name in enumerate(names):
            where = template.format(i=i, name=name)
            if not expr.is_valid_name(name):
                reason = "is a reserved name" if name in expr.RESERVED_NAMES else "is not a valid name"
                raise InvalidInput(
                    f"{name!r} {reason}: use letters, digits and '_', not starting with a digit or '__', "
                    f"and not a function or constant name", field=where,
                )
            if name in seen:
                raise InvalidInput(f"duplicate column name {name!r}", field=where)
            seen.add(name)


def _check_limits(settings: Settings, n_rows: int, n_columns: int, *, rows_field: str, columns_field: str) -> None:
    if n_rows > settings.max_rows:
        raise InvalidInput(f"{n_rows} rows (train + test) exceed the limit of {settings.max_rows}", field=rows_field)
    if n_columns > settings.max_columns:
        raise InvalidInput(
            f"{n_columns} columns (inputs + targets) exceed the limit of {settings.max_columns}", field=columns_field
        )


def _matrix(rows: list[list[float]], width: int, field: str, what: str) -> np.ndarray:
    """Rows of equal length `width` as an (n, width) float64 array (InvalidInput naming a ragged row)."""
    if not rows:
        raise InvalidInput(f"{field} has no rows", field=field)
    for i, row in enumerate(rows):
        if len(row) != width:
            raise InvalidInput(f"row {i} has {len(row)} values; expected {width} ({what})", field=f"{field}[{i}]")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), width)


def default_names(prefix: str, n: int) -> list[str]:
    return [prefix] if n == 1 and prefix == "y" else [f"{prefix}{i + 1}" for i in range(n)]


def split_rows(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, *, field: str) -> DatasetArrays:
    """A seeded random train/test split; each split keeps the rows' original order."""
    n = x.shape[0]
    if n < 2:
        raise InvalidInput("at least 2 rows are needed to split them into train and test", field=field)
    n_test = min(max(round(n * test_fraction), 1), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return DatasetArrays(x[train], y[train], x[test], y[test])


# --------------------------------------------------------------------------------------------------
# the three sources


def build(request: DatasetRequest, settings: Settings) -> BuiltDataset:
    if isinstance(request, DatasetCreateSynthetic):
        built = build_from_expression(request, settings)
        check_column_statistics(built, lambda role, name: f"ranges.{name}" if role == "feature" else "expression")
    elif isinstance(request, CsvUpload):
        built = build_from_csv(request, settings)
        check_column_statistics(built, lambda role, name, field=request.field: field)
    else:
        built = build_from_arrays(request, settings)
        check_column_statistics(built, lambda role, name: "inputs" if role == "feature" else "targets")
    return built


def _column_statistics(table: np.ndarray) -> dict[str, np.ndarray]:
    """min / max / mean / std / root mean square of each column of an (n, d) table (inf on overflow)."""
    with np.errstate(all="ignore"):
        return {"min": table.min(axis=0), "max": table.max(axis=0), "mean": table.mean(axis=0),
                "std": table.std(axis=0), "rms": np.sqrt(np.mean(np.square(table), axis=0))}


def check_column_statistics(built: BuiltDataset, field_of: Callable[[str, str], str]) -> None:
    """Every column's statistics finite in float64: values such as ±1e308 are finite one by one, but
    their spread, squares and every loss a job computes on them overflow, so every job on them would
    fail. InvalidInput naming `field_of(role, column name)` and the column."""
    arrays = built.arrays
    for role, names, parts in (("feature", built.feature_names, (arrays.train_input, arrays.test_input)),
                               ("target", built.target_names, (arrays.train_label, arrays.test_label))):
        stats = _column_statistics(np.concatenate(parts))
        for j, name in enumerate(names):
            overflowing = [key for key, values in stats.items() if not math.isfinite(values[j])]
            if overflowing:
                raise InvalidInput(
                    f"column {name!r} has values too large in magnitude: its {', '.join(overflowing)} overflow a "
                    "64-bit float (keep |values| below about 1e150, e.g. by rescaling the column)",
                    field=field_of(role, name), column=name,
                )


def _column_count(names: list[str] | None, rows: list[list[float]], names_field: str, rows_field: str) -> int:
    """Columns of an array given as JSON: one per name when names are given, else the first row's length."""
    if not rows:
        raise InvalidInput(f"{rows_field} has no rows", field=rows_field)
    n = len(names) if names is not None else len(rows[0])
    if n == 0:
        where = names_field if names is not None else f"{rows_field}[0]"
        raise InvalidInput("at least one column is needed", field=where)
    return n


def build_from_arrays(body: DatasetCreateArrays, settings: Settings) -> BuiltDataset:
    """Arrays given as JSON; without an explicit test split, a seeded random share becomes the test set."""
    if (body.test_inputs is None) != (body.test_targets is None):
        missing = "test_targets" if body.test_targets is None else "test_inputs"
        raise InvalidInput("test_inputs and test_targets must be given together", field=missing)
    d = _column_count(body.feature_names, body.inputs, "feature_names", "inputs")
    o = _column_count(body.target_names, body.targets, "target_names", "targets")
    n_rows = len(body.inputs) + len(body.test_inputs or ())
    _check_limits(settings, n_rows, d + o, rows_field="inputs", columns_field="inputs")
    features = body.feature_names if body.feature_names is not None else default_names("x", d)
    targets = body.target_names if body.target_names is not None else default_names("y", o)
    check_names(features, targets, features_field="feature_names[{i}]", targets_field="target_names[{i}]")

    per_feature = "one per feature name" if body.feature_names is not None else "as many as the first row"
    per_target = "one per target name" if body.target_names is not None else "as many as the first row"
    x = _matrix(body.inputs, d, "inputs", per_feature)
    y = _matrix(body.targets, o, "targets", per_target)
    if y.shape[0] != x.shape[0]:
        raise InvalidInput(f"targets has {y.shape[0]} rows but inputs has {x.shape[0]}", field="targets")
    if body.test_inputs is None or body.test_targets is None:
        arrays = split_rows(x, y, body.test_fraction, body.seed, field="inputs")
    else:
        xt = _matrix(body.test_inputs, d, "test_inputs", per_feature)
        yt = _matrix(body.test_targets, o, "test_targets", per_target)
        if yt.shape[0] != xt.shape[0]:
            raise InvalidInput(f"test_targets has {yt.shape[0]} rows but test_inputs has {xt.shape[0]}",
                               field="test_targets")
        arrays = DatasetArrays(x, y, xt, yt)
    return BuiltDataset("json", list(features), list(targets), arrays, name=body.name)


def build_from_csv(upload: CsvUpload, settings: Settings) -> BuiltDataset:
    """A CSV with a header row; the `targets` option names the target columns (default: the last)."""
    field, options = upload.field, upload.options
    try:
        text = upload.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"the CSV is not UTF-8 text (byte {exc.start})", field=field) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader)]
    except StopIteration:
        raise InvalidInput("the CSV is empty; it needs a header row and data rows", field=field) from None
    except csv.Error as exc:
        raise InvalidInput(f"line 1: {exc}", field=field, line=1) from None
    if options.targets is not None:
        targets = [name.strip() for name in options.targets.split(",")]
        for name in targets:
            if name not in header:
                raise InvalidInput(f"no column named {name!r}; the header has {', '.join(header)}", field="targets")
        if len(set(targets)) != len(targets):
            raise InvalidInput("a target column is named twice", field="targets")
    else:
        targets = header[-1:]
    features = [name for name in header if name not in targets]
    if not features:
        raise InvalidInput("every column is a target; at least one input column is needed", field="targets")
    _check_limits(settings, 0, len(header), rows_field=field, columns_field=field)
    for i, name in enumerate(header):
        if not expr.is_valid_name(name):
            raise InvalidInput(f"header column {i + 1} {name!r} is not a valid name: use letters, digits and '_', "
                               "not starting with a digit or '__', and not a function or constant name", field=field)
        if name in header[:i]:
            raise InvalidInput(f"header column {i + 1} {name!r} repeats an earlier column name", field=field)

    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for record in reader:
            if not record or all(not v.strip() for v in record):
                continue  # blank line
            if len(record) != len(header):
                raise InvalidInput(f"line {reader.line_num} has {len(record)} values; the header has {len(header)}",
                                   field=field, line=reader.line_num)
            rows.append(record)
            lines.append(reader.line_num)
            if len(rows) > settings.max_rows:
                raise InvalidInput(f"the CSV has more than {settings.max_rows} data rows (the limit)", field=field)
    except csv.Error as exc:
        raise InvalidInput(f"line {reader.line_num}: {exc}", field=field, line=reader.line_num) from None
    if not rows:
        raise InvalidInput("the CSV has a header but no data rows", field=field)
    table = _csv_numbers(rows, lines, header, field)
    columns = {name: j for j, name in enumerate(header)}
    x = table[:, [columns[name] for name in features]]
    y = table[:, [columns[name] for name in targets]]
    arrays = split_rows(x, y, options.test_fraction, options.seed, field=field)
    return BuiltDataset("csv", features, targets, arrays, name=options.name)


def _csv_numbers(rows: list[list[str]], lines: list[int], header: list[str], field: str) -> np.ndarray:
    """The cells as finite float64s, or InvalidInput naming the first bad cell's line and column."""
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError:
        table = None
    if table is not None:
        bad = np.argwhere(~np.isfinite(table))
        if not len(bad):
            return table
        i, j = (int(v) for v in bad[0])
        raise InvalidInput(f"line {lines[i]}, column {header[j]!r}: {rows[i][j].strip()!r} is not a finite number",
                           field=field, line=lines[i], column=header[j])
    for i, record in enumerate(rows):
        for j, cell in enumerate(record):
            try:
                float(cell)
            except ValueError:
                raise InvalidInput(f"line {lines[i]}, column {header[j]!r}: {cell.strip()!r} is not a number",
                                   field=field, line=lines[i], column=header[j]) from None
    raise AssertionError("unreachable: numpy rejected a cell Python accepts")  # pragma: no cover


def build_from_expression(body: DatasetCreateSynthetic, settings: Settings) -> BuiltDataset:
    """Inputs uniform in `ranges` (numpy Generator seeded with `seed`; train, then test, then noise
    draws), targets the expression's values: the same request always builds the same arrays."""
    variables = list(body.ranges)
    check_names(variables, [body.target_name], features_field="ranges.{name}", targets_field="target_name")
    _check_limits(settings, body.n_train + body.n_test, len(variables) + 1,
                  rows_field="n_train", columns_field="ranges")
    bounds = np.array([body.ranges[name] for name in variables], dtype=np.float64)
    for name, (lo, hi) in zip(variables, bounds):
        if not lo < hi:
            raise InvalidInput(f"the range must be [low, high] with low < high, got [{lo}, {hi}]",
                               field=f"ranges.{name}")
        if not math.isfinite(hi - lo):
            raise InvalidInput("the range is too wide to sample", field=f"ranges.{name}")
    try:
        formula = expr.parse(body.expression, variables)
        evaluate = expr.compile_numpy(formula, variables)
    except expr.ExpressionError as exc:
        raise InvalidInput(str(exc), field="expression") from None

    rng = np.random.default_rng(body.seed)
    x_train = rng.uniform(bounds[:, 0], bounds[:, 1], size=(body.n_train, len(variables)))
    x_test = rng.uniform(bounds[:, 0], bounds[:, 1], size=(body.n_test, len(variables)))
    y_train = _labels(evaluate, x_train, variables)
    y_test = _labels(evaluate, x_test, variables)
    if body.noise > 0:
        y_train = y_train + rng.normal(0.0, body.noise, size=y_train.shape)
        y_test = y_test + rng.normal(0.0, body.noise, size=y_test.shape)
        if not (np.isfinite(y_train).all() and np.isfinite(y_test).all()):
            raise InvalidInput("noise this large overflows the targets", field="noise")
    arrays = DatasetArrays(x_train, y_train, x_test, y_test)
    return BuiltDataset("expression", variables, [body.target_name], arrays, name=body.name,
                        expression=body.expression.strip())


def _labels(evaluate: Callable[[np.ndarray], np.ndarray], x: np.ndarray, variables: list[str]) -> np.ndarray:
    """The expression on every row as an (n, 1) float64 column; InvalidInput where it is not a finite real."""
    try:
        values = evaluate(x)
    except expr.ExpressionError as exc:
        raise InvalidInput(str(exc), field="expression") from None
    if np.iscomplexobj(values):
        complex_at = np.flatnonzero(values.imag != 0)
        if len(complex_at):
            raise InvalidInput(f"the expression takes complex values, e.g. at {_point(x[complex_at[0]], variables)}; "
                               "change `expression` or narrow `ranges`", field="expression")
        values = values.real
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidInput("the expression does not evaluate to numbers", field="expression") from None
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InvalidInput(
            f"the expression is not finite at {_point(x[bad[0]], variables)} ({len(bad)} of {len(values)} points); "
            "change `expression` or narrow `ranges`", field="expression",
        )
    return values.reshape(-1, 1)


def _point(row: np.ndarray, variables: list[str]) -> str:
    return ", ".join(f"{name}={value:.6g}" for name, value in zip(variables, row))


# --------------------------------------------------------------------------------------------------
# summaries and rows


def column_summaries(dataset: Dataset) -> list[dict[str, Any]]:
    """min / max / mean / std of every column over both splits (None where a float overflows: only
    datasets stored before check_column_statistics refused such values)."""
    arrays = unpack(dataset.arrays)
    inputs = np.concatenate([arrays.train_input, arrays.test_input])
    labels = np.concatenate([arrays.train_label, arrays.test_label])
    out: list[dict[str, Any]] = []
    for role, names, table in (("feature", dataset.feature_names, inputs), ("target", dataset.target_names, labels)):
        stats = _column_statistics(table)
        del stats["rms"]
        for j, name in enumerate(names):
            out.append({"name": name, "role": role,
                        **{key: (float(v[j]) if math.isfinite(v[j]) else None) for key, v in stats.items()}})
    return out


def read_rows(dataset: Dataset, split: Literal["train", "test"], offset: int, limit: int) -> dict[str, Any]:
    """A window of one split's rows, as lists."""
    arrays = unpack(dataset.arrays)
    x, y = (arrays.train_input, arrays.train_label) if split == "train" else (arrays.test_input, arrays.test_label)
    return {
        "split": split, "offset": offset, "total": int(x.shape[0]),
        "feature_names": dataset.feature_names, "target_names": dataset.target_names,
        "inputs": x[offset:offset + limit].tolist(), "targets": y[offset:offset + limit].tolist(),
    }


# --------------------------------------------------------------------------------------------------
# persistence


def _fingerprint(request: DatasetRequest) -> str:
    if isinstance(request, CsvUpload):
        digest = hashlib.sha256(request.data).hexdigest()
        return idempotency.fingerprint({"csv_sha256": digest, "options": request.options.model_dump(mode="json")})
    return idempotency.fingerprint(request.model_dump(mode="json"))


def create_dataset(
    session: Session, settings: Settings, tenant: str, request: DatasetRequest, idempotency_key: str | None = None
) -> Dataset:
    """Build, validate and store a dataset (or return the one an earlier request with the same
    Idempotency-Key stored). Nothing is written when the input is rejected."""

    def add() -> Dataset:
        built = build(request, settings)
        row = Dataset(
            id=new_id("ds"), tenant_id=tenant, name=built.name, source=built.source, expression=built.expression,
            feature_names=built.feature_names, target_names=built.target_names,
            n_train=built.arrays.n_train, n_test=built.arrays.n_test, arrays=pack(built.arrays),
        )
        session.add(row)
        return row

    # build outside any transaction (on SQLite it would hold the write lock while it computes)
    row, created = idempotency.create_once(
        session, tenant, IDEMPOTENCY_ENDPOINT, idempotency_key, _fingerprint(request) if idempotency_key else "",
        create=add, load=lambda dataset_id: get_dataset(session, tenant, dataset_id), status_code=201,
        build_unlocked=True)
    if created:
        log.info("dataset %s created from %s: %d features, %d targets, %d train / %d test rows", row.id, row.source,
                 len(row.feature_names), len(row.target_names), row.n_train, row.n_test)
    return row


def get_dataset(session: Session, tenant: str, dataset_id: str, *, with_arrays: bool = True) -> Dataset:
    options = [] if with_arrays else [defer(Dataset.arrays)]
    return get_owned(session, Dataset, tenant, dataset_id, resource="dataset", options=options)


def list_datasets(session: Session, tenant: str, limit: int, cursor: str | None) -> tuple[list[Dataset], str | None]:
    """Newest first; the cursor is the last id of the previous page."""
    after = decode_cursor(cursor)
    query = owned(select(Dataset).options(defer(Dataset.arrays)), Dataset, tenant)
    if after is not None:
        query = query.where(Dataset.id < after)
    rows = session.scalars(query.order_by(Dataset.id.desc()).limit(limit + 1)).all()
    return split_page(rows, limit)


def delete_dataset(session: Session, tenant: str, dataset_id: str) -> None:
    """Delete a dataset no job or model references (Conflict listing them otherwise). The
    Idempotency-Keys that created it are released with it: a retry with such a key creates anew."""
    get_dataset(session, tenant, dataset_id, with_arrays=False)
    jobs = session.scalars(
        select(Job.id).where(Job.dataset_id == dataset_id).order_by(Job.id).limit(MAX_CONFLICT_IDS)
    ).all()
    models = session.scalars(
        select(Model.id).where(Model.dataset_id == dataset_id).order_by(Model.id).limit(MAX_CONFLICT_IDS)
    ).all()
    if jobs or models:
        session.rollback()
        raise _in_use(dataset_id, list(jobs), list(models))
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.tenant_id == tenant,
                                                    IdempotencyRecord.resource_id == dataset_id))
    try:
        session.commit()
    except IntegrityError:  # a job was created for it in the meantime
        session.rollback()
        raise _in_use(dataset_id, [], []) from None
    log.info("dataset %s deleted", dataset_id)


def _in_use(dataset_id: str, jobs: list[str], models: list[str]) -> Conflict:
    parts = ([f"jobs {', '.join(jobs)}"] if jobs else []) + ([f"models {', '.join(models)}"] if models else [])
    used_by = ", ".join(parts)
    return Conflict(
        f"dataset {dataset_id!r} is used by {used_by or 'a job'}; delete those first",
        jobs=jobs, models=models,
    )
