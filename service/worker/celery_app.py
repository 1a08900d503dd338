"""Celery workers: job ids arrive over the broker (Redis); each job then runs exactly as on a local worker.

The broker carries only job ids (JSON); the jobs table stays the source of truth. The task `kan.run_job`
claims that one job with a compare-and-set (service.worker.jobstate.claim_job) and runs it with
service.worker.runner.run_job: the same progress writes, cancellation, time limit and guarded finish
as local workers. When the job is not queued any more (a duplicate or stale delivery, a cancelled
job) the claim fails and the message is simply acknowledged.

Delivery: `task_acks_late` (a message is acknowledged when its task returns), `worker_prefetch_multiplier`
1 (a pool process reserves only the message it runs), `task_reject_on_worker_lost` (the message of a
pool process that died goes back to the queue). Soft and hard time limits sit above job_timeout_s,
which the runner enforces itself with a clear error; they only catch a step that never returns.

Every pool process is a worker in the workers table: `worker_process_init` sets its niceness and
torch's threads, opens the database and starts the heartbeat thread (service.worker.heartbeat), which stamps the
process's job, runs the reaper, and sends again the queued jobs whose ids did not reach a worker.
When a worker dies mid-job its message comes back (the pool process died: reject_on_worker_lost) or
stays unacknowledged in Redis (the whole worker died), but the job row still says `running` and that
delivery's claim fails. The job runs again because a surviving worker's reaper sees its heartbeat
stop (heartbeat_timeout_s), re-queues it and sends its id again (service.dispatch.redispatch).

Shutdown: SIGTERM on the main process (docker stop) starts Celery's warm shutdown; it is passed on to
the pool processes, whose running job stops at its next training step and goes back to the queue
without spending an attempt, as on local workers; another worker's heartbeat sends it again.

Queues (service.config): jobs of queue "cpu" go to the broker queue `<queue_prefix>cpu`, which every
worker consumes; "gpu" jobs to `<queue_prefix>gpu`, consumed only by workers with KAN_GPU_WORKER=true.
The application's configuration is service.executors.celery.make_celery, shared with the API.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from celery import Celery, Task, signals
from celery.exceptions import Reject
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from service import limits
from service.config import Settings
from service.executors.celery import TASK_NAME, CeleryExecutor, make_celery
from service.worker import jobstate
from service.worker.heartbeat import Heartbeat, new_worker_id

log = logging.getLogger(__name__)

CLAIM_RETRY_S = 5.0         # the database could not be reached to claim a job: try again this much later


def make_worker_app(settings: Settings) -> Celery:
    """The Celery application (service.executors.celery.make_celery) with the task workers run."""
    app = make_celery(settings)
    app.task(name=TASK_NAME, bind=True)(_run_job_task)
    return app


# --------------------------------------------------------------------------------------------------
# pool processes


@dataclass
class PoolProcess:
    """What a pool process holds while it lives: its database, its worker id, its current job."""

    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    worker_id: str
    stopping: threading.Event = field(default_factory=threading.Event)
    current: jobstate.Claim | None = None
    heartbeat: Heartbeat | None = None
    term_handler_installed: bool = False


_settings: Settings | None = None      # set in the main process by run_celery_worker, inherited by fork
_process: PoolProcess | None = None    # set in each pool process by worker_process_init


def _run_job_task(task: Task, job_id: str) -> None:
    process = _process
    if process is None:
        raise RuntimeError("kan.run_job runs only in pool processes started by `kan-service worker`")
    _hand_back_on_sigterm(process)
    if process.stopping.is_set():
        raise Reject("this worker is shutting down", requeue=True)
    try:
        with process.session_factory() as session:
            claim = jobstate.claim_job(session, process.worker_id, job_id)
    except SQLAlchemyError as exc:
        log.warning("job %s: could not claim it (%s); trying again in %g s", job_id, exc, CLAIM_RETRY_S)
        raise task.retry(exc=exc, countdown=CLAIM_RETRY_S, max_retries=None) from exc
    if claim is None:
        log.info("job %s is not queued (a repeated delivery, or cancelled); nothing to do", job_id)
        return
    from service.worker.runner import run_job

    process.current = claim
    try:
        run_job(process.session_factory, process.settings, claim, shutdown=process.stopping)
    finally:
        process.current = None


def _init_pool_process(**_: Any) -> None:
    """worker_process_init: runs in each pool process once it is forked."""
    global _process
    import torch

    from service.db import make_engine, make_session_factory

    settings = _settings
    assert settings is not None, "run_celery_worker sets the settings before the pool starts"
    os.nice(settings.worker_nice)  # as local workers: training runs on what the API (if here) leaves
    limits.cap_process_memory(settings)  # as local workers: a runaway job fails alone
    torch.set_num_threads(settings.torch_threads)
    engine = make_engine(settings)
    process = PoolProcess(settings, engine, make_session_factory(engine), new_worker_id())
    process.heartbeat = Heartbeat(settings, process.session_factory, process.worker_id, kind="celery",
                                  current=lambda: process.current, executor=CeleryExecutor(settings))
    process.heartbeat.start()
    _process = process
    log.info("worker %s started (%d torch threads)", process.worker_id, settings.torch_threads)


def _hand_back_on_sigterm(process: PoolProcess) -> None:
    """From now on SIGTERM stops the running job at its next step (it is re-queued) instead of killing
    the process mid-job; an idle process still exits as billiard intends. Installed by the first
    task, because billiard sets its own SIGTERM handler after worker_process_init."""
    if process.term_handler_installed:
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        process.stopping.set()
        if process.current is None and callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)
    process.term_handler_installed = True


def _shutdown_pool_process(**_: Any) -> None:
    """worker_process_shutdown: the pool process is exiting."""
    process = _process
    if process is None or process.heartbeat is None:
        return
    process.heartbeat.stop()
    process.heartbeat.executor.close()
    process.engine.dispose()
    log.info("worker %s stopped", process.worker_id)


def _pass_on_shutdown(sig: str = "", how: str = "", **_: Any) -> None:
    """worker_shutting_down, in the main process: a warm shutdown waits for the running tasks, so ask
    the pool processes to stop their jobs at the next step (they re-queue them) rather than finish."""
    if how != "Warm":
        return
    import billiard.process

    children = billiard.process.active_children()
    log.info("%s: asking %d pool process(es) to hand their jobs back", sig or "shutdown", len(children))
    for child in children:
        if child.pid:
            try:
                os.kill(child.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def broker_queues(settings: Settings) -> list[str]:
    """The broker queues this worker consumes."""
    return [settings.broker_queue(q) for q in settings.worker_queues]


def worker_argv(settings: Settings, concurrency: int) -> list[str]:
    return [
        "worker", "--pool=prefork", f"--concurrency={concurrency}", f"--queues={','.join(broker_queues(settings))}",
        f"--hostname=kan-{os.getpid()}@%h", f"--loglevel={settings.log_level.upper()}",
        "--without-gossip", "--without-mingle",  # the jobs table already says who does what
    ]


def run_celery_worker(settings: Settings, concurrency: int) -> None:
    """Run a Celery worker with `concurrency` pool processes until SIGTERM / SIGINT (blocks)."""
    global _settings
    _settings = settings
    signals.worker_process_init.connect(_init_pool_process, weak=False)
    signals.worker_process_shutdown.connect(_shutdown_pool_process, weak=False)
    signals.worker_shutting_down.connect(_pass_on_shutdown, weak=False)
    app = make_worker_app(settings)
    log.info("starting a Celery worker: %d pool process(es), queues %s", concurrency,
             ",".join(broker_queues(settings)))
    app.worker_main(argv=worker_argv(settings, concurrency))
