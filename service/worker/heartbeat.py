"""A worker process's heartbeat thread, the same for local and Celery workers.

`Heartbeat.start()` registers the worker in the workers table, then every heartbeat_interval_s the
thread
- stamps the worker's row and its current job (so nobody takes the job for lost);
- runs the reaper (service.worker.jobstate.reap): jobs whose worker went silent are re-queued, failed or
  cancelled; every worker does this, each change is a compare-and-set;
- sends again the queued jobs whose ids did not reach a worker (service.dispatch.redispatch): the
  jobs the reaper just re-queued, and those the API could not send; a no-op for the local executor;
- registers the worker again if a reaper took it for dead during a long pause.
A busy or unreachable database is logged and retried at the next beat, never fatal.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from service import discovery, dispatch
from service.config import Settings
from service.db import session_scope
from service.executors.base import Executor
from service.worker import jobstate

log = logging.getLogger(__name__)


def new_worker_id() -> str:
    """A worker id unique across machines and restarts: host, process id, random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(eq=False)
class Heartbeat:
    """One worker's heartbeat: `current()` is the job it runs; `on_beat` is called after every beat."""

    settings: Settings
    session_factory: sessionmaker[Session]
    worker_id: str
    _: KW_ONLY
    kind: str
    current: Callable[[], jobstate.Claim | None]
    executor: Executor
    on_beat: Callable[[], None] | None = None
    _done: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def start(self) -> None:
        self._register()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop beating and remove the worker's row."""
        self._done.set()
        if self._thread is not None:
            self._thread.join(timeout=self.settings.heartbeat_interval_s + 5)
        try:
            with session_scope(self.session_factory) as session:
                jobstate.unregister_worker(session, self.worker_id)
        except Exception:  # the reaper forgets a silent worker anyway
            log.exception("worker %s: could not unregister", self.worker_id)

    def _register(self) -> None:
        with self.session_factory() as session:
            jobstate.register_worker(session, self.worker_id, kind=self.kind, hostname=socket.gethostname(),
                                 pid=os.getpid())

    def beat(self) -> None:
        """One beat (what the thread does every heartbeat_interval_s)."""
        with self.session_factory() as session:
            if not jobstate.heartbeat(session, self.worker_id, self.current()):
                log.warning("worker %s was presumed dead; registering again", self.worker_id)
                self._register()
            jobstate.reap(session, self.settings)
            discovery.advance_all(session, self.settings)  # deadlines of discoveries
            dispatch.redispatch(session, self.settings, self.executor)

    def _run(self) -> None:
        while not self._done.wait(self.settings.heartbeat_interval_s):
            try:
                self.beat()
            except Exception:  # a busy or unreachable database (or broker) must not kill the heartbeat
                log.exception("worker %s: heartbeat failed", self.worker_id)
            if self.on_beat is not None:
                self.on_beat()
