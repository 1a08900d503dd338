"""`AsyncClient`: the asyncio client (httpx.AsyncClient). Every method of `Client` exists here and is
awaited: `await client.discover(df, target="y")`, `await handle.wait()`, `await model.predict(X)`;
`handle.events()` is an async iterator."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_sse import aconnect_sse

from kan_client._core import BaseClient
from kan_client._wire import Call, EventStream, Flow, decode
from kan_client.progress import Follower


class AsyncClient(BaseClient):
    """`AsyncClient(url, api_key=None)`; `async with` it or `await client.aclose()`."""

    _http_class = httpx.AsyncClient

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, call: Call) -> Any:
        for attempt in itertools.count():
            try:
                outcome = await self._http.request(**call.httpx_args())
            except httpx.TransportError as exc:
                outcome = exc
            delay = self._retry_delay(attempt, outcome)
            if delay is None:
                return decode(outcome, call.raw)
            await asyncio.sleep(delay)

    async def _drive(self, flow: Flow) -> Any:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as stop:
            return stop.value

    async def _events(self, path: str, deadline: float | None = None) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """As Client._events, asynchronously."""
        stream = EventStream(self.retry, self.timeout, path, deadline)
        while True:
            try:
                async with aconnect_sse(self._http, "GET", path, timeout=stream.timeouts()) as source:
                    if not source.response.is_success:
                        await source.response.aread()
                        decode(source.response, False)
                    async for sse in source.aiter_sse():
                        yield stream.event(sse)
                        if stream.ended(sse.event):
                            return
            except httpx.TransportError:
                pass
            await asyncio.sleep(stream.dropped())

    async def _wait(self, handle: Any, progress: bool, callback: Any, timeout: float | None) -> Any:
        deadline = None if timeout is None else time.monotonic() + timeout
        follower = Follower(handle.kind, handle.id, progress=progress, callback=callback)
        try:
            async for name, data in self._events(handle.events_path, deadline):
                follower(name, data)
        finally:
            follower.close()
        return await self._drive(handle._finish(follower.end))
