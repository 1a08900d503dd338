"""A short-lived, in-process cache for lookups the hot path would otherwise send to the database on
every request (API keys, the model row of a prediction).

An entry lives `ttl_s` seconds from the moment it was stored, however often it is read (no sliding
expiry): a change made elsewhere (a key revoked from the CLI, a model deleted by another API process)
is seen at most `ttl_s` seconds later. Failed lookups are never stored. `ttl_s = 0` disables the cache.
The storage is `cachetools.TTLCache`; this wrapper adds the lock (the API reads from the event loop
and from threadpool threads), the off switch and eviction by key predicate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

import cachetools

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Thread-safe; at most `maxsize` entries (the least recently used dropped first)."""

    def __init__(self, ttl_s: float, maxsize: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.ttl_s = ttl_s
        self.maxsize = maxsize
        self._data: cachetools.TTLCache[K, V] = cachetools.TTLCache(maxsize, ttl_s or 1.0, timer=clock)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: K) -> V | None:
        """The value stored under `key` less than `ttl_s` ago, else None."""
        if not self.enabled:
            return None
        with self._lock:
            return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._data[key] = value  # (re)stored: its life starts now

    def discard(self, predicate: Callable[[K], bool]) -> None:
        """Drop every entry whose key matches."""
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                self._data.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            self._data.expire()
            return len(self._data)
