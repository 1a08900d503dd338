"""Per-caller rate limits: one token bucket per (caller, route class), in this process's memory.

A bucket holds up to `burst` tokens and refills at `per_s` tokens a second; a request takes one
token or is refused with the time until the next token (the `Retry-After` of the 429). The state
lives in the API process, so a deployment running N API processes allows up to N times the rate;
that is the documented trade-off of the embedded default (no shared store to reach per request).
"""

from __future__ import annotations

import enum
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from service.config import Settings


class RouteClass(str, enum.Enum):
    """Routes that share a budget."""

    predict = "predict"  # POST /v1/models/{id}/predict
    jobs = "jobs"        # POST /v1/jobs, POST /v1/models/{id}/symbolic


@dataclass(frozen=True)
class Rate:
    per_s: float  # refill rate; 0 disables the limit
    burst: int    # bucket size

    @property
    def unlimited(self) -> bool:
        return self.per_s <= 0


def rates_from(settings: Settings) -> dict[RouteClass, Rate]:
    return {
        RouteClass.predict: Rate(settings.rate_limit_predict_per_s, settings.rate_limit_predict_burst),
        RouteClass.jobs: Rate(settings.rate_limit_jobs_per_min / 60.0, settings.rate_limit_jobs_burst),
    }


class RateLimiter:
    """Thread-safe token buckets. At most `max_buckets` are kept; the least recently used goes first
    (forgetting a bucket only ever grants its caller a fresh burst)."""

    def __init__(
        self, rates: Mapping[RouteClass, Rate], *, max_buckets: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rates = dict(rates)
        self._max_buckets = max_buckets
        self._clock = clock
        self._buckets: OrderedDict[tuple[Hashable, RouteClass], tuple[float, float]] = OrderedDict()  # tokens, when
        self._lock = threading.Lock()

    def acquire(self, caller: Hashable, route_class: RouteClass) -> float:
        """Take a token for `caller`: 0.0 when granted, else the seconds until one is available."""
        rate = self._rates[route_class]
        if rate.unlimited:
            return 0.0
        key = (caller, route_class)
        with self._lock:
            now = self._clock()
            tokens, then = self._buckets.pop(key, (float(rate.burst), now))
            tokens = min(float(rate.burst), tokens + (now - then) * rate.per_s)
            granted = tokens >= 1.0
            if granted:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)
            while len(self._buckets) > self._max_buckets:
                self._buckets.popitem(last=False)
        return 0.0 if granted else (1.0 - tokens) / rate.per_s


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of `wait_s` seconds."""
    return str(max(1, math.ceil(wait_s)))
