"""Local executor: nothing to deliver. Local workers (service.worker.local) poll the database for
queued jobs and claim them with an atomic compare-and-set, so submit is a no-op."""

from __future__ import annotations

from service.config import Settings
from service.executors.base import Executor


class LocalExecutor(Executor):
    name = "local"
    pushes = False

    def __init__(self, settings: Settings):
        self.settings = settings

    def submit(self, job_id: str, queue: str) -> None:
        return None
