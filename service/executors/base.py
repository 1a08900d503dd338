"""The executor seam (like Airflow's executors): a small interface, one local and one distributed
implementation. The API calls `submit` after a job row is committed and `cancel` after the row's
cancel flag is set; workers always re-read the row, so an executor may lose nothing but latency."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Executor(ABC):
    name: str

    @abstractmethod
    def submit(self, job_id: str, queue: str) -> None:
        """Make the queued job `job_id` reach a worker consuming `queue` ("cpu" or "gpu")."""

    def cancel(self, job_id: str) -> None:  # noqa: B027 - optional hook
        """Hint that a job was cancelled (its row already says so)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
