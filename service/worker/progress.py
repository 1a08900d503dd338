"""The pipeline's two callbacks on a worker, each touching the database only in short transactions:

- `ProgressReporter` (`on_progress`) buffers every step's losses and writes Job.progress plus the
  new Job.history points at most every PROGRESS_INTERVAL_S, and at the start and end of every stage;
- `StopSignal` (`should_stop`) reads the job's cancel flag and ownership (at most every
  STOP_CHECK_INTERVAL_S, so fast steps do not hammer the database) and also trips on the job time
  limit and on worker shutdown.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from kan_core.pipeline import ProgressEvent
from service.worker import jobstate

PROGRESS_INTERVAL_S = 0.25
STOP_CHECK_INTERVAL_S = 0.05


def finite(value: Any) -> float | None:
    """A float for JSON: None for a missing or non-finite value."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ProgressReporter:
    """The pipeline's `on_progress`: throttled writes of Job.progress and Job.history."""

    def __init__(self, session_factory: sessionmaker[Session], claim: jobstate.Claim, *,
                 interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.session_factory = session_factory
        self.claim = claim
        self.interval_s = interval_s
        self.clock = clock
        self.progress: dict[str, Any] | None = None
        self._points: list[dict[str, Any]] = []
        self._last_write = -math.inf
        self.writes = 0

    def __call__(self, event: ProgressEvent) -> None:
        self.progress = {"stage": event.stage_name, "stage_index": event.stage_index, "stages": event.n_stages,
                         "step": event.step, "steps": event.steps, "train_rmse": finite(event.train_rmse),
                         "test_rmse": finite(event.test_rmse)}
        if event.phase == "step":
            self._points.append({"stage": event.stage_name, "stage_index": event.stage_index, "step": event.step,
                                 "train_rmse": finite(event.train_rmse), "test_rmse": finite(event.test_rmse),
                                 "reg": finite(event.reg)})
            if self.clock() - self._last_write < self.interval_s:
                return
        self.flush()  # every stage start and end, and steps at most every interval_s

    def flush(self) -> bool:
        """Write what is buffered (False when the job is no longer this worker's)."""
        if self.progress is None:
            return True
        with self.session_factory() as session:
            owned = jobstate.record_progress(session, self.claim, self.progress, self._points)
        self._points = []
        self._last_write = self.clock()
        self.writes += 1
        return owned


@dataclass(eq=False)
class StopSignal:
    """The pipeline's `should_stop`; `reason` says why it returned True."""

    session_factory: sessionmaker[Session]
    claim: jobstate.Claim
    _: KW_ONLY
    deadline: float
    shutdown: threading.Event
    interval_s: float = STOP_CHECK_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    reason: str | None = field(default=None, init=False)  # cancel | lost | timeout | shutdown
    _last_check: float = field(default=-math.inf, init=False, repr=False)

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self._check()
        return self.reason is not None

    def _check(self) -> str | None:
        now = self.clock()
        if self.shutdown.is_set():
            return "shutdown"
        if now >= self.deadline:
            return "timeout"
        if now - self._last_check < self.interval_s:
            return None
        self._last_check = now
        with self.session_factory() as session:
            return jobstate.stop_reason(session, self.claim)
