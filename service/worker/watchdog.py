"""The local workers' hard limit: a job stuck where it cannot be stopped ends with its process.

A job stops cooperatively: the pipeline asks `StopSignal` before every training step, so a cancel,
the job time limit or a shutdown take effect within one step. Some work has no steps to stop
between: a symbolic fit, or sympy cleaning a formula (trigsimp once ran for minutes on a small
one). Celery workers have a hard time limit for that (service.worker.celery_app); local workers
have this watchdog, run by the worker process's heartbeat thread:

- the job has to stop when a client asked to cancel it, or when it has run job_timeout_s;
- if it is still running job_kill_grace_s after that, the watchdog writes the outcome the job would
  have had (cancelled, or failed with `JobTimeout` saying it could not be interrupted) with the same
  compare-and-set on the claim as the runner, and ends the worker process. The supervisor
  (service.worker.local.WorkerPool) starts a new one, as for any worker process that died.

A job that was taken away from the worker ("lost") is left to whoever holds it now.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings
from service.worker import jobstate

log = logging.getLogger(__name__)

EXIT_STUCK_JOB = 75  # the worker process's exit status after the watchdog ended it (EX_TEMPFAIL)


class StuckJobWatchdog:
    """`check()` once per heartbeat; ends the process through `exit` when the current job overstays."""

    def __init__(self, settings: Settings, session_factory: sessionmaker[Session],
                 current: Callable[[], jobstate.Claim | None], *, clock: Callable[[], float] = time.monotonic,
                 exit: Callable[[int], object] = os._exit):
        self.settings = settings
        self.session_factory = session_factory
        self.current = current
        self.clock = clock
        self.exit = exit
        self._claim: jobstate.Claim | None = None
        self._started = 0.0
        self._due: float | None = None  # when the current job should have stopped

    def check(self) -> str | None:
        """What the current job was ended for ("cancel" | "timeout"), None when it was left running."""
        claim, now = self.current(), self.clock()
        if claim is None:
            self._claim = None
            return None
        if claim != self._claim:  # a new job: its clock starts at its first beat
            self._claim, self._started, self._due = claim, now, None
        with self.session_factory() as session:
            reason = jobstate.stop_reason(session, claim)
        if reason == "lost":
            return None
        if reason is None and now - self._started >= self.settings.job_timeout_s:
            reason = "timeout"
        if reason is None:
            return None
        if self._due is None:
            self._due = now
        if now - self._due < self.settings.job_kill_grace_s:
            return None
        return reason if self._end(claim, reason, now - self._due) else None

    def _end(self, claim: jobstate.Claim, reason: str, overdue: float) -> bool:
        """Write the outcome and end the process; False (nothing done) when the job ended meanwhile."""
        with self.session_factory() as session:
            if reason == "cancel":
                ended = jobstate.finish_cancelled(session, claim)
            else:
                ended = jobstate.finish_failed(
                    session, claim, "JobTimeout",
                    f"{jobstate.timeout_detail(self.settings)} and was still in a step that cannot be interrupted "
                    f"{overdue:.1f} s later; its worker process was restarted")
            if not ended:  # the runner finished it a moment ago: nothing is stuck
                return False
            jobstate.unregister_worker(session, claim.worker_id)  # its replacement registers under a new id
        log.error("job %s did not stop %.1f s after it was asked to (%s); ending worker process %d",
                  claim.job_id, overdue, reason, os.getpid())
        self.exit(EXIT_STUCK_JOB)
        return True
