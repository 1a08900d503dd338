"""/v1/discoveries and /v1/batches: formula searches over candidate pipelines (service.discovery).

Routers only translate HTTP <-> service.discovery calls; candidates run on workers as jobs.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from service import batches, discovery, dispatch, named_inputs
from service.api.deps import (
    ExecutorDep,
    JobsRateLimit,
    ModelStoreDep,
    PredictRateLimit,
    SessionDep,
    SettingsDep,
    TenantDep,
    WriteScope,
)
from service.idempotency import IdempotencyKeyHeader
from service.schemas.common import DEFAULT_PAGE_SIZE, CursorQuery, LimitQuery, Page, problem_responses
from service.schemas.discoveries import (
    BatchCreate,
    BatchPublic,
    DiscoveryCreate,
    DiscoveryPredictResponse,
    DiscoveryPublic,
    DiscoverySummary,
)
from service.schemas.models import PredictRequest

router = APIRouter()
discoveries_router = APIRouter(prefix="/discoveries", tags=["discoveries"])
batches_router = APIRouter(prefix="/batches", tags=["discoveries"])

DiscoveryId = Annotated[str, Path(max_length=40, description="A discovery id (`dsc_...`).")]
BatchId = Annotated[str, Path(max_length=40, description="A batch id (`bat_...`).")]


@discoveries_router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=DiscoveryPublic,
    summary="Search a dataset for formulas: candidate pipelines as jobs, their Pareto front",
    responses=problem_responses(400, 404, 422, 429), dependencies=[WriteScope, JobsRateLimit],
)
def create_discovery(body: DiscoveryCreate, response: Response, session: SessionDep, settings: SettingsDep,
                     tenant: TenantDep, executor: ExecutorDep,
                     idempotency_key: IdempotencyKeyHeader = None) -> DiscoveryPublic:
    parent, children = discovery.create_discovery(session, settings, tenant, body, idempotency_key=idempotency_key)
    for child in children:
        dispatch.submit(session, executor, child)
    response.headers["Location"] = f"/v1/discoveries/{parent.id}"
    return discovery.public(session, parent)


@discoveries_router.get("", response_model=Page[DiscoverySummary], summary="List discoveries, newest first",
                        responses=problem_responses(422))
def list_discoveries(session: SessionDep, tenant: TenantDep, limit: LimitQuery = DEFAULT_PAGE_SIZE,
                     cursor: CursorQuery = None) -> Page[DiscoverySummary]:
    items, next_cursor = discovery.list_discoveries(session, tenant, limit=limit, cursor=cursor)
    return Page[DiscoverySummary](items=items, next_cursor=next_cursor)


@discoveries_router.get("/{discovery_id}", response_model=DiscoveryPublic,
                        summary="A discovery's progress, Pareto front and chosen formula",
                        responses=problem_responses(404, 422))
def get_discovery(discovery_id: DiscoveryId, session: SessionDep, tenant: TenantDep) -> DiscoveryPublic:
    return discovery.public(session, discovery.get_discovery(session, tenant, discovery_id))


# a POST that changes nothing: a `read` key may predict
@discoveries_router.post("/{discovery_id}/predict", response_model=DiscoveryPredictResponse,
                         summary="Evaluate the discovery's formula on input rows",
                         responses=problem_responses(400, 404, 409, 413, 422, 429), dependencies=[PredictRateLimit])
def predict(discovery_id: DiscoveryId, body: PredictRequest, session: SessionDep, settings: SettingsDep,
            store: ModelStoreDep, tenant: TenantDep,
            point: Annotated[int | None, Query(ge=0, description="Index into `front`; omitted: the chosen formula.")]
            = None) -> DiscoveryPredictResponse:
    """One output per input row, from the closed-form formula (no network). 409 while there is none."""
    named_inputs.check_shape(body)
    inputs = body.inputs
    if inputs is None:  # named columns: in the formula's variable order (no formula: predict says why)
        names = named_inputs.discovery_input_names(session, tenant, discovery_id, point)
        inputs = named_inputs.positional(body, names) if names is not None else []
    chosen, outputs = discovery.predict(session, settings, store, tenant, discovery_id, inputs, point)
    return DiscoveryPredictResponse(formula=chosen["formula"], variables=chosen["variables"], outputs=outputs)


@discoveries_router.post("/{discovery_id}/cancel", response_model=DiscoveryPublic,
                         summary="Cancel a discovery and all its candidates",
                         responses=problem_responses(404, 409, 422), dependencies=[WriteScope])
def cancel_discovery(discovery_id: DiscoveryId, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
                     executor: ExecutorDep) -> DiscoveryPublic:
    parent = discovery.cancel_discovery(session, settings, tenant, discovery_id)
    out = discovery.public(session, parent)
    for candidate in out.candidates:
        executor.cancel(candidate.job_id)
    return out


@batches_router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=BatchPublic,
    summary="A discovery per dataset; bad items are rejected, the others go ahead",
    responses=problem_responses(400, 422, 429), dependencies=[WriteScope, JobsRateLimit],
)
def create_batch(body: BatchCreate, response: Response, session: SessionDep, settings: SettingsDep,
                 tenant: TenantDep, executor: ExecutorDep, idempotency_key: IdempotencyKeyHeader = None) -> BatchPublic:
    batch, children = batches.create_batch(session, settings, tenant, body, idempotency_key=idempotency_key)
    for child in children:
        dispatch.submit(session, executor, child)
    response.headers["Location"] = f"/v1/batches/{batch.id}"
    return batches.get_batch(session, tenant, batch.id)


@batches_router.get("/{batch_id}", response_model=BatchPublic, summary="Each item's status and chosen formula",
                    responses=problem_responses(404, 422))
def get_batch(batch_id: BatchId, session: SessionDep, tenant: TenantDep) -> BatchPublic:
    return batches.get_batch(session, tenant, batch_id)


router.include_router(discoveries_router)
router.include_router(batches_router)
