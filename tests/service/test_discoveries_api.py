"""Discoveries and batches for real: the API (in-process TestClient) queues a discovery, its candidates
run as jobs on worker processes against a real SQLite file, and the parent is advanced by the workers
(after each candidate, and on every heartbeat for the deadline) without ever holding a worker."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi.testclient import TestClient

from jobs_support import FAST, assert_problem, insert_dataset, wait_for
from kan_core.judge import is_solution
from service.worker.local import WorkerPool

WAIT_S = 300  # a loaded 2-core machine runs a product candidate in ~15 s
FINAL = ("succeeded", "failed", "cancelled")
SETTINGS = FAST  # the conftest's `settings`: workers that notice jobs and beat quickly


@pytest.fixture
def dataset_id(session_factory) -> str:
    return insert_dataset(session_factory, n_train=100, n_test=50)


def _discover(client: TestClient, dataset_id: str, *, candidates: int, seconds: float = WAIT_S,
              steps: int = 3) -> dict:
    """Queue a discovery; its budget (from now, while the workers may still be starting) is WAIT_S unless
    a test means to run out of it."""
    body = {"dataset_id": dataset_id, "budget": {"max_candidates": candidates, "max_seconds": seconds},
            "options": {"train_steps": steps}}
    r = client.post("/v1/discoveries", json=body)
    assert r.status_code == 202, r.text
    assert r.headers["Location"] == f"/v1/discoveries/{r.json()['id']}"
    return r.json()


def _wait_final(client: TestClient, url: str) -> dict:
    def final():
        body = client.get(url).json()
        return body if body["status"] in FINAL + ("finished",) else None

    return wait_for(final, WAIT_S, 0.1, f"{url} to finish")


def _children_final(client: TestClient, discovery: dict) -> list[dict]:
    def done():
        jobs = [client.get(f"/v1/jobs/{c['job_id']}").json() for c in discovery["candidates"]]
        return jobs if all(j["status"] in FINAL for j in jobs) else None

    return wait_for(done, WAIT_S, 0.1, "every candidate to end")


def test_a_discovery_on_one_worker_returns_a_non_dominated_front(client, dataset_id, settings) -> None:
    created = _discover(client, dataset_id, candidates=3)
    assert created["status"] == "running" and len(created["candidates"]) <= 3
    assert created["progress"] == {"candidates_done": 0, "candidates_total": len(created["candidates"]), "best": None}
    with WorkerPool(settings, 1):  # one worker: the parent must not hold it
        done = _wait_final(client, f"/v1/discoveries/{created['id']}")
    assert done["status"] == "succeeded", done
    front = done["front"]
    assert front and done["chosen"] in front
    for p in front:
        assert not any(q["complexity"] <= p["complexity"] and q["test_rmse"] <= p["test_rmse"] and q != p
                       and (q["complexity"], q["test_rmse"]) != (p["complexity"], p["test_rmse"]) for q in front)
        candidate = client.get(f"/v1/jobs/{p['job_id']}").json()
        assert candidate["kind"] == "candidate" and candidate["parent_job_id"] == created["id"]
        assert candidate["status"] == "succeeded" and candidate["config"]["id"] == p["candidate"]["id"]
        assert candidate["result"]["formula"] == p["formula"] and candidate["result"]["test_rmse"] == p["test_rmse"]
        assert p["variables"] == ["x1", "x2"]
    assert [p["complexity"] for p in front] == sorted(p["complexity"] for p in front)
    assert done["progress"]["candidates_done"] >= 1
    # the candidates are jobs; the discovery itself is not one
    assert_problem(client.get(f"/v1/jobs/{created['id']}"), 404)
    listed = client.get("/v1/discoveries", params={"limit": 1}).json()
    assert [d["id"] for d in listed["items"]] == [created["id"]] and listed["next_cursor"] is None


def test_the_deadline_ends_a_discovery_and_cancels_the_rest(client, dataset_id, settings) -> None:
    created = _discover(client, dataset_id, candidates=3, seconds=1.5, steps=20_000)  # minutes per candidate
    with WorkerPool(settings, 1):
        done = _wait_final(client, f"/v1/discoveries/{created['id']}")
        children = _children_final(client, done)
    assert done["status"] == "failed" and done["error"]["type"] == "NoFormula", done
    assert "time budget" in done["reason"]
    elapsed = datetime.fromisoformat(done["finished_at"]) - datetime.fromisoformat(done["created_at"])
    assert elapsed.total_seconds() >= 1.5
    assert {c["status"] for c in children} == {"cancelled"}


def test_cancelling_a_discovery_cancels_its_candidates(client, dataset_id, settings) -> None:
    created = _discover(client, dataset_id, candidates=2, steps=20_000)
    url = f"/v1/discoveries/{created['id']}"
    with WorkerPool(settings, 1):
        wait_for(lambda: any(c["status"] == "running" for c in client.get(url).json()["candidates"]), WAIT_S, 0.05,
                 "a candidate to start")
        r = client.post(f"{url}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled" and r.json()["reason"] == "cancelled"
        children = _children_final(client, r.json())
    assert {c["status"] for c in children} == {"cancelled"}
    assert_problem(client.post(f"{url}/cancel"), 409)
    assert_problem(client.post(f"{url}/predict", json={"inputs": [[0.0, 0.0]]}), 409)  # no formula to predict with


def test_a_batch_rejects_a_bad_item_and_completes_the_others(client, dataset_id, settings) -> None:
    good = {"expression": "x1 + x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 100, "n_test": 50}
    body = {"items": [{"dataset": good},
                      {"dataset": {**good, "expression": "x1 +* x2"}},
                      {"dataset": {**good, "n_train": 0}},
                      {"dataset_id": "ds_missing"},
                      {"dataset_id": dataset_id}],
            "budget": {"max_candidates": 2, "max_seconds": WAIT_S}, "options": {"train_steps": 3}}
    r = client.post("/v1/batches", json=body)
    assert r.status_code == 202, r.text
    items = r.json()["items"]
    assert [i["status"] for i in items] == ["running", "rejected", "rejected", "rejected", "running"]
    assert items[1]["problem"]["field"].startswith("items[1].dataset.expression"), items[1]
    assert items[2]["problem"]["field"] == "items[2].dataset.n_train", items[2]
    assert items[3]["problem"]["status"] == 404 and "ds_missing" in items[3]["problem"]["detail"]
    with WorkerPool(settings, 1):
        done = _wait_final(client, r.headers["Location"])
    assert done["status"] == "finished"
    for i in (0, 4):
        assert done["items"][i]["status"] == "succeeded" and done["items"][i]["chosen"]["formula"], done["items"][i]
    assert done["items"][0]["dataset_id"] and done["items"][4]["dataset_id"] == dataset_id


def test_budgets_are_capped_by_the_settings(make_settings) -> None:
    from service.app import create_app

    app = create_app(make_settings(max_discovery_candidates=2, max_discovery_seconds=10, max_batch_items=1))
    with TestClient(app) as client:
        ds = insert_dataset(app.state.session_factory)
        for budget, field in (({"max_candidates": 3}, "budget.max_candidates"),
                              ({"max_seconds": 11}, "budget.max_seconds")):
            assert_problem(client.post("/v1/discoveries", json={"dataset_id": ds, "budget": budget}), 422, field)
        r = client.post("/v1/discoveries", json={"dataset_id": ds, "options": {"train_steps": 1}})
        assert r.status_code == 202 and r.json()["budget"] == {"max_candidates": 2, "max_seconds": 10}  # defaults, capped
        items = [{"dataset_id": ds}, {"dataset_id": ds}]
        assert_problem(client.post("/v1/batches", json={"items": items}), 422, "items")


def test_a_discovery_recovers_a_product_and_stops_early(client, session_factory, settings) -> None:
    """The engine's candidates end to end, claimed in the engine's order: x1*x2 is found exactly by the
    first (the sparse fit), so the discovery stops there instead of running all eight."""
    ds = insert_dataset(session_factory, n_train=200, n_test=100, fn=lambda x: (x[:, 0] * x[:, 1])[:, None])
    r = client.post("/v1/discoveries", json={"dataset_id": ds, "budget": {"max_candidates": 8, "max_seconds": WAIT_S}})
    assert r.status_code == 202, r.text
    with WorkerPool(settings, 1):
        done = _wait_final(client, r.headers["Location"])
    assert done["status"] == "succeeded", done
    assert "numerical precision" in done["reason"] and "validation rows" in done["reason"]
    chosen = done["chosen"]
    assert chosen["r2"] > 1 - 1e-10 and chosen["candidate"]["id"] == "00-sparse", chosen  # claimed in the engine's order
    assert is_solution(chosen["formula"], "x1*x2", ["x1", "x2"])
    statuses = sorted(c["status"] for c in done["candidates"])  # one worker advances the parent before its next claim
    assert statuses == ["cancelled"] * 7 + ["succeeded"], statuses

    # the chosen formula serves predictions, off the training range too (it is a formula, not a network)
    url = f"{r.headers['Location']}/predict"
    answer = client.post(url, json={"inputs": [[0.5, -2.0], [3.0, 4.0]]})
    assert answer.status_code == 200, answer.text
    assert answer.json()["formula"] == chosen["formula"] and answer.json()["variables"] == ["x1", "x2"]
    assert answer.json()["outputs"] == [[pytest.approx(-1.0, abs=1e-6)], [pytest.approx(12.0, abs=1e-5)]]
    last = len(done["front"]) - 1
    assert client.post(url, params={"point": last}, json={"inputs": [[1.0, 1.0]]}).json()["formula"] == \
        done["front"][last]["formula"]
    assert_problem(client.post(url, params={"point": last + 1}, json={"inputs": [[1.0, 1.0]]}), 422, "point")
    assert_problem(client.post(url, json={"inputs": [[1.0, 1.0, 1.0]]}), 422, "inputs[0]")


def test_idempotency_keys_replay_discoveries_and_batches(client, dataset_id) -> None:
    body = {"dataset_id": dataset_id, "budget": {"max_candidates": 2}, "options": {"train_steps": 3}}
    first = client.post("/v1/discoveries", json=body, headers={"Idempotency-Key": "d-1"})
    again = client.post("/v1/discoveries", json=body, headers={"Idempotency-Key": "d-1"})
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["candidates"] == first.json()["candidates"]
    assert len(client.get("/v1/discoveries").json()["items"]) == 1
    assert_problem(client.post("/v1/discoveries", json={**body, "budget": {"max_candidates": 1}},
                               headers={"Idempotency-Key": "d-1"}), 422, "Idempotency-Key")

    batch = {"items": [{"dataset_id": dataset_id}, {"dataset_id": "ds_missing"}], "budget": {"max_candidates": 1}}
    first = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b-1"})
    again = client.post("/v1/batches", json=batch, headers={"Idempotency-Key": "b-1"})
    assert first.status_code == again.status_code == 202, again.text
    assert again.json()["id"] == first.json()["id"] and again.json()["items"] == first.json()["items"]
    assert [i["status"] for i in first.json()["items"]] == ["running", "rejected"]
    assert len(client.get("/v1/discoveries").json()["items"]) == 2  # one more, not two
    assert_problem(client.post("/v1/batches", json={**batch, "items": batch["items"][:1]},
                               headers={"Idempotency-Key": "b-1"}), 422, "Idempotency-Key")
