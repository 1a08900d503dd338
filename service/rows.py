"""Prediction rows: request rows validated into an array (naming the bad `inputs[i][j]`), and arrays
or numpy / torch values turned into JSON (non-finite floats become null). Shared by model and
discovery predictions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from service.errors import InvalidInput



def validate_inputs(rows: Sequence[Sequence[float]], n_inputs: int, max_rows: int) -> np.ndarray:
    """Request rows -> a (B, n_inputs) float64 array, or InvalidInput naming the offending field."""
    if not rows:
        raise InvalidInput("inputs must contain at least one row", field="inputs")
    if len(rows) > max_rows:
        raise InvalidInput(f"at most {max_rows} rows per request, got {len(rows)}", field="inputs")
    try:
        x = np.array(rows, dtype=np.float64)
    except ValueError:  # ragged rows
        x = None
    if x is None or x.ndim != 2 or x.shape[1] != n_inputs:  # find the first bad row only when there is one
        for i, row in enumerate(rows):
            if len(row) != n_inputs:
                raise InvalidInput(f"inputs[{i}] has {len(row)} values; the model takes {n_inputs}",
                                   field=f"inputs[{i}]")
        raise InvalidInput(f"inputs must be rows of {n_inputs} numbers", field="inputs")
    bad = ~np.isfinite(x)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise InvalidInput(f"inputs[{i}][{j}] is not a finite number", field=f"inputs[{i}][{j}]")
    return x



def json_ready(obj: Any) -> Any:
    """numpy / torch values -> plain Python, non-finite floats -> None (JSON has no NaN)."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return json_ready(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return json_ready(obj.tolist())
    if isinstance(obj, np.generic):
        return json_ready(obj.item())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def rows_json(y: np.ndarray) -> list[list[float | None]]:
    """A (B, O) array as JSON rows; non-finite values become None."""
    y = np.asarray(y, dtype=np.float64)
    finite = np.isfinite(y)
    if finite.all():
        return y.tolist()
    out = y.astype(object)
    out[~finite] = None
    return out.tolist()
