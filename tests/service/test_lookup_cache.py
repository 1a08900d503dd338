"""The short-lived lookup cache of the predict hot path (KAN_LOOKUP_CACHE_TTL_S): API keys and
predicted model rows are reused for the TTL and no longer. Real app, real SQLite file; the waits use
a tiny TTL, nothing asserts how long anything took."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import delete, event

from jobs_support import assert_problem
from kan_core import io as kan_io
from kan_core.expr import ExpressionError
from security_support import bearer, make_key, seed_tenant
from service import auth
from service.app import create_app
from service.cache import TTLCache
from service.config import Settings
from service.model_store import FROZEN_MAX_CELLS, INLINE_PREDICT_ROWS, ModelStore
from service.models import Model

SHORT_TTL_S = 0.2
LONG_TTL_S = 60.0  # the most the settings allow; no test here comes near it, so no entry expires mid-test
ONE_ROW = {"inputs": [[0.25, -0.5]]}


@contextmanager
def app_client(make_settings: Callable[..., Settings], **overrides) -> Iterator[tuple[FastAPI, TestClient]]:
    app = create_app(make_settings(auth_enabled=True, **overrides))
    with TestClient(app) as client:
        yield app, client


def key_id(token: str) -> str:
    return token.removeprefix("kan_").split(".")[0]


def revoke(app: FastAPI, token: str) -> None:
    """As `kan-service keys revoke` does it: straight in the database, from outside the API."""
    with app.state.session_factory() as session:
        auth.revoke_key(session, key_id(token))


def delete_row(app: FastAPI, model_id: str) -> None:
    """A model deleted by another API process: the row goes, this process's caches are not told."""
    with app.state.session_factory() as session, session.begin():
        session.execute(delete(Model).where(Model.id == model_id))


def predict(client: TestClient, model_id: str, token: str, body: dict = ONE_ROW, **params):
    return client.post(f"/v1/models/{model_id}/predict", json=body, headers=bearer(token), params=params)


def expected(app: FastAPI, model_id: str, rows: list[list[float]]) -> np.ndarray:
    with app.state.session_factory() as session:
        row = session.get(Model, model_id)
        kan = kan_io.loads(row.weights, row.kan_config)
    with torch.no_grad():
        return kan(torch.as_tensor(rows, dtype=torch.float64)).numpy()


# --------------------------------------------------------------------------------------------------
# API keys


