"""Predict bodies with named columns -> positional rows, no HTTP.

A PredictRequest carries `inputs` (positional), `columns` + `rows`, or `records`. Named values are put
in the order of the model's (or formula's) input names; a missing, unknown or repeated name is an
InvalidInput naming the field, so a DataFrame with its columns in any order predicts correctly and
one with a wrong column does not predict at all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from service import discovery
from service.errors import InvalidInput
from service.models import Dataset, Model
from service.schemas.models import PredictRequest


def check_shape(body: PredictRequest) -> None:
    """Exactly one of `inputs`, `columns` with `rows`, and `records` (InvalidInput naming the field)."""
    given = [name for name in ("inputs", "rows", "records") if getattr(body, name) is not None]
    if (body.columns is None) != (body.rows is None):
        raise InvalidInput("`columns` and `rows` go together", field="rows" if body.rows is None else "columns")
    if len(given) != 1:
        raise InvalidInput("give exactly one of `inputs`, `columns` with `rows`, and `records`",
                           field=given[1] if given else "inputs")


def positional(body: PredictRequest, names: Sequence[str]) -> list[list[float]]:
    """The body's rows with one value per name of `names`, in that order."""
    if body.inputs is not None:
        return body.inputs
    if body.rows is not None:
        return _from_columns(body.columns or [], body.rows, names)
    return _from_records(body.records or [], names)


def _from_columns(columns: Sequence[str], rows: Sequence[Sequence[float]], names: Sequence[str]) -> list[list[float]]:
    index: dict[str, int] = {}
    for i, column in enumerate(columns):
        if column in index:
            raise InvalidInput(f"column {column!r} is given twice", field=f"columns[{i}]")
        if column not in names:
            raise InvalidInput(f"unknown column {column!r}; the inputs are {', '.join(names)}", field=f"columns[{i}]")
        index[column] = i
    if missing := [name for name in names if name not in index]:
        raise InvalidInput(f"missing column(s) {', '.join(missing)}; the inputs are {', '.join(names)}",
                           field="columns")
    for i, row in enumerate(rows):
        if len(row) != len(columns):
            raise InvalidInput(f"rows[{i}] has {len(row)} values for {len(columns)} columns", field=f"rows[{i}]")
    return np.asarray(rows, dtype=np.float64)[:, [index[name] for name in names]].tolist()


def _from_records(records: Sequence[dict[str, float]], names: Sequence[str]) -> list[list[float]]:
    wanted = set(names)
    out = []
    for i, record in enumerate(records):
        if record.keys() != wanted:
            if unknown := [key for key in record if key not in wanted]:
                raise InvalidInput(f"unknown input {unknown[0]!r}; the inputs are {', '.join(names)}",
                                   field=f"records[{i}].{unknown[0]}")
            missing = next(name for name in names if name not in record)
            raise InvalidInput(f"records[{i}] lacks input {missing!r}", field=f"records[{i}].{missing}")
        out.append([record[name] for name in names])
    return out


def model_input_names(session: Session, row: Model) -> list[str]:
    """A model's input names: its dataset's feature names (x_1..x_n where they do not fit)."""
    n_inputs = int(row.width[0])
    dataset = session.get(Dataset, row.dataset_id)
    names = [str(v) for v in (dataset.feature_names if dataset is not None else None) or []]
    return names if len(names) == n_inputs else [f"x_{i + 1}" for i in range(n_inputs)]


def discovery_input_names(session: Session, tenant: str, discovery_id: str, point: int | None) -> list[str] | None:
    """The variables of the formula a discovery predict would use; None when it has none (the predict
    call itself then says why)."""
    result: dict[str, Any] = discovery.get_discovery(session, tenant, discovery_id).result or {}
    front = result.get("front") or []
    chosen = result.get("chosen") if point is None else (front[point] if point < len(front) else None)
    return list(chosen["variables"]) if chosen else None
