"""Every error answers RFC 9457 problem+json, from the exception handlers and from the body size limit."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from service.api.middleware import BodySizeLimitMiddleware
from service.config import Settings
from service.errors import Conflict, ServiceError

LIMIT = 4096


class Echo(BaseModel):
    values: list[float]


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(max_body_bytes=LIMIT)


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    """The real app plus a few routes that fail on purpose."""
    from service.app import create_app

    app = create_app(settings)

    def echo(body: Echo) -> Echo:  # a body FastAPI parses itself
        return body

    def boom() -> None:
        raise RuntimeError("secret internals")

    def conflict() -> None:
        raise Conflict("it is in use", field="id", jobs=["job_1"])

    app.add_api_route("/test/echo", echo, methods=["POST"])
    app.add_api_route("/test/boom", boom)
    app.add_api_route("/test/conflict", conflict)
    return app


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    return body


def test_unknown_route_and_method(client: TestClient) -> None:
    assert problem(client.get("/v2/nothing"), 404)["instance"] == "/v2/nothing"
    assert problem(client.put("/healthz"), 405)["title"] == "Method not allowed"


def test_service_errors_carry_their_members(client: TestClient) -> None:
    body = problem(client.get("/test/conflict"), 409)
    assert (body["field"], body["jobs"], body["type"]) == ("id", ["job_1"], "https://kan-service.dev/problems/conflict")


def test_unhandled_errors_are_500_without_internals(client: TestClient) -> None:
    body = problem(client.get("/test/boom"), 500)
    assert "secret" not in json.dumps(body)


def test_validation_errors_list_every_field(client: TestClient) -> None:
    body = problem(client.post("/test/echo", json={"values": [1, "x", None]}), 422)
    assert body["field"] == "values[1]"
    assert [e["field"] for e in body["errors"]] == ["values[1]", "values[2]"]
    assert {e["where"] for e in body["errors"]} == {"body"}
    query = problem(client.get("/v1/datasets", params={"limit": "many"}), 422)
    assert (query["field"], query["errors"][0]["where"]) == ("limit", "query")


def test_malformed_json_is_400(client: TestClient) -> None:
    body = problem(client.post("/test/echo", content=b'{"values": [1,', headers={"content-type": "application/json"}), 400)
    assert body["field"] == "body"


def test_every_service_error_has_a_distinct_problem_type() -> None:
    classes = [cls for cls in ServiceError.__subclasses__()]
    assert len({cls.code for cls in classes}) == len(classes)
    assert all(400 <= cls.status < 600 for cls in classes)


def test_declared_oversized_body_is_413_for_any_route(client: TestClient) -> None:
    big = json.dumps({"values": list(range(2000))}).encode()
    assert len(big) > LIMIT
    body = problem(client.post("/test/echo", content=big, headers={"content-type": "application/json"}), 413)
    assert body["max_body_bytes"] == LIMIT


def test_streamed_oversized_body_is_413_not_400(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"values": ['
        for _ in range(1000):
            yield b"1.0, "
        yield b"1.0]}"

    problem(client.post("/test/echo", content=chunks(), headers={"content-type": "application/json"}), 413)
    small = client.post("/test/echo", content=iter([b'{"values": [', b"1, 2]}"]), headers={"content-type": "application/json"})
    assert small.status_code == 200 and small.json() == {"values": [1.0, 2.0]}


def test_content_length_is_refused_without_reading_the_body() -> None:
    """Pure ASGI: the app never runs and `receive` is never awaited."""

    async def app(scope, receive, send) -> None:  # pragma: no cover - must not run
        raise AssertionError("the app ran")

    async def receive() -> dict:  # pragma: no cover - must not be awaited
        raise AssertionError("the body was read")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/datasets", "headers": [(b"content-length", b"999999")]}
    asyncio.run(BodySizeLimitMiddleware(app, max_body_bytes=LIMIT)(scope, receive, send))
    assert sent[0]["status"] == 413
    assert (b"content-type", b"application/problem+json") in sent[0]["headers"]
    assert json.loads(sent[1]["body"])["status"] == 413
