"""Celery workers for real: `kan-service worker` subprocesses with KAN_EXECUTOR=celery on the real Redis
and PostgreSQL servers, the API in-process (TestClient) or as a real uvicorn subprocess.

Every test has broker queues of its own (BrokerNamespace: a queue prefix on Redis db 13, purged at
the end). Most share one Celery worker started once for the module, on the session's database; the
tests that kill or stop workers get a fresh database and queues of their own, so that no other
worker's heartbeat re-sends their jobs."""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from backends import BrokerNamespace, PostgresServer, Unreachable
from e2e_support import (
    PNG_SIGNATURE,
    SEED_EXPRESSION,
    Server,
    WorkerProcess,
    assert_predictions,
    assert_solution,
    create_dataset,
    follow,
    formula_text,
    submit,
    wait_final,
)
from jobs_support import FAST, tiny_pipeline, wait_for
from service import dispatch, migrate
from service.app import create_app
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.models import Job, JobStatus, Model, Worker

pytest.importorskip("celery", reason="the `scale` extra (celery[redis], redis, psycopg) is not installed")
from service.worker.celery_app import make_celery, worker_argv  # noqa: E402

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

LONG = tiny_pipeline(steps=20_000)  # minutes of training: only ever stopped, never finished
JOB_WAIT_S = 300  # a hang bound: jobs here take seconds, more on a loaded machine


# --------------------------------------------------------------------------------------------------
# fixtures and helpers


def _namespace() -> BrokerNamespace:
    try:
        return BrokerNamespace()
    except Unreachable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def shared_namespace() -> Iterator[BrokerNamespace]:
    namespace = _namespace()
    yield namespace
    namespace.purge()


@pytest.fixture(scope="module")
def shared(postgres_url: str, shared_namespace: BrokerNamespace) -> dict[str, Any]:
    """Settings (as KAN_* values) of the module's deployment: the session's database, shared queues."""
    return {**FAST, "executor": "celery", "database_url": postgres_url, **shared_namespace.settings}


def _factory(url: str):
    return make_session_factory(make_engine(Settings(_env_file=None, database_url=url)))


def _live_celery_workers(factory, parent_pid: int | None = None) -> list[Worker]:
    """Celery pool processes with a row in the workers table (of the Celery worker `parent_pid`)."""
    with factory() as session:
        rows = session.scalars(select(Worker).where(Worker.kind == "celery")).all()
    return [w for w in rows if parent_pid is None or _parent_of(w.pid) == parent_pid]


