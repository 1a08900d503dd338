"""Per-caller rate limits: a moving window per (caller, route class), kept by the `limits` library.

A limit of `per_s` requests a second with bursts of `burst` is a window of `burst` requests in any
`burst / per_s` seconds (rounded up to whole seconds, so never faster than `per_s`). A refused request
is told the time until the oldest request leaves the window (the `Retry-After` of the 429).

Where the windows live (`storage_uri`): in this process's memory by default (the embedded service:
nothing to reach per request), or in Redis when the service is scaled out (`KAN_RATE_LIMIT_STORAGE_URL`,
or the broker's Redis when `KAN_EXECUTOR=celery`), so that N API replicas share one limit instead of
allowing N times the rate. If that Redis cannot be reached the request is let through (logged): the
limiter never takes the API down with it.
"""

from __future__ import annotations

import enum
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from service.config import Settings

log = logging.getLogger(__name__)

MEMORY = "memory://"
KEY_PREFIX = "kan-ratelimit"
REDIS_TIMEOUT_S = 2.0  # a Redis that stopped answering delays a request by at most this


class RouteClass(str, enum.Enum):
    """Routes that share a budget."""

    predict = "predict"  # POST /v1/models/{id}/predict
    jobs = "jobs"        # POST /v1/jobs, POST /v1/models/{id}/symbolic, discoveries and batches


@dataclass(frozen=True)
class Rate:
    per_s: float  # sustained rate; 0 disables the limit
    burst: int    # requests that may come at once

    @property
    def unlimited(self) -> bool:
        return self.per_s <= 0

    def item(self) -> RateLimitItem:
        """`burst` requests per window of `burst / per_s` seconds, rounded up."""
        return RateLimitItemPerSecond(self.burst, max(1, math.ceil(self.burst / self.per_s)))


def rates_from(settings: Settings) -> dict[RouteClass, Rate]:
    return {
        RouteClass.predict: Rate(settings.rate_limit_predict_per_s, settings.rate_limit_predict_burst),
        RouteClass.jobs: Rate(settings.rate_limit_jobs_per_min / 60.0, settings.rate_limit_jobs_burst),
    }


def storage_uri_from(settings: Settings) -> str:
    """KAN_RATE_LIMIT_STORAGE_URL when set; else the broker's Redis for a Celery deployment (the one
    store every API replica already reaches); else this process's memory."""
    if settings.rate_limit_storage_url:
        return settings.rate_limit_storage_url
    if settings.executor == "celery" and settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return MEMORY


def limiter_from(settings: Settings) -> RateLimiter:
    """The deployment's limiter; in a shared Redis its keys carry KAN_QUEUE_PREFIX, as the queues do,
    so that deployments sharing one Redis keep their limits apart."""
    prefix = f"{KEY_PREFIX}:{settings.queue_prefix}"
    return RateLimiter(rates_from(settings), storage_uri_from(settings), key_prefix=prefix)


class RateLimiter:
    """Moving windows per (caller, route class) in `storage_uri` (memory:// or redis://...)."""

    def __init__(self, rates: Mapping[RouteClass, Rate], storage_uri: str = MEMORY, *,
                 key_prefix: str = KEY_PREFIX) -> None:
        self.shared = storage_uri != MEMORY  # reached over the network: callers keep it off the event loop
        options = {"key_prefix": key_prefix, "socket_timeout": REDIS_TIMEOUT_S,
                   "socket_connect_timeout": REDIS_TIMEOUT_S} if self.shared else {}
        self._storage = storage_from_string(storage_uri, wrap_exceptions=True, **options)
        self._windows = MovingWindowRateLimiter(self._storage)
        self._items = {rc: None if rate.unlimited else rate.item() for rc, rate in rates.items()}

    def acquire(self, caller: str, route_class: RouteClass) -> float:
        """Spend one request of `caller`'s window: 0.0 when granted, else the seconds until one is free."""
        return self._ask(caller, route_class, spend=True)

    def check(self, caller: str, route_class: RouteClass) -> float:
        """As `acquire` without spending: 0.0 while the window has room (see `spend`)."""
        return self._ask(caller, route_class, spend=False)

    def spend(self, caller: str, route_class: RouteClass) -> None:
        """Count one request that `check` let through and that was accepted."""
        self._ask(caller, route_class, spend=True)

    def _ask(self, caller: str, route_class: RouteClass, *, spend: bool) -> float:
        item = self._items[route_class]
        if item is None:
            return 0.0
        try:
            ask = self._windows.hit if spend else self._windows.test
            if ask(item, caller, route_class.value):
                return 0.0
            reset_at = self._windows.get_window_stats(item, caller, route_class.value).reset_time
        except StorageError as error:
            log.warning("rate limit storage unreachable, request let through: %s", error)
            return 0.0
        return max(reset_at - time.time(), 1e-3)


def retry_after(wait_s: float) -> str:
    """A Retry-After value (whole seconds, at least 1) for a wait of `wait_s` seconds."""
    return str(max(1, math.ceil(wait_s)))
