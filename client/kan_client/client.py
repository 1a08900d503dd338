"""`Client`: the synchronous client (httpx.Client). The API itself is in `_core.BaseClient`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
from httpx_sse import connect_sse

from kan_client._core import DEFAULT_URL, BaseClient, Call, Flow, check_deadline, decode, stream_timeout
from kan_client.progress import Follower


class Client(BaseClient):
    """`Client(url, api_key=None)`: every call of the API, blocking. Use as a context manager or
    call `close()`. `retries`, `backoff_s`, `max_retry_wait_s`: see `_core.RetryPolicy`."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0,
                 transport: httpx.BaseTransport | None = None):
        super().__init__(url, api_key, timeout=timeout, retries=retries, backoff_s=backoff_s,
                         max_retry_wait_s=max_retry_wait_s)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = self._http.request(call.method, call.path, json=call.json, params=call.params,
                                              content=call.content, headers=call.headers)
            except httpx.TransportError:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay(attempt, response) if not response.is_success else None
                if delay is None:
                    return decode(response, call.raw)
            time.sleep(delay)
            attempt += 1

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
        attempt = 0
        while True:
            try:
                with connect_sse(self._http, "GET", path, timeout=stream_timeout(self.timeout, deadline)) as source:
                    if not source.response.is_success:
                        source.response.read()
                        decode(source.response, False)
                    for event in source.iter_sse():
                        attempt = 0
                        yield event.event, json.loads(event.data) if event.data else {}
                        if event.event == "end":
                            return
                        check_deadline(deadline, path)
            except httpx.TransportError:
                pass
            check_deadline(deadline, path)
            delay = self.retry.delay(attempt, None)  # dropped, or closed before `end`: follow it again
            if delay is None:
                raise ConnectionError(f"the event stream {path} kept dropping")
            time.sleep(delay)
            attempt += 1

    def _wait(self, handle: Any, progress: bool, callback: Any, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        follower = Follower(handle.kind, handle.id, progress=progress, callback=callback)
        try:
            for name, data in self._events(handle.events_path, deadline):
                follower(name, data)
        finally:
            follower.close()
        return self._drive(handle._finish(follower.end))
