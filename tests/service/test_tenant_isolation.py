"""Tenants are strict: with another tenant's id, every /v1 route answers 404 (never 403, never the
data), and listings never show another tenant's rows. The routes are enumerated from the app, so a
new route is covered (or fails here until it says how to call it)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobs_support import assert_problem
from security_support import TenantData, bearer, make_key, seed_tenant
from service.config import Settings

# how to fill each path parameter from a tenant's data; a route with another parameter fails below
PATH_PARAMETERS = {"dataset_id": "dataset_id", "job_id": "queued_job_id", "model_id": "model_id",
                   "discovery_id": "discovery_id", "batch_id": "batch_id"}
# a valid body for every route that takes one, so that only the foreign id can make the request fail
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/models/{model_id}/predict"): {"inputs": [[0.1, 0.2]]},
    ("POST", "/v1/models/{model_id}/symbolic"): {"fixes": [{"layer": 0, "in": 0, "out": 0, "function": "sin"}],
                                                   "auto": False, "retrain": None},
    ("POST", "/v1/jobs/{job_id}/cancel"): {},
    ("POST", "/v1/discoveries/{discovery_id}/cancel"): {},
    ("POST", "/v1/discoveries/{discovery_id}/predict"): {"inputs": [[0.1, 0.2]]},
}


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(auth_enabled=True)


@pytest.fixture
def tenants(app: FastAPI) -> tuple[TenantData, TenantData]:
    factory = app.state.session_factory
    return seed_tenant(factory, "acme", seed=1), seed_tenant(factory, "globex", seed=2)


@pytest.fixture
def keys(app: FastAPI) -> dict[str, dict[str, str]]:
    factory = app.state.session_factory
    return {tenant: bearer(make_key(factory, scope="admin", tenant=tenant)) for tenant in ("acme", "globex")}


def v1_operations(app: FastAPI) -> Iterator[tuple[str, str]]:
    """(METHOD, path template) of every /v1 operation, from the app's own OpenAPI document (FastAPI's
    public view of every route it serves, included routers and all)."""
    for path, operations in app.openapi()["paths"].items():
        if path.startswith("/v1"):
            for method in sorted(operations):
                yield method.upper(), path


def id_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, p) for m, p in v1_operations(app) if "{" in p]


def fill(path: str, data: TenantData) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PATH_PARAMETERS, f"{path}: say in PATH_PARAMETERS which id fills {{{name}}}"
        return getattr(data, PATH_PARAMETERS[name])

    return re.sub(r"\{(\w+)\}", value, path)


def call(client: TestClient, method: str, path: str, data: TenantData, headers: dict[str, str]):
    body = BODIES.get((method, path))
    if body is None and method == "POST":
        pytest.fail(f"{method} {path}: add a valid body to BODIES")
    return client.request(method, fill(path, data), json=body, headers=headers)


def test_the_app_has_the_routes_this_test_expects(app: FastAPI) -> None:
    routes = id_routes(app)
    assert len(routes) >= 15, routes  # the enumeration found the routers (a broken prefix would find none)
    for _, path in routes:
        fill(path, TenantData("x", "ds", "job", "job", "mdl", "dsc", "bat"))  # every parameter is known
    posts = [(m, p) for m, p in routes if m == "POST"]
    assert set(posts) <= set(BODIES), "a POST route on an id needs an entry in BODIES"


def test_every_route_with_another_tenants_id_is_404(app: FastAPI, client: TestClient, tenants, keys) -> None:
    acme, globex = tenants
    for method, path in id_routes(app):
        response = call(client, method, path, globex, keys["acme"])
        body = assert_problem(response, 404)
        assert body["type"].endswith("/not-found"), (method, path, body)
        for secret in (globex.dataset_id, globex.model_id, globex.queued_job_id, globex.discovery_id, globex.batch_id):
            if secret not in fill(path, globex):  # the answer names only the id that was asked for
                assert secret not in response.text, (method, path)
    # nothing of globex's was touched: its owner still reaches all of it, and its queued job is still queued
    for path in (f"/v1/datasets/{globex.dataset_id}", f"/v1/jobs/{globex.queued_job_id}", f"/v1/models/{globex.model_id}"):
        assert client.get(path, headers=keys["globex"]).status_code == 200, path
    assert client.get(f"/v1/jobs/{globex.queued_job_id}", headers=keys["globex"]).json()["status"] == "queued"
    assert client.get(f"/v1/discoveries/{globex.discovery_id}", headers=keys["globex"]).json()["status"] == "running"


def test_the_same_routes_work_for_the_owner(app: FastAPI, client: TestClient, tenants, keys) -> None:
    """The positive control: the 404s above come from the tenant, not from a request the route refuses."""
    acme, _ = tenants
    for method, path in id_routes(app):
        if method == "DELETE":
            continue  # checked last, below
        response = call(client, method, path, acme, keys["acme"])
        # 409: acme's model has no formula (GET .../formula); anything but 404 shows the row was found
        assert response.status_code in (200, 202, 409), (method, path, response.status_code, response.text)
    # found, and refused: the symbolic job queued above starts from the model, and jobs use the dataset
    assert_problem(client.delete(f"/v1/models/{acme.model_id}", headers=keys["acme"]), 409)
    assert_problem(client.delete(f"/v1/datasets/{acme.dataset_id}", headers=keys["acme"]), 409)


def test_listings_and_filters_show_only_the_callers_rows(app: FastAPI, client: TestClient, tenants, keys) -> None:
    acme, globex = tenants
    # /v1/functions lists the symbolic library, the same for every caller: no tenant's rows
    listings = [p for m, p in v1_operations(app) if m == "GET" and "{" not in p and p != "/v1/functions"]
    assert {"/v1/datasets", "/v1/jobs", "/v1/models"} <= set(listings)
    for path in listings:
        response = client.get(path, headers=keys["acme"])
        assert response.status_code == 200, path
        ids = {item["id"] for item in response.json()["items"]}
        assert ids and ids <= {acme.dataset_id, acme.job_id, acme.queued_job_id, acme.model_id, acme.discovery_id}, \
            (path, ids)
    for query in ({"dataset_id": globex.dataset_id}, {"job_id": globex.job_id}):
        assert client.get("/v1/models", params=query, headers=keys["acme"]).json()["items"] == []


def test_references_in_bodies_are_scoped_too(client: TestClient, tenants, keys) -> None:
    _, globex = tenants
    response = client.post("/v1/jobs", json={"dataset_id": globex.dataset_id}, headers=keys["acme"])
    assert_problem(response, 404)


def test_idempotency_keys_are_per_tenant(client: TestClient, tenants, keys) -> None:
    acme, globex = tenants
    first = client.post("/v1/jobs", json={"dataset_id": acme.dataset_id}, headers={**keys["acme"], "Idempotency-Key": "k"})
    again = client.post("/v1/jobs", json={"dataset_id": globex.dataset_id},
                        headers={**keys["globex"], "Idempotency-Key": "k"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] != again.json()["id"] and again.json()["dataset_id"] == globex.dataset_id
