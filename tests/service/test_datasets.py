"""/v1/datasets end to end: the real app on a real SQLite file, no mocks.

Every rejected request must answer problem+json naming the field at fault and store nothing."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from service import datasets
from service.config import Settings
from service.ids import new_id
from service.models import Dataset, Job, JobKind
from service.schemas.common import encode_cursor
from service.schemas.datasets import DatasetCreateArrays

SEED_FORMULA = {
    "name": "seed formula", "expression": "exp(sin(pi*x1) + x2**2)",
    "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 200, "n_test": 100, "seed": 0,
}
SMALL_FORMULA = {**SEED_FORMULA, "n_train": 10, "n_test": 5}


def _reject_constant(token: str) -> None:
    raise AssertionError(f"non-JSON constant {token} in a response")


def strict_json(response: Any) -> Any:
    return json.loads(response.content, parse_constant=_reject_constant)


def assert_problem(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = strict_json(response)
    assert body["status"] == status and body["title"] and body["detail"]
    if field is not None:
        assert body.get("field") == field, body
    return body


def count_datasets(factory: sessionmaker[Session]) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(Dataset)) or 0


def stored_arrays(factory: sessionmaker[Session], dataset_id: str) -> datasets.DatasetArrays:
    with factory() as session:
        row = session.get(Dataset, dataset_id)
        assert row is not None
        return datasets.unpack(row.arrays)


def all_rows(client: TestClient, dataset_id: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    body = strict_json(client.get(f"/v1/datasets/{dataset_id}/data", params={"split": split, "limit": 10_000}))
    return np.array(body["inputs"]), np.array(body["targets"])


# --------------------------------------------------------------------------------------------------
# JSON arrays


def test_create_from_json_splits_and_summarises(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    inputs = [[float(i), float(i % 3)] for i in range(10)]
    targets = [float(i * i) for i in range(10)]
    response = client.post("/v1/datasets", json={
        "name": "squares", "feature_names": ["a", "b"], "target_names": ["sq"],
        "inputs": inputs, "targets": targets, "test_fraction": 0.3, "seed": 7,
    })
    assert response.status_code == 201, response.text
    body = strict_json(response)
    assert response.headers["location"].endswith(f"/v1/datasets/{body['id']}")
    assert body["id"].startswith("ds_")
    assert (body["name"], body["source"], body["expression"]) == ("squares", "json", None)
    assert (body["feature_names"], body["target_names"]) == (["a", "b"], ["sq"])
    assert (body["n_train"], body["n_test"]) == (7, 3)
    assert body["created_at"].endswith("Z") or body["created_at"].endswith("+00:00")
    columns = {c["name"]: c for c in body["columns"]}
    assert columns["a"] == {"name": "a", "role": "feature", "min": 0.0, "max": 9.0, "mean": 4.5,
                            "std": pytest.approx(float(np.std(np.arange(10))))}
    assert columns["sq"]["role"] == "target" and columns["sq"]["max"] == 81.0

    # the split partitions the rows, each split in the original order
    x_train, y_train = all_rows(client, body["id"], "train")
    x_test, y_test = all_rows(client, body["id"], "test")
    together = sorted(map(tuple, np.hstack([np.vstack([x_train, x_test]), np.vstack([y_train, y_test])]).tolist()))
    assert together == sorted((a, b, t) for (a, b), t in zip(inputs, targets))
    assert list(x_train[:, 0]) == sorted(x_train[:, 0])

    # stored as float64 safetensors
    arrays = stored_arrays(session_factory, body["id"])
    assert arrays.train_input.dtype == np.float64 and arrays.train_input.shape == (7, 2)
    assert arrays.train_label.shape == (7, 1) and arrays.test_label.shape == (3, 1)

    assert strict_json(client.get(f"/v1/datasets/{body['id']}")) == body


def test_split_is_reproducible_from_the_seed(client: TestClient) -> None:
    payload = {"inputs": [[float(i)] for i in range(20)], "targets": list(range(20))}
    first = strict_json(client.post("/v1/datasets", json={**payload, "seed": 3}))["id"]
    again = strict_json(client.post("/v1/datasets", json={**payload, "seed": 3}))["id"]
    other = strict_json(client.post("/v1/datasets", json={**payload, "seed": 4}))["id"]
    assert all_rows(client, first, "test")[0].tolist() == all_rows(client, again, "test")[0].tolist()
    assert all_rows(client, first, "test")[0].tolist() != all_rows(client, other, "test")[0].tolist()


def test_defaults_and_multiple_targets(client: TestClient) -> None:
    body = strict_json(client.post("/v1/datasets", json={
        "inputs": [[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 1, 1], [2, 2, 2]],
        "targets": [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]],
    }))
    assert body["feature_names"] == ["x1", "x2", "x3"]
    assert body["target_names"] == ["y1", "y2"]
    assert (body["n_train"], body["n_test"]) == (4, 1)  # default test_fraction 0.2


def test_explicit_test_split_is_kept_as_given(client: TestClient) -> None:
    body = strict_json(client.post("/v1/datasets", json={
        "inputs": [[0.0], [1.0], [2.0]], "targets": [0, 1, 4],
        "test_inputs": [[3.0], [4.0]], "test_targets": [[9], [16]],
    }))
    assert (body["n_train"], body["n_test"]) == (3, 2)
    assert all_rows(client, body["id"], "test")[0].tolist() == [[3.0], [4.0]]
    assert all_rows(client, body["id"], "train")[1].tolist() == [[0.0], [1.0], [4.0]]


def test_load_arrays_gives_the_engine_dataset(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    import torch

    dataset_id = strict_json(client.post("/v1/datasets", json=SEED_FORMULA))["id"]
    with session_factory() as session:
        row = session.get(Dataset, dataset_id)
        data = datasets.load_arrays(row)
        data32 = datasets.load_arrays(row, dtype="float32")
    assert data.train_input.shape == (200, 2) and data.test_label.shape == (100, 1)
    assert data.train_input.dtype == torch.float64 and data32.train_input.dtype == torch.float32


# --------------------------------------------------------------------------------------------------
# CSV


CSV = "a,b,y\n0.5,1,1.5\n1.5,2,3.5\n\n2.5,3,5.5\n3.5,4,7.5\n"


def test_create_from_csv_upload(client: TestClient) -> None:
    response = client.post("/v1/datasets", files={"file": ("data.csv", CSV.encode(), "text/csv")},
                           data={"targets": "y", "test_fraction": "0.25", "seed": "1", "name": "csv data"})
    assert response.status_code == 201, response.text
    body = strict_json(response)
    assert (body["source"], body["name"]) == ("csv", "csv data")
    assert (body["feature_names"], body["target_names"]) == (["a", "b"], ["y"])
    assert (body["n_train"], body["n_test"]) == (3, 1)
    x_train, y_train = all_rows(client, body["id"], "train")
    assert all(y == a + b for (a, b), (y,) in zip(x_train.tolist(), y_train.tolist()))


def test_csv_target_defaults_to_the_last_column_and_handles_bom_and_quotes(client: TestClient) -> None:
    text = '\ufeff"p","q","r"\n"1","2","3"\n4,5,6\r\n7,8,9\n'
    body = strict_json(client.post("/v1/datasets", files={"file": ("d.csv", text.encode())}))
    assert (body["feature_names"], body["target_names"]) == (["p", "q"], ["r"])
    assert body["n_train"] + body["n_test"] == 3


def test_create_from_csv_body_with_query_options(client: TestClient) -> None:
    response = client.post("/v1/datasets", content=CSV.encode(), headers={"content-type": "text/csv; charset=utf-8"},
                           params={"targets": "a,y", "test_fraction": "0.5"})
    assert response.status_code == 201, response.text
    body = strict_json(response)
    assert (body["feature_names"], body["target_names"]) == (["b"], ["a", "y"])
    assert (body["n_train"], body["n_test"]) == (2, 2)


# --------------------------------------------------------------------------------------------------
# synthetic


def test_create_from_expression_matches_the_formula(client: TestClient) -> None:
    response = client.post("/v1/datasets", json=SEED_FORMULA)
    assert response.status_code == 201, response.text
    body = strict_json(response)
    assert (body["source"], body["expression"]) == ("expression", SEED_FORMULA["expression"])
    assert (body["feature_names"], body["target_names"]) == (["x1", "x2"], ["y"])
    assert (body["n_train"], body["n_test"]) == (200, 100)
    for split in ("train", "test"):
        x, y = all_rows(client, body["id"], split)
        assert x.min() >= -1 and x.max() <= 1
        np.testing.assert_allclose(y[:, 0], np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2), rtol=1e-12)


def test_synthetic_data_is_reproducible_from_the_seed(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    ids = [strict_json(client.post("/v1/datasets", json={**SEED_FORMULA, "seed": seed}))["id"] for seed in (5, 5, 6)]
    a, b, c = (stored_arrays(session_factory, i) for i in ids)
    np.testing.assert_array_equal(a.train_input, b.train_input)
    np.testing.assert_array_equal(a.test_label, b.test_label)
    assert not np.array_equal(a.train_input, c.train_input)


def test_synthetic_noise_and_ranges(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    body = strict_json(client.post("/v1/datasets", json={
        "expression": "a*b", "ranges": {"a": [2, 3], "b": [-5, -4], "unused": [0, 1]},
        "n_train": 500, "n_test": 10, "noise": 0.1, "target_name": "prod",
    }))
    assert body["feature_names"] == ["a", "b", "unused"] and body["target_names"] == ["prod"]
    arrays = stored_arrays(session_factory, body["id"])
    assert arrays.train_input[:, 0].min() >= 2 and arrays.train_input[:, 1].max() <= -4
    residual = arrays.train_label[:, 0] - arrays.train_input[:, 0] * arrays.train_input[:, 1]
    assert 0.05 < residual.std() < 0.2


def test_constant_expression(client: TestClient) -> None:
    body = strict_json(client.post("/v1/datasets", json={"expression": "2*pi", "ranges": {"x": [0, 1]},
                                                         "n_train": 3, "n_test": 2}))
    target = next(c for c in body["columns"] if c["role"] == "target")
    assert target["min"] == target["max"] == pytest.approx(2 * math.pi) and target["std"] == 0.0


# --------------------------------------------------------------------------------------------------
# read, list, delete


def test_list_paginates_newest_first(client: TestClient) -> None:
    assert strict_json(client.get("/v1/datasets")) == {"items": [], "next_cursor": None}
    ids = [strict_json(client.post("/v1/datasets", json={"inputs": [[i], [i + 1]], "targets": [0, 1]}))["id"]
           for i in range(5)]
    seen: list[str] = []
    cursor = None
    for _ in range(3):
        page = strict_json(client.get("/v1/datasets", params={"limit": 2, **({"cursor": cursor} if cursor else {})}))
        assert len(page["items"]) <= 2 and "columns" not in page["items"][0]
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
    assert cursor is None
    assert seen == ids[::-1]


def test_list_rejects_bad_paging(client: TestClient) -> None:
    assert_problem(client.get("/v1/datasets", params={"cursor": "!!!"}), 422, "cursor")
    assert_problem(client.get("/v1/datasets", params={"limit": 0}), 422, "limit")
    assert_problem(client.get("/v1/datasets", params={"limit": 10_000}), 422, "limit")


def test_data_window_and_validation(client: TestClient) -> None:
    dataset_id = strict_json(client.post("/v1/datasets", json=SEED_FORMULA))["id"]
    window = strict_json(client.get(f"/v1/datasets/{dataset_id}/data", params={"split": "test", "offset": 95, "limit": 10}))
    assert (window["split"], window["offset"], window["total"], len(window["inputs"])) == ("test", 95, 100, 5)
    assert_problem(client.get(f"/v1/datasets/{dataset_id}/data", params={"split": "validation"}), 422, "split")
    assert_problem(client.get(f"/v1/datasets/{dataset_id}/data", params={"offset": -1}), 422, "offset")


def test_unknown_dataset_is_404(client: TestClient) -> None:
    for response in (client.get("/v1/datasets/ds_nope"), client.get("/v1/datasets/ds_nope/data"),
                     client.delete("/v1/datasets/ds_nope")):
        body = assert_problem(response, 404)
        assert "ds_nope" in body["detail"]


def test_delete(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    dataset_id = strict_json(client.post("/v1/datasets", json=SEED_FORMULA))["id"]
    response = client.delete(f"/v1/datasets/{dataset_id}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(client.get(f"/v1/datasets/{dataset_id}"), 404)
    assert count_datasets(session_factory) == 0


def test_delete_refuses_while_jobs_reference_it(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    dataset_id = strict_json(client.post("/v1/datasets", json=SEED_FORMULA))["id"]
    job_id = new_id("job")
    with session_factory() as session:
        session.add(Job(id=job_id, kind=JobKind.train, dataset_id=dataset_id, config={}))
        session.commit()
    body = assert_problem(client.delete(f"/v1/datasets/{dataset_id}"), 409)
    assert body["jobs"] == [job_id] and job_id in body["detail"]
    assert strict_json(client.get(f"/v1/datasets/{dataset_id}"))["id"] == dataset_id


def test_other_tenants_datasets_are_invisible(client: TestClient, settings: Settings,
                                              session_factory: sessionmaker[Session]) -> None:
    request = DatasetCreateArrays(inputs=[[1.0], [2.0]], targets=[[1.0], [2.0]])
    with session_factory() as session:
        other = datasets.create_dataset(session, settings, "someone-else", request).id
    assert_problem(client.get(f"/v1/datasets/{other}"), 404)
    assert_problem(client.get(f"/v1/datasets/{other}/data"), 404)
    assert_problem(client.delete(f"/v1/datasets/{other}"), 404)
    assert strict_json(client.get("/v1/datasets"))["items"] == []


def test_idempotency_key_replays_the_first_dataset(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    headers = {"Idempotency-Key": "create-seed-1"}
    first = client.post("/v1/datasets", json=SEED_FORMULA, headers=headers)
    again = client.post("/v1/datasets", json=SEED_FORMULA, headers=headers)
    assert first.status_code == again.status_code == 201
    assert strict_json(first)["id"] == strict_json(again)["id"]
    assert count_datasets(session_factory) == 1
    assert_problem(client.post("/v1/datasets", json={**SEED_FORMULA, "seed": 1}, headers=headers), 422, "Idempotency-Key")
    csv_headers = {"Idempotency-Key": "csv-1"}
    one = client.post("/v1/datasets", files={"file": ("d.csv", CSV.encode())}, headers=csv_headers)
    two = client.post("/v1/datasets", files={"file": ("d.csv", CSV.encode())}, headers=csv_headers)
    assert strict_json(one)["id"] == strict_json(two)["id"]
    assert count_datasets(session_factory) == 2


def test_openapi_documents_the_three_ways_to_create(client: TestClient) -> None:
    spec = strict_json(client.get("/openapi.json"))
    create = spec["paths"]["/v1/datasets"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/json", "multipart/form-data", "text/csv"}
    assert "application/problem+json" in create["responses"]["422"]["content"]
    assert "$defs" not in json.dumps(create["requestBody"])


# --------------------------------------------------------------------------------------------------
# rejected input stores nothing


def _rows(n: int, d: int = 1) -> list[list[float]]:
    return [[float(i + j) for j in range(d)] for i in range(n)]


BAD_JSON: list[tuple[str, dict[str, Any], str]] = [
    ("ragged inputs", {"inputs": [[1, 2], [3]], "targets": [1, 2]}, "inputs[1]"),
    ("wrong column count", {"feature_names": ["a", "b"], "inputs": [[1, 2], [3, 4, 5]], "targets": [1, 2]}, "inputs[1]"),
    ("columns vs names", {"feature_names": ["a"], "inputs": [[1, 2], [3, 4]], "targets": [1, 2]}, "inputs[0]"),
    ("ragged targets", {"inputs": [[1], [2]], "targets": [[1, 2], [3]]}, "targets[1]"),
    ("target rows", {"inputs": [[1], [2], [3]], "targets": [1, 2]}, "targets"),
    ("string value", {"inputs": [[1], ["2"]], "targets": [1, 2]}, "inputs[1][0]"),
    ("boolean value", {"inputs": [[1], [True]], "targets": [1, 2]}, "inputs[1][0]"),
    ("mixed targets", {"inputs": [[1], [2]], "targets": [1, [2]]}, "targets[0]"),
    ("empty inputs", {"inputs": [], "targets": []}, "inputs"),
    ("empty row", {"inputs": [[], []], "targets": [1, 2]}, "inputs[0]"),
    ("one row cannot split", {"inputs": [[1]], "targets": [1]}, "inputs"),
    ("duplicate feature", {"feature_names": ["a", "a"], "inputs": [[1, 2], [3, 4]], "targets": [1, 2]}, "feature_names[1]"),
    ("feature named like target", {"feature_names": ["a"], "target_names": ["a"], "inputs": [[1], [2]], "targets": [1, 2]},
     "target_names[0]"),
    ("name syntax", {"feature_names": ["1x"], "inputs": [[1], [2]], "targets": [1, 2]}, "feature_names[0]"),
    ("reserved name", {"feature_names": ["sin"], "inputs": [[1], [2]], "targets": [1, 2]}, "feature_names[0]"),
    ("dunder name", {"feature_names": ["__x"], "inputs": [[1], [2]], "targets": [1, 2]}, "feature_names[0]"),
    ("keyword name", {"target_names": ["lambda"], "inputs": [[1], [2]], "targets": [1, 2]}, "target_names[0]"),
    ("test split half given", {"inputs": [[1], [2]], "targets": [1, 2], "test_inputs": [[3]]}, "test_targets"),
    ("ragged test inputs", {"inputs": [[1], [2]], "targets": [1, 2], "test_inputs": [[3], [4, 5]],
                            "test_targets": [3, 4]}, "test_inputs[1]"),
    ("test target rows", {"inputs": [[1], [2]], "targets": [1, 2], "test_inputs": [[3]], "test_targets": [3, 4]},
     "test_targets"),
    ("test fraction", {"inputs": [[1], [2]], "targets": [1, 2], "test_fraction": 1.0}, "test_fraction"),
    ("negative seed", {"inputs": [[1], [2]], "targets": [1, 2], "seed": -1}, "seed"),
    ("unknown member", {"inputs": [[1], [2]], "targets": [1, 2], "tagets": [1]}, "tagets"),
    ("missing targets", {"inputs": [[1], [2]]}, "targets"),
    ("too many rows", {"inputs": _rows(30), "targets": list(range(30))}, "inputs"),
    ("too many rows with test split", {"inputs": _rows(20), "targets": list(range(20)), "test_inputs": _rows(10),
                                       "test_targets": list(range(10))}, "inputs"),
    ("too many columns", {"inputs": _rows(3, 8), "targets": [1, 2, 3]}, "inputs"),
    # synthetic
    ("hostile expression", {**SMALL_FORMULA, "expression": "__import__('os').system('true')"}, "expression"),
    ("attribute", {**SMALL_FORMULA, "expression": "().__class__"}, "expression"),
    ("power tower", {**SMALL_FORMULA, "expression": "9**9**9"}, "expression"),
    ("unknown variable", {**SMALL_FORMULA, "expression": "x1 + x3"}, "expression"),
    ("syntax error", {**SMALL_FORMULA, "expression": "x1 +"}, "expression"),
    ("too long", {**SMALL_FORMULA, "expression": "x1+" * 400 + "x1"}, "expression"),
    ("non-finite values", {**SMALL_FORMULA, "expression": "log(x1)"}, "expression"),
    ("division by zero at a point", {**SMALL_FORMULA, "expression": "1/(x1-x1)"}, "expression"),
    ("complex values", {**SMALL_FORMULA, "expression": "(-8)**(1/3) * x1"}, "expression"),
    ("empty range", {**SMALL_FORMULA, "ranges": {"x1": [1, 1], "x2": [-1, 1]}}, "ranges.x1"),
    ("reversed range", {**SMALL_FORMULA, "ranges": {"x1": [-1, 1], "x2": [1, -1]}}, "ranges.x2"),
    ("range too wide", {**SMALL_FORMULA, "ranges": {"x1": [-1e308, 1e308], "x2": [-1, 1]}}, "ranges.x1"),
    ("range not a pair", {**SMALL_FORMULA, "ranges": {"x1": [-1], "x2": [-1, 1]}}, "ranges.x1[1]"),
    ("no ranges", {**SMALL_FORMULA, "ranges": {}}, "ranges"),
    ("reserved variable", {**SMALL_FORMULA, "expression": "x1", "ranges": {"x1": [0, 1], "pi": [0, 1]}}, "ranges.pi"),
    ("target named like variable", {**SMALL_FORMULA, "target_name": "x1"}, "target_name"),
    ("too many synthetic rows", {**SMALL_FORMULA, "n_train": 20, "n_test": 20}, "n_train"),
    ("no test rows", {**SMALL_FORMULA, "n_test": 0}, "n_test"),
    ("negative noise", {**SMALL_FORMULA, "noise": -1}, "noise"),
    ("unknown synthetic member", {**SMALL_FORMULA, "sead": 1}, "sead"),
]


@pytest.fixture
def small_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_rows=25, max_columns=6, max_body_bytes=64 * 1024)


@pytest.fixture
def small_client(small_settings: Settings) -> Iterator[tuple[TestClient, FastAPI]]:
    from service.app import create_app

    app = create_app(small_settings)
    with TestClient(app) as test_client:
        yield test_client, app


@pytest.mark.parametrize(("case", "payload", "field"), BAD_JSON, ids=[c[0] for c in BAD_JSON])
def test_bad_json_input_is_rejected_and_nothing_stored(
    small_client: tuple[TestClient, FastAPI], case: str, payload: dict[str, Any], field: str
) -> None:
    client, app = small_client
    assert_problem(client.post("/v1/datasets", json=payload), 422, field)
    assert count_datasets(app.state.session_factory) == 0


@pytest.mark.parametrize(("raw", "field"), [
    (b'{"inputs": [[NaN], [1]], "targets": [1, 2]}', "inputs[0][0]"),
    (b'{"inputs": [[1], [Infinity]], "targets": [1, 2]}', "inputs[1][0]"),
    (b'{"inputs": [[1], [2]], "targets": [-Infinity, 2]}', "targets[0][0]"),
    (b'{"inputs": [[1e999], [2]], "targets": [1, 2]}', "inputs[0][0]"),
    (b'{"expression": "x", "ranges": {"x": [NaN, 1]}}', "ranges.x[0]"),
    (b'{"expression": "x", "ranges": {"x": [0, 1]}, "noise": Infinity}', "noise"),
    (b'[1, 2, 3]', "body"),
])
def test_non_finite_json_numbers_are_rejected(
    small_client: tuple[TestClient, FastAPI], raw: bytes, field: str
) -> None:
    client, app = small_client
    assert_problem(client.post("/v1/datasets", content=raw, headers={"content-type": "application/json"}), 422, field)
    assert count_datasets(app.state.session_factory) == 0


@pytest.mark.parametrize("raw", [b'{"inputs": [[1]', b"", b"not json", b"\xff\xfe\x00garbage"])
def test_malformed_json_is_400(small_client: tuple[TestClient, FastAPI], raw: bytes) -> None:
    client, app = small_client
    assert_problem(client.post("/v1/datasets", content=raw, headers={"content-type": "application/json"}), 400, "body")
    assert count_datasets(app.state.session_factory) == 0


BAD_CSV: list[tuple[str, bytes, dict[str, str], str, str]] = [
    ("not a number", b"a,y\n1,2\n3,x\n", {}, "file", "line 3"),
    ("nan cell", b"a,y\n1,2\n3,nan\n", {}, "file", "line 3"),
    ("inf cell", b"a,y\n1,inf\n3,4\n", {}, "file", "line 2"),
    ("empty cell", b"a,y\n1,\n3,4\n", {}, "file", "line 2"),
    ("ragged line", b"a,b,y\n1,2,3\n4,5\n", {}, "file", "line 3"),
    ("empty file", b"", {}, "file", "empty"),
    ("header only", b"a,y\n", {}, "file", "no data rows"),
    ("one data row", b"a,y\n1,2\n", {}, "file", "at least 2 rows"),
    ("unknown target", b"a,y\n1,2\n3,4\n", {"targets": "z"}, "targets", "no column named 'z'"),
    ("all targets", b"a,y\n1,2\n3,4\n", {"targets": "a,y"}, "targets", "input column"),
    ("duplicate header", b"a,a,y\n1,2,3\n4,5,6\n", {}, "file", "repeats"),
    ("invalid header", b"a b,y\n1,2\n3,4\n", {}, "file", "not a valid name"),
    ("reserved header", b"exp,y\n1,2\n3,4\n", {}, "file", "not a valid name"),
    ("not utf-8", b"a,y\n1,2\n\xff,4\n", {}, "file", "UTF-8"),
    ("too many columns", b"a,b,c,d,e,f,y\n" + b"1,2,3,4,5,6,7\n" * 3, {}, "file", "columns"),
    ("too many rows", b"a,y\n" + b"1,2\n" * 30, {}, "file", "rows"),
    ("bad test fraction", b"a,y\n1,2\n3,4\n", {"test_fraction": "zero"}, "test_fraction", ""),
    ("unknown form field", b"a,y\n1,2\n3,4\n", {"tragets": "y"}, "tragets", ""),
]


@pytest.mark.parametrize(("case", "content", "form", "field", "detail"), BAD_CSV, ids=[c[0] for c in BAD_CSV])
def test_bad_csv_upload_is_rejected_and_nothing_stored(
    small_client: tuple[TestClient, FastAPI], case: str, content: bytes, form: dict[str, str], field: str, detail: str
) -> None:
    client, app = small_client
    body = assert_problem(client.post("/v1/datasets", files={"file": ("d.csv", content)}, data=form), 422, field)
    assert detail in body["detail"]
    assert count_datasets(app.state.session_factory) == 0


def test_bad_csv_body_and_query_are_rejected(small_client: tuple[TestClient, FastAPI]) -> None:
    client, app = small_client
    csv_type = {"content-type": "text/csv"}
    assert_problem(client.post("/v1/datasets", content=b"a,y\n1,2\n3,x\n", headers=csv_type), 422, "body")
    assert_problem(client.post("/v1/datasets", content=b"a,y\n1,2\n3,4\n", headers=csv_type,
                               params={"test_fraction": "2"}), 422, "test_fraction")
    assert_problem(client.post("/v1/datasets", content=b"a,y\n1,2\n3,4\n", headers=csv_type,
                               params={"targets": "nope"}), 422, "targets")
    assert_problem(client.post("/v1/datasets", data={"targets": "y"}, files={"other": ("d.csv", b"a,y\n1,2\n")}),
                   422, "file")
    # query parameters are checked whatever the body, so a typo is never silently ignored
    assert_problem(client.post("/v1/datasets", json=SMALL_FORMULA, params={"test_fraction": "x"}), 422, "test_fraction")
    assert_problem(client.post("/v1/datasets", json=SMALL_FORMULA, params={"sede": "1"}), 422, "sede")
    assert count_datasets(app.state.session_factory) == 0


def test_unsupported_media_type_is_415(small_client: tuple[TestClient, FastAPI]) -> None:
    client, app = small_client
    assert_problem(client.post("/v1/datasets", content=b"<xml/>", headers={"content-type": "application/xml"}),
                   415, "Content-Type")
    assert count_datasets(app.state.session_factory) == 0


def test_oversized_bodies_are_413(small_client: tuple[TestClient, FastAPI], small_settings: Settings) -> None:
    client, app = small_client
    big = json.dumps({"inputs": _rows(5000, 2), "targets": list(range(5000))}).encode()
    assert len(big) > small_settings.max_body_bytes
    body = assert_problem(client.post("/v1/datasets", content=big, headers={"content-type": "application/json"}), 413)
    assert body["max_body_bytes"] == small_settings.max_body_bytes

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(big), 4096):
            yield big[start:start + 4096]

    assert_problem(client.post("/v1/datasets", content=chunks(), headers={"content-type": "application/json"}), 413)
    assert_problem(client.post("/v1/datasets", files={"file": ("d.csv", b"a,y\n" + b"1,2\n" * 20_000)}), 413)
    assert count_datasets(app.state.session_factory) == 0


def test_cursor_of_another_listing_is_harmless(client: TestClient) -> None:
    # a syntactically valid cursor that points nowhere gives an empty page, not an error
    assert strict_json(client.get("/v1/datasets", params={"cursor": encode_cursor("ds_0")})) == {
        "items": [], "next_cursor": None}