def test_a_revoked_key_is_refused_once_the_ttl_has_passed(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=SHORT_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200
        assert client.get("/v1/datasets", headers=bearer(token)).status_code == 200
        revoke(app, token)
        time.sleep(SHORT_TTL_S * 1.5)
        assert_problem(predict(client, data.model_id, token), 401)
        assert_problem(client.get("/v1/datasets", headers=bearer(token)), 401)


def test_within_the_ttl_a_key_is_looked_up_once(make_settings) -> None:
    """The cache is in effect: a key revoked meanwhile still passes until its entry expires (the
    documented trade-off), while a token with the same key id and another secret never does."""
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200
        revoke(app, token)
        assert predict(client, data.model_id, token).status_code == 200
        secret = token.split(".")[1]
        forged = f"kan_{key_id(token)}.{'A' * 43 if secret != 'A' * 43 else 'B' * 43}"
        assert_problem(predict(client, data.model_id, forged), 401)
        other = make_key(app.state.session_factory, scope="read", tenant="acme")  # another key: its own lookup
        revoke(app, other)
        assert_problem(predict(client, data.model_id, other), 401)


def test_failed_lookups_are_not_cached(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        token = make_key(app.state.session_factory, scope="read")
        unknown = f"kan_{key_id(make_key(app.state.session_factory))}." + "A" * 43
        for _ in range(2):
            assert_problem(client.get("/v1/datasets", headers=bearer(unknown)), 401)
        assert len(app.state.key_cache) == 0
        assert client.get("/v1/datasets", headers=bearer(token)).status_code == 200
        assert len(app.state.key_cache) == 1


def test_the_scope_and_tenant_come_from_the_cached_key(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        for _ in range(2):  # the second answer comes from the cache
            assert_problem(client.post("/v1/datasets", json={"inputs": [[0.0]], "targets": [0.0]},
                                       headers=bearer(token)), 403)
            assert client.get("/v1/datasets", headers=bearer(token)).json()["items"] == []


# --------------------------------------------------------------------------------------------------
# model rows


def test_another_tenant_still_gets_404_for_a_cached_model(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        a = seed_tenant(app.state.session_factory, "acme", seed=0)
        b = seed_tenant(app.state.session_factory, "globex", seed=1)
        token_a = make_key(app.state.session_factory, scope="read", tenant="acme")
        token_b = make_key(app.state.session_factory, scope="read", tenant="globex")
        for _ in range(2):  # cold, then with acme's row, network and key cached
            assert predict(client, a.model_id, token_a).status_code == 200
            assert_problem(predict(client, a.model_id, token_b), 404)
            assert_problem(predict(client, a.model_id, token_b, mode="formula"), 404)
            assert_problem(predict(client, b.model_id, token_a), 404)
            assert predict(client, b.model_id, token_b).status_code == 200
        np.testing.assert_allclose(predict(client, b.model_id, token_b).json()["outputs"],
                                   expected(app, b.model_id, ONE_ROW["inputs"]), rtol=1e-12, atol=1e-12)


def test_a_model_deleted_elsewhere_is_not_served_once_the_ttl_has_passed(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=SHORT_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200
        delete_row(app, data.model_id)
        time.sleep(SHORT_TTL_S * 1.5)
        assert_problem(predict(client, data.model_id, token), 404)
        assert_problem(predict(client, data.model_id, token, body={"inputs": [[0.0, 0.0]] * 100}), 404)


def test_a_model_deleted_through_the_api_is_not_served_at_all(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        writer = make_key(app.state.session_factory, scope="write", tenant="acme")
        assert predict(client, data.model_id, writer).status_code == 200
        assert client.delete(f"/v1/models/{data.model_id}", headers=bearer(writer)).status_code == 204
        assert_problem(predict(client, data.model_id, writer), 404)


def test_within_the_ttl_a_model_deleted_elsewhere_is_still_served(make_settings) -> None:
    """The documented trade-off, and the proof that the row is not read again: the row is gone from
    the database, the cached one still answers."""
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        first = predict(client, data.model_id, token)
        assert first.status_code == 200
        delete_row(app, data.model_id)
        assert predict(client, data.model_id, token).json() == first.json()


def test_a_warm_prediction_sends_no_sql(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200  # key, row, network loaded
        statements: list[str] = []
        event.listen(app.state.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        rows = [[0.1 * i - 1.0, 0.5] for i in range(INLINE_PREDICT_ROWS)]
        response = predict(client, data.model_id, token, body={"inputs": rows})
        assert response.status_code == 200
        assert statements == []
        np.testing.assert_allclose(response.json()["outputs"], expected(app, data.model_id, rows),
                                   rtol=1e-12, atol=1e-12)


def test_without_the_cache_every_prediction_reads_the_key_and_the_row(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=0) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200
        statements: list[str] = []
        event.listen(app.state.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        assert predict(client, data.model_id, token).status_code == 200
        assert any("FROM api_keys" in s for s in statements) and any("FROM models" in s for s in statements)
        revoke(app, token)
        assert_problem(predict(client, data.model_id, token), 401)


@pytest.mark.parametrize("n_rows", [1, INLINE_PREDICT_ROWS + 1, 3000])
def test_network_predictions_match_the_model_on_every_path(make_settings, n_rows: int) -> None:
    """Small requests for a cached model run on the event loop, larger ones in the threadpool; small
    batches are answered by the numpy copy of the network, large ones by torch: the same numbers."""
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        rows = np.random.default_rng(n_rows).uniform(-1.5, 1.5, (n_rows, 2)).tolist()
        for _ in range(2):
            response = predict(client, data.model_id, token, body={"inputs": rows})
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["outputs"], expected(app, data.model_id, rows),
                                       rtol=1e-12, atol=1e-12)
        frozen = app.state.model_store._networks.peek(data.model_id).frozen
        assert (n_rows * frozen.cells_per_row <= FROZEN_MAX_CELLS) == (n_rows < 3000)  # both paths tested


def test_formula_mode_on_the_cached_path(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        for _ in range(2):  # the spline model has no formula: 409 when built, and when cached
            assert_problem(predict(client, data.model_id, token, mode="formula"), 409)
        other = seed_tenant(app.state.session_factory, "acme", seed=2)
        with app.state.session_factory() as session, session.begin():
            session.get(Model, other.model_id).formulas = [{"text": "x1**2 + sin(x2)", "variables": ["x1", "x2"]}]
        for _ in range(2):
            response = predict(client, other.model_id, token, mode="formula", body={"inputs": [[0.5, 1.0], [2.0, 0.0]]})
            assert response.status_code == 200, response.text
            np.testing.assert_allclose(response.json()["outputs"], [[0.25 + np.sin(1.0)], [4.0]], rtol=1e-12)


def test_a_bad_request_on_the_cached_path_names_the_field(make_settings) -> None:
    with app_client(make_settings, lookup_cache_ttl_s=LONG_TTL_S) as (app, client):
        data = seed_tenant(app.state.session_factory, "acme")
        token = make_key(app.state.session_factory, scope="read", tenant="acme")
        assert predict(client, data.model_id, token).status_code == 200
        body = assert_problem(predict(client, data.model_id, token, body={"inputs": [[0.1, 0.2], [0.3]]}), 422)
        assert body["field"] == "inputs[1]"


# --------------------------------------------------------------------------------------------------
# the cache itself


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_entries_expire_from_when_they_were_stored() -> None:
    clock = FakeClock()
    cache: TTLCache[str, int] = TTLCache(2.0, clock=clock)
    cache.put("a", 1)
    clock.now += 1.5
    assert cache.get("a") == 1  # a read does not extend the entry's life
    clock.now += 0.5
    assert cache.get("a") is None
    cache.put("a", 2)
    assert cache.get("a") == 2 and cache.get("b") is None


def test_ttl_cache_is_bounded_and_drops_expired_entries() -> None:
    clock = FakeClock()
    cache: TTLCache[int, int] = TTLCache(1.0, maxsize=3, clock=clock)
    for i in range(5):
        cache.put(i, i)
    assert len(cache) == 3 and cache.get(0) is None and cache.get(4) == 4
    clock.now += 1.0
    cache.put(9, 9)
    assert len(cache) == 1
    cache.discard(lambda key: key == 9)
    assert len(cache) == 0


def test_ttl_cache_with_ttl_zero_keeps_nothing() -> None:
    cache: TTLCache[str, int] = TTLCache(0.0)
    cache.put("a", 1)
    assert cache.get("a") is None and len(cache) == 0
    with pytest.raises(ValueError):
        TTLCache(-1.0)


def test_stored_formula_text_is_compiled_once_per_text_and_variables() -> None:
    """Discovery predictions evaluate a stored formula text: the store parses and lambdifies it once."""
    store = ModelStore(max_derived=2)
    compiled = store.text_formula("x1*sin(x2) + 2", ["x1", "x2"])
    assert store.text_formula("x1*sin(x2) + 2", ["x1", "x2"]) is compiled
    x = np.array([[2.0, 0.5], [-1.0, 3.0]])
    np.testing.assert_allclose(compiled.evaluate(x)[:, 0], x[:, 0] * np.sin(x[:, 1]) + 2)
    swapped = store.text_formula("x1*sin(x2) + 2", ["x2", "x1"])  # same text, other column order
    assert swapped is not compiled
    np.testing.assert_allclose(swapped.evaluate(x)[:, 0], x[:, 1] * np.sin(x[:, 0]) + 2)
    assert np.isnan(store.text_formula("log(x1)", ["x1"]).evaluate(np.array([[-1.0]]))[0, 0])  # off-domain: NaN
    with pytest.raises(ExpressionError):  # the whitelist parser, never eval: no attribute access
        store.text_formula("x1.__class__", ["x1"])
