"""A wall-clock cap on a call into sympy's algebra.

sympy's rewrites (cancel's multivariate gcds, exptrigsimp, trigsimp) can run for many minutes on a
formula of twenty operations, and nothing in sympy can be told to stop; a discovery whose budget is
60 s then sat for over ten minutes in one cleanup step. `time_cap` bounds such a step: inside it, a
step that runs longer than ``seconds`` raises `TimeCapExceeded` (the caller keeps the formula as
it was). It uses the interval timer (SIGALRM), which Python delivers between bytecodes of sympy's
pure-Python code, so it works in a process's main thread on POSIX; elsewhere (another thread,
Windows) the step runs uncapped. The timer is process state: `time_cap` restores any timer and
handler that was set before it (a test runner's timeout, an enclosing cap) when it exits.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

SYMPY_STEP_SECONDS = 5.0  # one rewrite of one formula: normally well under a second


class TimeCapExceeded(Exception):
    """A capped step ran longer than its cap."""


@contextmanager
def time_cap(seconds: float | None = None) -> Iterator[None]:
    """Raise `TimeCapExceeded` in the block once it has run ``seconds`` (> 0; default
    SYMPY_STEP_SECONDS) of wall clock."""
    seconds = SYMPY_STEP_SECONDS if seconds is None else seconds
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0, got {seconds!r}")
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame) -> None:
        raise TimeCapExceeded(f"step took over {seconds:g} s")

    start = time.monotonic()
    left = signal.getitimer(signal.ITIMER_REAL)[0]  # an earlier timer's remaining seconds (0: none)
    old_handler = signal.signal(signal.SIGALRM, on_alarm)
    _, old_interval = signal.setitimer(signal.ITIMER_REAL, min(seconds, left) if left > 0 else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler if old_handler is not None else signal.SIG_DFL)
        if left > 0:  # the earlier timer gets back what it had left (at least a moment)
            signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - start), 1e-3), old_interval)
