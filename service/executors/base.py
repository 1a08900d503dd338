"""The executor seam (like Airflow's executors): a small interface, one local and one distributed
implementation. The API calls `submit` after a job row is committed and `cancel` after the row's
cancel flag is set; workers always re-read the row, so an executor may lose nothing but latency.

An executor that pushes job ids to workers (`pushes = True`) may fail to deliver one (the broker is
down) or deliver one twice (a redelivery): service.dispatch records each successful send in
`Job.dispatched_at` and sends again what did not arrive; a second delivery is harmless because a
worker claims a job with a compare-and-set that only succeeds while the job is queued.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class DispatchError(Exception):
    """The executor could not hand a job id over (its broker is unreachable); the job stays queued."""


class Executor(ABC):
    name: ClassVar[str]
    #: True when job ids are pushed to workers (and a lost push must be sent again); False when
    #: workers find queued jobs by polling the jobs table themselves.
    pushes: ClassVar[bool] = True

    @abstractmethod
    def submit(self, job_id: str, queue: str) -> None:
        """Make the queued job `job_id` reach a worker consuming `queue` ("cpu" or "gpu").
        Raises DispatchError when it cannot."""

    def cancel(self, job_id: str) -> None:  # noqa: B027 - optional hook
        """Hint that a job was cancelled (its row already says so)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
