"""The local workers' hard limit (service.worker.watchdog): a job that does not stop after its time
limit or a cancel is ended with its worker process. Real app and SQLite file; the watchdog's clock
and its process exit are injected, so no test waits and none kills the test process."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from jobs_support import FAST, insert_dataset, tiny_pipeline
from service.config import Settings
from service.models import Job, JobStatus, Worker
from service.worker import jobstate
from service.worker.watchdog import EXIT_STUCK_JOB, StuckJobWatchdog

TIMEOUT_S, GRACE_S = 10.0, 5.0


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(**FAST, job_timeout_s=TIMEOUT_S, job_kill_grace_s=GRACE_S)


class Harness:
    """A claimed job, a registered worker and a watchdog over them, on a clock the test moves."""

    def __init__(self, client, session_factory, settings: Settings):
        self.factory = session_factory
        dataset = insert_dataset(session_factory)
        self.job_id = client.post("/v1/jobs", json={"dataset_id": dataset, **tiny_pipeline()}).json()["id"]
        with session_factory() as session:
            jobstate.register_worker(session, "w1", kind="local", hostname="test", pid=1)
            self.claim: jobstate.Claim | None = jobstate.claim_next(session, "w1", ["cpu"])
        assert self.claim is not None and self.claim.job_id == self.job_id
        self.now = 1000.0
        self.exits: list[int] = []
        self.watchdog = StuckJobWatchdog(settings, session_factory, lambda: self.claim, clock=lambda: self.now,
                                         exit=self.exits.append)

    def at(self, elapsed: float) -> str | None:
        self.now = 1000.0 + elapsed
        return self.watchdog.check()

    def job(self) -> Job:
        with self.factory() as session:
            return session.get(Job, self.job_id)

    def worker_registered(self) -> bool:
        with self.factory() as session:
            return session.scalar(select(Worker.id).where(Worker.id == "w1")) is not None


@pytest.fixture
def harness(client, session_factory, settings) -> Harness:
    return Harness(client, session_factory, settings)


def test_a_job_stuck_past_its_time_limit_fails_and_its_process_ends(harness: Harness) -> None:
    for elapsed in (0.0, TIMEOUT_S - 0.1, TIMEOUT_S, TIMEOUT_S + GRACE_S - 0.1):  # due at TIMEOUT_S, then grace
        assert harness.at(elapsed) is None and harness.exits == []
        assert harness.job().status == JobStatus.running
    assert harness.at(TIMEOUT_S + GRACE_S) == "timeout"
    assert harness.exits == [EXIT_STUCK_JOB]
    job = harness.job()
    assert job.status == JobStatus.failed and job.finished_at is not None
    assert job.error["type"] == "JobTimeout" and "cannot be interrupted" in job.error["detail"], job.error
    assert not harness.worker_registered()  # the replacement process registers under its own id


def test_a_cancel_the_job_does_not_honour_ends_it_after_the_grace(client, harness: Harness) -> None:
    assert harness.at(0.0) is None
    assert client.post(f"/v1/jobs/{harness.job_id}/cancel").status_code == 202
    assert harness.at(1.0) is None  # asked: the job has GRACE_S to stop by itself
    assert harness.at(1.0 + GRACE_S - 0.1) is None and harness.job().status == JobStatus.running
    assert harness.at(1.0 + GRACE_S) == "cancel" and harness.exits == [EXIT_STUCK_JOB]
    assert harness.job().status == JobStatus.cancelled


def test_a_job_that_ends_in_time_or_moves_on_is_left_alone(harness: Harness, session_factory) -> None:
    assert harness.at(0.0) is None
    assert harness.at(TIMEOUT_S) is None  # due now
    with session_factory() as session:  # the runner noticed the limit at its next step, as it should
        assert jobstate.finish_failed(session, harness.claim, "JobTimeout", "the job ran longer than its time limit")
    assert harness.at(TIMEOUT_S + 10 * GRACE_S) is None and harness.exits == []  # no longer ours: "lost"
    assert harness.job().error["detail"] == "the job ran longer than its time limit"

    harness.claim = None  # idle worker
    assert harness.at(TIMEOUT_S + 20 * GRACE_S) is None and harness.exits == []


def test_each_job_gets_its_own_clock(harness: Harness, client, session_factory) -> None:
    assert harness.at(0.0) is None
    with session_factory() as session:
        assert jobstate.finish_cancelled(session, harness.claim)
    second = client.post("/v1/jobs", json={"dataset_id": harness.job().dataset_id, **tiny_pipeline()}).json()["id"]
    with session_factory() as session:
        harness.claim = jobstate.claim_next(session, "w1", ["cpu"])
    assert harness.claim.job_id == second
    # the first job started at 0; the second is first seen at TIMEOUT_S - 1 and is not yet due at TIMEOUT_S + GRACE_S
    assert harness.at(TIMEOUT_S - 1) is None
    assert harness.at(TIMEOUT_S + GRACE_S) is None and harness.exits == []
    assert harness.at(2 * TIMEOUT_S - 1) is None  # due now (TIMEOUT_S after it was first seen)
    assert harness.at(2 * TIMEOUT_S - 1 + GRACE_S) == "timeout" and harness.exits == [EXIT_STUCK_JOB]


def test_a_real_worker_cancelled_inside_auto_symbolic_stops_there_and_lives_on(make_settings) -> None:
    """End to end: auto_symbolic on a [2, 32, 32, 1] network (1,120 edges, tens of seconds on one core).
    Once the job's progress says the symbolic stage started (its stage-boundary stop check is behind
    it), it is cancelled; the stop callback, asked before every function's fit, ends it "cancelled"
    and the same worker process runs the next job (issue 18: the job ran on until the watchdog ended
    its process). The kill grace is far away, so the watchdog cannot be what stops it.

    Nothing here depends on how fast the machine is: the cancel is sent only once the job is inside
    the stage, and the waits are only upper bounds for a hang."""
    from fastapi.testclient import TestClient

    from jobs_support import wait_for
    from service.app import create_app
    from service.worker.local import WorkerPool

    settings = make_settings(**{**FAST, "heartbeat_timeout_s": 600.0}, job_timeout_s=3600.0,
                             job_kill_grace_s=3600.0, max_width=64)
    app = create_app(settings)
    with TestClient(app) as client:
        dataset = insert_dataset(app.state.session_factory, n_train=2000)
        job_id = client.post("/v1/jobs", json={
            "dataset_id": dataset, "model": {"width": [2, 32, 32, 1], "grid": 30},
            "stages": [{"kind": "symbolic"}],  # no training step before it: only the fitting can stop it
        }).json()["id"]
        with WorkerPool(settings, 1) as pool:
            worker = pool.processes[0]
            wait_for(lambda: (client.get(f"/v1/jobs/{job_id}").json().get("progress") or {}).get("stage") == "symbolic",
                     timeout=300, what="the symbolic stage to start")
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202  # running: asked to stop
            wait_for(lambda: client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled", timeout=300,
                     what="the cancel to land inside auto_symbolic")
            job = client.get(f"/v1/jobs/{job_id}").json()
            assert job["model_id"] is None and job["error"] is None, job
            after = client.post("/v1/jobs", json={"dataset_id": dataset, **tiny_pipeline()}).json()["id"]
            wait_for(lambda: client.get(f"/v1/jobs/{after}").json()["status"] == "succeeded", timeout=300,
                     what="the same worker to run the next job")
            assert worker.is_alive() and pool.processes[0].pid == worker.pid
