"""Sending job ids to workers through the executor, and sending again whatever did not arrive.

The jobs table is the source of truth: a job is queued until a worker claims it with a compare-and-set,
so a job id delivered twice costs one failed claim, and a job id never delivered costs only latency,
as long as something sends it eventually. `Job.dispatched_at` records the last successful send:

- `submit` (the API, once the job row is committed): send the id, then stamp dispatched_at. When the
  broker is unreachable the request still succeeds; the job stays queued with dispatched_at unset.
- `redispatch` (every worker's heartbeat thread, right after the reaper) sends the queued jobs that
  * have no dispatched_at and are older than SEND_GRACE_S: never sent (the broker was down when the
    API tried), or re-queued since (the reaper re-queues the job of a dead worker, a stopping worker
    releases its job; both clear dispatched_at). The grace keeps it from racing the API's own send;
  * were sent more than settings.redispatch_after_s ago and are still queued: the message was lost
    (a broker restarted without persistence, a purged queue), or it is waiting behind a backlog, in
    which case the extra copy finds the job taken and is dropped.
  Each send first moves dispatched_at with a compare-and-set, so when many workers run this at once
  only one of them sends a given job; a send that fails puts the old value back.

Executors whose workers poll the jobs table (local) push nothing (`executor.pushes` is False): both
functions then do nothing.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session

from service.config import Settings
from service.executors.base import DispatchError, Executor
from service.models import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

SEND_GRACE_S = 5.0       # how long the API may take between committing a job and recording its send
REDISPATCH_BATCH = 100   # most jobs re-sent by one call


def submit(session: Session, executor: Executor, job: Job) -> bool:
    """Send a committed job's id to a worker unless it was sent already (or is no longer queued:
    an idempotent replay). False when nothing was sent; the job then stays queued for `redispatch`."""
    if not executor.pushes or job.status is not JobStatus.queued or job.dispatched_at is not None:
        return False
    try:
        executor.submit(job.id, job.queue)
    except DispatchError as exc:
        log.warning("job %s stays queued, to be sent again later: %s", job.id, exc)
        return False
    session.execute(update(Job).where(Job.id == job.id, Job.dispatched_at.is_(None)).values(dispatched_at=utcnow()))
    session.commit()
    return True


def redispatch(session: Session, settings: Settings, executor: Executor, *, now: datetime | None = None) -> list[str]:
    """Send again the ids of queued jobs that did not reach a worker (see the module docstring);
    returns the ids sent. Stops at the first failed send: the broker is down, the rest would fail too."""
    if not executor.pushes:
        return []
    now = now or utcnow()
    due = session.execute(
        select(Job.id, Job.queue, Job.dispatched_at).where(
            Job.status == JobStatus.queued,
            or_(and_(Job.dispatched_at.is_(None), Job.created_at < now - timedelta(seconds=SEND_GRACE_S)),
                Job.dispatched_at < now - timedelta(seconds=settings.redispatch_after_s)),
        ).order_by(Job.id).limit(REDISPATCH_BATCH)
    ).all()
    session.rollback()  # end the read; each send below takes its job with a short compare-and-set
    sent: list[str] = []
    for job_id, queue, previous in due:
        unchanged = Job.dispatched_at.is_(None) if previous is None else Job.dispatched_at == previous
        taken = session.execute(
            update(Job).where(Job.id == job_id, Job.status == JobStatus.queued, unchanged).values(dispatched_at=now)
        ).rowcount == 1
        session.commit()
        if not taken:  # claimed, cancelled, or another worker is sending it
            continue
        try:
            executor.submit(job_id, queue)
        except DispatchError as exc:
            session.execute(
                update(Job).where(Job.id == job_id, Job.dispatched_at == now).values(dispatched_at=previous)
            )
            session.commit()
            log.warning("could not send queued job %s again: %s", job_id, exc)
            break
        sent.append(job_id)
        why = "not sent yet" if previous is None else f"still queued {settings.redispatch_after_s:g} s after its send"
        log.info("job %s was %s; sent again", job_id, why)
    return sent
