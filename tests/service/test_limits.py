"""Every size and time limit of the deployment is enforced, one test per Settings cap.

The body limit is checked on a real server over a raw socket: a declared 10 GB body is refused with
413 before any of it is sent, and a chunked body without a length is cut off just past the limit,
long before the client has finished sending it.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from jobs_support import assert_problem, insert_dataset, tiny_pipeline
from security_support import seed_tenant
from service.app import create_app
from service.config import Settings
from service.worker import jobstate
from service.worker.runner import run_job

LIMITS = {"max_body_bytes": 64 * 1024, "max_rows": 50, "max_columns": 4, "max_width": 8, "max_layers": 3,
          "max_grid": 10, "max_steps": 100, "max_predict_rows": 20}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**LIMITS)


# ---- request bodies, on a real server


@pytest.fixture
def server(app: FastAPI) -> Iterator[tuple[str, int]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="off")
    uv = uvicorn.Server(config)
    thread = threading.Thread(target=uv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a hang guard: starting takes well under a second unloaded
    while not uv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield sock.getsockname()
    finally:
        uv.should_exit = True
        thread.join(10)
        sock.close()


def _read_response(conn: socket.socket, timeout: float) -> bytes:
    conn.settimeout(timeout)
    data = b""
    try:
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        pass
    return data


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: tuple[str, int]) -> None:
    with socket.create_connection(server, timeout=60) as conn:
        conn.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 10000000000\r\n\r\n")  # 10 GB announced, none of it sent
        response = _read_response(conn, timeout=60)
    # answered although none of the body was ever sent: the server did not wait for it
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"application/problem+json" in head and b"connection: close" in head.lower()
    assert json.loads(body)["max_body_bytes"] == LIMITS["max_body_bytes"]


def test_a_chunked_body_is_cut_off_just_past_the_limit(server: tuple[str, int]) -> None:
    chunk = b"[" + b"0," * 8191 + b"0]"  # ~16 KiB of JSON-looking bytes per chunk
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    with socket.create_connection(server, timeout=60) as conn:
        conn.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        while sent <= LIMITS["max_body_bytes"]:  # just past the limit, then nothing: the body never ends
            try:
                conn.sendall(framed)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += len(chunk)
        response = _read_response(conn, timeout=60)
    # answered while the body was still coming (its last chunk never sent): cut off just past the limit,
    # however fast the server reads (waiting for the rest would time the read out)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]


def test_a_body_under_the_limit_is_read(server: tuple[str, int]) -> None:
    body = json.dumps({"inputs": [[float(i)] for i in range(10)], "targets": list(range(10))}).encode()
    with socket.create_connection(server, timeout=60) as conn:
        conn.sendall(b"POST /v1/datasets HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        assert _read_response(conn, timeout=60).startswith(b"HTTP/1.1 201")


# ---- datasets: rows and columns, whatever the source


def _rows(n: int, d: int) -> list[list[float]]:
    return [[float(i + j) for j in range(d)] for i in range(n)]


@pytest.mark.parametrize(("request_kwargs", "field"), [
    ({"json": {"inputs": _rows(51, 1), "targets": list(range(51))}}, "inputs"),                     # rows, arrays
    ({"json": {"inputs": _rows(25, 1), "targets": list(range(25)),
               "test_inputs": _rows(26, 1), "test_targets": list(range(26))}}, "inputs"),            # train + test
    ({"json": {"inputs": _rows(5, 4), "targets": list(range(5))}}, "inputs"),                      # columns, arrays
    ({"json": {"expression": "x", "ranges": {"x": [0, 1]}, "n_train": 40, "n_test": 11}}, "n_train"),  # rows, formula
    ({"json": {"expression": "a+b+c+d", "ranges": {v: [0, 1] for v in "abcd"},
               "n_train": 10, "n_test": 10}}, "ranges"),                                            # columns, formula
    ({"files": {"file": ("d.csv", b"a,y\n" + b"1,2\n" * 51)}}, "file"),                           # rows, CSV
    ({"files": {"file": ("d.csv", b"a,b,c,d,y\n" + b"1,2,3,4,5\n" * 3)}}, "file"),                # columns, CSV
])
def test_dataset_row_and_column_caps(client: TestClient, request_kwargs: dict[str, Any], field: str) -> None:
    body = assert_problem(client.post("/v1/datasets", **request_kwargs), 422, field)
    assert "limit" in body["detail"]
    assert client.get("/v1/datasets").json()["items"] == []


def test_datasets_at_the_caps_are_accepted(client: TestClient) -> None:
    ok = client.post("/v1/datasets", json={"inputs": _rows(50, 3), "targets": list(range(50))})
    assert ok.status_code == 201, ok.text


# ---- jobs: width, layers, grid, steps


@pytest.fixture
def dataset_id(app: FastAPI) -> str:
    return insert_dataset(app.state.session_factory)  # 2 features, 1 target


def _train(steps: int = 5) -> dict[str, Any]:
    return {"kind": "train", "opt": "Adam", "steps": steps}


@pytest.mark.parametrize(("pipeline", "field"), [
    ({"model": {"width": [2, 9, 1]}}, "model.width[1]"),                         # max_width
    ({"model": {"width": [2, 2, 2, 1]}}, "model.width"),                         # max_layers
    ({"model": {"width": [2, 2, 1], "grid": 11}}, "model.grid"),                 # max_grid
    ({"stages": [_train(), {"kind": "refine", "grid": 11}]}, "stages[1].grid"),  # max_grid, refined
    ({"stages": [_train(101)]}, "stages[0].steps"),                              # max_steps
])
def test_pipeline_caps(client: TestClient, dataset_id: str, pipeline: dict[str, Any], field: str) -> None:
    assert_problem(client.post("/v1/jobs", json={"dataset_id": dataset_id, **pipeline}), 422, field)
    assert client.get("/v1/jobs").json()["items"] == []


def test_a_pipeline_at_the_caps_is_queued(client: TestClient, dataset_id: str) -> None:
    body = {"dataset_id": dataset_id, "model": {"width": [2, 8, 1], "grid": 10},
            "stages": [_train(100), {"kind": "refine", "grid": 10}]}
    assert client.post("/v1/jobs", json=body).status_code == 202


def test_symbolic_retrain_steps_are_capped(client: TestClient, app: FastAPI) -> None:
    data = seed_tenant(app.state.session_factory, "default")
    body = {"auto": False, "fixes": [{"layer": 0, "in": 0, "out": 0, "function": "x"}], "retrain": _train(101)}
    assert_problem(client.post(f"/v1/models/{data.model_id}/symbolic", json=body), 422, "retrain.steps")


def test_predict_rows_are_capped(client: TestClient, app: FastAPI) -> None:
    data = seed_tenant(app.state.session_factory, "default")
    url = f"/v1/models/{data.model_id}/predict"
    assert_problem(client.post(url, json={"inputs": _rows(21, 2)}), 422, "inputs")
    assert client.post(url, json={"inputs": _rows(20, 2)}).status_code == 200


# ---- job run time


def test_a_job_past_its_time_limit_fails_with_job_timeout(make_settings: Callable[..., Settings]) -> None:
    """The worker's own check, run in process: a 0.3 s limit on a 20,000-step pipeline."""
    settings = make_settings(job_timeout_s=0.3, max_steps=20_000)
    app = create_app(settings)
    factory = app.state.session_factory
    with TestClient(app) as client:
        dataset = insert_dataset(factory)
        job_id = client.post("/v1/jobs", json={"dataset_id": dataset, **tiny_pipeline(20_000)}).json()["id"]
        with factory() as session:
            claim = jobstate.claim_next(session, "test-worker", ["cpu"])
        assert claim is not None and claim.job_id == job_id
        run_job(factory, settings, claim, shutdown=threading.Event())  # returns: minutes of training cut short
        job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["error"]["type"] == "JobTimeout", job
    assert job["model_id"] is None
