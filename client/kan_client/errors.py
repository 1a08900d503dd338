"""Typed errors for the service's RFC 9457 problem+json answers, one class per status family.

Every error carries what the server said: `status`, `title`, `detail`, `field` (the request field at
fault, e.g. `budget.max_seconds` or `inputs[3][1]`, where the server names one) and the whole
`problem` body. Catch `KanError` for all of them.
"""

from __future__ import annotations

from typing import Any


class KanError(Exception):
    """Base of every error the client raises for an answer from the service."""

    def __init__(self, status: int, detail: str, *, title: str = "", field: str | None = None,
                 problem: dict[str, Any] | None = None):
        super().__init__(f"{status} {title}: {detail}" if title else f"{status}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.field = field
        self.problem = problem or {}


class ValidationError(KanError):
    """400, 413, 415, 422: the request was refused as it is; `field` names the part at fault."""


class AuthError(KanError):
    """401, 403: no, an unknown or revoked API key, or a key whose scope does not allow the call."""


class NotFoundError(KanError):
    """404: no such resource for this API key's tenant."""


class ConflictError(KanError):
    """409: the resource is not in a state that allows the call (e.g. cancelling a finished job)."""


class RateLimitError(KanError):
    """429: too many requests; `retry_after` is the server's Retry-After in seconds (None if absent)."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class ServerError(KanError):
    """5xx: the service failed or is unavailable (503 is retried first, see Client's `retries`)."""


class JobFailed(Exception):
    """`wait()` on a job or discovery that ended failed or cancelled: `status` and the server's `error`."""

    def __init__(self, kind: str, id: str, status: str, error: dict[str, Any] | None):
        detail = (error or {}).get("detail") or ""
        super().__init__(f"{kind} {id} {status}" + (f": {detail}" if detail else ""))
        self.id = id
        self.status = status
        self.error = error


def error_class(status: int) -> type[KanError]:
    if status in (401, 403):
        return AuthError
    if status == 404:
        return NotFoundError
    if status == 409:
        return ConflictError
    if status == 429:
        return RateLimitError
    if status >= 500:
        return ServerError
    return ValidationError


def from_response(status: int, headers: Any, body: Any) -> KanError:
    """The error for a non-2xx answer (a problem+json body, or anything else)."""
    problem = body if isinstance(body, dict) else {}
    detail = str(problem.get("detail") or (body if isinstance(body, str) else "") or "request failed")
    cls = error_class(status)
    kwargs: dict[str, Any] = {"title": str(problem.get("title") or ""), "field": problem.get("field"),
                              "problem": problem}
    if cls is RateLimitError:
        kwargs["retry_after"] = retry_after_seconds(headers.get("retry-after"))
    return cls(status, detail, **kwargs)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds (the service sends delta-seconds); None when absent or unreadable."""
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None
