"""Job domain logic, no HTTP: create (with idempotency), read, list, cancel; and the worker side:
claim, heartbeat, progress, finish, and the reaper that re-queues jobs whose worker went silent.

The jobs table is the single source of truth and every state change is a compare-and-set `UPDATE`
whose `WHERE` states the expected current state, checked through the row count. That makes each
transition atomic on SQLite and PostgreSQL alike, without row locks held across work:

    queued --claim--> running --finish--> succeeded | failed | cancelled
    queued --cancel-> cancelled           running --reap (worker silent)--> queued | failed | cancelled

Worker-side writes are guarded by the `Claim` (job id, worker id, attempt number): a worker that was
presumed dead and whose job was re-queued can no longer write anything to it, so a late finish on a
zombie worker never creates a second model (Model.job_id is also unique, as a last line of defence).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import anyio.to_thread
from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session, defer, sessionmaker

from service import datasets, idempotency
from service.config import Settings
from service.db import session_scope
from service.errors import Conflict, InvalidInput, NotFound
from service.ids import new_id
from service.models import Job, JobKind, JobStatus, Model, Worker, utcnow
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


def queue_for(device: str) -> str:
    """Jobs that ask for CUDA wait for a GPU worker; `cpu` and `auto` run anywhere."""
    return "gpu" if device.startswith("cuda") else "cpu"


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


def _replay(session: Session, tenant: str, endpoint: str, key: str | None, body: Any) -> tuple[str, Job | None]:
    """The request's fingerprint, and the job an earlier request with the same Idempotency-Key made."""
    digest = idempotency.fingerprint(body.model_dump(mode="json", by_alias=True))
    earlier = idempotency.lookup(session, tenant, endpoint, key, digest) if key else None
    return digest, get_job(session, tenant, earlier) if earlier else None


def _insert(session: Session, tenant: str, job: Job, endpoint: str, key: str | None, digest: str) -> Job:
    session.add(job)
    if key:
        idempotency.remember(session, tenant, endpoint, key, digest, job.id, status_code=202)
    if winner := idempotency.commit_or_replay(session, tenant, endpoint, key, digest):
        return get_job(session, tenant, winner)
    log.info("job %s (%s) queued on %s for dataset %s", job.id, job.kind.value, job.queue, job.dataset_id)
    return job


def create_job(
    session: Session, settings: Settings, tenant: str, body: JobCreate, *, idempotency_key: str | None = None
) -> Job:
    """Queue a training pipeline on a dataset (or replay the job an earlier request with the same key made)."""
    digest, earlier = _replay(session, tenant, JOBS_ENDPOINT, idempotency_key, body)
    if earlier is not None:
        return earlier
    dataset = datasets.get_dataset(session, tenant, body.dataset_id, with_arrays=False)
    width = check_pipeline(settings, body, len(dataset.feature_names), len(dataset.target_names))
    config = body.pipeline_dict()
    config["model"]["width"] = width
    job = Job(id=new_id("job"), tenant_id=tenant, kind=JobKind.train, dataset_id=dataset.id, config=config,
              queue=queue_for(body.model.device))
    return _insert(session, tenant, job, JOBS_ENDPOINT, idempotency_key, digest)


def create_symbolic_job(
    session: Session, settings: Settings, tenant: str, model_id: str, body: SymbolicJobCreate, *,
    idempotency_key: str | None = None,
) -> Job:
    """Queue a job deriving a new model from `model_id`: fix edges, auto-fit the rest, retrain."""
    endpoint = f"POST /v1/models/{model_id}/symbolic"
    digest, earlier = _replay(session, tenant, endpoint, idempotency_key, body)
    if earlier is not None:
        return earlier
    parent = get_owned(session, Model, tenant, model_id, resource="model", options=[defer(Model.weights)])
    width = [int(w) for w in parent.width]
    _check_fixes(body.fixes, width, "fixes", exact=True)
    if body.retrain is not None:
        _check_train(settings, body.retrain, "retrain")
    parent_job = session.get(Job, parent.job_id, options=[defer(Job.history)])  # a model's job outlives it
    model_spec = {**parent_job.config["model"], "width": width}
    config = {"model": model_spec, "stages": [s.model_dump(mode="json", by_alias=True) for s in body.stages()]}
    job = Job(id=new_id("job"), tenant_id=tenant, kind=JobKind.symbolic, dataset_id=parent.dataset_id,
              parent_model_id=parent.id, config=config, queue=queue_for(model_spec["device"]))
    return _insert(session, tenant, job, endpoint, idempotency_key, digest)


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


