"""Rate limits: moving windows per (API key, route class) in memory or in a shared Redis; 429
problem+json with Retry-After; only accepted job submissions count.

Every window here is long (minutes to hours) so that none frees a slot while a test runs, however slow
the machine."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from jobs_support import assert_problem
from security_support import bearer, make_key, seed_tenant
from service.config import Settings
from service.ratelimit import MEMORY, Rate, RateLimiter, RouteClass, limiter_from, retry_after, storage_uri_from

SLOW = 1 / 3600  # one request an hour


def limiter(burst: int = 3, per_s: float = SLOW, uri: str = MEMORY) -> RateLimiter:
    return RateLimiter({RouteClass.predict: Rate(per_s, burst), RouteClass.jobs: Rate(per_s, burst)}, uri)


def test_a_window_grants_its_burst_then_says_when_a_request_is_free() -> None:
    window = limiter(burst=3)  # 3 requests per 3 hours
    assert [window.acquire("k", RouteClass.predict) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = window.acquire("k", RouteClass.predict)
    assert 3 * 3600 - 60 < wait <= 3 * 3600  # when the first of the three leaves the window
    assert window.acquire("k", RouteClass.predict) > 0  # a refused request did not reset anything


def test_the_window_is_burst_over_rate_rounded_up_to_whole_seconds() -> None:
    assert Rate(per_s=100.0, burst=200).item().get_expiry() == 2
    assert Rate(per_s=3.0, burst=5).item().get_expiry() == 2  # 1.67 s: never faster than 3/s
    assert Rate(per_s=1 / 60, burst=20).item().amount == 20


def test_windows_are_per_caller_and_per_route_class() -> None:
    window = limiter(burst=1)
    assert window.acquire("a", RouteClass.predict) == 0.0
    assert window.acquire("a", RouteClass.predict) > 0
    assert window.acquire("b", RouteClass.predict) == 0.0
    assert window.acquire("a", RouteClass.jobs) == 0.0


def test_zero_rate_is_unlimited() -> None:
    window = limiter(burst=1, per_s=0.0)
    assert all(window.acquire("k", RouteClass.jobs) == 0.0 for _ in range(1000))


def test_check_does_not_spend_and_spend_counts() -> None:
    window = limiter(burst=2)
    assert [window.check("k", RouteClass.jobs) for _ in range(10)] == [0.0] * 10
    window.spend("k", RouteClass.jobs)
    window.spend("k", RouteClass.jobs)
    assert window.check("k", RouteClass.jobs) > 0
    assert window.acquire("k", RouteClass.jobs) > 0


def test_concurrent_callers_never_get_more_than_the_burst() -> None:
    window = limiter(burst=50)
    granted: list[float] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        granted.extend(w for w in (window.acquire("k", RouteClass.predict) for _ in range(100)) if w == 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50


@pytest.mark.parametrize(("wait", "header"), [(0.001, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: str) -> None:
    assert retry_after(wait) == header


def test_storage_is_memory_unless_a_redis_is_named_or_is_the_celery_broker(make_settings) -> None:
    assert storage_uri_from(make_settings()) == MEMORY
    assert storage_uri_from(make_settings(broker_url="redis://127.0.0.1:6379/3")) == MEMORY  # local executor
    assert storage_uri_from(make_settings(executor="celery", broker_url="redis://r:6379/3")) == "redis://r:6379/3"
    assert storage_uri_from(make_settings(executor="celery", broker_url="amqp://r//")) == MEMORY
    named = make_settings(executor="celery", rate_limit_storage_url="redis://r:6379/5")
    assert storage_uri_from(named) == "redis://r:6379/5"


def test_an_unreachable_redis_lets_requests_through() -> None:
    window = limiter(burst=1, uri="redis://127.0.0.1:1/0")  # nothing listens on port 1
    assert window.shared
    assert [window.acquire("k", RouteClass.jobs) for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.redis
def test_limiters_on_one_redis_share_the_window(broker) -> None:
    """Two API replicas (two limiters on the same Redis) allow the burst once between them."""
    first, second = limiter(burst=4, uri=broker.url), limiter(burst=4, uri=broker.url)
    caller = f"{broker.prefix}key"  # purged with the test's namespace
    granted = [w == 0.0 for limiter_ in (first, second, first, second, first, second)
               for w in [limiter_.acquire(caller, RouteClass.jobs)]]
    assert granted == [True, True, True, True, False, False]
    assert 0 < second.check(caller, RouteClass.jobs) <= 4 * 3600
    assert first.acquire(f"{broker.prefix}other", RouteClass.jobs) == 0.0


@pytest.mark.redis
def test_deployments_sharing_a_redis_keep_their_limits_apart(broker, make_settings) -> None:
    """As their queues, their windows carry KAN_QUEUE_PREFIX."""
    a, b = (limiter_from(make_settings(executor="celery", broker_url=broker.url, queue_prefix=f"{broker.prefix}{name}-",
                                       rate_limit_jobs_per_min=1 / 60, rate_limit_jobs_burst=1)) for name in "ab")
    assert a.shared and b.shared
    assert a.acquire("default/-", RouteClass.jobs) == 0.0
    assert a.acquire("default/-", RouteClass.jobs) > 0
    assert b.acquire("default/-", RouteClass.jobs) == 0.0


# ---- over HTTP


@pytest.fixture
def settings(make_settings) -> Settings:
    # predict: 2 per 2,000 s window; jobs: 2 per 120 s window
    return make_settings(auth_enabled=True, rate_limit_predict_per_s=0.001, rate_limit_predict_burst=2,
                         rate_limit_jobs_per_min=1.0, rate_limit_jobs_burst=2)


def test_predict_is_limited_per_key_with_retry_after(client: TestClient, session_factory) -> None:
    data = seed_tenant(session_factory, "default")
    first, second = (bearer(make_key(session_factory, scope="read")) for _ in range(2))
    url, body = f"/v1/models/{data.model_id}/predict", {"inputs": [[0.1, 0.2]]}
    assert [client.post(url, json=body, headers=first).status_code for _ in range(2)] == [200, 200]
    refused = client.post(url, json=body, headers=first)
    problem = assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 2000
    assert 0 < problem["retry_after_s"] <= 2000
    assert client.post(url, json=body, headers=second).status_code == 200  # another key has its own window
    assert client.get(f"/v1/models/{data.model_id}", headers=first).status_code == 200  # other routes are not limited


def test_job_submissions_share_one_window(client: TestClient, session_factory) -> None:
    data = seed_tenant(session_factory, "default")
    key = bearer(make_key(session_factory, scope="write"))
    assert client.post("/v1/jobs", json={"dataset_id": data.dataset_id}, headers=key).status_code == 202
    symbolic = {"fixes": [{"layer": 0, "in": 0, "out": 0, "function": "x"}], "auto": False, "retrain": None}
    assert client.post(f"/v1/models/{data.model_id}/symbolic", json=symbolic, headers=key).status_code == 202
    refused = client.post("/v1/jobs", json={"dataset_id": data.dataset_id}, headers=key)
    assert_problem(refused, 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    assert_problem(client.post(f"/v1/models/{data.model_id}/symbolic", json=symbolic, headers=key), 429)


def test_refused_submissions_do_not_spend_the_job_window(client: TestClient, session_factory) -> None:
    """Issue 18: a 4xx submission (bad body, unknown dataset or model) costs nothing; the burst of 2
    is still whole after them."""
    data = seed_tenant(session_factory, "default")
    key = bearer(make_key(session_factory, scope="write"))
    refused = [
        client.post("/v1/jobs", json={"dataset_id": data.dataset_id, "no_such_field": 1}, headers=key),
        client.post("/v1/jobs", json={"dataset_id": "ds_doesnotexist"}, headers=key),
        client.post("/v1/jobs", content=b"{not json", headers={**key, "content-type": "application/json"}),
        client.post("/v1/models/mdl_doesnotexist/symbolic", json={"auto": True}, headers=key),
        client.post("/v1/discoveries", json={"dataset_id": "ds_doesnotexist"}, headers=key),
    ]
    assert all(400 <= r.status_code < 500 and r.status_code != 429 for r in refused), [r.status_code for r in refused]
    assert [client.post("/v1/jobs", json={"dataset_id": data.dataset_id}, headers=key).status_code
            for _ in range(3)] == [202, 202, 429]
