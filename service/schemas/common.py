"""Shapes shared by every resource: problem details, cursor pagination, UTC timestamps.

A cursor is opaque to clients: the url-safe base64 of the last id of the previous page. Ids sort by
creation time (service.ids), so "after this id" is a stable position even while rows are inserted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from operator import attrgetter
from typing import Annotated, Any, Generic, TypeVar

from fastapi import Query
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from service.errors import PROBLEM_JSON, InvalidInput

T = TypeVar("T")
R = TypeVar("R", bound=Any)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


def _as_utc(value: datetime) -> datetime:
    # SQLite returns naive datetimes; every timestamp the service writes is UTC
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""A timestamp serialised with its UTC offset, whatever the database returned."""

LimitQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE, description="Page size.")]
CursorQuery = Annotated[
    str | None, Query(max_length=200, description="`next_cursor` of the previous page; omit for the first page.")
]


class StrictInput(BaseModel):
    """Base of every JSON request body: one strictness everywhere. Unknown fields are errors (a typo
    must not silently become a default); values are not coerced (`"yes"` is no boolean, `"5"` no
    number, `2.0` no integer); NaN and infinities are refused. A tuple field is declared with
    `Field(strict=False)` so that a JSON array validates into it (its items stay strict)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page; null on the last page.")


class ProblemError(BaseModel):
    field: str
    message: str
    where: str = Field(description="body, query, path or header.")


class Problem(BaseModel):
    """An RFC 9457 problem document, the body of every 4xx and 5xx answer (application/problem+json).
    Some problems carry more members (`checks` on 503, `jobs` on 409...)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=["https://kan-service.dev/problems/invalid-input"])
    title: str
    status: int
    detail: str
    instance: str | None = None
    field: str | None = Field(None, description="The request field at fault, e.g. `inputs[3]` or `ranges.x1`.")
    errors: list[ProblemError] | None = Field(None, description="Every validation error, when there are several.")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries documenting problem+json answers with these status codes."""
    content = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    return {status: {"model": Problem, "content": content, "description": _REASONS.get(status, "Error")}
            for status in statuses}


_REASONS = {
    400: "Malformed request", 401: "Missing, unknown or revoked API key", 403: "The API key's scope is too small",
    404: "Not found", 409: "Conflict", 413: "Request body too large", 415: "Unsupported media type",
    422: "Invalid input", 429: "Rate limit exceeded (see Retry-After)", 503: "Not ready",
}


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON schema with its local `$defs` references substituted in place, for embedding in an
    OpenAPI document (where `#/$defs/...` would resolve against the document root)."""
    defs = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The id a cursor points after, or None for the first page (InvalidInput on a malformed cursor)."""
    if not cursor:
        return None
    try:
        value = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidInput("cursor is not a value returned as next_cursor", field="cursor") from None
    if not value or not value.isascii() or not value.replace("_", "").isalnum():
        raise InvalidInput("cursor is not a value returned as next_cursor", field="cursor")
    return value


def split_page(rows: Sequence[R], limit: int, id_of: Callable[[R], str] = attrgetter("id")) -> tuple[list[R], str | None]:
    """Rows fetched with `limit + 1` -> (the page, the cursor after it or None when it is the last page)."""
    page = list(rows[:limit])
    return page, (encode_cursor(id_of(page[-1])) if len(rows) > limit and page else None)
