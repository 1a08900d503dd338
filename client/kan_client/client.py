"""`Client`: the synchronous client (httpx.Client). The API itself is in `_core.BaseClient`."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse

from kan_client._core import BaseClient
from kan_client._wire import Call, EventStream, Flow, decode
from kan_client.progress import Follower


class Client(BaseClient):
    """`Client(url, api_key=None)`: every call of the API, blocking. Use as a context manager or
    call `close()`. `retries`, `backoff_s`, `max_retry_wait_s`: see `_wire.RetryPolicy`."""

    _http_class = httpx.Client

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        for attempt in itertools.count():
            try:
                outcome = self._http.request(**call.httpx_args())
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._retry_delay(attempt, outcome)
            if delay is None:
                return decode(outcome, call.raw)
            time.sleep(delay)

    def _drive(self, flow: Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as stop:
            return stop.value

    def _events(self, path: str, deadline: float | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
        """One event stream until its `end` event, reconnecting when the connection drops;
        TimeoutError once `deadline` (time.monotonic) passes."""
        stream = EventStream(self.retry, self.timeout, path, deadline)
        while True:
            try:
                with connect_sse(self._http, "GET", path, timeout=stream.timeouts()) as source:
                    if not source.response.is_success:
                        source.response.read()
                        decode(source.response, False)
                    for sse in source.iter_sse():
                        yield stream.event(sse)
                        if stream.ended(sse.event):
                            return
            except httpx.TransportError:
                pass
            time.sleep(stream.dropped())  # dropped, or closed before `end`: follow it again

    def _wait(self, handle: Any, progress: bool, callback: Any, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        follower = Follower(handle.kind, handle.id, progress=progress, callback=callback)
        try:
            for name, data in self._events(handle.events_path, deadline):
                follower(name, data)
        finally:
            follower.close()
        return self._drive(handle._finish(follower.end))
