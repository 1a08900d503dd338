"""/v1/models end to end: the real app on a real SQLite file (tests/service/conftest.py), models built
in-process with kan_core and inserted through the ORM, as the worker writes them. No mocks."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from kan_core import io as kan_io
from kan_core.model import KAN
from service.config import Settings
from service.datasets import DatasetArrays, pack
from service.ids import new_id
from service.model_store import LRUCache, validate_inputs
from service.errors import InvalidInput
from service.models import Dataset, Job, JobKind, JobStatus, Model

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PREDICT_ROWS = 50


def _reject_constant(token: str) -> None:
    raise AssertionError(f"non-JSON constant {token} in a response")


def strict_json(response) -> object:
    """The body parsed as standard JSON (NaN / Infinity tokens fail the test)."""
    return json.loads(response.content, parse_constant=_reject_constant)


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = strict_json(response)
    assert body["status"] == status
    if field is not None:
        assert body["field"] == field, body
    return body


# --------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_predict_rows=MAX_PREDICT_ROWS)


class Seeder:
    """Inserts datasets, jobs and models through the ORM, as the worker would."""

    def __init__(self, app):
        self.factory = app.state.session_factory

    def dataset(self, n_in: int = 2, n_out: int = 1, n_train: int = 200, n_test: int = 100, seed: int = 0) -> str:
        rng = np.random.default_rng(seed)
        x_train = rng.uniform(-1, 1, (n_train, n_in))
        x_test = rng.uniform(-1, 1, (n_test, n_in))

        def f(x: np.ndarray) -> np.ndarray:
            y = np.sin(math.pi * x[:, :1]) + x[:, 1:2] ** 2
            return np.repeat(y, n_out, axis=1)

        arrays = pack(DatasetArrays(train_input=x_train, train_label=f(x_train), test_input=x_test, test_label=f(x_test)))
        ds_id = new_id("ds")
        with self.factory() as s, s.begin():
            s.add(Dataset(
                id=ds_id, name="sin+square", source="expression", expression="sin(pi*x_1) + x_2**2",
                feature_names=[f"x_{i + 1}" for i in range(n_in)], target_names=[f"y_{j + 1}" for j in range(n_out)],
                n_train=n_train, n_test=n_test, arrays=arrays,
            ))
        return ds_id

    def job(self, dataset_id: str, *, parent_model_id: str | None = None, status: JobStatus = JobStatus.succeeded,
            tenant: str = "default") -> str:
        job_id = new_id("job")
        with self.factory() as s, s.begin():
            s.add(Job(id=job_id, tenant_id=tenant, kind=JobKind.train if parent_model_id is None else JobKind.symbolic,
                      dataset_id=dataset_id, parent_model_id=parent_model_id, config={}, status=status))
        return job_id

    def model(self, dataset_id: str, kan: KAN, *, formulas: list[dict] | None = None,
              parent_model_id: str | None = None, tenant: str = "default") -> str:
        job_id = self.job(dataset_id, parent_model_id=parent_model_id, tenant=tenant)
        weights, config = kan_io.dumps(kan)
        model_id = new_id("mdl")
        with self.factory() as s, s.begin():
            s.add(Model(
                id=model_id, tenant_id=tenant, job_id=job_id, dataset_id=dataset_id, parent_model_id=parent_model_id,
                kan_config=config, weights=weights, width=list(kan.width),
                metrics={"final": {"train_rmse": 0.01, "test_rmse": 0.02}}, formulas=formulas,
            ))
        return model_id


@pytest.fixture
def seed(app) -> Seeder:
    return Seeder(app)


def spline_kan() -> KAN:
    return KAN([2, 3, 1], grid=5, k=3, seed=1)


def symbolic_kan() -> KAN:
    """[2, 1] with both edges symbolic: y = sin(pi * x_1) + x_2^2."""
    kan = KAN([2, 1], grid=5, k=3, seed=0)
    kan.layers[0].set_symbolic(0, 0, "sin", (math.pi, 0.0, 1.0, 0.0))
    kan.layers[0].set_symbolic(1, 0, "x^2", (1.0, 0.0, 1.0, 0.0))
    return kan


def in_process(kan: KAN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return kan(torch.as_tensor(x, dtype=torch.float64)).numpy()


X = np.array([[0.1, -0.4], [0.5, 0.2], [-0.9, 0.75], [0.0, 0.0]])


# --------------------------------------------------------------------------------------------------
# list / get / config / delete


def test_list_paginates_and_filters(client: TestClient, seed: Seeder) -> None:
    assert strict_json(client.get("/v1/models")) == {"items": [], "next_cursor": None}
    ds_a, ds_b = seed.dataset(), seed.dataset(seed=1)
    ids = [seed.model(ds_a, spline_kan()) for _ in range(3)] + [seed.model(ds_b, spline_kan())]

    seen, cursor = [], None
    while True:
        page = strict_json(client.get("/v1/models", params={"limit": 3, **({"cursor": cursor} if cursor else {})}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True)  # newest first

    only_b = strict_json(client.get("/v1/models", params={"dataset_id": ds_b}))["items"]
    assert [m["id"] for m in only_b] == [ids[3]]
    job_id = only_b[0]["job_id"]
    assert [m["id"] for m in strict_json(client.get("/v1/models", params={"job_id": job_id}))["items"]] == [ids[3]]
    item = only_b[0]
    assert item["width"] == [2, 3, 1] and item["has_formula"] is False and item["parent_model_id"] is None


def test_list_rejects_bad_paging(client: TestClient) -> None:
    assert_problem(client.get("/v1/models", params={"cursor": "!!!"}), 422, "cursor")
    assert_problem(client.get("/v1/models", params={"limit": 0}), 422, "limit")


def test_get_model_and_config(client: TestClient, seed: Seeder) -> None:
    ds = seed.dataset()
    kan = spline_kan()
    model_id = seed.model(ds, kan)
    body = strict_json(client.get(f"/v1/models/{model_id}"))
    assert body["id"] == model_id and body["dataset_id"] == ds
    assert body["width"] == [2, 3, 1]
    assert body["metrics"]["final"]["test_rmse"] == 0.02
    assert body["formulas"] is None and body["has_formula"] is False
    assert body["config"] == kan_io.dumps(kan)[1]
    assert body["created_at"]
    assert strict_json(client.get(f"/v1/models/{model_id}/config")) == body["config"]


@pytest.mark.parametrize("suffix", ["", "/config", "/splines", "/formula", "/plot.png", "/artifact"])
def test_unknown_model_is_404(client: TestClient, suffix: str) -> None:
    body = assert_problem(client.get(f"/v1/models/mdl_nope{suffix}"), 404)
    assert "mdl_nope" in body["detail"]


def test_unknown_model_predict_and_delete_are_404(client: TestClient) -> None:
    assert_problem(client.post("/v1/models/mdl_nope/predict", json={"inputs": [[0.0, 0.0]]}), 404)
    assert_problem(client.delete("/v1/models/mdl_nope"), 404)


def test_other_tenants_models_are_invisible(client: TestClient, seed: Seeder) -> None:
    ds = seed.dataset()
    other = seed.model(ds, spline_kan(), tenant="someone-else")
    assert_problem(client.get(f"/v1/models/{other}"), 404)
    assert strict_json(client.get("/v1/models"))["items"] == []


def test_delete(client: TestClient, seed: Seeder, app) -> None:
    ds = seed.dataset()
    parent = seed.model(ds, spline_kan())
    child = seed.model(ds, symbolic_kan(), parent_model_id=parent)
    client.post(f"/v1/models/{parent}/predict", json={"inputs": X.tolist()})  # warm the cache

    pending = seed.job(ds, parent_model_id=parent, status=JobStatus.queued)
    body = assert_problem(client.delete(f"/v1/models/{parent}"), 409)
    assert body["job_id"] == pending
    with app.state.session_factory() as s, s.begin():
        s.get(Job, pending).status = JobStatus.cancelled

    response = client.delete(f"/v1/models/{parent}")
    assert response.status_code == 204 and response.content == b""
    assert_problem(client.get(f"/v1/models/{parent}"), 404)
    assert_problem(client.post(f"/v1/models/{parent}/predict", json={"inputs": X.tolist()}), 404)
    assert strict_json(client.get(f"/v1/models/{child}"))["parent_model_id"] is None


# --------------------------------------------------------------------------------------------------
# predict


def test_predict_network_matches_in_process(client: TestClient, seed: Seeder) -> None:
    ds = seed.dataset()
    kan = spline_kan()
    model_id = seed.model(ds, kan)
    for _ in range(2):  # cold, then cached
        response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": X.tolist()})
        assert response.status_code == 200, response.text
        body = strict_json(response)
        assert body["mode"] == "network"
        np.testing.assert_allclose(np.array(body["outputs"]), in_process(kan, X), rtol=1e-12, atol=1e-12)


def test_predict_float32_model(client: TestClient, seed: Seeder) -> None:
    ds = seed.dataset()
    kan = KAN([2, 2, 1], grid=4, k=3, seed=3, dtype=torch.float32)
    model_id = seed.model(ds, kan)
    body = strict_json(client.post(f"/v1/models/{model_id}/predict", json={"inputs": X.tolist()}))
    with torch.no_grad():
        expected = kan(torch.as_tensor(X, dtype=torch.float32)).double().numpy()
    np.testing.assert_allclose(np.array(body["outputs"]), expected, rtol=1e-6, atol=1e-7)


def test_predict_accepts_integers(client: TestClient, seed: Seeder) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    response = client.post(f"/v1/models/{model_id}/predict", json={"inputs": [[0, 1]]})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [[0.1, 0.2], [0.3]]}, "inputs[1]"),             # ragged
        ({"inputs": [[0.1, 0.2, 0.3]]}, "inputs[0]"),               # wrong column count
        ({"inputs": [[0.1, "0.2"]]}, "inputs[0][1]"),               # not a number
        ({"inputs": [[0.1, True]]}, "inputs[0][1]"),                # booleans are not numbers
        ({"inputs": [[0.1, 0.2], []]}, "inputs[1]"),                # empty row
        ({"inputs": []}, "inputs"),                                 # no rows
        ({"inputs": [[0.0, 0.0]] * (MAX_PREDICT_ROWS + 1)}, "inputs"),  # too many rows
        ({}, "inputs"),                                             # missing field
        ({"rows": [[0.0, 0.0]]}, "columns"),                        # named rows without their names
        ({"inputs": [[0.0, 0.0]], "records": [{"x1": 0.0}]}, "records"),  # two shapes at once
    ],
)
def test_predict_rejects_bad_inputs(client: TestClient, seed: Seeder, body: dict, field: str) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    assert_problem(client.post(f"/v1/models/{model_id}/predict", json=body), 422, field)


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_predict_rejects_non_finite(client: TestClient, seed: Seeder, token: str) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    raw = f'{{"inputs": [[0.5, 0.5], [0.1, {token}]]}}'
    response = client.post(f"/v1/models/{model_id}/predict", content=raw, headers={"content-type": "application/json"})
    assert_problem(response, 422, "inputs[1][1]")


def test_predict_rejects_unknown_mode(client: TestClient, seed: Seeder) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    response = client.post(f"/v1/models/{model_id}/predict", params={"mode": "magic"}, json={"inputs": [[0, 0]]})
    assert_problem(response, 422, "mode")


def test_validate_inputs_names_the_field() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_inputs([[0.0, float("nan")]], 2, 10)
    assert err.value.field == "inputs[0][1]"
    assert validate_inputs([[1, 2], [3, 4]], 2, 10).dtype == np.float64


def test_formula_mode_without_formula_is_409(client: TestClient, seed: Seeder) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    response = client.post(f"/v1/models/{model_id}/predict", params={"mode": "formula"}, json={"inputs": X.tolist()})
    body = assert_problem(response, 409)
    assert "formula" in body["detail"]
    assert_problem(client.get(f"/v1/models/{model_id}/formula"), 409)


def test_formula_computed_from_symbolic_network(client: TestClient, seed: Seeder) -> None:
    kan = symbolic_kan()
    model_id = seed.model(seed.dataset(), kan)
    response = client.post(f"/v1/models/{model_id}/predict", params={"mode": "formula"}, json={"inputs": X.tolist()})
    assert response.status_code == 200, response.text
    body = strict_json(response)
    assert body["mode"] == "formula"
    expected = np.sin(math.pi * X[:, :1]) + X[:, 1:2] ** 2
    np.testing.assert_allclose(np.array(body["outputs"]), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(np.array(body["outputs"]), in_process(kan, X), rtol=1e-6, atol=1e-6)

    formula = strict_json(client.get(f"/v1/models/{model_id}/formula"))
    assert formula["source"] == "computed"
    [out] = formula["formulas"]
    assert out["output"] == 0 and out["name"] == "y_1" and out["variables"] == ["x_1", "x_2"]
    assert "sin" in out["text"] and "sin" in out["latex"]
    assert out["complexity"] > 0
    assert out["r2"] == pytest.approx(1.0, abs=1e-9) and out["rmse"] == pytest.approx(0.0, abs=1e-9)


def test_stored_formula_is_served(client: TestClient, seed: Seeder) -> None:
    stored = [{"text": "x_1 + 2*x_2", "latex": "x_{1} + 2 x_{2}", "complexity": 3, "r2": 0.5, "rmse": 0.25}]
    model_id = seed.model(seed.dataset(), spline_kan(), formulas=stored)

    detail = strict_json(client.get(f"/v1/models/{model_id}"))
    assert detail["has_formula"] is True
    assert detail["formulas"][0]["text"] == "x_1 + 2*x_2"

    formula = strict_json(client.get(f"/v1/models/{model_id}/formula"))
    assert formula["source"] == "stored"
    assert formula["formulas"][0] | {"variables": None} == {
        "output": 0, "name": "y_1", "text": "x_1 + 2*x_2", "latex": "x_{1} + 2 x_{2}", "complexity": 3,
        "variables": None, "r2": 0.5, "rmse": 0.25,
    }
    body = strict_json(client.post(f"/v1/models/{model_id}/predict?mode=formula", json={"inputs": X.tolist()}))
    np.testing.assert_allclose(np.array(body["outputs"])[:, 0], X[:, 0] + 2 * X[:, 1])


def test_formula_values_outside_the_domain_are_null(client: TestClient, seed: Seeder) -> None:
    stored = [{"text": "log(x_1) + x_2", "latex": "\\log{x_1} + x_2", "complexity": 3, "r2": None, "rmse": None}]
    model_id = seed.model(seed.dataset(), spline_kan(), formulas=stored)
    body = strict_json(client.post(f"/v1/models/{model_id}/predict?mode=formula", json={"inputs": [[-1, 0], [1, 0]]}))
    assert body["outputs"] == [[None], [0.0]]


# --------------------------------------------------------------------------------------------------
# inspection and export


def test_splines(client: TestClient, seed: Seeder) -> None:
    kan = spline_kan()
    kan.layers[1].set_symbolic(0, 0, "sin", (1.0, 0.5, 2.0, 0.0))
    model_id = seed.model(seed.dataset(), kan)
    body = strict_json(client.get(f"/v1/models/{model_id}/splines", params={"n_points": 11}))
    assert body["model_id"] == model_id and body["width"] == [2, 3, 1] and body["n_samples"] == 200
    edges = body["edges"]
    assert len(edges) == 2 * 3 + 3 * 1
    assert {(e["layer"], e["in"], e["out"]) for e in edges} == (
        {(0, i, j) for i in range(2) for j in range(3)} | {(1, i, 0) for i in range(3)}
    )
    for e in edges:
        assert len(e["curve"]["x"]) == len(e["curve"]["y"]) == 11
        assert len(e["coefficients"]) == 5 + 3 and e["knots"]
        assert e["active"] is True
    sym = next(e for e in edges if (e["layer"], e["in"], e["out"]) == (1, 0, 0))
    assert sym["symbolic"]["function"] == "sin"
    assert sym["symbolic"]["affine"] == pytest.approx([1.0, 0.5, 2.0, 0.0])
    assert all(e["symbolic"] is None for e in edges if e["layer"] == 0)
    assert_problem(client.get(f"/v1/models/{model_id}/splines", params={"n_points": 1}), 422, "n_points")


def test_splines_hide_pruned_edges_unless_asked(client: TestClient, seed: Seeder) -> None:
    kan = spline_kan()
    with torch.no_grad():
        kan.layers[0].mask[1, 2] = 0.0
    model_id = seed.model(seed.dataset(), kan)
    active = strict_json(client.get(f"/v1/models/{model_id}/splines"))["edges"]
    assert len(active) == 8 and (0, 1, 2) not in {(e["layer"], e["in"], e["out"]) for e in active}
    everything = strict_json(client.get(f"/v1/models/{model_id}/splines", params={"include_inactive": True}))["edges"]
    [pruned] = [e for e in everything if not e["active"]]
    assert (pruned["layer"], pruned["in"], pruned["out"]) == (0, 1, 2) and len(everything) == 9


def test_plot_png(client: TestClient, seed: Seeder) -> None:
    model_id = seed.model(seed.dataset(), spline_kan())
    first = client.get(f"/v1/models/{model_id}/plot.png")
    assert first.status_code == 200
    assert first.headers["content-type"] == "image/png"
    assert first.content.startswith(PNG_SIGNATURE)
    assert client.get(f"/v1/models/{model_id}/plot.png").content == first.content  # cached


def test_artifact_round_trips_through_kan_core(client: TestClient, seed: Seeder) -> None:
    kan = symbolic_kan()
    model_id = seed.model(seed.dataset(), kan)
    response = client.get(f"/v1/models/{model_id}/artifact")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert f'filename="{model_id}.safetensors"' in response.headers["content-disposition"]
    loaded = kan_io.from_bytes(response.content)
    np.testing.assert_array_equal(in_process(loaded, X), in_process(kan, X))
    api = strict_json(client.post(f"/v1/models/{model_id}/predict", json={"inputs": X.tolist()}))
    np.testing.assert_allclose(np.array(api["outputs"]), in_process(loaded, X), rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------------------------------
# the cache


def test_lru_cache_evicts_least_recently_used() -> None:
    cache: LRUCache[str, int] = LRUCache(2)
    assert cache.get_or_create("a", lambda: 1) == 1
    assert cache.get_or_create("b", lambda: 2) == 2
    assert cache.get_or_create("a", lambda: 99) == 1  # hit: a is now most recent
    cache.get_or_create("c", lambda: 3)
    assert "b" not in cache and "a" in cache and "c" in cache
    cache.discard(lambda k: k == "a")
    assert "a" not in cache and len(cache) == 1


def test_lru_cache_loads_each_key_once_under_concurrency() -> None:
    cache: LRUCache[str, int] = LRUCache(4)
    calls = []

    def slow() -> int:
        calls.append(1)
        time.sleep(0.05)
        return 7

    threads = [threading.Thread(target=lambda: cache.get_or_create("k", slow)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1


def test_lru_cache_retries_after_a_failed_load() -> None:
    cache: LRUCache[str, int] = LRUCache(2)

    def boom() -> int:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError):
        cache.get_or_create("k", boom)
    assert cache.get_or_create("k", lambda: 5) == 5
