"""Below the API, what the sync and async clients share, without I/O: a request as a `Call`, the retry
policy, the decoding of answers into values or typed errors, and the reconnection rule of an event
stream.

Retries: a request that fails in transit (connect or read timeout, dropped connection) or gets 502,
503 or 504 is sent again after a backoff; a 429 after the server's Retry-After. POSTs carry an
`Idempotency-Key` (the same on every attempt), so a retried creation returns the resource the first
attempt made rather than a second one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import ServerSentEvent

from kan_client.errors import from_response, retry_after_seconds

RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bool = False  # the answer's body as bytes / text instead of JSON

    def __post_init__(self) -> None:
        if self.method == "POST":
            self.headers.setdefault("Idempotency-Key", str(uuid.uuid4()))

    def httpx_args(self) -> dict[str, Any]:
        """The keywords of httpx's `request()` for this call."""
        return {"method": self.method, "url": self.path, "json": self.json, "params": self.params,
                "content": self.content, "headers": self.headers}


Flow = Generator[Call, Any, Any]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3           # extra attempts after the first
    backoff_s: float = 0.5     # first wait after a transport error or 5xx; doubled each time
    max_wait_s: float = 60.0   # the longest wait, Retry-After included; a longer Retry-After is not waited for

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up (and report this one)."""
        if attempt >= self.retries:
            return None
        backoff = min(self.backoff_s * 2**attempt, self.max_wait_s)
        if response is None:
            return backoff
        if response.status_code not in RETRY_STATUSES:
            return None
        after = retry_after_seconds(response.headers.get("retry-after"))
        if after is None:
            return backoff
        return after if after <= self.max_wait_s else None


def decode(response: httpx.Response, raw: bool) -> Any:
    """The value of a 2xx answer; a KanError for any other."""
    if response.is_success:
        if raw:
            return response.content
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise from_response(response.status_code, response.headers, body)


class EventStream:
    """The reconnection rule of one event stream, without I/O: the client opens `path` with `timeouts()`,
    passes every event through `event()` and asks `ended()` after it; when the stream drops or closes
    before its `end` event, it waits `dropped()` seconds and opens it again. TimeoutError once
    `deadline` (time.monotonic) passes; ConnectionError when the retries run out."""

    def __init__(self, retry: RetryPolicy, timeout: float, path: str, deadline: float | None):
        self.retry, self.timeout, self.path, self.deadline = retry, timeout, path, deadline
        self.attempt = 0

    def timeouts(self) -> httpx.Timeout:
        """Reads wait past the server's 15 s pings, never past the deadline."""
        now = time.monotonic()
        read = 60.0 if self.deadline is None else max(0.05, min(60.0, self.deadline - now))
        return httpx.Timeout(self.timeout, read=read)

    def event(self, sse: ServerSentEvent) -> tuple[str, dict[str, Any]]:
        """(name, data) of a received event; an event received starts the retries afresh."""
        self.attempt = 0
        return sse.event, json.loads(sse.data) if sse.data else {}

    def ended(self, name: str) -> bool:
        """Whether the event `name` ends the stream."""
        if name == "end":
            return True
        self._check_deadline()
        return False

    def dropped(self) -> float:
        """Seconds to wait before opening the stream again."""
        self._check_deadline()
        delay = self.retry.delay(self.attempt, None)
        if delay is None:
            raise ConnectionError(f"the event stream {self.path} kept dropping")
        self.attempt += 1
        return delay

    def _check_deadline(self) -> None:
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise TimeoutError(f"{self.path}: no end before the timeout")
