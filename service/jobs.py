"""Pipeline jobs, API side, no HTTP: validate and create (once per Idempotency-Key), read, list,
cancel and follow train and symbolic jobs. What workers do to a job (claim, progress, finish, reap)
is the job state machine in service.worker.jobstate; discovery jobs are service.discovery's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio.to_thread
from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer, sessionmaker

from service import datasets, idempotency, limits
from service.config import Settings, queue_for
from service.errors import Conflict, InvalidInput, NotFound
from service.ids import new_id
from service.models import Job, JobKind, JobStatus, Model, utcnow
from service.schemas.common import decode_cursor, split_page
from service.schemas.jobs import (
    EdgeFixSpec,
    JobCreate,
    JobEnd,
    JobProgressEvent,
    JobPublic,
    ModelSpec,
    RefineStageSpec,
    SymbolicJobCreate,
    SymbolicStageSpec,
    TrainStageSpec,
)
from service.tenancy import get_owned, owned

log = logging.getLogger(__name__)

JOBS_ENDPOINT = "POST /v1/jobs"
DEFAULT_HIDDEN_WIDTH = 5  # kan_core.pipeline.ModelConfig: width None means [n_inputs, 5, n_outputs]


# --------------------------------------------------------------------------------------------------
# validation against the deployment's limits and the dataset


def _check_model(settings: Settings, spec: ModelSpec, n_in: int, n_out: int) -> list[int]:
    """The network width the job will build (validated), from the spec and the dataset's columns."""
    width = list(spec.width) if spec.width else [n_in, DEFAULT_HIDDEN_WIDTH, n_out]
    if width[0] != n_in:
        raise InvalidInput(f"the first width must be the dataset's {n_in} features, got {width[0]}",
                           field="model.width[0]")
    if width[-1] != n_out:
        raise InvalidInput(f"the last width must be the dataset's {n_out} targets, got {width[-1]}",
                           field=f"model.width[{len(width) - 1}]")
    if len(width) > settings.max_layers:
        raise InvalidInput(f"at most {settings.max_layers} layers (widths), got {len(width)}", field="model.width")
    for i, w in enumerate(width):
        if w > settings.max_width:
            raise InvalidInput(f"at most {settings.max_width} nodes per layer, got {w}", field=f"model.width[{i}]")
    if spec.grid > settings.max_grid:
        raise InvalidInput(f"grid must be <= {settings.max_grid}, got {spec.grid}", field="model.grid")
    return width


def _check_train(settings: Settings, stage: TrainStageSpec, where: str) -> None:
    if stage.steps > settings.max_steps:
        raise InvalidInput(f"at most {settings.max_steps} steps per stage, got {stage.steps}", field=f"{where}.steps")


def _check_fixes(fixes: Sequence[EdgeFixSpec], width: Sequence[int], where: str, *, exact: bool) -> None:
    """Edge indices against the width. `exact` is False when a prune stage runs before: the width is
    then only an upper bound, and the engine reports an edge that pruning removed when it gets there."""
    bound = "" if exact else " (before pruning)"
    for j, fix in enumerate(fixes):
        at = f"{where}[{j}]"
        if fix.layer >= len(width) - 1:
            raise InvalidInput(f"layer {fix.layer} does not exist: the network has {len(width) - 1} layers{bound}",
                               field=f"{at}.layer")
        if fix.in_ >= width[fix.layer]:
            raise InvalidInput(f"layer {fix.layer} has {width[fix.layer]} inputs{bound}; no input {fix.in_}",
                               field=f"{at}.in")
        if fix.out >= width[fix.layer + 1]:
            raise InvalidInput(f"layer {fix.layer} has {width[fix.layer + 1]} outputs{bound}; no output {fix.out}",
                               field=f"{at}.out")


def check_pipeline(settings: Settings, body: JobCreate, n_in: int, n_out: int) -> list[int]:
    """Validate a pipeline against the limits and the dataset's shape; returns the resolved width."""
    width = _check_model(settings, body.model, n_in, n_out)
    pruned = False  # after a prune stage the width is only an upper bound
    for i, stage in enumerate(body.stages):
        where = f"stages[{i}]"
        if isinstance(stage, TrainStageSpec):
            _check_train(settings, stage, where)
        elif isinstance(stage, RefineStageSpec) and stage.grid > settings.max_grid:
            raise InvalidInput(f"grid must be <= {settings.max_grid}, got {stage.grid}", field=f"{where}.grid")
        elif isinstance(stage, SymbolicStageSpec):
            _check_fixes(stage.fixes, width, f"{where}.fixes", exact=not pruned)
        pruned = pruned or stage.kind == "prune"
    return width


# --------------------------------------------------------------------------------------------------
# API side: create, read, list, cancel


def _create_once(session: Session, tenant: str, endpoint: str, key: str | None, body: Any,
                 make: Callable[[], Job]) -> Job:
    digest = idempotency.fingerprint(body.model_dump(mode="json", by_alias=True))

    def add() -> Job:
        job = make()
        session.add(job)
        return job

    job, created = idempotency.create_once(session, tenant, endpoint, key, digest, create=add,
                                           load=lambda job_id: get_job(session, tenant, job_id))
    if created:
        log.info("job %s (%s) queued on %s for dataset %s", job.id, job.kind.value, job.queue, job.dataset_id)
    return job


