"""Locust users for bench/bench_load.py: 1-row POST /v1/models/{id}/predict with a bearer key.

Configured by bench_load.py through the environment: KAN_BENCH_MODEL_ID, KAN_BENCH_API_KEY and
KAN_BENCH_USER_RATE (requests per second per user; 0: back to back) and KAN_BENCH_PACING (`constant`:
locust's constant_throughput, one request every 1/rate s per user, so users that start together stay in
step; `poisson`: each user's requests are a Poisson process of that rate, i.e. exponential gaps between
scheduled send times, so the 16 users' arrivals interleave at random). Every latency is also appended
to KAN_BENCH_LATENCY_FILE (milliseconds, one per line, `!` before a failure), so the percentiles are
computed exactly instead of from locust's rounded histogram.
"""

from __future__ import annotations

import os
import random
import time

from locust import FastHttpUser, constant, constant_throughput, events, task

MODEL_ID = os.environ.get("KAN_BENCH_MODEL_ID", "mdl_missing")
API_KEY = os.environ.get("KAN_BENCH_API_KEY", "")
USER_RATE = float(os.environ.get("KAN_BENCH_USER_RATE", "0"))
LATENCY_FILE = os.environ.get("KAN_BENCH_LATENCY_FILE")
PACING = os.environ.get("KAN_BENCH_PACING", "constant")
if PACING not in ("constant", "poisson"):
    raise ValueError(f"KAN_BENCH_PACING must be constant or poisson, not {PACING!r}")

_latencies = open(LATENCY_FILE, "a", buffering=1) if LATENCY_FILE else None  # noqa: SIM115 - closed at exit


@events.request.add_listener
def _record(request_type: str, name: str, response_time: float, response_length: int, exception: object,
            **_kwargs: object) -> None:
    if _latencies is not None:
        _latencies.write(f"{'!' if exception else ''}{response_time:.3f}\n")


@events.quitting.add_listener
def _close(**_kwargs: object) -> None:
    if _latencies is not None:
        _latencies.close()


def poisson_schedule(rate: float):  # noqa: ANN201 - a locust wait_time
    """wait_time for a Poisson arrival process of `rate` per second: send times are scheduled with
    exponential gaps from the previous *scheduled* time (not from when the last answer came), so a
    slow answer does not lower the offered rate; a user that falls behind sends at once."""

    def wait_time(user: FastHttpUser) -> float:
        now = time.monotonic()
        scheduled = getattr(user, "_next_send", now) + random.expovariate(rate)
        user._next_send = max(scheduled, now - 1.0)  # bounded catch-up after a long stall
        return max(0.0, user._next_send - now)

    return wait_time


class PredictUser(FastHttpUser):
    if USER_RATE <= 0:
        wait_time = constant(0)
    elif PACING == "poisson":
        wait_time = poisson_schedule(USER_RATE)
    else:
        wait_time = constant_throughput(USER_RATE)

    @task
    def predict(self) -> None:
        body = {"inputs": [[random.uniform(-1, 1), random.uniform(-1, 1)]]}
        headers = {"Authorization": f"Bearer {API_KEY}"}
        with self.client.post(f"/v1/models/{MODEL_ID}/predict", json=body, headers=headers, name="predict 1 row",
                              catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif len(response.json()["outputs"]) != 1:
                response.failure("wrong number of output rows")
