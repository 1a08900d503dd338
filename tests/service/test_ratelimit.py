"""Rate limits: token buckets per (API key, route class); 429 problem+json with Retry-After."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient

from jobs_support import assert_problem
from security_support import bearer, make_key, seed_tenant
from service.config import Settings
from service.ratelimit import Rate, RateLimiter, RouteClass, retry_after


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limiter(per_s: float = 2.0, burst: int = 3, **kwargs) -> tuple[RateLimiter, FakeClock]:
    clock = FakeClock()
    rates = {RouteClass.predict: Rate(per_s, burst), RouteClass.jobs: Rate(per_s, burst)}
    return RateLimiter(rates, clock=clock, **kwargs), clock


def test_a_bucket_grants_its_burst_then_refills_at_the_rate() -> None:
    bucket, clock = limiter(per_s=2.0, burst=3)
    assert [bucket.acquire("k", RouteClass.predict) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.acquire("k", RouteClass.predict) == pytest.approx(0.5)  # one token every 0.5 s
    clock.now += 0.25
    assert bucket.acquire("k", RouteClass.predict) == pytest.approx(0.25)  # a refused request costs nothing
    clock.now += 0.25
    assert bucket.acquire("k", RouteClass.predict) == 0.0
    clock.now += 100  # refills up to the burst, never beyond
    assert [bucket.acquire("k", RouteClass.predict) for _ in range(4)].count(0.0) == 3


def test_buckets_are_per_caller_and_per_route_class() -> None:
    bucket, _ = limiter(per_s=1.0, burst=1)
    assert bucket.acquire("a", RouteClass.predict) == 0.0
    assert bucket.acquire("a", RouteClass.predict) > 0
    assert bucket.acquire("b", RouteClass.predict) == 0.0
    assert bucket.acquire("a", RouteClass.jobs) == 0.0


def test_zero_rate_is_unlimited() -> None:
    bucket, _ = limiter(per_s=0.0, burst=1)
    assert all(bucket.acquire("k", RouteClass.jobs) == 0.0 for _ in range(1000))


def test_least_recently_used_buckets_are_forgotten_first() -> None:
    bucket, _ = limiter(per_s=1.0, burst=1, max_buckets=2)
    for caller in ("a", "b", "c"):  # "a" is dropped: it gets a fresh bucket
        bucket.acquire(caller, RouteClass.predict)
    assert bucket.acquire("a", RouteClass.predict) == 0.0
    assert bucket.acquire("c", RouteClass.predict) > 0


def test_concurrent_callers_never_get_more_than_the_burst() -> None:
    bucket, _ = limiter(per_s=1.0, burst=50)  # the clock stands still: no refill
    granted: list[float] = []
    barrier = threading.Barrier(8)

    def hammer() -> None:
        barrier.wait()
        granted.extend(w for w in (bucket.acquire("k", RouteClass.predict) for _ in range(100)) if w == 0.0)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 50


@pytest.mark.parametrize(("wait", "header"), [(0.001, "1"), (1.0, "1"), (1.01, "2"), (59.5, "60")])
def test_retry_after_is_whole_seconds_rounded_up(wait: float, header: str) -> None:
    assert retry_after(wait) == header


# ---- over HTTP


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(auth_enabled=True, rate_limit_predict_per_s=0.5, rate_limit_predict_burst=2,
                         rate_limit_jobs_per_min=1.0, rate_limit_jobs_burst=2)


def test_predict_is_limited_per_key_with_retry_after(client: TestClient, session_factory) -> None:
    data = seed_tenant(session_factory, "default")
    first, second = (bearer(make_key(session_factory, scope="read")) for _ in range(2))
    url, body = f"/v1/models/{data.model_id}/predict", {"inputs": [[0.1, 0.2]]}
    assert [client.post(url, json=body, headers=first).status_code for _ in range(2)] == [200, 200]
    refused = client.post(url, json=body, headers=first)
    problem = assert_problem(refused, 429)
    assert refused.headers["retry-after"] == "2"  # one token every 2 s
    assert 0 < problem["retry_after_s"] <= 2
    assert client.post(url, json=body, headers=second).status_code == 200  # another key has its own bucket
    assert client.get(f"/v1/models/{data.model_id}", headers=first).status_code == 200  # other routes are not limited


def test_job_submissions_share_one_bucket(client: TestClient, session_factory) -> None:
    data = seed_tenant(session_factory, "default")
    key = bearer(make_key(session_factory, scope="write"))
    assert client.post("/v1/jobs", json={"dataset_id": data.dataset_id}, headers=key).status_code == 202
    symbolic = {"fixes": [{"layer": 0, "in": 0, "out": 0, "function": "x"}], "auto": False, "retrain": None}
    assert client.post(f"/v1/models/{data.model_id}/symbolic", json=symbolic, headers=key).status_code == 202
    refused = client.post("/v1/jobs", json={"dataset_id": data.dataset_id}, headers=key)
    assert_problem(refused, 429)
    assert refused.headers["retry-after"] == "60"
    assert_problem(client.post(f"/v1/models/{data.model_id}/symbolic", json=symbolic, headers=key), 429)
