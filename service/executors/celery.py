"""Celery executor: the API sends each job's id to the broker queue of the job's queue ("cpu" or
"gpu") over Redis; Celery workers (service.worker.celery_app) claim and run it.

`make_celery` is the Celery application's configuration, the same for the API (which only sends,
by task name) and for workers (which add the task): the worker imports it from here, never the other
way round. Only ids travel, as JSON; there is no result backend. Sending does not wait long for a
broker that is down: it raises DispatchError, the job stays queued in the database, and a worker's
heartbeat sends it again later (service.dispatch). Cancellation needs no message: the running task
reads the job's cancel flag at every step, and a queued job's message finds the job cancelled and is
dropped.
"""

from __future__ import annotations

from celery import Celery
from kombu import Queue
from kombu.exceptions import KombuError
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import RedisError

from service.config import CPU_QUEUE, QUEUES, Settings
from service.executors.base import DispatchError, Executor

TASK_NAME = "kan.run_job"
TIME_LIMIT_GRACE_S = 30.0   # soft limit = job_timeout_s + this; hard limit = soft limit + this
# a broker that refuses connections fails the send at once; one that hangs, within about 3 s
SEND_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}


def make_celery(settings: Settings) -> Celery:
    """The Celery application, without its task (service.worker.celery_app registers it on workers)."""
    soft_limit = settings.job_timeout_s + TIME_LIMIT_GRACE_S
    hard_limit = soft_limit + TIME_LIMIT_GRACE_S
    app = Celery("kan", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,  # no result backend: outcomes are in the jobs table
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_soft_time_limit=soft_limit,
        task_time_limit=hard_limit,
        task_queues=[Queue(settings.broker_queue(q)) for q in QUEUES],
        task_default_queue=settings.broker_queue(CPU_QUEUE),
        task_create_missing_queues=False,
        # Redis redelivers a message that is unacknowledged this long; no job may run longer.
        broker_transport_options={"visibility_timeout": hard_limit + 60, "socket_connect_timeout": 3},
        broker_connection_timeout=3,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,  # service.cli configures logging
        worker_send_task_events=False,
    )
    return app


class CeleryExecutor(Executor):
    name = "celery"
    pushes = True

    def __init__(self, settings: Settings, app: Celery | None = None):
        self.settings = settings
        self.app = app or make_celery(settings)

    def submit(self, job_id: str, queue: str) -> None:
        try:
            self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.broker_queue(queue),
                               retry=True, retry_policy=SEND_RETRY_POLICY)
        except (KombuError, RedisError, OSError) as exc:
            broker = maybe_sanitize_url(self.settings.broker_url)
            raise DispatchError(f"broker {broker} unreachable ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self.app.close()
