"""Request bodies from what a user has at hand, no HTTP: datasets from a pandas DataFrame, numpy
arrays or lists, a CSV file or an expression; predict rows from a DataFrame, records, or arrays.
Neither numpy nor pandas is needed: objects are recognised by what they offer (`columns`,
`to_numpy`, `tolist`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class DatasetRequest:
    """One POST /v1/datasets: a JSON body, or a CSV body with its options as query parameters."""

    json: dict[str, Any] | None = None
    csv: bytes | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _rows(values: Any) -> list[Any]:
    """A 2-D (or 1-D) array-like as nested lists of Python numbers."""
    if hasattr(values, "to_numpy"):
        values = values.to_numpy()
    if hasattr(values, "tolist"):
        return values.tolist()
    return [list(row) if isinstance(row, Sequence) and not isinstance(row, str) else row for row in values]


def _is_frame(data: Any) -> bool:
    return hasattr(data, "columns") and hasattr(data, "to_numpy") and hasattr(data, "drop")


def _targets(target: str | Sequence[str] | None) -> list[str] | None:
    if target is None:
        return None
    return [target] if isinstance(target, str) else list(target)


def dataset_request(data: Any = None, *, target: str | Sequence[str] | None = None, y: Any = None,
                    expression: str | None = None, ranges: Mapping[str, Sequence[float]] | None = None,
                    units: Mapping[str, str] | None = None, **options: Any) -> DatasetRequest:
    """The POST /v1/datasets request for `data`:

    - a DataFrame: its `target` column(s) (default: the last) are the targets, the rest the inputs;
    - arrays or lists `data` (rows of inputs) with `y` (targets), optional `feature_names`;
    - a CSV path (str or os.PathLike): uploaded as it is; `target` names its target column(s);
    - `expression` with `ranges` ({"x1": [lo, hi], ...}): sampled by the service.
    `units` ({"L": "m", "g": "m/s^2", "T": "s"}: every column's unit) go with any of them.
    `options` are the other fields of the request (name, test_fraction, seed, n_train, noise...)."""
    options = {k: v for k, v in options.items() if v is not None}
    if units is not None:
        options["units"] = {str(k): str(v) for k, v in units.items()}
    if expression is not None:
        if ranges is None:
            raise ValueError("an expression needs `ranges`: {variable: [low, high], ...}")
        target_name = _targets(target)
        body = {"expression": expression, "ranges": {k: list(v) for k, v in ranges.items()}, **options}
        if target_name:
            body["target_name"] = target_name[0]
        return DatasetRequest(json=body)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            csv = f.read()
        params = dict(options)
        if units is not None:  # a query parameter: column=unit pairs
            params["units"] = ", ".join(f"{k}={v}" for k, v in params["units"].items())
        if (names := _targets(target)) is not None:
            params["targets"] = ",".join(names)
        return DatasetRequest(csv=csv, params=params)
    if _is_frame(data):
        names = _targets(target) or [str(data.columns[-1])]
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise ValueError(f"target column(s) {missing} not in the DataFrame's columns {list(data.columns)}")
        inputs = data.drop(columns=names)
        return DatasetRequest(json={"inputs": _rows(inputs), "targets": _rows(data[names]),
                                    "feature_names": [str(c) for c in inputs.columns], "target_names": names,
                                    **options})
    if data is not None and y is not None:
        body = {"inputs": _rows(data), "targets": _rows(y), **options}
        if (names := _targets(target)) is not None:
            body["target_names"] = names
        return DatasetRequest(json=body)
    raise ValueError("give a DataFrame (with `target`), arrays `data` and `y`, a CSV path, or `expression` with `ranges`")


def predict_body(x: Any) -> dict[str, Any]:
    """A predict request body: named columns for a DataFrame, a column mapping or records, positional
    rows for arrays and lists (which must be 2-D: one row per prediction)."""
    if _is_frame(x):
        return {"columns": [str(c) for c in x.columns], "rows": _rows(x)}
    if isinstance(x, Mapping):  # {"x1": [...], "x2": [...]}
        columns = [str(c) for c in x]
        return {"columns": columns, "rows": [list(r) for r in zip(*(_rows(x[c]) for c in x))]}
    rows = _rows(x)
    if rows and isinstance(rows[0], Mapping):
        return {"records": [dict(r) for r in rows]}
    if not rows or not isinstance(rows[0], (list, tuple)):
        raise ValueError("X must be 2-D: one row of inputs per prediction (e.g. X.reshape(-1, 1) for one input)")
    return {"inputs": rows}
