"""The dashboard's HTTP contract without a browser (fast; runs where Chromium is missing too): the login
cookie's attributes, the same-origin check on forms, scopes and tenants as the API enforces them, the
not-found page, the pages' Content-Security-Policy, and the CSV form's field errors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.auth import create_key
from service.config import Settings
from service.models import Scope

ORIGIN = {"Origin": "http://testserver"}
GOOD_CSV = b"x1,y\n" + b"".join(f"{i},{2 * i}\n".encode() for i in range(20))


@pytest.fixture
def app_keys(tmp_path: Path) -> Iterator[tuple[TestClient, dict[str, str]]]:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, database_url=None, auth_enabled=True))
    with app.state.session_factory() as session:
        keys = {role: create_key(session, scope=scope, tenant=tenant)[1] for role, scope, tenant in
                (("write", Scope.write, "acme"), ("read", Scope.read, "acme"), ("other", Scope.write, "globex"))}
    with TestClient(app) as client:
        yield client, keys


def login(client: TestClient, key: str) -> None:
    client.cookies.clear()
    r = client.post("/ui/login", data={"key": key, "next": "/ui/datasets"}, headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/datasets", r.text


def test_login_cookie_and_redirects(app_keys) -> None:
    client, keys = app_keys
    r = client.get("/ui/jobs?status=running", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/login?next=/ui/jobs%3Fstatus%3Drunning"

    r = client.post("/ui/login", data={"key": "kan_nonsense", "next": "/ui/jobs"}, headers=ORIGIN)
    assert r.status_code == 401 and 'data-field="key"' in r.text

    r = client.post("/ui/login", data={"key": keys["read"], "next": "https://elsewhere.example/"}, headers=ORIGIN,
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/datasets"  # never off the dashboard
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/ui" in cookie

    page = client.get("/ui/datasets")
    assert page.status_code == 200 and "tenant <b>acme</b>" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src" not in csp  # scripts: 'self' only, none inline

    r = client.post("/ui/logout", headers=ORIGIN, follow_redirects=False)
    assert r.status_code == 303 and 'kan_ui_key=""' in r.headers["set-cookie"]


def test_forms_need_the_dashboards_origin(app_keys) -> None:
    client, keys = app_keys
    login(client, keys["write"])
    files = {"file": ("d.csv", GOOD_CSV, "text/csv")}
    for headers in ({}, {"Origin": "http://evil.example"}, {"Referer": "http://evil.example/page"}):
        r = client.post("/ui/datasets/csv", files=files, headers=headers, follow_redirects=False)
        assert r.status_code == 403, (headers, r.status_code)
    assert client.get("/v1/datasets", headers={"Authorization": f"Bearer {keys['write']}"}).json()["items"] == []
    r = client.post("/ui/datasets/csv", files=files, headers={"Referer": "http://testserver/ui/datasets"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/datasets/ds_")


def test_scopes_tenants_and_field_errors(app_keys) -> None:
    client, keys = app_keys
    login(client, keys["write"])
    r = client.post("/ui/datasets/csv", files={"file": ("d.csv", b"x1,y\n1,2\nabc,3\n", "text/csv")}, headers=ORIGIN)
    assert r.status_code == 422 and 'data-field="file"' in r.text and "abc" in r.text
    r = client.post("/ui/datasets/expression", data={"expression": "x1 +", "ranges": "x1 0 1"}, headers=ORIGIN)
    assert r.status_code == 422 and 'data-field="expression"' in r.text
    r = client.post("/ui/datasets/expression", data={"expression": "x1", "ranges": "x1 zero 1"}, headers=ORIGIN)
    assert r.status_code == 422 and 'data-field="ranges"' in r.text
    created = client.post("/ui/datasets/csv", files={"file": ("d.csv", GOOD_CSV, "text/csv")}, headers=ORIGIN,
                          follow_redirects=False).headers["location"]
    assert 'id="discover-form"' in client.get(created).text
    r = client.post(created + "/discover", data={"max_candidates": "0", "max_seconds": "10"}, headers=ORIGIN)
    assert r.status_code == 422 and 'data-field="max_candidates"' in r.text  # the API's bound, next to the field
    r = client.post(created + "/discover", data={"max_candidates": "2", "max_seconds": "soon"}, headers=ORIGIN)
    assert r.status_code == 422 and 'data-field="max_seconds"' in r.text

    login(client, keys["read"])
    page = client.get("/ui/datasets").text
    assert 'id="create-forms"' not in page and created.rsplit("/", 1)[1] in page
    assert 'id="discover-form"' not in client.get(created).text
    r = client.post("/ui/datasets/csv", files={"file": ("d.csv", GOOD_CSV, "text/csv")}, headers=ORIGIN)
    assert r.status_code == 403 and "scope" in r.text  # the API's own refusal, as a page

    login(client, keys["other"])
    r = client.get(created)
    assert r.status_code == 404 and 'id="not-found"' in r.text
    assert client.get("/ui/jobs/job_0190c0ffee0000000000000000").status_code == 404
    assert created.rsplit("/", 1)[1] not in client.get("/ui/datasets").text
    for stream in ("/ui/jobs/job_0190c0ffee0000000000000000/events", "/ui/discoveries/dis_0190c0ffee00000000/events"):
        r = client.get(stream)  # no stream starts: the not-found page instead
        assert r.status_code == 404 and 'id="not-found"' in r.text, stream


def test_batch_page_lists_items_and_rejections(app_keys) -> None:
    client, keys = app_keys
    login(client, keys["write"])
    body = {"items": [{"dataset": {"expression": "x1 + 1", "ranges": {"x1": [0, 1]}, "n_train": 20, "n_test": 10}},
                      {"dataset_id": "ds_0190c0ffee0000000000000000"}], "budget": {"max_candidates": 1}}
    batch = client.post("/v1/batches", json=body, headers={"Authorization": f"Bearer {keys['write']}"}).json()
    page = client.get(f"/ui/batches/{batch['id']}")
    assert page.status_code == 200
    accepted, rejected = batch["items"]
    assert f'/ui/discoveries/{accepted["discovery_id"]}"' in page.text and rejected["status"] == "rejected"
    assert rejected["problem"]["detail"] in page.text.replace("&#39;", "'")
    login(client, keys["other"])
    assert client.get(f"/ui/batches/{batch['id']}").status_code == 404


def test_without_auth_it_opens_straight_in(tmp_path: Path) -> None:
    app = create_app(Settings(_env_file=None, data_dir=tmp_path, database_url=None, auth_enabled=False))
    with TestClient(app) as client:
        page = client.get("/ui", follow_redirects=True)
        assert page.status_code == 200 and str(page.url).endswith("/ui/datasets")
        assert "tenant <b>default</b>" in page.text and 'id="create-forms"' in page.text and "Log out" not in page.text
        r = client.post("/ui/datasets/csv", files={"file": ("d.csv", GOOD_CSV, "text/csv")},
                        headers={"Origin": "http://evil.example"})
        assert r.status_code == 403  # no key to steal, but the forms are still the dashboard's own