def _parent_of(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None


def _start_worker(tmp: Path, settings: dict[str, Any], n: int = 1, **extra: Any) -> WorkerProcess:
    """A Celery worker; returns once its n pool processes are registered."""
    factory = _factory(settings["database_url"])
    worker = WorkerProcess(tmp, n, **settings, **extra)
    worker.start(ready=lambda: len(_live_celery_workers(factory, worker.pid)) >= n)
    return worker


@pytest.fixture(scope="module")
def shared_worker(tmp_path_factory, shared) -> Iterator[WorkerProcess]:
    worker = _start_worker(tmp_path_factory.mktemp("celery"), shared)
    yield worker
    worker.stop()


@pytest.fixture
def client(postgres_db, shared, shared_worker) -> Iterator[TestClient]:
    """The API in this process, sending to the shared worker (postgres_db: emptied for the test)."""
    with TestClient(create_app(Settings(_env_file=None, **shared))) as test_client:
        yield test_client


@pytest.fixture
def isolated(postgres_server: PostgresServer) -> Iterator[dict[str, Any]]:
    """Settings of a deployment of its own: a fresh database and its own queues."""
    url = postgres_server.create_database()
    engine = make_engine(Settings(_env_file=None, database_url=url))
    migrate.upgrade(engine)
    engine.dispose()
    namespace = _namespace()
    yield {**FAST, "executor": "celery", "database_url": url, **namespace.settings}
    namespace.purge()


def _dataset(client: TestClient, n: int = 200) -> str:
    r = client.post("/v1/datasets", json={"expression": "x1 + 0.5*x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]},
                                          "n_train": n, "n_test": n // 2})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _wait_training(client: TestClient, job_id: str, min_step: int = 1) -> dict:
    def training():
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] == "running" and (job["progress"] or {}).get("step", 0) >= min_step else None

    return wait_for(training, JOB_WAIT_S, 0.05, f"job {job_id} to train")


def _task_args(message: bytes) -> list:
    envelope = json.loads(message)
    assert envelope["content-type"] == "application/json"
    args, _kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    return args


# --------------------------------------------------------------------------------------------------
# configuration and routing (no worker)


def test_celery_app_delivery_settings():
    settings = Settings(_env_file=None, executor="celery", job_timeout_s=100, queue_prefix="p-", gpu_worker=True)
    conf = make_celery(settings).conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert (conf.task_serializer, conf.result_serializer, list(conf.accept_content)) == ("json", "json", ["json"])
    assert conf.task_ignore_result and not conf.result_backend
    # the runner's own deadline (job_timeout_s) comes first; Redis never redelivers a running job
    visibility = conf.broker_transport_options["visibility_timeout"]
    assert 100 < conf.task_soft_time_limit < conf.task_time_limit < visibility
    assert [q.name for q in conf.task_queues] == ["p-cpu", "p-gpu"]
    assert "--queues=p-cpu,p-gpu" in worker_argv(settings, 2) and "--concurrency=2" in worker_argv(settings, 2)
    assert "--queues=p-cpu" in worker_argv(settings.model_copy(update={"gpu_worker": False}), 1)


def test_job_ids_travel_as_json_to_the_queue_of_their_device(postgres_db, broker):
    settings = Settings(_env_file=None, executor="celery", database_url=postgres_db, **broker.settings)
    with TestClient(create_app(settings)) as client:
        dataset_id = _dataset(client)
        cpu = submit(client, {"dataset_id": dataset_id, **tiny_pipeline()})["id"]
        gpu = submit(client, {"dataset_id": dataset_id, "model": {"width": [2, 2, 1], "device": "cuda"}})["id"]
    assert [_task_args(m) for m in broker.messages("cpu")] == [[cpu]]
    assert [_task_args(m) for m in broker.messages("gpu")] == [[gpu]]
    with _factory(postgres_db)() as session:
        assert all(session.scalars(select(Job.dispatched_at)))


# --------------------------------------------------------------------------------------------------
# on the shared worker


def test_a_job_submitted_while_the_broker_is_down_runs_once_it_is_back(postgres_db, shared, shared_worker):
    down = {**shared, "broker_url": "redis://127.0.0.1:1/13"}  # nothing listens on port 1
    with TestClient(create_app(Settings(_env_file=None, **down))) as api_without_broker:
        dataset_id = _dataset(api_without_broker)
        job = submit(api_without_broker, {"dataset_id": dataset_id, **tiny_pipeline()})  # still 202
        assert job["status"] == "queued"
        with _factory(postgres_db)() as session:
            assert session.get(Job, job["id"]).dispatched_at is None
        # the worker's heartbeat sends it once it is SEND_GRACE_S old
        final = wait_final(api_without_broker, job["id"], dispatch.SEND_GRACE_S + 60)
    assert final["status"] == "succeeded" and final["attempts"] == 1


def test_cancelling_a_job_running_on_a_celery_worker_stops_it(client):
    job_id = submit(client, {"dataset_id": _dataset(client), **LONG})["id"]
    _wait_training(client, job_id, min_step=5)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
    job = wait_final(client, job_id, JOB_WAIT_S)
    assert job["status"] == "cancelled" and job["model_id"] is None
    steps = [p["step"] for p in client.get(f"/v1/jobs/{job_id}/history").json()["points"]]
    assert 5 <= steps[-1] < 20_000 and steps == list(range(1, steps[-1] + 1))


def test_gpu_jobs_wait_for_a_gpu_worker(client, shared, shared_namespace, tmp_path):
    dataset_id = _dataset(client)
    gpu = submit(client, {"dataset_id": dataset_id, "model": {"width": [2, 2, 1], "device": "cuda"},
                          "stages": tiny_pipeline()["stages"]})["id"]
    cpu = submit(client, {"dataset_id": dataset_id, **tiny_pipeline()})["id"]
    assert wait_final(client, cpu, JOB_WAIT_S)["status"] == "succeeded"  # the CPU worker is busy...
    assert client.get(f"/v1/jobs/{gpu}").json()["status"] == "queued"  # ...but never takes a GPU job
    assert [_task_args(m) for m in shared_namespace.messages("gpu")] == [[gpu]]
    gpu_worker = _start_worker(tmp_path, shared, gpu_worker=True)
    try:
        job = wait_final(client, gpu, JOB_WAIT_S)
    finally:
        gpu_worker.stop()
    if torch.cuda.is_available():
        assert job["status"] == "succeeded", job["error"]
    else:  # taken by the GPU worker, which has no GPU here: the engine refuses device=cuda
        assert job["status"] == "failed" and "cuda" in job["error"]["detail"].lower(), job["error"]


@pytest.mark.timeout(300)
def test_seed_formula_end_to_end_on_celery_and_postgres(shared, shared_worker, postgres_db, tmp_path):
    """The seed example over real HTTP, with the API as `kan-service serve --workers 0` (uvicorn) on
    PostgreSQL and the job on a Celery worker: progress over SSE, a formula that is a symbolic
    solution, predictions from it and from the network."""
    server = Server(tmp_path, workers=0, **shared).start()
    try:
        with server.client() as http:
            dataset = create_dataset(http, SEED_EXPRESSION, 1000, 1000)
            job = submit(http, {"dataset_id": dataset["id"]})
            events: list[tuple[str, dict]] = []
            follower = threading.Thread(target=follow, args=(server.url, job["id"], events))
            follower.start()
            final = wait_final(http, job["id"], 240)
            follower.join(60)
            assert final["status"] == "succeeded", final["error"]
            assert final["attempts"] == 1
            assert events[-1] == ("end", {"job_id": job["id"], "status": "succeeded", "model_id": final["model_id"],
                                          "error": None})
            stages_seen = [d["progress"]["stage_index"] for n, d in events if n == "progress" and d["progress"]]
            assert stages_seen == sorted(stages_seen) and stages_seen[-1] == 4
            model = http.get(f"/v1/models/{final['model_id']}").json()
            assert_solution(formula_text(model))
            assert_predictions(http, model["id"], dataset["id"])
            plot = http.get(f"/v1/models/{model['id']}/plot.png")
            assert plot.status_code == 200 and plot.content.startswith(PNG_SIGNATURE)
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------------
# workers that die or stop (a deployment of their own each)


def _running_on(factory, parent_pid: int) -> str | None:
    """A job training on one of the pool processes of the Celery worker `parent_pid`."""
    pids = {w.id: w.pid for w in _live_celery_workers(factory, parent_pid)}
    with factory() as session:
        running = session.execute(select(Job.id, Job.worker_id, Job.progress).where(Job.status == JobStatus.running))
        for job_id, worker_id, progress in running:
            if worker_id in pids and (progress or {}).get("step", 0) >= 1:
                return job_id
    return None


def _kill_mid_job(factory, worker: WorkerProcess, kill: Callable[[str], None]) -> str:
    job_id = wait_for(lambda: _running_on(factory, worker.pid), JOB_WAIT_S, 0.02, "a job on the worker")
    kill(job_id)
    return job_id


@pytest.mark.timeout(300)
def test_twenty_jobs_on_two_celery_workers_one_killed_all_succeed_once(isolated, tmp_path):
    """Two Celery workers share 20 jobs. One pool process of worker B is SIGKILLed mid-job (Celery puts
    the message back: reject_on_worker_lost; its redelivery finds the job still running and is
    dropped), then worker B itself (a lost machine: its message stays unacknowledged). Both jobs run
    again on a live worker once its reaper sees their heartbeat stop and re-sends them.

    Only worker A reaps soon (B's timeout is FAST's long one): on a loaded machine B's reaper could
    otherwise re-queue a job of A whose beats stalled, and a job that was not killed would run twice.
    A never re-queues its own job (it stamps its heartbeat before it reaps)."""
    settings = {**isolated, "heartbeat_timeout_s": 3.0}
    factory = _factory(settings["database_url"])
    a, b = WorkerProcess(tmp_path, 1, **settings), WorkerProcess(tmp_path, 1, **isolated)
    for worker in (a, b):
        worker.start()
    try:
        wait_for(lambda: all(_live_celery_workers(factory, w.pid) for w in (a, b)), JOB_WAIT_S, 0.2,
                 f"both workers to start\n{a.log()}\n{b.log()}")
        with TestClient(create_app(Settings(_env_file=None, **settings))) as client:
            dataset_id = _dataset(client)
            ids = [submit(client, {"dataset_id": dataset_id, **tiny_pipeline(steps=100)})["id"] for _ in range(20)]

            def kill_pool_process(job_id: str) -> None:
                with factory() as session:
                    worker_id = session.get(Job, job_id).worker_id
                    os.kill(session.get(Worker, worker_id).pid, signal.SIGKILL)

            killed = [_kill_mid_job(factory, b, kill_pool_process), _kill_mid_job(factory, b, lambda _: b.kill())]
            finals = {job_id: wait_final(client, job_id, JOB_WAIT_S) for job_id in ids}
            survivors = {w.id for w in _live_celery_workers(factory, a.pid)}
    finally:
        a.stop()
        b.stop()
    assert {j["status"] for j in finals.values()} == {"succeeded"}, [j["error"] for j in finals.values()]
    assert {job_id: j["attempts"] for job_id, j in finals.items() if j["attempts"] != 1} == dict.fromkeys(killed, 2)
    with factory() as session:
        per_job = Counter(session.scalars(select(Model.job_id)))
        assert per_job == Counter(ids) and session.scalar(select(func.count()).select_from(Model)) == 20
        assert {session.get(Job, job_id).worker_id for job_id in killed} <= survivors  # redone by worker A


def test_sigterm_hands_the_running_job_back_without_spending_an_attempt(isolated, tmp_path):
    worker = _start_worker(tmp_path, isolated)
    with TestClient(create_app(Settings(_env_file=None, **isolated))) as client:
        job_id = submit(client, {"dataset_id": _dataset(client), **LONG})["id"]
        _wait_training(client, job_id)
        # SIGTERM: Celery's warm shutdown would wait for the job (minutes of training) to finish; the
        # job is handed back at its next step instead, which the status below shows (not `running`)
        worker.stop(timeout=JOB_WAIT_S)
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"], job["started_at"]) == ("queued", 0, None)
    with _factory(isolated["database_url"])() as session:
        dispatched_at = session.get(Job, job_id).dispatched_at
        assert not _live_celery_workers(_factory(isolated["database_url"]))  # unregistered on the way out
    # its id goes to the broker again: at once, when the stopping worker's heartbeat beat once more after
    # the release (how soon that is depends on the machine), else from a live worker's heartbeat later
    if dispatched_at is not None:
        import redis

        waiting = redis.Redis.from_url(isolated["broker_url"]).lrange(f"{isolated['queue_prefix']}cpu", 0, -1)
        assert [job_id] in [_task_args(m) for m in waiting], dispatched_at
