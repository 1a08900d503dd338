"""Server-sent event responses from (event, JSON data) pairs (service.jobs.follow, discovery_events.follow)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from sse_starlette import EventSourceResponse, ServerSentEvent

EVENT_POLL_S = 0.25  # how often a stream looks at the database for changes
PING_S = 15  # a comment line this often keeps proxies from closing an idle stream


async def event_stream(events: AsyncIterator[tuple[str, str]]) -> EventSourceResponse:
    """The stream of ``events``. The first is awaited here, so what it raises (NotFound) is raised
    before the response and its 200 start."""
    first = await anext(events)

    async def stream() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(event=first[0], data=first[1])
        async for name, data in events:
            yield ServerSentEvent(event=name, data=data)

    return EventSourceResponse(stream(), ping=PING_S)
