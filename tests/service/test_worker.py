"""Workers for real: separate processes (multiprocessing spawn) training with kan_core on a real
SQLite file, while the API (in-process TestClient) queues, follows and cancels jobs."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jobs_support import FAST, REAP_FAST, insert_dataset, tiny_pipeline, wait_for
from kan_core.pipeline import ProgressEvent
from service.models import Job, JobKind, Model
from service.worker import jobstate
from service.worker.handlers import HANDLERS, handler_for
from service.worker.local import WorkerPool
from service.worker.runner import ProgressReporter, StopSignal

JOB_WAIT_S = 300  # a hang bound: jobs here take seconds, more on a loaded machine
SETTINGS = FAST  # the conftest's `settings`: workers that notice jobs and beat quickly


@pytest.fixture
def dataset_id(session_factory) -> str:
    return insert_dataset(session_factory, n_train=200, n_test=100)


def _submit(client: TestClient, dataset_id: str, pipeline: dict) -> str:
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, **pipeline})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _wait_final(client: TestClient, job_id: str, timeout: float = JOB_WAIT_S) -> dict:
    def final():
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout, 0.1, f"job {job_id} to finish")


def _wait_training(client: TestClient, job_id: str, min_step: int = 1) -> dict:
    def training():
        job = client.get(f"/v1/jobs/{job_id}").json()
        progress = job["progress"] or {}
        return job if job["status"] == "running" and progress.get("step", 0) >= min_step else None

    return wait_for(training, JOB_WAIT_S, 0.05, f"job {job_id} to train")


def _model_count(session_factory, job_id: str | None = None) -> int:
    with session_factory() as session:
        stmt = select(func.count()).select_from(Model)
        return session.scalar(stmt.where(Model.job_id == job_id) if job_id else stmt)


LONG = tiny_pipeline(steps=20_000)  # minutes of training: only ever stopped, never finished


# --------------------------------------------------------------------------------------------------
# in-process units: throttling and stop checks


def _event(step: int, phase: str = "step") -> ProgressEvent:
    return ProgressEvent(stage_index=0, stage_name="train", stage_kind="train", n_stages=1, step=step, steps=100,
                         train_rmse=1.0 / (step + 1), test_rmse=float("nan"), reg=0.0, phase=phase)


def test_progress_is_throttled_but_history_is_complete(client, session_factory, dataset_id):
    job_id = _submit(client, dataset_id, tiny_pipeline())
    with session_factory() as session:
        claim = jobstate.claim_next(session, "w", ["cpu"])
    now = [0.0]
    reporter = ProgressReporter(session_factory, claim, interval_s=0.25, clock=lambda: now[0])
    reporter(_event(0, "start"))
    for step in range(1, 101):
        now[0] += 0.01  # 100 steps in one second
        reporter(_event(step))
    reporter(_event(100, "end"))
    assert reporter.writes <= 2 + 100 * 0.01 / 0.25 + 1  # start, end, ~one per 0.25 s
    history = client.get(f"/v1/jobs/{job_id}/history").json()["points"]
    assert [p["step"] for p in history] == list(range(1, 101))
    assert history[0]["test_rmse"] is None  # NaN is stored as null, never as invalid JSON
    progress = client.get(f"/v1/jobs/{job_id}").json()["progress"]
    assert (progress["step"], progress["steps"], progress["stage"]) == (100, 100, "train")


def test_stop_signal_reasons(client, session_factory, dataset_id):
    job_id = _submit(client, dataset_id, tiny_pipeline())
    with session_factory() as session:
        claim = jobstate.claim_next(session, "w", ["cpu"])
    now, shutdown = [0.0], threading.Event()
    stop = StopSignal(session_factory, claim, deadline=10.0, shutdown=shutdown, interval_s=0.05, clock=lambda: now[0])
    assert not stop()
    client.post(f"/v1/jobs/{job_id}/cancel")
    assert not stop()  # checked at most every interval_s
    now[0] += 0.05
    assert stop() and stop.reason == "cancel"
    assert StopSignal(session_factory, claim, deadline=0.0, shutdown=shutdown)() is True
    shutdown.set()
    late = StopSignal(session_factory, claim, deadline=10.0, shutdown=shutdown)
    assert late() and late.reason == "shutdown"


def test_every_kind_a_worker_can_claim_has_a_handler():
    """Workers pick a job's handler by its kind; discovery parents are never claimed (they advance on
    events), so a worker that somehow got one fails it with a clear error instead of guessing."""
    assert set(HANDLERS) == set(JobKind) - {JobKind.discovery}
    with pytest.raises(LookupError, match="discovery"):
        handler_for(JobKind.discovery)


# --------------------------------------------------------------------------------------------------
# worker processes


def test_two_workers_run_twenty_concurrent_jobs_each_once(app, client, session_factory, settings, dataset_id):
    barrier, ids = threading.Barrier(4), []

    def submit(n: int) -> None:
        with TestClient(app) as c:
            barrier.wait()
            ids.extend(_submit(c, dataset_id, tiny_pipeline(steps=3)) for _ in range(n))

    threads = [threading.Thread(target=submit, args=(5,)) for _ in range(4)]
    with WorkerPool(settings, 2):
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        finals = [_wait_final(client, job_id) for job_id in ids]
    assert len(ids) == 20
    assert {j["status"] for j in finals} == {"succeeded"}, [j["error"] for j in finals if j["error"]]
    assert {j["attempts"] for j in finals} == {1}  # none ran twice
    assert _model_count(session_factory) == 20 and len({j["model_id"] for j in finals}) == 20
    with session_factory() as session:
        workers = set(session.scalars(select(Job.worker_id)))
    assert len(workers) == 2  # both took a share
    history = client.get(f"/v1/jobs/{ids[0]}/history").json()["points"]
    assert [p["step"] for p in history] == [1, 2, 3]
    model = _model_for(session_factory, finals[0]["model_id"])
    assert model.width == [2, 2, 1] and model.metrics["final"]["test_rmse"] is not None
    assert model.formulas is None  # no symbolic stage: spline edges, no closed form


def _model_for(session_factory, model_id: str) -> Model:
    with session_factory() as session:
        return session.get(Model, model_id)


def test_cancel_stops_a_running_job_within_a_step(client, session_factory, settings, dataset_id):
    with WorkerPool(settings, 1):
        job_id = _submit(client, dataset_id, LONG)
        _wait_training(client, job_id, min_step=5)
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        job = _wait_final(client, job_id)
    assert job["status"] == "cancelled" and job["model_id"] is None
    steps = [p["step"] for p in client.get(f"/v1/jobs/{job_id}/history").json()["points"]]
    assert 5 <= steps[-1] < 20_000 and steps == list(range(1, steps[-1] + 1))


@pytest.mark.slow
def test_job_time_limit_fails_the_job(client, make_settings, dataset_id):
    with WorkerPool(make_settings(**FAST, job_timeout_s=1.0), 1):
        job = _wait_final(client, _submit(client, dataset_id, LONG))
    assert job["status"] == "failed" and job["error"]["type"] == "JobTimeout"
    assert "job_timeout_s=1" in job["error"]["detail"]


def test_a_failing_job_is_failed_and_the_worker_carries_on(client, make_settings, dataset_id):
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA to make the engine refuse device=cuda")
    with WorkerPool(make_settings(**FAST, gpu_worker=True), 1):
        bad = _submit(client, dataset_id, {**tiny_pipeline(), "model": {"width": [2, 2, 1], "device": "cuda"}})
        good = _submit(client, dataset_id, tiny_pipeline())
        failed, ok = _wait_final(client, bad), _wait_final(client, good)
    assert failed["status"] == "failed" and failed["error"]["type"] == "ValueError"
    assert "cuda" in failed["error"]["detail"].lower()
    assert ok["status"] == "succeeded"


@pytest.mark.slow
def test_sigterm_requeues_the_running_job_without_spending_an_attempt(client, settings, dataset_id):
    pool = WorkerPool(settings, 1).start()
    try:
        job_id = _submit(client, dataset_id, LONG)
        _wait_training(client, job_id)
    finally:
        pool.stop(grace_s=20)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"], job["started_at"]) == ("queued", 0, None)


def test_sigkilled_worker_job_is_retried_and_makes_one_model(client, session_factory, settings, make_settings,
                                                            dataset_id):
    job_id = _submit(client, dataset_id, tiny_pipeline(steps=400))
    first = WorkerPool(settings, 1).start()
    try:
        _wait_training(client, job_id)
        os.kill(first.processes[0].pid, signal.SIGKILL)
        first.processes[0].join()
    finally:
        first.stop()
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "running"  # nobody knows yet
    with WorkerPool(make_settings(**REAP_FAST), 1):  # the only live worker: it reaps the dead one's job
        job = _wait_final(client, job_id)
    # at least one retry; on a loaded machine the 2 s REAP_FAST timeout can also re-queue the live
    # replacement once (seen: attempts 3), which is the reaper doing its job, not a second model
    assert job["status"] == "succeeded" and job["attempts"] >= 2
    assert _model_count(session_factory, job_id) == 1


@pytest.mark.slow
def test_a_paused_zombie_worker_cannot_finish_a_retried_job(client, session_factory, settings, make_settings,
                                                            dataset_id):
    """SIGSTOP a worker mid-job (no heartbeats: it looks dead), let another worker redo the job,
    then SIGCONT the zombie: it notices it lost the job and writes nothing."""
    job_id = _submit(client, dataset_id, tiny_pipeline(steps=400))
    zombie = WorkerPool(settings, 1).start()
    try:
        _wait_training(client, job_id)
        os.kill(zombie.processes[0].pid, signal.SIGSTOP)
        with WorkerPool(make_settings(**REAP_FAST), 1):  # the only live worker while the zombie is stopped
            job = _wait_final(client, job_id)
        os.kill(zombie.processes[0].pid, signal.SIGCONT)
        time.sleep(2.0)  # it resumes training, finds the job is no longer its own, and drops it
    finally:
        zombie.stop()
    assert job["status"] == "succeeded" and job["attempts"] >= 2  # >= : see the SIGKILL test
    assert _model_count(session_factory, job_id) == 1
    assert client.get(f"/v1/jobs/{job_id}").json()["model_id"] == job["model_id"]

