"""Celery executor: the API sends each job's id to the Celery queue of the job's queue ("cpu" or
"gpu") over the broker (Redis); Celery workers (service.worker.celery_app) claim and run it.

Only ids travel, as JSON; there is no result backend. Sending does not wait long for a broker that
is down: it raises DispatchError, the job stays queued in the database, and a worker's heartbeat
sends it again later (service.dispatch). Cancellation needs no message: the running task reads the
job's cancel flag at every step, and a queued job's message finds the job cancelled and is dropped.
"""

from __future__ import annotations

from celery import Celery
from kombu.exceptions import KombuError
from kombu.utils.url import maybe_sanitize_url
from redis.exceptions import RedisError

from service.config import Settings
from service.executors.base import DispatchError, Executor
from service.worker.celery_app import TASK_NAME, make_celery, queue_name

# a broker that refuses connections fails the send at once; one that hangs, within about 3 s
SEND_RETRY_POLICY = {"max_retries": 1, "interval_start": 0.0, "interval_step": 0.2, "interval_max": 0.2}


class CeleryExecutor(Executor):
    name = "celery"
    pushes = True

    def __init__(self, settings: Settings, app: Celery | None = None):
        self.settings = settings
        self.app = app or make_celery(settings)

    def submit(self, job_id: str, queue: str) -> None:
        try:
            self.app.send_task(TASK_NAME, args=[job_id], queue=queue_name(self.settings, queue),
                               retry=True, retry_policy=SEND_RETRY_POLICY)
        except (KombuError, RedisError, OSError) as exc:
            broker = maybe_sanitize_url(self.settings.broker_url)
            raise DispatchError(f"broker {broker} unreachable ({type(exc).__name__}: {exc})") from exc

    def close(self) -> None:
        self.app.close()
