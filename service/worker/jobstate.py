"""The job state machine, worker side: claim, progress, finish, release; workers' heartbeats and the
reaper that re-queues jobs whose worker went silent. Creating, reading and cancelling jobs is the
API's (service.jobs).

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

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.db import session_scope
from service.models import Job, JobStatus, Model, Worker, utcnow

log = logging.getLogger(__name__)


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
