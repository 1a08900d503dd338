"""A short-lived, in-process cache for lookups the hot path would otherwise send to the database on
every request (API keys, the model row of a prediction).

An entry lives `ttl_s` seconds from the moment it was stored, however often it is read (no sliding
expiry): a change made elsewhere (a key revoked from the CLI, a model deleted by another API process)
is seen at most `ttl_s` seconds later. Failed lookups are never stored. `ttl_s = 0` disables the cache.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Thread-safe; at most `maxsize` entries, the least recently stored dropped first."""

    def __init__(self, ttl_s: float, maxsize: int = 10_000, *, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s < 0:
            raise ValueError("ttl_s must be >= 0")
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.ttl_s = ttl_s
        self.maxsize = maxsize
        self._clock = clock
        self._data: OrderedDict[K, tuple[float, V]] = OrderedDict()  # key -> (expires at, value)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, key: K) -> V | None:
        """The value stored under `key` less than `ttl_s` ago, else None."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            if self._clock() >= entry[0]:
                del self._data[key]
                return None
            return entry[1]

    def put(self, key: K, value: V) -> None:
        if not self.enabled:
            return
        with self._lock:
            now = self._clock()
            self._data.pop(key, None)
            self._data[key] = (now + self.ttl_s, value)
            # entries are in the order they were stored, so the expired ones are at the front
            while len(self._data) > self.maxsize or next(iter(self._data.values()))[0] <= now:
                self._data.popitem(last=False)

    def discard(self, predicate: Callable[[K], bool]) -> None:
        """Drop every entry whose key matches."""
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                del self._data[key]

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
