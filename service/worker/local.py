"""Local workers: processes on this machine that poll the database for queued jobs and run them.

`run_workers(settings, n)` starts n worker processes (multiprocessing "spawn": no state inherited
from the caller, which may be an API process) and supervises them until SIGTERM / SIGINT or until
its `stop` event is set; a worker process that dies is started again. `WorkerPool` is the same
supervisor for callers that want to run something else meanwhile (tests, `kan-service serve`).

Each worker process (`LocalWorker`):
- sets torch's intra-op threads to settings.torch_threads (n workers x threads <= cores);
- registers itself in the workers table and runs a heartbeat thread (service.worker.heartbeat) that
  stamps its Worker row and its current job every heartbeat_interval_s, and runs the reaper
  (service.worker.jobstate.reap), so jobs of workers that died are re-queued by the survivors;
- claims the oldest queued job of its queues (settings.worker_queues: "cpu", plus "gpu" on a GPU
  worker) with an atomic compare-and-set and runs it (service.worker.runner);
- on SIGTERM / SIGINT stops its job at the next training step, puts it back in the queue without
  counting the attempt, unregisters and exits. It also exits when its supervisor disappears;
- under a supervisor, ends itself when its job is stuck past its time limit or a cancel in a step
  that cannot be interrupted (service.worker.watchdog); the supervisor starts another.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from sqlalchemy.exc import SQLAlchemyError

from service import limits
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.executors import make_executor
from service.worker import jobstate
from service.worker.heartbeat import Heartbeat, new_worker_id
from service.worker.watchdog import StuckJobWatchdog

log = logging.getLogger(__name__)

STOP_GRACE_S = 30.0      # how long a stopping supervisor waits for a worker before killing it
RESTART_DELAY_S = 1.0    # pause before a dead worker process is replaced


class LocalWorker:
    """One worker: claim, run, repeat. `run()` blocks until `stop()` (or SIGTERM in `run_worker`)."""

    def __init__(self, settings: Settings, *, kind: str = "local", watch_parent: bool = False):
        self.settings = settings
        self.kind = kind
        self.id = new_worker_id()
        self.queues = settings.worker_queues
        self.stopping = threading.Event()
        self.current: jobstate.Claim | None = None
        self._parent_pid = os.getppid() if watch_parent else None

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        import torch  # workers only: the API process never needs torch's thread pool

        from service.worker.runner import run_job

        torch.set_num_threads(self.settings.torch_threads)
        engine = make_engine(self.settings)
        factory = make_session_factory(engine)
        # only a supervised process may end itself: its supervisor starts another
        watchdog = StuckJobWatchdog(self.settings, factory, lambda: self.current) if self._parent_pid is not None else None
        heart = Heartbeat(self.settings, factory, self.id, kind=self.kind, current=lambda: self.current,
                          executor=make_executor(self.settings), on_beat=lambda: self._on_beat(watchdog))
        heart.start()
        log.info("worker %s started (queues %s, %d torch threads)", self.id, ",".join(self.queues),
                 self.settings.torch_threads)
        try:
            while not self.stopping.is_set():
                try:
                    with factory() as session:
                        claim = jobstate.claim_next(session, self.id, self.queues)
                except SQLAlchemyError:  # database busy or away: wait, then look again
                    log.exception("worker %s: could not look for jobs", self.id)
                    self.stopping.wait(self.settings.heartbeat_interval_s)
                    continue
                if claim is None:
                    self.stopping.wait(self.settings.poll_interval_s)
                    continue
                self.current = claim
                try:
                    run_job(factory, self.settings, claim, shutdown=self.stopping)
                finally:
                    self.current = None
        finally:
            heart.stop()
            engine.dispose()
            log.info("worker %s stopped", self.id)

    def _on_beat(self, watchdog: StuckJobWatchdog | None) -> None:
        self._check_parent()
        if watchdog is not None:
            try:
                watchdog.check()
            except Exception:  # a busy database: look again at the next beat
                log.exception("worker %s: stuck-job check failed", self.id)

    def _check_parent(self) -> None:
        if self._parent_pid is not None and os.getppid() != self._parent_pid:
            log.warning("worker %s: supervisor %d is gone; stopping", self.id, self._parent_pid)
            self.stop()


def run_worker(settings: Settings, *, watch_parent: bool = False) -> None:
    """Run one LocalWorker in this process until SIGTERM / SIGINT (the entry of a worker process)."""
    worker = LocalWorker(settings, watch_parent=watch_parent)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("worker %s: %s, finishing", worker.id, signal.Signals(signum).name)
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run()


def _pool_child(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    # training takes a whole core per worker; at a lower priority it runs on what the API leaves, so
    # a busy API keeps its latency and an idle one costs training nothing
    os.nice(settings.worker_nice)
    limits.cap_process_memory(settings)  # a runaway job fails alone instead of starving the machine
    run_worker(settings, watch_parent=True)


class WorkerPool:
    """Starts n worker processes and keeps n alive until `stop()`."""

    def __init__(self, settings: Settings, n: int):
        self.settings = settings
        self.n = n
        self.processes: list[BaseProcess] = []
        self._ctx = multiprocessing.get_context("spawn")

    def _spawn(self, index: int) -> BaseProcess:
        process = self._ctx.Process(target=_pool_child, args=(self.settings,), name=f"kan-worker-{index}", daemon=False)
        process.start()
        log.info("started worker process %s (pid %s)", process.name, process.pid)
        return process

    def start(self) -> WorkerPool:
        self.processes = [self._spawn(i) for i in range(self.n)]
        return self

    def replace_dead(self) -> None:
        for i, process in enumerate(self.processes):
            if not process.is_alive():
                log.warning("worker process %s (pid %s) exited with %s; starting another",
                            process.name, process.pid, process.exitcode)
                process.close()
                self.processes[i] = self._spawn(i)

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: finish the step, re-queue the job, exit
        deadline = time.monotonic() + grace_s
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                log.warning("worker process %s did not stop in %.0f s; killing it", process.name, grace_s)
                process.kill()
                process.join()
        self.processes = []

    def __enter__(self) -> WorkerPool:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_workers(settings: Settings, n: int | None = None, *, stop: threading.Event | None = None) -> None:
    """Run `n` (default settings.workers) worker processes until SIGTERM / SIGINT or `stop` is set.

    Blocks. Signal handlers are installed only when called from the main thread; from another
    thread, set `stop` to end it."""
    n = settings.workers if n is None else n
    if n <= 0:
        log.info("no local workers configured")
        return
    stop = stop or threading.Event()
    previous: dict[int, object] = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    pool = WorkerPool(settings, n).start()
    try:
        while not stop.wait(RESTART_DELAY_S):
            pool.replace_dead()
    finally:
        log.info("stopping %d worker process(es)", n)
        pool.stop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
