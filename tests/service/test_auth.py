"""API keys: 401 without a valid key, 403 without the scope, the tenant taken from the key, keys
stored hashed, the `kan-service keys` commands; and the routes that stay open."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select

from jobs_support import assert_problem
from security_support import bearer, make_key, seed_tenant
from service import auth
from service.app import create_app
from service.config import Settings
from service.models import ApiKey, Dataset

REPO = Path(__file__).resolve().parents[2]
SMALL_DATASET = {"inputs": [[0.0], [1.0], [2.0], [3.0]], "targets": [0.0, 1.0, 2.0, 3.0]}


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(auth_enabled=True)


def v1_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in app.openapi()["paths"].items() if path.startswith("/v1")
            for method in ops]


def concrete(path: str) -> str:
    return path.replace("{dataset_id}", "ds_x").replace("{job_id}", "job_x").replace("{model_id}", "mdl_x")


def assert_unauthorized(response) -> dict:
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    return body


def test_every_v1_route_needs_a_key(app: FastAPI, client: TestClient) -> None:
    operations = v1_operations(app)
    assert len(operations) >= 18
    for method, path in operations:
        assert_unauthorized(client.request(method, concrete(path)))


@pytest.mark.parametrize("header", [
    "Bearer", "Bearer ", "Bearer nonsense", "Basic dXNlcjpwYXNz", "kan_key_01a2316f6decb285a6f4d1731662.x",
    "Bearer kan_key_01a2316f6decb285a6f4d1731662." + "A" * 43,  # well-formed, unknown id
    "Bearer kan_key_01a2316f6decb285a6f4d1731662." + "A" * 44,  # too long a secret
])
def test_malformed_or_unknown_keys_are_401(client: TestClient, header: str) -> None:
    body = assert_unauthorized(client.get("/v1/datasets", headers={"Authorization": header}))
    assert "kan_" not in body["detail"]  # the answer never echoes the token


def test_a_wrong_secret_is_401(client: TestClient, session_factory) -> None:
    token = make_key(session_factory, scope="read")
    assert client.get("/v1/datasets", headers=bearer(token)).status_code == 200
    key_id, secret = token.removeprefix("kan_").split(".")
    forged = f"kan_{key_id}.{'A' * 43 if secret != 'A' * 43 else 'B' * 43}"
    assert_unauthorized(client.get("/v1/datasets", headers=bearer(forged)))


def test_a_revoked_key_is_401_at_once_without_the_lookup_cache(make_settings) -> None:
    # with the default lookup_cache_ttl_s, within that time (tests/service/test_lookup_cache.py)
    app = create_app(make_settings(auth_enabled=True, lookup_cache_ttl_s=0))
    with TestClient(app) as client:
        token = make_key(app.state.session_factory, scope="write")
        assert client.get("/v1/datasets", headers=bearer(token)).status_code == 200
        with app.state.session_factory() as session:
            auth.revoke_key(session, token.removeprefix("kan_").split(".")[0])
        assert_unauthorized(client.get("/v1/datasets", headers=bearer(token)))


def test_keys_are_stored_hashed(session_factory) -> None:
    token = make_key(session_factory, scope="admin", tenant="acme")
    key_id, secret = token.removeprefix("kan_").split(".")
    with session_factory() as session:
        row = session.get(ApiKey, key_id)
        assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
        assert secret not in repr([tuple(r) for r in session.execute(select(ApiKey.__table__))])
    assert len(secret) == 43  # 32 random bytes


# POSTs that change nothing, open to `read` keys; every other POST or DELETE needs `write`
READ_ONLY_POSTS = {("POST", "/v1/models/{model_id}/predict"), ("POST", "/v1/discoveries/{discovery_id}/predict")}


def test_read_scope_reads_only(app: FastAPI, client: TestClient, session_factory) -> None:
    data = seed_tenant(session_factory, "default")
    read = bearer(make_key(session_factory, scope="read"))
    for method, path in v1_operations(app):
        response = client.request(method, concrete(path), headers=read)
        if method == "GET" or (method, path) in READ_ONLY_POSTS:
            assert response.status_code in (200, 404, 422), (method, path, response.text)
        else:
            body = assert_problem(response, 403)
            assert body["required_scope"] == "write", (method, path)
    assert client.get(f"/v1/models/{data.model_id}", headers=read).status_code == 200
    predicted = client.post(f"/v1/models/{data.model_id}/predict", json={"inputs": [[0.0, 0.5]]}, headers=read)
    assert predicted.status_code == 200, predicted.text


@pytest.mark.parametrize("scope", ["write", "admin"])
def test_write_and_admin_scopes_create_and_delete(client: TestClient, session_factory, scope: str) -> None:
    key = bearer(make_key(session_factory, scope=scope))
    created = client.post("/v1/datasets", json=SMALL_DATASET, headers=key)
    assert created.status_code == 201, created.text
    assert client.delete(f"/v1/datasets/{created.json()['id']}", headers=key).status_code == 204


def test_the_tenant_comes_from_the_key(client: TestClient, session_factory) -> None:
    acme, globex = (bearer(make_key(session_factory, scope="write", tenant=t)) for t in ("acme", "globex"))
    dataset_id = client.post("/v1/datasets", json=SMALL_DATASET, headers=acme).json()["id"]
    with session_factory() as session:
        assert session.get(Dataset, dataset_id).tenant_id == "acme"
    assert client.get(f"/v1/datasets/{dataset_id}", headers=acme).status_code == 200
    assert_problem(client.get(f"/v1/datasets/{dataset_id}", headers=globex), 404)


def test_operations_routes_stay_open(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code in (200, 503)  # no worker here: 503, but never 401
    assert client.get("/metrics").status_code == 200
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_without_auth_every_caller_is_the_default_tenant(make_settings) -> None:
    with TestClient(create_app(make_settings(auth_enabled=False))) as client:
        created = client.post("/v1/datasets", json=SMALL_DATASET)
        assert created.status_code == 201
        # a header is ignored, whatever it holds
        assert client.get(f"/v1/datasets/{created.json()['id']}", headers={"Authorization": "Bearer x"}).status_code == 200


def test_invalid_tenant_names_are_refused(session_factory) -> None:
    for tenant in ("", "a b", "-x", "x" * 65, "ü"):
        with session_factory() as session, pytest.raises(Exception, match="tenant"):
            auth.create_key(session, scope=auth.Scope.read, tenant=tenant)


def run_cli(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KAN_DATA_DIR": str(data_dir), "KAN_LOG_LEVEL": "warning"}
    env.pop("KAN_DATABASE_URL", None)
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    created = run_cli("keys", "create", "--scope", "write", "--tenant", "acme", "--name", "ci", data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("kan_key_") and "\n" not in token
    key_id = token.removeprefix("kan_").split(".")[0]

    listed = run_cli("keys", "list", data_dir=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert key_id in listed.stdout and "acme" in listed.stdout and "write" in listed.stdout
    assert token.split(".")[1] not in listed.stdout  # the secret is shown once, at creation only

    settings = Settings(_env_file=None, data_dir=tmp_path, database_url=None, auth_enabled=True,
                        lookup_cache_ttl_s=0.2)
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/datasets", json=SMALL_DATASET, headers=bearer(token)).status_code == 201
        revoked = run_cli("keys", "revoke", key_id, data_dir=tmp_path)
        assert revoked.returncode == 0 and "revoked" in revoked.stdout
        time.sleep(0.3)  # past the API process's key lookup cache
        assert_unauthorized(client.get("/v1/datasets", headers=bearer(token)))

    assert run_cli("keys", "revoke", "key_unknown", data_dir=tmp_path).returncode == 1
    assert run_cli("keys", "create", "--scope", "root", data_dir=tmp_path).returncode == 2
    assert run_cli("keys", "create", "--scope", "read", "--tenant", "no spaces", data_dir=tmp_path).returncode == 1
