"""The jobs API and the job state machine: the real app on a real SQLite file, datasets and models
inserted through the ORM, worker-side transitions driven through service.jobs as a worker would."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from dataclasses import replace
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from jobs_support import FAST, assert_problem, insert_dataset, read_events, tiny_pipeline
from kan_core import io as kan_io
from kan_core.model import KAN
from kan_core.pipeline import PipelineConfig
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.ids import new_id
from service.models import IdempotencyRecord, Job, JobStatus, Model, Worker, utcnow
from service.worker import jobstate


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(**FAST, max_steps=1000, max_width=16)


@pytest.fixture
def dataset_id(session_factory) -> str:
    return insert_dataset(session_factory)


def _post(client: TestClient, body: dict, key: str | None = None):
    return client.post("/v1/jobs", json=body, headers={"Idempotency-Key": key} if key else {})


def _claim(session_factory, worker_id: str = "w1") -> jobstate.Claim | None:
    with session_factory() as session:
        return jobstate.claim_next(session, worker_id, ["cpu"])


def _job(session_factory, job_id: str) -> Job:
    with session_factory() as session:
        return session.get(Job, job_id)


# --------------------------------------------------------------------------------------------------
# create


def test_create_default_is_the_seed_pipeline(client, dataset_id):
    r = _post(client, {"dataset_id": dataset_id})
    assert r.status_code == 202, r.text
    body = r.json()
    assert r.headers["location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] == "queued" and body["kind"] == "train" and body["queue"] == "cpu"
    assert body["attempts"] == 0 and body["model_id"] is None and body["progress"] is None
    assert body["created_at"].endswith(("Z", "+00:00"))
    # the stored config is the engine's seed recipe, with the width resolved from the dataset; a job
    # trains a plain KAN, so the network-family fields are left to the engine's defaults
    seed = PipelineConfig().to_dict()
    assert body["config"]["stages"] == seed["stages"]
    assert body["config"]["model"] == {k: v for k, v in seed["model"].items()
                                       if k not in ("family", "product_rank", "als_restarts")} | {"width": [2, 5, 1]}
    assert [s["name"] for s in body["config"]["stages"]] == ["train", "prune", "retrain", "auto_symbolic", "symbolic_fit"]
    seed_model = replace(PipelineConfig().model, width=(2, 5, 1))
    assert PipelineConfig.from_dict(body["config"]) == replace(PipelineConfig(), model=seed_model)
    assert client.get(f"/v1/jobs/{body['id']}").json() == body


def test_cuda_jobs_go_to_the_gpu_queue(client, dataset_id):
    gpu = _post(client, {"dataset_id": dataset_id, "model": {"device": "cuda"}}).json()
    auto = _post(client, {"dataset_id": dataset_id, "model": {"device": "auto"}}).json()
    assert (gpu["queue"], auto["queue"]) == ("gpu", "cpu")


def test_manual_fixes_use_the_in_field_name(client, dataset_id):
    stages = [{"kind": "symbolic", "auto": False, "fixes": [{"layer": 1, "in": 4, "out": 0, "function": "sin"}]}]
    r = _post(client, {"dataset_id": dataset_id, "stages": stages})
    assert r.status_code == 202, r.text
    fix = r.json()["config"]["stages"][0]["fixes"][0]
    assert fix == {"layer": 1, "in": 4, "out": 0, "function": "sin", "fit": True}
    assert_problem(_post(client, {"dataset_id": dataset_id, "stages": [
        {"kind": "symbolic", "fixes": [{"layer": 0, "in_": 0, "out": 0, "function": "sin"}]}]}), 422)


@pytest.mark.parametrize(("body", "field"), [
    ({"model": {"width": [3, 4, 1]}}, "model.width[0]"),
    ({"model": {"width": [2, 4, 2]}}, "model.width[2]"),
    ({"model": {"width": [2, 17, 1]}}, "model.width[1]"),
    ({"model": {"width": [2]}}, "model.width"),
    ({"model": {"width": [2, 1, 1, 1, 1, 1, 1, 1, 1]}}, "model.width"),
    ({"model": {"device": "tpu"}}, "model.device"),
    ({"model": {"grid_range": [1, -1]}}, "model"),
    ({"stages": []}, "stages"),
    ({"stages": [{"kind": "train", "steps": 1001}]}, "stages[0].steps"),
    ({"stages": [{"kind": "prune"}, {"kind": "train", "steps": 0}]}, "stages[1].steps"),
    ({"stages": [{"kind": "train", "opt": "SGD"}]}, "stages[0].opt"),
    ({"stages": [{"kind": "dance"}]}, "stages[0]"),
    ({"stages": [{"kind": "train", "lr": "fast"}]}, "stages[0].lr"),
    ({"stages": [{"kind": "train", "stepz": 3}]}, "stages[0].stepz"),
    ({"stages": [{"kind": "refine", "grid": 201}]}, "stages[0].grid"),
    ({"stages": [{"kind": "train"}, {"kind": "prune"}, {"kind": "train"},
                 {"kind": "symbolic", "fixes": [{"layer": 0, "in": 0, "out": 0, "function": "no_such_fn"}]}]},
     "stages[3].fixes[0].function"),
    ({"stages": [{"kind": "symbolic", "lib": ["x", "nope"]}]}, "stages[0].lib[1]"),
    ({"stages": [{"kind": "symbolic", "fixes": [{"layer": 2, "in": 0, "out": 0, "function": "sin"}]}]},
     "stages[0].fixes[0].layer"),
    ({"stages": [{"kind": "symbolic", "fixes": [{"layer": 0, "in": 2, "out": 0, "function": "sin"}]}]},
     "stages[0].fixes[0].in"),
    ({"stages": [{"kind": "symbolic", "fixes": [{"layer": 1, "in": 0, "out": 1, "function": "sin"}]}]},
     "stages[0].fixes[0].out"),
])
def test_invalid_pipelines_are_422_naming_the_field(client, dataset_id, body, field):
    assert_problem(_post(client, {"dataset_id": dataset_id, **body}), 422, field)


def test_unknown_dataset_is_404(client):
    body = assert_problem(_post(client, {"dataset_id": "ds_nope"}), 404)
    assert body["resource"] == "dataset"


def test_nothing_is_stored_for_a_rejected_job(client, session_factory, dataset_id):
    _post(client, {"dataset_id": dataset_id, "model": {"width": [9, 1]}}, key="k")
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Job)) == 0
        assert session.scalar(select(func.count()).select_from(IdempotencyRecord)) == 0


# --------------------------------------------------------------------------------------------------
# idempotency


def test_idempotency_key_replays_the_same_job(client, dataset_id):
    first = _post(client, {"dataset_id": dataset_id}, key="abc")
    # the same request with defaults spelled out is the same request
    again = _post(client, {"dataset_id": dataset_id, "model": {"grid": 5}}, key="abc")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["location"] == first.headers["location"]
    assert len(client.get("/v1/jobs").json()["items"]) == 1
    # another key, or no key, makes another job
    assert _post(client, {"dataset_id": dataset_id}, key="other").json()["id"] != first.json()["id"]
    assert _post(client, {"dataset_id": dataset_id}).json()["id"] != first.json()["id"]


def test_idempotency_key_with_another_body_is_rejected(client, dataset_id):
    _post(client, {"dataset_id": dataset_id}, key="abc")
    assert_problem(_post(client, {"dataset_id": dataset_id, "model": {"seed": 7}}, key="abc"), 422, "Idempotency-Key")


def test_concurrent_requests_with_one_key_make_one_job(app, dataset_id):
    ids, barrier = [], threading.Barrier(6)

    def post() -> None:
        with TestClient(app) as c:
            barrier.wait()
            ids.append(_post(c, {"dataset_id": dataset_id, **tiny_pipeline()}, key="same").json()["id"])

    threads = [threading.Thread(target=post) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 6 and len(set(ids)) == 1


# --------------------------------------------------------------------------------------------------
# read, list


def test_list_paginates_newest_first_and_filters(client, session_factory, dataset_id):
    made = [_post(client, {"dataset_id": dataset_id, **tiny_pipeline()}).json()["id"] for _ in range(5)]
    client.post(f"/v1/jobs/{made[0]}/cancel")
    seen, cursor = [], None
    while True:
        page = client.get("/v1/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [j["id"] for j in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == made[::-1]
    queued = client.get("/v1/jobs", params={"status": "queued"}).json()["items"]
    assert [j["id"] for j in queued] == made[:0:-1]
    assert [j["id"] for j in client.get("/v1/jobs?status=cancelled").json()["items"]] == [made[0]]
    assert_problem(client.get("/v1/jobs", params={"status": "sleeping"}), 422, "status")
    assert_problem(client.get("/v1/jobs", params={"cursor": "%%%"}), 422, "cursor")
    assert_problem(client.get("/v1/jobs", params={"limit": 0}), 422, "limit")


def test_unknown_job_is_404_everywhere(client):
    for path in ("/v1/jobs/job_x", "/v1/jobs/job_x/history", "/v1/jobs/job_x/events"):
        assert_problem(client.get(path), 404)
    assert_problem(client.post("/v1/jobs/job_x/cancel"), 404)


# --------------------------------------------------------------------------------------------------
# cancel


def test_cancel_queued_job_is_immediate_and_final(client, session_factory, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "cancelled" and r.json()["finished_at"]
    assert _claim(session_factory) is None  # a cancelled job is never claimed
    body = assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409)
    assert body["job_status"] == "cancelled"


def test_cancel_running_job_asks_its_worker(client, session_factory, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    claim = _claim(session_factory)
    with session_factory() as session:
        assert jobstate.stop_reason(session, claim) is None
    r = client.post(f"/v1/jobs/{job_id}/cancel")
    assert r.status_code == 202
    assert r.json()["status"] == "running" and r.json()["cancel_requested"] is True
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202  # asking twice is fine
    with session_factory() as session:
        assert jobstate.stop_reason(session, claim) == "cancel"
        assert jobstate.finish_cancelled(session, claim)
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel"), 409)


# --------------------------------------------------------------------------------------------------
# claims and the worker-side state machine


def test_claim_takes_the_oldest_job_of_the_worker_queues(client, session_factory, dataset_id):
    gpu = _post(client, {"dataset_id": dataset_id, "model": {"device": "cuda"}}).json()["id"]
    first = _post(client, {"dataset_id": dataset_id}).json()["id"]
    second = _post(client, {"dataset_id": dataset_id}).json()["id"]
    claims = [_claim(session_factory) for _ in range(3)]
    assert [c.job_id if c else None for c in claims] == [first, second, None]
    with session_factory() as session:
        assert jobstate.claim_next(session, "gpu-worker", ["cpu", "gpu"]).job_id == gpu
    job = client.get(f"/v1/jobs/{first}").json()
    assert job["status"] == "running" and job["attempts"] == 1 and job["started_at"] and job["heartbeat_at"]


def _claim_all(url: str, worker: str, out: list | None = None) -> list[str]:
    """Claim until the queue is empty, with a private engine (as a separate worker would)."""
    engine = make_engine(Settings(_env_file=None, database_url=url))
    session_factory = make_session_factory(engine)
    got = []
    while True:
        with session_factory() as session:
            claim = jobstate.claim_next(session, worker, ["cpu"])
        if claim is None:
            break
        got.append(claim.job_id)
    engine.dispose()
    if out is not None:
        out.extend(got)
    return got


def _queue_jobs(session_factory, dataset_id: str, n: int) -> list[str]:
    config = PipelineConfig().to_dict()
    with session_factory() as session:
        ids = [new_id("job") for _ in range(n)]
        session.add_all(Job(id=i, kind="train", dataset_id=dataset_id, config=config, history=[]) for i in ids)
        session.commit()
    return ids


def test_claim_race_between_threads_claims_each_job_once(settings, session_factory, dataset_id):
    ids = _queue_jobs(session_factory, dataset_id, 60)
    results: list[list[str]] = [[] for _ in range(8)]
    threads = [threading.Thread(target=_claim_all, args=(settings.resolved_database_url, f"w{i}", results[i]))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    claimed = [j for r in results for j in r]
    assert sorted(claimed) == sorted(ids) and not [j for j, n in Counter(claimed).items() if n > 1]
    assert sum(1 for r in results if r) > 1  # it was a race


def test_claim_race_between_processes_claims_each_job_once(settings, session_factory, dataset_id):
    ids = _queue_jobs(session_factory, dataset_id, 60)
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        results = pool.starmap(_claim_all, [(settings.resolved_database_url, f"p{i}") for i in range(3)])
    claimed = [j for r in results for j in r]
    assert sorted(claimed) == sorted(ids) and len(set(claimed)) == len(claimed)
    with session_factory() as session:
        assert set(session.scalars(select(Job.attempts))) == {1}


def _model_row(job_id: str, dataset_id: str, parent: str | None = None) -> Model:
    weights, config = kan_io.dumps(KAN([2, 3, 1], grid=3, seed=0))
    return Model(id=new_id("mdl"), job_id=job_id, dataset_id=dataset_id, parent_model_id=parent,
                 kan_config=config, weights=weights, width=[2, 3, 1], metrics={}, formulas=None)


def test_a_stale_claim_cannot_write(client, session_factory, settings, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    zombie = _claim(session_factory, "zombie")
    later = utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1)
    with session_factory() as session:
        assert jobstate.reap(session, settings, now=later).requeued == [job_id]
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"
    alive = _claim(session_factory, "alive")
    assert (alive.job_id, alive.attempt) == (job_id, 2)
    with session_factory() as session:
        # the zombie finishes late: nothing it writes lands, no model is made
        assert jobstate.stop_reason(session, zombie) == "lost"
        assert not jobstate.record_progress(session, zombie, {"stage": "x"}, [{"step": 1}])
        assert not jobstate.finish_succeeded(session, zombie, _model_row(job_id, dataset_id), None)
        assert not jobstate.finish_failed(session, zombie, "Boom", "late")
        assert jobstate.finish_succeeded(session, alive, _model_row(job_id, dataset_id), None)
        assert not jobstate.finish_succeeded(session, alive, _model_row(job_id, dataset_id), None)
        assert session.scalar(select(func.count()).select_from(Model)) == 1
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["attempts"] == 2 and job["model_id"]


def test_reaper_fails_a_job_after_max_attempts_and_cancels_when_asked(client, session_factory, settings, dataset_id):
    doomed = _post(client, {"dataset_id": dataset_id}).json()["id"]
    for attempt in range(1, settings.max_attempts + 1):
        claim = _claim(session_factory, f"w{attempt}")
        assert claim.attempt == attempt
        later = utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1)
        with session_factory() as session:
            jobstate.reap(session, settings, now=later)
    job = client.get(f"/v1/jobs/{doomed}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "WorkerLost"
    assert f"{settings.max_attempts} attempt" in job["error"]["detail"]

    wanted_gone = _post(client, {"dataset_id": dataset_id}).json()["id"]
    _claim(session_factory)
    client.post(f"/v1/jobs/{wanted_gone}/cancel")
    with session_factory() as session:
        jobstate.reap(session, settings, now=utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1))
    assert client.get(f"/v1/jobs/{wanted_gone}").json()["status"] == "cancelled"


def test_heartbeats_keep_a_job_and_silent_workers_are_forgotten(client, session_factory, settings, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    with session_factory() as session:
        jobstate.register_worker(session, "w1", kind="local", hostname="h", pid=1)
    claim = _claim(session_factory, "w1")
    with session_factory() as session:
        jobstate.heartbeat(session, "w1", claim)
        assert not jobstate.reap(session, settings)  # fresh heartbeat: nothing to do
        assert session.get(Worker, "w1") is not None
        jobstate.reap(session, settings, now=utcnow() + timedelta(seconds=settings.heartbeat_timeout_s + 1))
        assert session.get(Worker, "w1", populate_existing=True) is None
    assert client.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


def test_release_requeues_without_spending_an_attempt(client, session_factory, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    claim = _claim(session_factory)
    with session_factory() as session:
        assert jobstate.release(session, claim)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert (job["status"], job["attempts"], job["started_at"]) == ("queued", 0, None)
    assert _claim(session_factory).attempt == 1


def test_overdue_job_is_failed_by_the_reaper(client, session_factory, settings, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id}).json()["id"]
    claim = _claim(session_factory)
    later = utcnow() + timedelta(seconds=settings.job_timeout_s + settings.heartbeat_timeout_s + 1)
    with session_factory() as session:
        session.execute(Job.__table__.update().where(Job.id == job_id).values(heartbeat_at=later))
        session.commit()
        assert jobstate.reap(session, settings, now=later).failed == [job_id]
        assert not jobstate.finish_succeeded(session, claim, _model_row(job_id, dataset_id), None)
    assert client.get(f"/v1/jobs/{job_id}").json()["error"]["type"] == "JobTimeout"


# --------------------------------------------------------------------------------------------------
# progress, history, events


def _events(client: TestClient, job_id: str) -> list[tuple[str, dict]]:
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        return list(read_events(r.iter_lines()))


def test_progress_history_and_events_follow_the_job(client, session_factory, dataset_id):
    job_id = _post(client, {"dataset_id": dataset_id, **tiny_pipeline(steps=3)}).json()["id"]
    claim = _claim(session_factory)
    progress = {"stage": "train", "stage_index": 0, "stages": 1, "step": 0, "steps": 3,
                "train_rmse": None, "test_rmse": None}

    def work() -> None:
        for step in range(1, 4):
            threading.Event().wait(0.3)
            point = {"stage": "train", "stage_index": 0, "step": step, "train_rmse": 1.0 / step,
                     "test_rmse": 2.0 / step, "reg": 0.0}
            with session_factory() as session:
                jobstate.record_progress(session, claim, {**progress, "step": step, "train_rmse": 1.0 / step,
                                                      "test_rmse": 2.0 / step}, [point])
        with session_factory() as session:
            jobstate.finish_succeeded(session, claim, _model_row(job_id, dataset_id), None)

    worker = threading.Thread(target=work)
    worker.start()
    events = _events(client, job_id)
    worker.join()
    names = [n for n, _ in events]
    assert names[-1] == "end" and set(names[:-1]) == {"progress"}
    steps = [d["progress"]["step"] for n, d in events if n == "progress" and d["progress"]]
    assert steps == sorted(steps) and steps[-1] == 3 and len(steps) >= 2
    end = events[-1][1]
    assert end["status"] == "succeeded" and end["model_id"] == client.get(f"/v1/jobs/{job_id}").json()["model_id"]
    history = client.get(f"/v1/jobs/{job_id}/history").json()
    assert [p["step"] for p in history["points"]] == [1, 2, 3]
    assert history["points"][2]["train_rmse"] == pytest.approx(1 / 3)
    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["progress"]["step"] == 3 and job["progress"]["stages"] == 1


# --------------------------------------------------------------------------------------------------
# POST /v1/models/{id}/symbolic


@pytest.fixture
def parent_model(client, session_factory, dataset_id) -> str:
    job_id = _post(client, {"dataset_id": dataset_id, "model": {"width": [2, 3, 1], "dtype": "float32"}}).json()["id"]
    claim = _claim(session_factory)
    row = _model_row(job_id, dataset_id)
    with session_factory() as session:
        assert jobstate.finish_succeeded(session, claim, row, None)
    return row.id


SYMBOLIC = {"fixes": [{"layer": 0, "in": 0, "out": 0, "function": "sin"},
                      {"layer": 1, "in": 2, "out": 0, "function": "exp"}], "auto": False}


def test_symbolic_job_derives_from_a_model(client, parent_model, dataset_id):
    r = client.post(f"/v1/models/{parent_model}/symbolic", json=SYMBOLIC)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "symbolic" and job["parent_model_id"] == parent_model and job["dataset_id"] == dataset_id
    assert job["config"]["model"]["width"] == [2, 3, 1] and job["config"]["model"]["dtype"] == "float32"
    symbolic, retrain = job["config"]["stages"]
    assert symbolic["kind"] == "symbolic" and symbolic["auto"] is False and symbolic["fixes"][1]["function"] == "exp"
    assert retrain["kind"] == "train" and retrain["steps"] == 50
    no_retrain = client.post(f"/v1/models/{parent_model}/symbolic", json={**SYMBOLIC, "retrain": None}).json()
    assert len(no_retrain["config"]["stages"]) == 1


def test_symbolic_job_is_idempotent_per_model(client, parent_model):
    url = f"/v1/models/{parent_model}/symbolic"
    first = client.post(url, json=SYMBOLIC, headers={"Idempotency-Key": "s1"}).json()["id"]
    assert client.post(url, json=SYMBOLIC, headers={"Idempotency-Key": "s1"}).json()["id"] == first
    assert_problem(client.post(url, json={"auto": True}, headers={"Idempotency-Key": "s1"}), 422, "Idempotency-Key")


@pytest.mark.parametrize(("body", "field"), [
    ({"fixes": [{"layer": 0, "in": 2, "out": 0, "function": "sin"}]}, "fixes[0].in"),
    ({"fixes": [{"layer": 1, "in": 3, "out": 0, "function": "sin"}]}, "fixes[0].in"),
    ({"fixes": [{"layer": 0, "in": 0, "out": 3, "function": "sin"}]}, "fixes[0].out"),
    ({"fixes": [{"layer": 2, "in": 0, "out": 0, "function": "sin"}]}, "fixes[0].layer"),
    ({"fixes": [{"layer": 0, "in": 0, "out": 0, "function": "sine"}]}, "fixes[0].function"),
    ({"auto": False}, "body"),
    ({"retrain": {"steps": 5000}}, "retrain.steps"),
])
def test_symbolic_job_validation(client, parent_model, body, field):
    assert_problem(client.post(f"/v1/models/{parent_model}/symbolic", json=body), 422, field)


def test_symbolic_job_of_unknown_model_is_404(client):
    assert_problem(client.post("/v1/models/mdl_nope/symbolic", json={"auto": True}), 404)