def create_job(
    session: Session, settings: Settings, tenant: str, body: JobCreate, *, idempotency_key: str | None = None
) -> Job:
    """Queue a training pipeline on a dataset (or replay the job an earlier request with the same key made)."""

    def make() -> Job:
        dataset = datasets.get_dataset(session, tenant, body.dataset_id, with_arrays=False)
        width = check_pipeline(settings, body, len(dataset.feature_names), len(dataset.target_names))
        config = body.pipeline_dict()
        config["model"]["width"] = width
        limits.check_job_memory(settings, config, dataset.n_train, dataset.n_test)
        return Job(id=new_id("job"), tenant_id=tenant, kind=JobKind.train, dataset_id=dataset.id, config=config,
                   queue=queue_for(body.model.device))

    return _create_once(session, tenant, JOBS_ENDPOINT, idempotency_key, body, make)


def create_symbolic_job(
    session: Session, settings: Settings, tenant: str, model_id: str, body: SymbolicJobCreate, *,
    idempotency_key: str | None = None,
) -> Job:
    """Queue a job deriving a new model from `model_id`: fix edges, auto-fit the rest, retrain."""

    def make() -> Job:
        parent = get_owned(session, Model, tenant, model_id, resource="model", options=[defer(Model.weights)])
        width = [int(w) for w in parent.width]
        _check_fixes(body.fixes, width, "fixes", exact=True)
        if body.retrain is not None:
            _check_train(settings, body.retrain, "retrain")
        parent_job = session.get(Job, parent.job_id, options=[defer(Job.history)])  # a model's job outlives it
        model_spec = {**parent_job.config["model"], "width": width}
        config = {"model": model_spec, "stages": [s.model_dump(mode="json", by_alias=True) for s in body.stages()]}
        dataset = datasets.get_dataset(session, tenant, parent.dataset_id, with_arrays=False)
        limits.check_job_memory(settings, config, dataset.n_train, dataset.n_test,
                                stage_field=lambda i: "retrain" if i else "auto", model_field="retrain")
        return Job(id=new_id("job"), tenant_id=tenant, kind=JobKind.symbolic, dataset_id=parent.dataset_id,
                   parent_model_id=parent.id, config=config, queue=queue_for(model_spec["device"]))

    return _create_once(session, tenant, f"POST /v1/models/{model_id}/symbolic", idempotency_key, body, make)


def get_job(session: Session, tenant: str, job_id: str, *, with_history: bool = False) -> Job:
    """A pipeline job (train, symbolic, candidate); discovery jobs are /v1/discoveries' (service.discovery)."""
    options = [] if with_history else [defer(Job.history)]
    job = get_owned(session, Job, tenant, job_id, resource="job", options=options, populate_existing=True)
    if job.kind is JobKind.discovery:
        raise NotFound("job", job_id)
    return job


def model_ids(session: Session, job_ids: Sequence[str]) -> dict[str, str]:
    """job id -> id of the model it made, for those that made one."""
    if not job_ids:
        return {}
    rows = session.execute(select(Model.job_id, Model.id).where(Model.job_id.in_(job_ids)))
    return {job_id: model_id for job_id, model_id in rows}


def public(session: Session, job: Job) -> JobPublic:
    return to_public(job, model_ids(session, [job.id]).get(job.id))


def to_public(job: Job, model_id: str | None) -> JobPublic:
    return JobPublic.model_validate(job).model_copy(update={"model_id": model_id})


def list_jobs(
    session: Session, tenant: str, *, status: JobStatus | None, limit: int, cursor: str | None
) -> tuple[list[JobPublic], str | None]:
    """Newest first; `cursor` continues after the last job of the previous page."""
    stmt = owned(select(Job).options(defer(Job.history)), Job, tenant).where(Job.kind != JobKind.discovery)
    if status is not None:
        stmt = stmt.where(Job.status == status)
    if (after := decode_cursor(cursor)) is not None:
        stmt = stmt.where(Job.id < after)
    rows, next_cursor = split_page(session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)).all(), limit)
    made = model_ids(session, [j.id for j in rows])
    return [to_public(j, made.get(j.id)) for j in rows], next_cursor


def cancel_job(session: Session, tenant: str, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop (its worker stops within one
    training step and marks it cancelled). Conflict when the job already finished."""
    job = get_job(session, tenant, job_id)
    now = utcnow()
    done = session.execute(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now)
    ).rowcount
    if not done:
        done = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.running).values(cancel_requested=True)
        ).rowcount
    session.commit()
    job = get_job(session, tenant, job_id)
    if not done:
        raise Conflict(f"job {job_id!r} is already {job.status.value}; only queued or running jobs can be cancelled",
                       job_status=job.status.value)
    log.info("job %s: cancel requested (now %s)", job_id, job.status.value)
    return job


async def follow(
    session_factory: sessionmaker[Session], tenant: str, job_id: str, *, interval_s: float = 0.25
) -> AsyncIterator[tuple[str, str]]:
    """(event, JSON data) pairs for a job's server-sent event stream: `progress` whenever the job's
    status or progress changes, then one `end` with the final status. The database is polled from a
    worker thread so the event loop never blocks on it."""

    def snapshot() -> tuple[JobProgressEvent, JobEnd | None]:
        with session_factory() as session:
            job = get_job(session, tenant, job_id)
            event = JobProgressEvent(job_id=job.id, status=job.status, attempts=job.attempts, progress=job.progress)
            if not job.status.is_final:
                return event, None
            end = JobEnd(job_id=job.id, status=job.status, model_id=model_ids(session, [job.id]).get(job.id),
                         error=job.error)
            return event, end

    last: JobProgressEvent | None = None
    while True:
        event, end = await anyio.to_thread.run_sync(snapshot)
        if event != last:
            yield "progress", event.model_dump_json()
            last = event
        if end is not None:
            yield "end", end.model_dump_json()
            return
        await asyncio.sleep(interval_s)
