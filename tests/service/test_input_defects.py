"""Issue 18's probes from outside, pinned: every bad request answers a 4xx problem+json naming the
field, keeps the connection, and stores nothing. The real app on a real SQLite file, no mocks."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service.models import Dataset, IdempotencyRecord, Job

SMALL = {"inputs": [[0.1, 0.2], [0.3, -0.5], [0.9, 0.4], [-0.2, 0.7]], "targets": [0.02, -0.15, 0.36, -0.14]}


def stored(factory: sessionmaker[Session]) -> tuple[int, int, int]:
    with factory() as session:
        return tuple(session.scalar(select(func.count()).select_from(table)) or 0  # type: ignore[return-value]
                     for table in (Dataset, Job, IdempotencyRecord))


def assert_problem(response: Any, status: int, field: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers.get("connection") != "close"
    body = response.json()
    assert body["status"] == status and body["detail"] and body.get("field") == field, body
    return body


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    response = client.post("/v1/datasets", json=SMALL)
    assert response.status_code == 201, response.text
    return response.json()["id"]


# ---- deeply nested JSON

# every POST route that reads a JSON body; the nesting sits in one of its fields
NESTED_BODIES = {
    "/v1/datasets": '{"inputs": %s, "targets": [1]}',
    "/v1/jobs": '{"dataset_id": "ds_x", "stages": %s}',
    "/v1/discoveries": '{"dataset_id": %s}',
    "/v1/batches": '{"items": [{"dataset": {"inputs": %s}}]}',
    "/v1/models/mdl_x/predict": '{"inputs": %s}',
    "/v1/models/mdl_x/symbolic": '{"fixes": %s}',
    "/v1/discoveries/dsc_x/predict": '{"inputs": %s}',
}


@pytest.mark.parametrize("path", sorted(NESTED_BODIES))
def test_json_nested_past_the_parser_is_400_naming_the_body(client, session_factory, path) -> None:
    # 2,000 levels: json.loads raises RecursionError (was an unhandled 500 on /v1/datasets)
    nest = "[" * 2_000 + "]" * 2_000
    response = client.post(path, content=NESTED_BODIES[path] % nest, headers={"content-type": "application/json"})
    assert_problem(response, 400, "body")
    assert stored(session_factory) == (0, 0, 0)
    assert client.get("/healthz").status_code == 200  # the server still answers


@pytest.mark.parametrize(("path", "field"), [
    ("/v1/datasets", "inputs[0][0]"), ("/v1/jobs", "stages[0]"), ("/v1/discoveries", "dataset_id"),
    ("/v1/batches", "items[0].dataset"), ("/v1/models/mdl_x/predict", "inputs[0][0]"),
    ("/v1/models/mdl_x/symbolic", "fixes[0]"), ("/v1/discoveries/dsc_x/predict", "inputs[0][0]"),
])
def test_json_nested_within_the_parser_is_422_naming_the_field(client, session_factory, path, field) -> None:
    # 500 levels parse; the batch item's free-form `dataset` overflowed the serialiser (500) before
    nest = "[" * 500 + "]" * 500
    response = client.post(path, content=NESTED_BODIES[path] % nest, headers={"content-type": "application/json"})
    assert_problem(response, 422, field)
    assert stored(session_factory) == (0, 0, 0)


# ---- multipart errors


def test_multipart_with_too_many_fields_names_the_body(client, session_factory) -> None:
    fields = {f"extra{i}": "x" for i in range(10)}
    response = client.post("/v1/datasets", files={"file": ("a.csv", b"a,b\n1,2\n3,4\n")}, data=fields)
    body = assert_problem(response, 400, "body")
    assert "Too many fields" in body["detail"]
    assert stored(session_factory) == (0, 0, 0)


def test_multipart_without_boundary_names_the_body(client, session_factory) -> None:
    response = client.post("/v1/datasets", content=b"a,b\n1,2\n", headers={"content-type": "multipart/form-data"})
    body = assert_problem(response, 400, "body")
    assert "boundary" in body["detail"]
    assert stored(session_factory) == (0, 0, 0)


# ---- numbers that overflow downstream


@pytest.mark.parametrize(("body", "field", "column"), [
    ({"inputs": [[1e308], [-1e308], [1e308], [-1e308]], "targets": [1, 2, 3, 4]}, "inputs", "x1"),
    ({"inputs": [[1], [2], [3], [4]], "targets": [1e200, -1e200, 3, 4]}, "targets", "y"),
    ({"expression": "x1", "ranges": {"x1": [-1e200, 1e200]}, "n_train": 10, "n_test": 5}, "ranges.x1", "x1"),
    ({"expression": "exp(x1)", "ranges": {"x1": [600, 700]}, "n_train": 10, "n_test": 5}, "expression", "y"),
])
def test_values_whose_statistics_overflow_are_refused(client, session_factory, body, field, column) -> None:
    # each value is a finite float, but the column's std (or its squares) overflows: the dataset was
    # stored with a null std before, and every job on it failed
    problem = assert_problem(client.post("/v1/datasets", json=body), 422, field)
    assert problem["column"] == column
    assert stored(session_factory) == (0, 0, 0)


def test_csv_values_whose_statistics_overflow_are_refused(client, session_factory) -> None:
    csv = b"a,y\n1e300,1\n-1e300,2\n1,3\n"
    response = client.post("/v1/datasets", content=csv, headers={"content-type": "text/csv"})
    problem = assert_problem(response, 422, "body")
    assert problem["column"] == "a"
    assert stored(session_factory) == (0, 0, 0)


def test_a_huge_grid_range_is_refused(client, session_factory, dataset_id) -> None:
    body = {"dataset_id": dataset_id, "model": {"grid_range": [-1e308, 1e308]}}
    assert_problem(client.post("/v1/jobs", json=body), 422, "model.grid_range[0]")
    assert stored(session_factory) == (1, 0, 0)


# ---- one strictness everywhere


def test_r2_threshold_is_at_most_one(client, session_factory, dataset_id) -> None:
    stages = [{"kind": "symbolic", "r2_threshold": 5}]
    assert_problem(client.post("/v1/jobs", json={"dataset_id": dataset_id, "stages": stages}), 422,
                   "stages[0].r2_threshold")
    assert_problem(client.post("/v1/models/mdl_x/symbolic", json={"auto": True, "r2_threshold": 1.5}), 422,
                   "r2_threshold")
    assert stored(session_factory) == (1, 0, 0)


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/models/mdl_x/symbolic", {"auto": "yes"}, "auto"),
    ("/v1/models/mdl_x/symbolic", {"auto": 1}, "auto"),
    ("/v1/jobs", {"dataset_id": "ds_x", "stages": [{"kind": "train", "update_grid": "false"}]},
     "stages[0].update_grid"),
    ("/v1/jobs", {"dataset_id": "ds_x", "stages": [{"kind": "train", "steps": "5"}]}, "stages[0].steps"),
    ("/v1/jobs", {"dataset_id": "ds_x", "model": {"grid": 5.0}}, "model.grid"),
    ("/v1/discoveries", {"dataset_id": "ds_x", "budget": {"max_seconds": "60"}}, "budget.max_seconds"),
])
def test_values_are_not_coerced(client, session_factory, path, body, field) -> None:
    assert_problem(client.post(path, json=body), 422, field)
    assert stored(session_factory) == (0, 0, 0)


@pytest.mark.parametrize("path", ["/v1/models/mdl_x/predict", "/v1/discoveries/dsc_x/predict"])
def test_predict_bodies_refuse_unknown_fields(client, path) -> None:
    assert_problem(client.post(path, json={"inputs": [[0.1, 0.2]], "mode": "formula"}), 422, "mode")


def test_a_stage_without_kind_is_refused(client, session_factory, dataset_id) -> None:
    problem = assert_problem(client.post("/v1/jobs", json={"dataset_id": dataset_id, "stages": [{"steps": 5}]}),
                             422, "stages[0]")
    assert "kind" in problem["detail"]
    assert stored(session_factory) == (1, 0, 0)


@pytest.mark.parametrize(("path", "param"), [
    ("/v1/jobs", "priority"), ("/v1/discoveries", "wait"), ("/v1/datasets", "test_fractoin"),
    ("/v1/models/mdl_x/symbolic", "x"),
])
def test_post_routes_refuse_unknown_query_parameters(client, session_factory, dataset_id, path, param) -> None:
    body = SMALL if path == "/v1/datasets" else {"dataset_id": dataset_id, "auto": True}
    body = {"auto": True} if "symbolic" in path else body
    assert_problem(client.post(f"{path}?{param}=1", json=body), 422, param)
    assert stored(session_factory) == (1, 0, 0)


def test_declared_query_parameters_still_work(client, dataset_id) -> None:
    assert client.post("/v1/datasets?test_fraction=0.5", json=SMALL).status_code == 201
    # predict's `mode` is declared: the model is unknown (404), the parameter is not refused
    assert client.post("/v1/models/mdl_x/predict?mode=formula", json={"inputs": [[0.1, 0.2]]}).status_code == 404
    assert client.get("/v1/jobs?cache_buster=1").status_code == 200  # GET routes ignore unknown ones


# ---- the OpenAPI document says what the server enforces


def test_schema_requires_a_stage_kind_and_one_dataset_source(client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("TrainStageSpec", "PruneStageSpec", "SymbolicStageSpec", "RefineStageSpec"):
        assert "kind" in schemas[name]["required"], name
    item = schemas["BatchItemCreate"]
    assert [branch["required"] for branch in item["oneOf"]] == [["dataset"], ["dataset_id"]]
    assert schemas["SymbolicStageSpec"]["properties"]["r2_threshold"]["maximum"] == 1.0
    assert schemas["ModelSpec"]["properties"]["grid_range"]["prefixItems"][0]["minimum"] == -1e6


@pytest.mark.parametrize("item", [{}, {"dataset": None, "dataset_id": None},
                                  {"dataset": {"expression": "x1"}, "dataset_id": "ds_x"}])
def test_a_batch_item_needs_exactly_one_source(client, session_factory, item) -> None:
    assert_problem(client.post("/v1/batches", json={"items": [item]}), 422, "items[0]")
    assert stored(session_factory) == (0, 0, 0)


# ---- Idempotency-Key of a deleted resource


def test_an_idempotency_key_is_released_with_its_dataset(client, session_factory) -> None:
    headers = {"Idempotency-Key": "create-small-once"}
    first = client.post("/v1/datasets", json=SMALL, headers=headers)
    assert first.status_code == 201
    replay = client.post("/v1/datasets", json=SMALL, headers=headers)
    assert replay.status_code == 201 and replay.json()["id"] == first.json()["id"]
    assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
    assert stored(session_factory) == (0, 0, 0)  # the key went with its dataset
    again = client.post("/v1/datasets", json=SMALL, headers=headers)
    assert again.status_code == 201 and again.json()["id"] != first.json()["id"]
    assert stored(session_factory) == (1, 0, 1)
