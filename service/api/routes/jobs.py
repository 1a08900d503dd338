"""/v1/jobs: queue, follow and cancel training jobs; and POST /v1/models/{id}/symbolic, which queues
a job deriving a new model from an existing one (listed under the models tag).

Routers only translate HTTP <-> service.jobs calls. Jobs run on workers, never in this process.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse

from service import dispatch, jobs
from service.api.deps import ExecutorDep, JobsRateLimit, SessionDep, SettingsDep, TenantDep, WriteScope
from service.api.sse import EVENT_POLL_S, event_stream
from service.idempotency import IdempotencyKeyHeader
from service.models import Job, JobStatus
from service.schemas.common import DEFAULT_PAGE_SIZE, CursorQuery, LimitQuery, Page, problem_responses
from service.schemas.jobs import JobCreate, JobHistory, JobPublic, SymbolicJobCreate

router = APIRouter()
jobs_router = APIRouter(prefix="/jobs", tags=["jobs"])
models_router = APIRouter(prefix="/models", tags=["models"])


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.read_session_factory


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


def _accepted(response: Response, session: Session, job: Job) -> JobPublic:
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return jobs.public(session, job)


@jobs_router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic, summary="Queue a training pipeline",
    responses=problem_responses(400, 404, 422, 429), dependencies=[WriteScope, JobsRateLimit],
)
def create_job(
    body: JobCreate, response: Response, session: SessionDep, settings: SettingsDep, tenant: TenantDep,
    executor: ExecutorDep, idempotency_key: IdempotencyKeyHeader = None,
) -> JobPublic:
    job = jobs.create_job(session, settings, tenant, body, idempotency_key=idempotency_key)
    dispatch.submit(session, executor, job)
    return _accepted(response, session, job)


@jobs_router.get("", response_model=Page[JobPublic], summary="List jobs, newest first",
                 responses=problem_responses(422))
def list_jobs(
    session: SessionDep, tenant: TenantDep, limit: LimitQuery = DEFAULT_PAGE_SIZE, cursor: CursorQuery = None,
    status_: Annotated[JobStatus | None, Query(alias="status", description="Only jobs in this state.")] = None,
) -> Page[JobPublic]:
    items, next_cursor = jobs.list_jobs(session, tenant, status=status_, limit=limit, cursor=cursor)
    return Page[JobPublic](items=items, next_cursor=next_cursor)


@jobs_router.get("/{job_id}", response_model=JobPublic, summary="A job's status and progress",
                 responses=problem_responses(404))
def get_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobPublic:
    return jobs.public(session, jobs.get_job(session, tenant, job_id))


@jobs_router.get("/{job_id}/history", response_model=JobHistory, summary="A job's loss history",
                 responses=problem_responses(404))
def get_history(job_id: str, session: SessionDep, tenant: TenantDep) -> JobHistory:
    job = jobs.get_job(session, tenant, job_id, with_history=True)
    return JobHistory(job_id=job.id, status=job.status, points=job.history)


@jobs_router.post(
    "/{job_id}/cancel", response_model=JobPublic, summary="Cancel a job",
    responses={202: {"model": JobPublic, "description": "The job is running; its worker stops it within one step"},
               **problem_responses(404, 409)},
    dependencies=[WriteScope],
)
def cancel_job(
    job_id: str, response: Response, session: SessionDep, tenant: TenantDep, executor: ExecutorDep
) -> JobPublic:
    job = jobs.cancel_job(session, tenant, job_id)
    executor.cancel(job.id)
    if job.status is JobStatus.running:
        response.status_code = status.HTTP_202_ACCEPTED
    return jobs.public(session, job)


@jobs_router.get(
    "/{job_id}/events", summary="Follow a job (server-sent events)", response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`progress` events (JobProgressEvent) while the job changes, then one "
                                    "`end` event (JobEnd) with the final status."},
               **problem_responses(404)},
)
async def job_events(job_id: str, session_factory: SessionFactoryDep, tenant: TenantDep) -> EventSourceResponse:
    events = jobs.follow(session_factory, tenant, job_id, interval_s=EVENT_POLL_S)
    return await event_stream(events)  # NotFound is raised before the stream (and its 200) starts


@models_router.post(
    "/{model_id}/symbolic", status_code=status.HTTP_202_ACCEPTED, response_model=JobPublic,
    summary="Derive a model: fix edges to symbolic functions, then retrain",
    responses=problem_responses(400, 404, 422, 429), dependencies=[WriteScope, JobsRateLimit],
)
def create_symbolic_job(
    model_id: str, body: SymbolicJobCreate, response: Response, session: SessionDep, settings: SettingsDep,
    tenant: TenantDep, executor: ExecutorDep, idempotency_key: IdempotencyKeyHeader = None,
) -> JobPublic:
    job = jobs.create_symbolic_job(session, settings, tenant, model_id, body, idempotency_key=idempotency_key)
    dispatch.submit(session, executor, job)
    return _accepted(response, session, job)


router.include_router(jobs_router)
router.include_router(models_router)
