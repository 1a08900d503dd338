"""Building a dataset, no storage: from JSON arrays, CSV text or a formula, validated against the
deployment's limits and split into train and test. Bad input raises `service.errors.InvalidInput`
naming the field at fault (`inputs[3]`, `ranges.x1`, `targets`). service.datasets stores the result.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from service import expr
from service.config import Settings
from service.errors import InvalidInput
from service.schemas.datasets import CsvOptions, DatasetCreateArrays, DatasetCreateSynthetic


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
    units: dict[str, str] | None = None  # as given (checked by service.datasets.check_units)


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


def column_statistics(table: np.ndarray) -> dict[str, np.ndarray]:
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
        stats = column_statistics(np.concatenate(parts))
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
    return BuiltDataset("json", list(features), list(targets), arrays, name=body.name, units=body.units)


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
    units = _units_option(options.units)
    try:
        for record in reader:
            if not record or all(not v.strip() for v in record):
                continue  # blank line
            if len(record) != len(header):
                raise InvalidInput(f"line {reader.line_num} has {len(record)} values; the header has {len(header)}",
                                   field=field, line=reader.line_num)
            if not rows and units is None and _is_units_row(record):
                units = {name: cell.strip() for name, cell in zip(header, record)}
                continue
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
    return BuiltDataset("csv", features, targets, arrays, name=options.name, units=units)


def _is_units_row(record: list[str]) -> bool:
    """The first row after the header holds units when every cell is filled and none is a number but 1."""
    def number(cell: str) -> bool:
        try:
            float(cell)
        except ValueError:
            return False
        return cell.strip() != "1"

    return (all(cell.strip() for cell in record) and not any(number(cell) for cell in record)
            and any(cell.strip() != "1" for cell in record))


def _units_option(text: str | None) -> dict[str, str] | None:
    """The `units` option: comma-separated `column=unit` pairs."""
    if text is None or not text.strip():
        return None
    out: dict[str, str] = {}
    for pair in text.split(","):
        name, sep, unit = pair.partition("=")
        if not sep or not name.strip():
            raise InvalidInput(f"units are comma-separated column=unit pairs, got {pair.strip()!r}", field="units")
        out[name.strip()] = unit.strip()
    return out


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
                        expression=body.expression.strip(), units=body.units)


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