# --------------------------------------------------------------------------------------------------
# worker side


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one attempt of a job; every write it makes to the job is guarded by it."""

    job_id: str
    worker_id: str
    attempt: int

    def owns(self) -> ColumnElement[bool]:
        return (
            (Job.id == self.job_id) & (Job.worker_id == self.worker_id)
            & (Job.attempts == self.attempt) & (Job.status == JobStatus.running)
        )


def claim_job(session: Session, worker_id: str, job_id: str) -> Claim | None:
    """Claim the job `job_id` for `worker_id` with a compare-and-set that only succeeds while the job
    is queued; None when it is not (already claimed, cancelled, finished, or gone). A broker may
    deliver a job id twice: the second delivery finds the job taken and does nothing."""
    now = utcnow()
    attempt = session.scalar(
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued).values(
            status=JobStatus.running, worker_id=worker_id, attempts=Job.attempts + 1, started_at=now,
            heartbeat_at=now, progress=None, history=[], error=None,
        ).returning(Job.attempts)
    )
    if attempt is None:
        session.rollback()
        return None
    session.commit()
    log.info("worker %s claimed job %s (attempt %d)", worker_id, job_id, attempt)
    return Claim(job_id, worker_id, attempt)


def claim_next(session: Session, worker_id: str, queues: Sequence[str], *, batch: int = 8) -> Claim | None:
    """Claim the oldest queued job of `queues` for `worker_id` (None when there is none).

    Candidates are read first, then each is claimed with `claim_job`; a worker that loses the race
    for one tries the next."""
    candidates = session.scalars(
        select(Job.id).where(Job.status == JobStatus.queued, Job.queue.in_(queues)).order_by(Job.id).limit(batch)
    ).all()
    session.rollback()  # end the read; each claim below is its own short transaction
    for job_id in candidates:
        if claim := claim_job(session, worker_id, job_id):
            return claim
    return None


def _transition(session: Session, claim: Claim, **values: Any) -> bool:
    """Apply `values` to the job while `claim` still owns it; False (nothing written) when it does not."""
    owned = session.execute(update(Job).where(claim.owns()).values(**values)).rowcount == 1
    if owned:
        session.commit()
    else:
        session.rollback()
        log.warning("job %s is no longer held by %s (attempt %d); not writing %s",
                    claim.job_id, claim.worker_id, claim.attempt, sorted(values))
    return owned


def record_progress(session: Session, claim: Claim, progress: dict[str, Any], points: Sequence[dict[str, Any]]) -> bool:
    """Write the current progress and append history points (also a job heartbeat)."""
    history = session.scalar(select(Job.history).where(claim.owns()))
    if history is None:
        session.rollback()
        return False
    return _transition(session, claim, progress=progress, history=[*history, *points], heartbeat_at=utcnow())


def stop_reason(session: Session, claim: Claim) -> str | None:
    """'cancel' when a client asked to cancel, 'lost' when the job is no longer this worker's, else None."""
    row = session.execute(
        select(Job.cancel_requested, Job.status, Job.worker_id, Job.attempts).where(Job.id == claim.job_id)
    ).one_or_none()
    session.rollback()
    if row is None or row.status != JobStatus.running or row.worker_id != claim.worker_id or row.attempts != claim.attempt:
        return "lost"
    return "cancel" if row.cancel_requested else None


def finish_succeeded(session: Session, claim: Claim, model: Model, progress: dict[str, Any] | None) -> bool:
    """Store the model and mark the job succeeded, in one transaction, only while `claim` holds the job."""
    values: dict[str, Any] = {"status": JobStatus.succeeded, "finished_at": utcnow(), "error": None}
    if progress is not None:
        values["progress"] = progress
    if session.execute(update(Job).where(claim.owns()).values(**values)).rowcount != 1:
        session.rollback()
        log.warning("job %s finished on %s (attempt %d) after it was taken away; result discarded",
                    claim.job_id, claim.worker_id, claim.attempt)
        return False
    session.add(model)
    session.commit()
    log.info("job %s succeeded: model %s", claim.job_id, model.id)
    return True


def finish_with_result(session: Session, claim: Claim, result: dict[str, Any], progress: dict[str, Any] | None) -> bool:
    """Mark a job that makes no model (a discovery candidate) succeeded, storing its result."""
    values: dict[str, Any] = {"status": JobStatus.succeeded, "finished_at": utcnow(), "error": None, "result": result}
    if progress is not None:
        values["progress"] = progress
    return _transition(session, claim, **values)


def timeout_detail(settings: Settings) -> str:
    """The error detail of a job failed for running past its time limit (runner and watchdog)."""
    return f"the job ran longer than its time limit (job_timeout_s={settings.job_timeout_s:g} s)"


def finish_failed(session: Session, claim: Claim, error_type: str, detail: str, *,
                  result: dict[str, Any] | None = None) -> bool:
    log.info("job %s failed: %s: %s", claim.job_id, error_type, detail)
    values: dict[str, Any] = {"status": JobStatus.failed, "finished_at": utcnow(),
                              "error": {"type": error_type, "detail": detail}}
    if result is not None:
        values["result"] = result
    return _transition(session, claim, **values)


