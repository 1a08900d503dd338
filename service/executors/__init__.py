"""How job ids reach workers. The database holds job state; an executor only delivers ids.

- `local`: worker processes on this machine poll the database and claim jobs atomically.
- `celery`: job ids travel over a Celery broker (Redis) to workers anywhere.
"""

from __future__ import annotations

from service.config import Settings
from service.executors.base import Executor


def make_executor(settings: Settings) -> Executor:
    if settings.executor == "celery":
        from service.executors.celery import CeleryExecutor

        return CeleryExecutor(settings)
    from service.executors.local import LocalExecutor

    return LocalExecutor(settings)
