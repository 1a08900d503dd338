"""Batches of discoveries, no HTTP: one dataset (service.datasets) and one discovery (service.discovery)
per item. A bad item is rejected with a problem+json document naming its field while the others go
ahead; the batch row lists what each item became.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer

from service import datasets, discovery, idempotency
from service.config import Settings
from service.errors import InvalidInput, NotFound, ServiceError, error_body
from service.ids import new_id
from service.models import Batch, Dataset, Job
from service.schemas.datasets import DatasetCreateArrays, DatasetCreateSynthetic
from service.schemas.discoveries import BatchCreate, BatchItemPublic, BatchPublic
from service.tenancy import get_owned

log = logging.getLogger(__name__)

BATCHES_ENDPOINT = "POST /v1/batches"


def _validation_problem(exc: ValidationError, where: str) -> dict[str, Any]:
    """The 422 problem of an item's dataset that does not validate, its fields prefixed with `where`."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
        errors.append({"field": f"{where}{loc}", "message": err["msg"], "where": "body"})
    first = errors[0]
    return error_body(InvalidInput(f"{first['field']}: {first['message']}", field=first["field"], errors=errors))


def _item_dataset(session: Session, settings: Settings, tenant: str, item: Any) -> Dataset:
    if item.dataset_id is not None:
        return datasets.get_dataset(session, tenant, item.dataset_id)
    model = DatasetCreateSynthetic if "expression" in item.dataset else DatasetCreateArrays
    request = model.model_validate(item.dataset)
    return datasets.create_dataset(session, settings, tenant, request)


def create_batch(session: Session, settings: Settings, tenant: str, body: BatchCreate, *,
                 idempotency_key: str | None = None) -> tuple[Batch, list[Job]]:
    """A dataset and a discovery per item; a bad item is rejected (with a problem naming its field)
    and the others go ahead. Returns the batch and every candidate job to dispatch.

    The batch row (and the Idempotency-Key record) is committed first, then each item in its own
    transaction, the batch's `items` growing with it: a crash midway leaves a batch that lists what
    was created. A retry with the same key and body returns the first request's batch."""
    if len(body.items) > settings.max_batch_items:
        raise InvalidInput(f"at most {settings.max_batch_items} items, got {len(body.items)}", field="items")

    budget = body.budget

    def add() -> Batch:
        nonlocal budget
        budget = discovery.check_budget(settings, body.budget)
        batch = Batch(id=new_id("bat"), tenant_id=tenant, budget=budget.model_dump(mode="json"), items=[])
        session.add(batch)
        return batch

    batch, created = idempotency.create_once(
        session, tenant, BATCHES_ENDPOINT, idempotency_key, idempotency.fingerprint(body.model_dump(mode="json")),
        create=add, load=lambda batch_id: get_owned(session, Batch, tenant, batch_id, resource="batch"))
    if not created:
        return batch, []
    batch_id = batch.id
    items: list[dict[str, Any]] = []
    queued: list[Job] = []
    for i, item in enumerate(body.items):
        where = f"items[{i}]." + ("dataset" if item.dataset is not None else "dataset_id")
        entry: dict[str, Any] = {"index": i, "status": "rejected", "dataset_id": None, "discovery_id": None,
                                 "problem": None}
        try:
            dataset = _item_dataset(session, settings, tenant, item)
            entry["dataset_id"] = dataset.id
            parent, children = discovery.add_discovery(session, settings, tenant, dataset, budget, body.options)
        except ValidationError as exc:
            session.rollback()
            entry["problem"] = _validation_problem(exc, where)
        except ServiceError as exc:
            session.rollback()
            field = f"items[{i}]" if isinstance(exc, NotFound) else f"{where}.{exc.field}" if exc.field else where
            entry["problem"] = error_body(exc, field=field)
        else:
            entry.update(status="accepted", discovery_id=parent.id)
            queued.extend(children)
        items.append(entry)
        session.execute(update(Batch).where(Batch.id == batch_id).values(items=list(items)))
        session.commit()
    batch = session.get(Batch, batch_id, populate_existing=True)
    log.info("batch %s: %d item(s), %d rejected", batch_id, len(items), sum(e["status"] == "rejected" for e in items))
    return batch, queued


def get_batch(session: Session, tenant: str, batch_id: str) -> BatchPublic:
    batch = get_owned(session, Batch, tenant, batch_id, resource="batch")
    ids = [e["discovery_id"] for e in batch.items if e["discovery_id"]]
    parents = {j.id: j for j in session.scalars(select(Job).options(defer(Job.history)).where(Job.id.in_(ids)))}
    items = []
    for entry in batch.items:
        parent = parents.get(entry["discovery_id"]) if entry["discovery_id"] else None
        items.append(BatchItemPublic(
            index=entry["index"], status=parent.status if parent is not None else "rejected",
            dataset_id=entry["dataset_id"], discovery_id=entry["discovery_id"], problem=entry["problem"],
            chosen=(parent.result or {}).get("chosen") if parent is not None else None,
        ))
    finished = all(p.status.is_final for p in parents.values())
    return BatchPublic(id=batch.id, status="finished" if finished else "running", budget=batch.budget, items=items,
                       created_at=batch.created_at)
