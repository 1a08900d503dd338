"""Getting job ids to workers: claim_job (the compare-and-set a pushed job id is claimed with) and
service.dispatch (send, record the send, send again what did not arrive), on the real app and a real
SQLite file, with an executor that records what it is asked to send (and can play a broker that is
down). The same functions against PostgreSQL and a real Celery broker: test_postgres.py, test_celery.py."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from jobs_support import FAST, insert_dataset, tiny_pipeline
from service import dispatch
from service.executors.base import DispatchError, Executor
from service.models import Job, JobStatus, utcnow
from service.worker import jobstate


class RecordingExecutor(Executor):
    """Remembers every (job id, queue) it is asked to send; raises DispatchError while `down`."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.down = False
        self._lock = threading.Lock()

    def submit(self, job_id: str, queue: str) -> None:
        if self.down:
            raise DispatchError("broker down (test)")
        with self._lock:
            self.sent.append((job_id, queue))


SETTINGS = FAST  # the conftest's `settings`: workers that notice jobs and beat quickly


@pytest.fixture
def executor(app) -> RecordingExecutor:
    app.state.executor = RecordingExecutor()  # what the API sends through
    return app.state.executor


@pytest.fixture
def dataset_id(session_factory) -> str:
    return insert_dataset(session_factory)


def _post(client, dataset_id: str, **model) -> str:
    pipeline = tiny_pipeline()
    r = client.post("/v1/jobs", json={"dataset_id": dataset_id, **pipeline, "model": {**pipeline["model"], **model}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _job(session_factory, job_id: str) -> Job:
    with session_factory() as session:
        return session.get(Job, job_id)


def test_claim_job_claims_that_job_once(client, session_factory, executor, dataset_id):
    first, second = _post(client, dataset_id), _post(client, dataset_id)
    with session_factory() as session:
        claim = jobstate.claim_job(session, "w1", second)
        assert claim == jobstate.Claim(second, "w1", 1)
        assert jobstate.claim_job(session, "w2", second) is None  # a second delivery of the same id
        assert jobstate.claim_job(session, "w2", "job_missing") is None
    assert _job(session_factory, first).status is JobStatus.queued  # only the job named was taken
    client.post(f"/v1/jobs/{first}/cancel")
    with session_factory() as session:
        assert jobstate.claim_job(session, "w2", first) is None  # cancelled while its id was on its way


def test_claim_job_race_between_threads_has_one_winner(client, session_factory, executor, dataset_id):
    ids = [_post(client, dataset_id) for _ in range(10)]
    wins: list[tuple[str, str]] = []
    barrier = threading.Barrier(6)

    def deliver(worker: str) -> None:  # every worker gets every id, as if each message came 6 times
        barrier.wait()
        for job_id in ids:
            with session_factory() as session:
                if jobstate.claim_job(session, worker, job_id):
                    wins.append((job_id, worker))

    threads = [threading.Thread(target=deliver, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(j for j, _ in wins) == sorted(ids)
    assert {_job(session_factory, j).attempts for j in ids} == {1}


def test_submit_sends_each_new_job_once_to_its_queue(client, session_factory, executor, dataset_id):
    cpu = _post(client, dataset_id)
    gpu = _post(client, dataset_id, device="cuda")
    assert executor.sent == [(cpu, "cpu"), (gpu, "gpu")]
    assert _job(session_factory, cpu).dispatched_at is not None
    body = {"dataset_id": dataset_id, **tiny_pipeline()}
    key = {"Idempotency-Key": "k"}
    replayed = [client.post("/v1/jobs", json=body, headers=key).json()["id"] for _ in range(2)]
    assert replayed[0] == replayed[1] and executor.sent[2:] == [(replayed[0], "cpu")]  # a replay sends nothing


def test_a_job_the_broker_did_not_take_is_queued_and_sent_later(client, session_factory, settings, executor,
                                                                dataset_id):
    executor.down = True
    job_id = _post(client, dataset_id)  # the API still answers 202
    job = _job(session_factory, job_id)
    assert job.status is JobStatus.queued and job.dispatched_at is None and executor.sent == []
    with session_factory() as session:
        assert dispatch.redispatch(session, settings, executor) == []  # within the grace: the API may still send it
        later = utcnow() + timedelta(seconds=dispatch.SEND_GRACE_S + 1)
        assert dispatch.redispatch(session, settings, executor, now=later) == []  # still down
        assert _job(session_factory, job_id).dispatched_at is None  # the failed send was given back
        executor.down = False
        assert dispatch.redispatch(session, settings, executor, now=later) == [job_id]
        assert dispatch.redispatch(session, settings, executor, now=later) == []  # sent: not again
    assert executor.sent == [(job_id, "cpu")]


def test_reaper_requeued_job_is_sent_again_once(client, session_factory, settings, executor, dataset_id):
    job_id = _post(client, dataset_id)
    with session_factory() as session:
        jobstate.claim_job(session, "dead-worker", job_id)
    silent = utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1)
    with session_factory() as session:
        assert jobstate.reap(session, settings, now=silent).requeued == [job_id]
    assert _job(session_factory, job_id).dispatched_at is None
    sent: list[list[str]] = []
    barrier = threading.Barrier(4)

    later = silent + timedelta(seconds=dispatch.SEND_GRACE_S)

    def heartbeat() -> None:  # four workers' heartbeats at the same moment
        barrier.wait()
        with session_factory() as session:
            sent.append(dispatch.redispatch(session, settings, executor, now=later))

    threads = [threading.Thread(target=heartbeat) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(map(len, sent)) == [0, 0, 0, 1]
    assert executor.sent == [(job_id, "cpu"), (job_id, "cpu")]  # the API's send, then one re-send
    with session_factory() as session:
        assert jobstate.claim_job(session, "alive-worker", job_id).attempt == 2


def test_a_job_still_queued_long_after_its_send_is_sent_again(client, session_factory, settings, executor,
                                                               dataset_id):
    job_id = _post(client, dataset_id)
    sent_at = _job(session_factory, job_id).dispatched_at
    running = _post(client, dataset_id)
    with session_factory() as session:
        jobstate.claim_job(session, "w", running)
        before = sent_at + timedelta(seconds=settings.redispatch_after_s - 1)
        assert dispatch.redispatch(session, settings, executor, now=before) == []
        after = sent_at + timedelta(seconds=settings.redispatch_after_s + 1)
        assert dispatch.redispatch(session, settings, executor, now=after) == [job_id]  # not the running one
        assert session.scalar(select(Job.dispatched_at).where(Job.id == job_id)) is not None


def test_local_executor_pushes_nothing(client, session_factory, settings, app, dataset_id):
    assert not app.state.executor.pushes
    job_id = _post(client, dataset_id)
    with session_factory() as session:
        session.execute(update(Job).where(Job.id == job_id).values(created_at=utcnow() - timedelta(hours=1)))
        session.commit()
        assert dispatch.redispatch(session, settings, app.state.executor) == []
    assert _job(session_factory, job_id).dispatched_at is None
