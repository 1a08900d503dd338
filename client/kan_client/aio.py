"""`AsyncClient`: the asyncio client (httpx.AsyncClient). Every method of `Client` exists here and is
awaited: `await client.discover(df, target="y")`, `await handle.wait()`, `await model.predict(X)`;
`handle.events()` is an async iterator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from kan_client._core import DEFAULT_URL, BaseClient, Call, Flow, check_deadline, decode, stream_timeout
from kan_client.progress import Follower


class AsyncClient(BaseClient):
    """`AsyncClient(url, api_key=None)`; `async with` it or `await client.aclose()`."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0,
                 transport: httpx.AsyncBaseTransport | None = None):
        super().__init__(url, api_key, timeout=timeout, retries=retries, backoff_s=backoff_s,
                         max_retry_wait_s=max_retry_wait_s)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        attempt = 0
        while True:
            try:
                response = await self._http.request(call.method, call.path, json=call.json, params=call.params,
                                                    content=call.content, headers=call.headers)
            except httpx.TransportError:
                delay = self.retry.delay(attempt, None)
                if delay is None:
                    raise
            else:
                delay = self.retry.delay(attempt, response) if not response.is_success else None
                if delay is None:
                    return decode(response, call.raw)
            await asyncio.sleep(delay)
            attempt += 1

    async def _drive(self, flow: Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as stop:
            return stop.value

    async def _events(self, path: str, deadline: float | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """As Client._events, asynchronously."""
        attempt = 0
        while True:
            try:
                async with aconnect_sse(self._http, "GET", path,
                                        timeout=stream_timeout(self.timeout, deadline)) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        decode(source.response, False)
                    async for event in source.aiter_sse():
                        attempt = 0
                        yield event.event, json.loads(event.data) if event.data else {}
                        if event.event == "end":
                            return
                        check_deadline(deadline, path)
            except httpx.TransportError:
                pass
            check_deadline(deadline, path)
            delay = self.retry.delay(attempt, None)
            if delay is None:
                raise ConnectionError(f"the event stream {path} kept dropping")
            await asyncio.sleep(delay)
            attempt += 1

    async def _wait(self, handle: Any, progress: bool, callback: Any, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        follower = Follower(handle.kind, handle.id, progress=progress, callback=callback)
        try:
            async for name, data in self._events(handle.events_path, deadline):
                follower(name, data)
        finally:
            follower.close()
        return await self._drive(handle._finish(follower.end))
