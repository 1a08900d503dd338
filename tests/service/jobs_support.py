"""Helpers shared by the job, worker and end-to-end tests: settings overrides for fast workers, rows
inserted through the ORM (as another process would), problem+json assertions, tiny pipelines, the
events of a server-sent event stream."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from safetensors.numpy import save as save_safetensors
from sqlalchemy.orm import Session, sessionmaker

from service.ids import new_id
from service.models import Dataset

FAST = {  # Settings for tests: workers notice jobs and beat quickly
    "poll_interval_s": 0.05,
    "heartbeat_interval_s": 0.2,
    # A worker's beats can stall for seconds on a loaded machine (a niced process, a busy SQLite
    # lock): a short timeout would have its peers re-queue a live worker's job. Tests that kill a
    # worker use REAP_FAST, with only one live worker left (one never reaps its own job: it stamps
    # its heartbeat before it reaps).
    "heartbeat_timeout_s": 60.0,
    "torch_threads": 1,
}
REAP_FAST = {**FAST, "heartbeat_timeout_s": 2.0}  # a killed worker's job is re-queued within seconds


def insert_dataset(
    factory: sessionmaker[Session], *, n_in: int = 2, n_out: int = 1, n_train: int = 200, n_test: int = 100,
    fn: Callable[[np.ndarray], np.ndarray] | None = None, seed: int = 0, tenant: str = "default",
) -> str:
    """A dataset row in the format service.models documents (float64 safetensors arrays)."""
    rng = np.random.default_rng(seed)
    fn = fn or (lambda x: np.repeat(x.sum(axis=1, keepdims=True), n_out, axis=1))
    x_train, x_test = rng.uniform(-1, 1, (n_train, n_in)), rng.uniform(-1, 1, (n_test, n_in))
    arrays = {"train_input": x_train, "train_label": fn(x_train), "test_input": x_test, "test_label": fn(x_test)}
    with factory() as session:
        row = Dataset(
            id=new_id("ds"), tenant_id=tenant, name="test", source="json", feature_names=[f"x{i + 1}" for i in range(n_in)],
            target_names=[f"y{j + 1}" for j in range(n_out)], n_train=n_train, n_test=n_test,
            arrays=save_safetensors({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}),
        )
        session.add(row)
        session.commit()
        return row.id


def tiny_pipeline(steps: int = 5, *, width: list[int] | None = None) -> dict[str, Any]:
    """A pipeline that trains in well under a second: a few Adam steps on a small network."""
    return {
        "model": {"width": width or [2, 2, 1], "grid": 3},
        "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": steps, "update_grid": False}],
    }


def assert_problem(response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    if field is not None:
        assert body.get("field") == field, body
    return body


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


def read_events(lines: Iterable[str]) -> Iterator[tuple[str | None, dict]]:
    """(event, data) pairs of a server-sent event stream read line by line, as they arrive."""
    name = None
    for line in lines:
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            yield name, json.loads(line.split(":", 1)[1])