def finish_cancelled(session: Session, claim: Claim) -> bool:
    log.info("job %s cancelled", claim.job_id)
    return _transition(session, claim, status=JobStatus.cancelled, finished_at=utcnow())


def release(session: Session, claim: Claim) -> bool:
    """Put a job back in the queue because its worker is shutting down; the attempt does not count.
    Its id must be sent again (dispatched_at is cleared: service.dispatch.redispatch does it)."""
    log.info("job %s released by %s (shutting down); re-queued", claim.job_id, claim.worker_id)
    return _transition(session, claim, status=JobStatus.queued, worker_id=None, attempts=Job.attempts - 1,
                       started_at=None, heartbeat_at=None, progress=None, dispatched_at=None)


# ---- workers and heartbeats


def register_worker(session: Session, worker_id: str, *, kind: str, hostname: str, pid: int) -> None:
    now = utcnow()
    session.merge(Worker(id=worker_id, kind=kind, hostname=hostname, pid=pid, started_at=now, heartbeat_at=now))
    session.commit()


def unregister_worker(session: Session, worker_id: str) -> None:
    session.execute(delete(Worker).where(Worker.id == worker_id))
    session.commit()


def heartbeat(session: Session, worker_id: str, claim: Claim | None) -> bool:
    """The worker is alive, and so is its current job. False when the worker's row is gone (a reaper
    took it for dead during a long pause): the worker should register again."""
    now = utcnow()
    known = session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=now)).rowcount == 1
    if claim is not None:
        session.execute(update(Job).where(claim.owns()).values(heartbeat_at=now))
    session.commit()
    return known


@dataclass
class Reaped:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.cancelled)


def reap(session: Session, settings: Settings, *, now: datetime | None = None) -> Reaped:
    """Deal with running jobs whose worker went silent for heartbeat_timeout_s: re-queue them (up to
    max_attempts; dispatched_at is cleared so that service.dispatch.redispatch sends their ids again),
    fail them when their attempts are used up, or cancel them if that was asked for.
    Also fails jobs running past job_timeout_s whose worker could not stop them, and forgets workers
    that stopped beating. Safe to run from every worker at once: each change is a compare-and-set."""
    now = now or utcnow()
    silent_since = now - timedelta(seconds=settings.heartbeat_timeout_s)
    out = Reaped()
    stale = session.execute(
        select(Job.id, Job.worker_id, Job.attempts, Job.cancel_requested)
        .where(Job.status == JobStatus.running, Job.heartbeat_at < silent_since)
    ).all()
    for job_id, worker_id, attempts, cancel_requested in stale:
        lost = f"its worker {worker_id} sent no heartbeat for {settings.heartbeat_timeout_s:g} s"
        if cancel_requested:
            values, bucket = {"status": JobStatus.cancelled, "finished_at": now}, out.cancelled
        elif attempts >= settings.max_attempts:
            values, bucket = {"status": JobStatus.failed, "finished_at": now, "error": {
                "type": "WorkerLost",
                "detail": f"{lost}; gave up after {attempts} attempt(s) (max_attempts={settings.max_attempts})",
            }}, out.failed
        else:
            values, bucket = {"status": JobStatus.queued, "worker_id": None, "started_at": None, "heartbeat_at": None,
                              "progress": None, "dispatched_at": None}, out.requeued
        changed = session.execute(
            update(Job).where(Claim(job_id, worker_id, attempts).owns(), Job.heartbeat_at < silent_since).values(**values)
        ).rowcount
        if changed:
            bucket.append(job_id)
            log.warning("job %s: %s (attempt %d) -> %s", job_id, lost, attempts, values["status"].value)

    overdue_since = now - timedelta(seconds=settings.job_timeout_s + settings.heartbeat_timeout_s)
    overdue = session.scalars(
        update(Job).where(Job.status == JobStatus.running, Job.started_at < overdue_since).values(
            status=JobStatus.failed, finished_at=now,
            error={"type": "JobTimeout", "detail": f"the job ran longer than job_timeout_s={settings.job_timeout_s:g} s "
                                                   "and its worker did not stop it"},
        ).returning(Job.id)
    ).all()
    for job_id in overdue:
        log.warning("job %s: ran past job_timeout_s; failed", job_id)
    out.failed.extend(overdue)
    session.execute(delete(Worker).where(Worker.heartbeat_at < silent_since))
    session.commit()
    return out


def run_reaper(session_factory: sessionmaker[Session], settings: Settings) -> Reaped:
    with session_scope(session_factory) as session:
        return reap(session, settings)
