"""Datasets: built (service.dataset_sources: JSON arrays, CSV text or a formula, validated and split),
packed as float64 safetensors bytes, stored, listed and deleted. No HTTP here: bad input raises
`service.errors.InvalidInput` naming the field at fault (`inputs[3]`, `ranges.x1`, `targets`) before
anything is written.

The worker reads a stored dataset back with `load_arrays(row)`.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from service import idempotency
from service.config import Settings
from service.dataset_sources import BuiltDataset, CsvUpload, DatasetArrays, DatasetRequest, build, column_statistics
from kan_core.units import UnitError, parse_unit
from service.errors import Conflict, InvalidInput
from service.ids import new_id
from service.models import Dataset, IdempotencyRecord, Job, Model
from service.schemas.common import decode_cursor, split_page
from service.tenancy import get_owned, owned

if TYPE_CHECKING:
    import torch

    from kan_core.data import Dataset as KanDataset

log = logging.getLogger(__name__)

ARRAY_KEYS = ("train_input", "train_label", "test_input", "test_label")
IDEMPOTENCY_ENDPOINT = "POST /v1/datasets"
MAX_CONFLICT_IDS = 20  # referencing jobs/models listed in a 409


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
# summaries and rows


def column_summaries(dataset: Dataset) -> list[dict[str, Any]]:
    """min / max / mean / std of every column over both splits (None where a float overflows: only
    datasets stored before check_column_statistics refused such values)."""
    arrays = unpack(dataset.arrays)
    inputs = np.concatenate([arrays.train_input, arrays.test_input])
    labels = np.concatenate([arrays.train_label, arrays.test_label])
    out: list[dict[str, Any]] = []
    for role, names, table in (("feature", dataset.feature_names, inputs), ("target", dataset.target_names, labels)):
        stats = column_statistics(table)
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


def check_units(built: BuiltDataset) -> dict[str, str] | None:
    """The units of a built dataset, checked: one per column (features and targets), each read by
    `kan_core.units.parse_unit` (a whitelist parser). InvalidInput naming `units.<column>` otherwise."""
    if built.units is None:
        return None
    columns = [*built.feature_names, *built.target_names]
    unknown = [name for name in built.units if name not in columns]
    if unknown:
        raise InvalidInput(f"units name no column {unknown[0]!r}; the columns are {', '.join(columns)}",
                           field=f"units.{unknown[0]}")
    missing = [name for name in columns if name not in built.units]
    if missing:
        raise InvalidInput(f"units must give every column's unit; missing {', '.join(missing)} (1: dimensionless)",
                           field=f"units.{missing[0]}")
    for name in columns:
        try:
            parse_unit(built.units[name])
        except UnitError as exc:
            raise InvalidInput(f"column {name!r}: bad unit {built.units[name]!r}: {exc}",
                               field=f"units.{name}") from None
    return {name: built.units[name].strip() for name in columns}


def create_dataset(
    session: Session, settings: Settings, tenant: str, request: DatasetRequest, idempotency_key: str | None = None
) -> Dataset:
    """Build, validate and store a dataset (or return the one an earlier request with the same
    Idempotency-Key stored). Nothing is written when the input is rejected."""

    def add() -> Dataset:
        built = build(request, settings)
        units = check_units(built)
        row = Dataset(
            id=new_id("ds"), tenant_id=tenant, name=built.name, source=built.source, expression=built.expression,
            feature_names=built.feature_names, target_names=built.target_names, units=units,
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
