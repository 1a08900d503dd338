"""kan_core.time_cap: a sympy step past its cap stops, and the process's own timer survives it."""

from __future__ import annotations

import signal
import threading

import numpy as np
import pytest
import sympy

from kan_core import forms, time_cap
from kan_core.time_cap import TimeCapExceeded


def _forever() -> None:
    while True:
        pass


def test_a_step_past_its_cap_raises():
    with pytest.raises(TimeCapExceeded):
        with time_cap.time_cap(0.05):
            _forever()


def test_an_earlier_timer_and_handler_are_given_back():
    fired = []
    old = signal.signal(signal.SIGALRM, lambda *_: fired.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 30.0)
        with time_cap.time_cap(1.0):
            pass
        left = signal.getitimer(signal.ITIMER_REAL)[0]
        assert 0 < left <= 30.0 and not fired
        assert signal.getsignal(signal.SIGALRM) is not None and signal.getsignal(signal.SIGALRM) != signal.SIG_DFL
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old if old is not None else signal.SIG_DFL)


def test_outside_the_main_thread_the_step_runs_uncapped():
    done = []

    def work() -> None:
        with time_cap.time_cap(0.01):
            done.append(sum(range(10)))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert done == [45]


def test_the_cap_must_be_positive():
    with pytest.raises(ValueError, match="seconds"):
        with time_cap.time_cap(0):
            pass


def test_a_judge_form_that_never_ends_is_skipped(monkeypatch):
    """A rewrite that runs away (sympy's cancel did, for minutes, on a 3-variable formula) costs its
    cap; the next rewrites still run."""
    x = sympy.Symbol("x")
    monkeypatch.setattr(time_cap, "SYMPY_STEP_SECONDS", 0.05)
    monkeypatch.setattr(forms, "JUDGE_REWRITES", (lambda e, pos: _forever(), lambda e, pos: forms.join_roots(e)))
    X = np.linspace(1.0, 2.0, 20).reshape(-1, 1)  # (N, 1)
    assert forms.judge_forms(sympy.sqrt(x) * sympy.sqrt(x + 1), ["x"], X) == sympy.sqrt(x * (x + 1))
