"""/healthz, /readyz and /metrics against the real app and database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from service.app import create_app
from service.config import Settings
from service.ids import new_id
from service.metrics import Metrics
from service.models import Job, JobKind, JobStatus, Worker

DATASET = {"expression": "x1 * x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 20, "n_test": 10}


def add_worker(factory: sessionmaker[Session], heartbeat_age_s: float = 0.0) -> None:
    beat = datetime.now(timezone.utc) - timedelta(seconds=heartbeat_age_s)
    with factory() as session:
        session.add(Worker(id=new_id("wrk"), kind="local", hostname="test", pid=1, started_at=beat, heartbeat_at=beat))
        session.commit()


def metric_samples(client: TestClient) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    matching = [v for sample_labels, v in samples.get(name, []) if labels.items() <= sample_labels.items()]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


def test_healthz_needs_nothing(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_readyz_without_a_worker_heartbeat_is_503(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["failed"] == ["workers"]
    assert body["checks"]["database"]["ok"] and body["checks"]["migrations"]["ok"]
    assert "workers" in body["detail"]


def test_readyz_with_a_fresh_heartbeat_is_200(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    add_worker(session_factory)
    response = client.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert all(check["ok"] for check in body["checks"].values())


def test_readyz_with_a_stale_heartbeat_is_503(
    client: TestClient, session_factory: sessionmaker[Session], settings: Settings
) -> None:
    add_worker(session_factory, heartbeat_age_s=settings.heartbeat_timeout_s + 5)
    assert client.get("/readyz").json()["failed"] == ["workers"]


def test_readyz_notices_missing_migrations(client: TestClient, app: FastAPI, session_factory: sessionmaker[Session]) -> None:
    add_worker(session_factory)
    with app.state.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    body = client.get("/readyz").json()
    assert body["status"] == 503 and body["failed"] == ["migrations"]
    assert "kan-service migrate" in body["checks"]["migrations"]["detail"]


def test_readyz_when_the_database_is_unreachable(client: TestClient, app: FastAPI, tmp_path) -> None:
    app.state.engine = create_engine(f"sqlite:///{tmp_path}/missing-dir/kan.db")
    body = client.get("/readyz").json()
    assert body["status"] == 503
    assert body["failed"] == ["database", "migrations", "workers"]


def test_metrics_count_requests_by_route_template(client: TestClient) -> None:
    client.get("/v1/datasets/ds_nope")
    client.get("/v1/datasets/ds_other")
    client.get("/no/such/route")
    samples = metric_samples(client)
    assert value(samples, "kan_http_requests_total", route="/v1/datasets/{dataset_id}", status="404", method="GET") == 2
    assert value(samples, "kan_http_requests_total", route="<unmatched>", status="404") == 1
    assert value(samples, "kan_http_request_duration_seconds_count", route="/v1/datasets/{dataset_id}") == 2
    assert not any("ds_nope" in labels.get("route", "") for labels, _ in samples["kan_http_requests_total"])
    buckets = [labels["le"] for labels, _ in samples["kan_http_request_duration_seconds_bucket"]]
    assert "+Inf" in buckets


def test_metrics_read_jobs_queues_workers_and_throughput(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    dataset_id = client.post("/v1/datasets", json=DATASET).json()["id"]
    started = datetime.now(timezone.utc) - timedelta(seconds=10)
    history = [{"stage": "train", "stage_index": 0, "step": s, "train_rmse": 1.0} for s in range(1, 31)]
    history += [{"stage": "retrain", "stage_index": 2, "step": s, "train_rmse": 1.0} for s in range(1, 11)]
    with session_factory() as session:
        for queue, status in (("cpu", JobStatus.queued), ("cpu", JobStatus.queued), ("gpu", JobStatus.queued),
                              ("cpu", JobStatus.succeeded)):
            session.add(Job(id=new_id("job"), kind=JobKind.train, dataset_id=dataset_id, config={}, queue=queue,
                            status=status))
        session.add(Job(id=new_id("job"), kind=JobKind.train, dataset_id=dataset_id, config={}, status=JobStatus.running,
                        started_at=started, history=history,
                        progress={"stage": "retrain", "stage_index": 2, "step": 20, "steps": 50}))
        session.commit()
    add_worker(session_factory)
    samples = metric_samples(client)
    assert value(samples, "kan_database_up") == 1
    assert value(samples, "kan_jobs", status="queued") == 3
    assert value(samples, "kan_jobs", status="running") == 1
    assert value(samples, "kan_jobs", status="failed") == 0
    assert value(samples, "kan_queue_depth", queue="cpu") == 2
    assert value(samples, "kan_queue_depth", queue="gpu") == 1
    assert value(samples, "kan_workers_alive") == 1
    # 30 steps in stage 0 and 20 in stage 2 (progress is ahead of the history) over ~10 s
    assert value(samples, "kan_training_steps_per_second") == pytest.approx(5.0, rel=0.2)


def test_metrics_registries_are_per_app(make_settings, tmp_path) -> None:
    first = create_app(make_settings())
    second = create_app(make_settings(data_dir=tmp_path / "second"))
    with TestClient(first) as a, TestClient(second) as b:
        a.get("/healthz")
        a.get("/healthz")
        b.get("/healthz")
        assert value(metric_samples(a), "kan_http_requests_total", route="/healthz") == 2
        assert value(metric_samples(b), "kan_http_requests_total", route="/healthz") == 1


def test_metrics_survive_an_unreachable_database(settings: Settings, tmp_path) -> None:
    broken = sessionmaker(create_engine(f"sqlite:///{tmp_path}/missing-dir/kan.db"))
    exposition = Metrics(broken, settings).render().decode()
    families = {family.name: family for family in text_string_to_metric_families(exposition)}
    assert families["kan_database_up"].samples[0].value == 0
    assert "kan_jobs" not in families
