"""Errors and retries of kan_client against a live API-only service with authentication and a low
job rate limit: one typed exception per status family (with `field`), 429 honouring Retry-After,
503 from /readyz (no worker), a creation retried after a dropped connection that makes one
resource, not two (the Idempotency-Key), and an event stream reopened after it was cut."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from client_support import REPO, SEED_EXPRESSION, SEED_RANGES, Server, wait_for
from dropping_proxy import CuttingRelay, DroppingProxy
from kan_client import (AsyncClient, AuthError, Client, ConflictError, JobFailed, KanError, NotFoundError,
                        RateLimitError, ServerError, ValidationError)

# a burst of one job, then one every 10 s: submissions in a row are soon refused with a 429
SETTINGS = {"auth_enabled": True, "rate_limit_jobs_per_min": 6, "rate_limit_jobs_burst": 1}
ONE_STEP = {"model": {"width": [2, 1]}, "stages": [{"kind": "train", "opt": "Adam", "steps": 1, "update_grid": False}]}


def refused(client: Client, dataset_id: str) -> RateLimitError:
    """Submit jobs until one is refused (each accepted one is cancelled): the 429's error. However
    slow the machine, one of a few submissions in a row lands within the 10 s refill."""
    for _ in range(10):
        try:
            client.train(dataset_id, **ONE_STEP).cancel()
        except RateLimitError as exc:
            return exc
    raise AssertionError("no 429 after 10 job submissions in a row")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """The API alone (no worker), auth on; and a `write` API key made with `kan-service keys create`."""
    live = Server(tmp_path_factory.mktemp("client-errors"), workers=0, **SETTINGS).start()
    try:
        made = subprocess.run([sys.executable, "-m", "service.cli", "keys", "create", "--scope", "write"],
                              cwd=REPO, env=live.env, capture_output=True, text=True, timeout=120, check=True)
        yield live, made.stdout.strip()
    finally:
        live.stop()


def test_an_error_of_each_class_carries_status_and_field(api) -> None:
    live, key = api
    with Client(live.url) as anonymous:
        with pytest.raises(AuthError) as caught:
            anonymous.datasets()
        assert caught.value.status == 401
    with Client(live.url, "kan_not-a-key") as wrong:
        with pytest.raises(AuthError):
            wrong.functions()
    with Client(live.url, key, retries=0) as client:
        with pytest.raises(ServerError) as server_error:  # no worker: /readyz answers 503
            client.ready()
        assert server_error.value.status == 503 and "workers" in server_error.value.detail
        with pytest.raises(ValidationError) as invalid:
            client.create_dataset(expression="x1 +* 2", ranges=SEED_RANGES)
        assert invalid.value.status == 422 and invalid.value.field == "expression"
        with pytest.raises(NotFoundError) as missing:
            client.model("mdl_missing")
        assert missing.value.status == 404 and missing.value.problem["resource"] == "model"
        dataset = client.create_dataset(expression=SEED_EXPRESSION, ranges=SEED_RANGES, n_train=20, n_test=10)
        limited = refused(client, dataset.id)
        assert limited.status == 429 and limited.retry_after >= 1
        with Client(live.url, key, retries=3) as patient:  # waits for Retry-After, then is served
            job = patient.train(dataset.id, **ONE_STEP)
            assert job.cancel().status == "cancelled"
            with pytest.raises(ConflictError) as conflict:
                job.cancel()
        assert conflict.value.status == 409
        assert all(isinstance(e, KanError) for e in (server_error.value, invalid.value, missing.value, limited,
                                                     conflict.value))


def test_a_discovery_cancelled_while_it_runs(api) -> None:
    live, key = api
    with Client(live.url, key, retries=3) as client:  # retries: the job rate limit may refuse it at first
        handle = client.discover(expression="x1 + x2", ranges=SEED_RANGES, n_train=20, n_test=10, budget=600)
        assert handle.result.status == "running"  # no worker here: its candidates stay queued
        events: list[str] = []
        with pytest.raises(TimeoutError):  # it cannot end without a worker
            handle.wait(timeout=1, callback=lambda name, data: events.append(name))
        assert "end" not in events and set(events) <= {"progress"}  # (none at all if the machine is slow)
        cancelled = handle.cancel()
        assert cancelled.status == "cancelled" and cancelled.chosen is None
        assert client.discovery_result(handle.id).status == "cancelled"
        with pytest.raises(JobFailed) as caught:
            handle.wait(timeout=120)
        assert caught.value.status == "cancelled"


def test_a_dropped_event_stream_is_followed_again(api) -> None:
    """The stream is cut after its first event; wait() reopens it and still sees the `end`. The
    discovery cannot end by itself (no worker), so it is cancelled only once the stream was reopened."""
    live, key = api
    relay = CuttingRelay(live.port, b"/events")
    events: list[str] = []
    outcome: list[BaseException] = []

    def follow(handle) -> None:
        try:
            handle.wait(callback=lambda name, data: events.append(name), timeout=600)
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            outcome.append(exc)

    try:
        with Client(live.url, key, retries=3) as direct, Client(relay.url, key, backoff_s=0.05) as through_relay:
            created = direct.discover(expression="x1 + x2", ranges=SEED_RANGES, n_train=20, n_test=10, budget=600)
            follower = threading.Thread(target=follow, args=(through_relay.discovery(created.id),))
            follower.start()
            wait_for(lambda: relay.streams >= 2, 120, 0.05, "the event stream to be reopened")
            direct.cancel_discovery(created.id)
            follower.join(600)
        assert relay.cut == 1 and len(outcome) == 1 and isinstance(outcome[0], JobFailed)
        assert outcome[0].status == "cancelled" and events.count("end") == 1 and events[-1] == "end"
    finally:
        relay.close()


def test_a_creation_retried_after_a_dropped_connection_makes_one_resource(api) -> None:
    live, key = api
    proxy = DroppingProxy(live.port, b"POST /v1/datasets")
    try:
        with Client(proxy.url, key, backoff_s=0.05) as client:
            dataset = client.create_dataset(expression="x1 - x2", ranges=SEED_RANGES, n_train=20, n_test=10,
                                             name="dropped-once")
        assert len(proxy.dropped) == 1
        posts = [r for r in proxy.requests if r.startswith(b"POST /v1/datasets")]
        assert len(posts) == 2
        keys = {line for r in posts for line in r.split(b"\r\n") if line.lower().startswith(b"idempotency-key:")}
        assert len(keys) == 1  # the retry carried the same key
        with Client(live.url, key) as direct:
            named = [d for d in direct.datasets(limit=200) if d.name == "dropped-once"]
        assert [d.id for d in named] == [dataset.id]  # the service made it once
    finally:
        proxy.close()


def test_async_errors_and_retry_after_a_dropped_connection(api) -> None:
    live, key = api
    proxy = DroppingProxy(live.port, b"POST /v1/datasets")

    async def scenario() -> tuple[str, list[str]]:
        async with AsyncClient(proxy.url, key, backoff_s=0.05) as client:
            dataset = await client.create_dataset(expression="x1 * x2", ranges=SEED_RANGES, n_train=20, n_test=10,
                                                  name="async-dropped-once")
            with pytest.raises(NotFoundError):
                await client.discovery("dsc_missing")
            with pytest.raises(ValidationError) as invalid:
                await client.discover(dataset.id, budget={"max_seconds": 10, "max_candidates": 0})
            assert invalid.value.field == "budget.max_candidates"
            names = [d.id for d in await client.datasets(limit=200) if d.name == "async-dropped-once"]
            return dataset.id, names

    try:
        dataset_id, same_name = asyncio.run(scenario())
        assert len(proxy.dropped) == 1 and same_name == [dataset_id]
    finally:
        proxy.close()


def test_problem_bodies_are_kept_whole(api) -> None:
    live, key = api
    with Client(live.url, key) as client, pytest.raises(ValidationError) as caught:
        client.create_dataset([[1.0]], y=[[1.0], [2.0]])  # one input row, two targets
    problem = caught.value.problem
    assert problem["status"] == 422 and problem["type"].endswith("invalid-input")
    assert json.loads(json.dumps(problem)) == problem and caught.value.field
