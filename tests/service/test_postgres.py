"""PostgreSQL through KAN_DATABASE_URL=postgresql+psycopg://...: the same Alembic migrations (on an
empty database, and from several processes at once), job claims that stay exactly-once under
concurrency (threads, processes, duplicate deliveries), and the app itself."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import inspect, select

from jobs_support import insert_dataset, tiny_pipeline
from service import migrate
from service.app import create_app
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.ids import new_id
from service.models import Base, Job
from service.worker import jobstate

pytestmark = pytest.mark.postgres

REPO = Path(__file__).resolve().parents[2]


def _settings(url: str) -> Settings:
    return Settings(_env_file=None, database_url=url)


def test_migrations_apply_to_an_empty_database_and_roll_back(postgres_server):
    engine = make_engine(_settings(postgres_server.create_database()))
    try:
        assert migrate.current_revision(engine) is None
        migrate.upgrade(engine)
        assert migrate.is_up_to_date(engine)
        assert set(inspect(engine).get_table_names()) == {*Base.metadata.tables, "alembic_version"}
        columns = {c["name"] for c in inspect(engine).get_columns("jobs")}
        assert columns == {c.name for c in Base.metadata.tables["jobs"].columns}
        migrate.upgrade(engine)  # again: nothing to do
        command_config = migrate.alembic_config()
        with engine.begin() as conn:
            command_config.attributes["connection"] = conn
            from alembic import command

            command.downgrade(command_config, "base")
        assert set(inspect(engine).get_table_names()) == {"alembic_version"}
        migrate.upgrade(engine)
        assert migrate.is_up_to_date(engine)
    finally:
        engine.dispose()


def test_processes_migrating_an_empty_database_at_once_all_succeed(postgres_server):
    """What happens when the api and several workers start together on a fresh database: the
    advisory lock in migrate.upgrade lets one create the schema while the others wait."""
    url = postgres_server.create_database()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update(KAN_DATABASE_URL=url, PYTHONPATH=str(REPO))
    processes = [subprocess.Popen([sys.executable, "-m", "service.cli", "migrate"], cwd=REPO, env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    engine = make_engine(_settings(url))
    try:
        assert migrate.is_up_to_date(engine)
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# claims


def _queue_jobs(url: str, n: int) -> list[str]:
    factory = make_session_factory(make_engine(_settings(url)))
    dataset_id = insert_dataset(factory)
    ids = [new_id("job") for _ in range(n)]
    with factory() as session:
        session.add_all(Job(id=i, kind="train", dataset_id=dataset_id, config=tiny_pipeline(), history=[]) for i in ids)
        session.commit()
    factory.kw["bind"].dispose()
    return ids


def _claim_all(url: str, worker: str, delivered: list[str] | None = None) -> list[str]:
    """Claim until nothing is left, with a private engine as a separate worker would: the oldest
    queued job each time (local workers), or each id of `delivered` (every id delivered to every
    worker, as duplicate broker messages would)."""
    engine = make_engine(_settings(url))
    factory = make_session_factory(engine)
    got: list[str] = []
    with factory() as session:
        if delivered is None:
            while claim := jobstate.claim_next(session, worker, ["cpu"]):
                got.append(claim.job_id)
        else:
            got = [job_id for job_id in delivered if jobstate.claim_job(session, worker, job_id)]
    engine.dispose()
    return got


def _assert_each_claimed_once(url: str, ids: list[str], results: list[list[str]]) -> None:
    claimed = [j for r in results for j in r]
    assert sorted(claimed) == sorted(ids), [j for j, n in Counter(claimed).items() if n > 1]
    engine = make_engine(_settings(url))
    with make_session_factory(engine)() as session:
        assert set(session.scalars(select(Job.attempts).where(Job.id.in_(ids)))) == {1}
    engine.dispose()


@pytest.mark.parametrize("delivery", ["claim_next", "claim_job"])
def test_claim_race_between_threads_claims_each_job_once(postgres_db, delivery):
    ids = _queue_jobs(postgres_db, 80)
    results: list[list[str]] = [[] for _ in range(8)]
    barrier = threading.Barrier(8)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = _claim_all(postgres_db, f"w{i}", ids if delivery == "claim_job" else None)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _assert_each_claimed_once(postgres_db, ids, results)
    assert sum(1 for r in results if r) > 1  # it was a race


def _claim_in_process(url: str, worker: str, delivered: list[str] | None, start, out) -> None:
    start.wait()
    out.put(_claim_all(url, worker, delivered))


def test_claim_race_between_processes_claims_each_job_once(postgres_db):
    ids = _queue_jobs(postgres_db, 80)
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    # a polling worker against one that is delivered every id (two processes only: each imports torch)
    processes = [ctx.Process(target=_claim_in_process, args=(postgres_db, name, delivered, start, out))
                 for name, delivered in (("poller", None), ("pushed", ids))]
    for p in processes:
        p.start()
    results = [out.get(timeout=120) for _ in processes]
    for p in processes:
        p.join()
    _assert_each_claimed_once(postgres_db, ids, results)
    assert all(results)  # both took a share: it was a race


def test_the_app_serves_datasets_and_jobs_from_postgres(postgres_db, make_settings):
    with TestClient(create_app(make_settings(database_url=postgres_db))) as client:
        dataset = client.post("/v1/datasets", json={"expression": "x1*x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]},
                                                    "n_train": 20, "n_test": 10}).json()
        r = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **tiny_pipeline()},
                        headers={"Idempotency-Key": "pg"})
        assert r.status_code == 202, r.text
        again = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **tiny_pipeline()},
                            headers={"Idempotency-Key": "pg"})
        assert again.json()["id"] == r.json()["id"]
        assert client.post(f"/v1/jobs/{r.json()['id']}/cancel").json()["status"] == "cancelled"
        assert [j["id"] for j in client.get("/v1/jobs").json()["items"]] == [r.json()["id"]]
        checks = client.get("/readyz").json()["checks"]  # 503: no worker runs, but the database is fine
        assert checks["database"]["ok"] and checks["migrations"]["ok"]
