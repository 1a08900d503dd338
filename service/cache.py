"""In-process caches. `TTLCache`: short-lived, for lookups the hot path would otherwise send to the
database on every request (API keys, the model row of a prediction). `LRUCache`: bounded, for what
is derived from an immutable row (service.model_store: loaded networks, compiled formulas, plots).

An entry lives `ttl_s` seconds from the moment it was stored, however often it is read (no sliding
expiry): a change made elsewhere (a key revoked from the CLI, a model deleted by another API process)
is seen at most `ttl_s` seconds later. Failed lookups are never stored. `ttl_s = 0` disables the cache.
The storage is `cachetools.TTLCache`; this wrapper adds the lock (the API reads from the event loop
and from threadpool threads), the off switch and eviction by key predicate.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

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



class LRUCache(Generic[K, V]):
    """A bounded, thread-safe LRU map whose `get_or_create` runs the factory once per missing key
    (concurrent callers of the same key wait for that one result; a failed factory caches nothing)."""

    def __init__(self, maxsize: int):
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self.maxsize = maxsize
        self._data: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[K, threading.Lock] = {}

    def get_or_create(self, key: K, factory: Callable[[], V]) -> V:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:
                    self._data.move_to_end(key)
                    return self._data[key]
            try:
                value = factory()
                with self._lock:
                    self._data[key] = value
                    while len(self._data) > self.maxsize:
                        self._data.popitem(last=False)
            finally:
                with self._lock:
                    self._loading.pop(key, None)
        return value

    def peek(self, key: K, default: Any = None) -> Any:
        """The value cached under `key` (marked recently used), else `default`; never loads it."""
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return default

    def discard(self, predicate: Callable[[K], bool]) -> None:
        with self._lock:
            for key in [k for k in self._data if predicate(k)]:
                del self._data[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._data
