"""Run one claimed job to one of its outcomes, whatever its kind (service.worker.handlers).

The database is touched only in short transactions, never across training: progress and the stop
check go through the pipeline's callbacks (service.worker.progress), and a handler writes its
result together with the `succeeded` status, guarded by the claim.

Outcomes: succeeded; cancelled (a client asked); failed with error {type, detail} (an exception,
the job time limit); re-queued (the worker is shutting down); nothing (the job was taken away from
this worker, e.g. re-queued after a missed heartbeat: whoever holds it now writes the outcome).
A candidate that ends moves its discovery on at once.
"""

from __future__ import annotations

import logging
import threading
import time

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kan_core.errors import TrainingCancelled
from service import discovery
from service.config import Settings
from service.models import Dataset, Job
from service.worker import jobstate
from service.worker.handlers import JobRun, handler_for
from service.worker.progress import ProgressReporter, StopSignal

log = logging.getLogger(__name__)


def run_job(session_factory: sessionmaker[Session], settings: Settings, claim: jobstate.Claim, *,
            shutdown: threading.Event) -> None:
    """Run the claimed job to one of its outcomes. Never raises for a job's own failure."""
    started = time.monotonic()
    stop = StopSignal(session_factory, claim, deadline=started + settings.job_timeout_s, shutdown=shutdown)
    reporter = ProgressReporter(session_factory, claim)
    try:
        with session_factory() as session:
            job = session.get(Job, claim.job_id)
            dataset = session.get(Dataset, job.dataset_id)
        handler_for(job.kind)(JobRun(session_factory, settings, claim, job, dataset, stop, reporter))
    except TrainingCancelled:
        _stopped(session_factory, claim, stop, reporter, settings)
    except Exception as exc:  # the job's own failure: record it, keep the worker alive
        log.exception("job %s failed", claim.job_id)
        with session_factory() as session:
            jobstate.finish_failed(session, claim, type(exc).__name__, str(exc) or repr(exc))
    else:
        log.info("job %s done in %.1f s", claim.job_id, time.monotonic() - started)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _advance_parent(session_factory, settings, claim)


def _advance_parent(session_factory: sessionmaker[Session], settings: Settings, claim: jobstate.Claim) -> None:
    """A candidate just ended: move its discovery on now rather than at the next heartbeat."""
    try:
        with session_factory() as session:
            parent_id = session.scalar(select(Job.parent_job_id).where(Job.id == claim.job_id))
            if parent_id is not None:
                discovery.advance_discovery(session, settings, parent_id)
    except Exception:  # the heartbeat's pass advances it anyway
        log.exception("job %s: could not advance its discovery", claim.job_id)


def _stopped(session_factory: sessionmaker[Session], claim: jobstate.Claim, stop: StopSignal,
             reporter: ProgressReporter, settings: Settings) -> None:
    """The job's StopSignal stopped it: write what it stopped for."""
    if stop.reason in ("cancel", "timeout"):
        reporter.flush()  # keep the history up to the step it stopped at
    with session_factory() as session:
        if stop.reason == "cancel":
            jobstate.finish_cancelled(session, claim)
        elif stop.reason == "timeout":
            jobstate.finish_failed(session, claim, "JobTimeout", jobstate.timeout_detail(settings))
        elif stop.reason == "shutdown":
            jobstate.release(session, claim)
        else:
            log.warning("job %s was taken away from worker %s during training; dropping it",
                        claim.job_id, claim.worker_id)
