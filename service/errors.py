"""One exception tree for the service, mapped to RFC 9457 problem+json responses in one place."""

from __future__ import annotations

import logging
import re
from functools import lru_cache
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://kan-service.dev/problems/"


class ServiceError(Exception):
    """Base of every error the API reports on purpose. A subclass names its HTTP status, problem
    type code and title: `class Conflict(ServiceError, status=409, code="conflict", title="Conflict")`."""

    status: int = 500
    code: str = "internal"
    title: str = "Internal error"

    def __init_subclass__(cls, *, status: int, code: str, title: str, **kwargs: Any):
        super().__init_subclass__(**kwargs)
        cls.status, cls.code, cls.title = status, code, title

    def __init__(self, detail: str, *, field: str | None = None, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.field = field
        self.headers = headers or {}
        self.extra = extra


class BadRequest(ServiceError, status=400, code="bad-request", title="Bad request"):
    """A body that cannot be read at all (not JSON, too deeply nested, a broken multipart form)."""


class InvalidInput(ServiceError, status=422, code="invalid-input", title="Invalid input"):
    """A request that parses but whose content is wrong (NaN, ragged rows, illegal config...)."""


class Unauthorized(ServiceError, status=401, code="unauthorized", title="Authentication required"):
    """No API key, or one that is unknown or revoked."""


class Forbidden(ServiceError, status=403, code="forbidden", title="Forbidden"):
    """A key whose scope does not allow the route; a dashboard form sent from elsewhere."""


class NotFound(ServiceError, status=404, code="not-found", title="Not found"):
    """A resource that does not exist (or belongs to another tenant)."""

    def __init__(self, resource: str, id: str):
        super().__init__(f"{resource} {id!r} does not exist", resource=resource, id=id)


class Conflict(ServiceError, status=409, code="conflict", title="Conflict"):
    """A request the resource's current state does not allow (cancel a finished job...)."""


class PayloadTooLarge(ServiceError, status=413, code="payload-too-large", title="Payload too large"):
    """A body over the configured size."""


class UnsupportedMediaType(ServiceError, status=415, code="unsupported-media-type", title="Unsupported media type"):
    """A body of a content type the route does not read."""


class RateLimited(ServiceError, status=429, code="rate-limited", title="Too many requests"):
    """Over the tenant's rate limit; Retry-After says when to try again."""


class Unavailable(ServiceError, status=503, code="unavailable", title="Service unavailable"):
    """The service cannot serve now (/readyz names the checks that failed)."""


def problem_body(
    status: int, title: str, detail: str, *, code: str, instance: str | None = None,
    field: str | None = None, errors: list[dict[str, Any]] | None = None, **extra: Any,
) -> dict[str, Any]:
    """An RFC 9457 problem document: the body of every error answer, and of a rejected batch item."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + code, "title": title, "status": status, "detail": detail}
    if instance:
        body["instance"] = instance
    if field:
        body["field"] = field
    if errors:
        body["errors"] = errors
    body.update(extra)
    return body


def error_body(exc: ServiceError, *, field: str | None = None, instance: str | None = None) -> dict[str, Any]:
    """The problem document of a ServiceError; `field`, when given, replaces the error's own."""
    return problem_body(exc.status, exc.title, exc.detail, code=exc.code, instance=instance,
                        field=field or exc.field, **exc.extra)


def problem(
    status: int, title: str, detail: str, *, code: str, instance: str | None = None,
    field: str | None = None, errors: list[dict[str, Any]] | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = problem_body(status, title, detail, code=code, instance=instance, field=field, errors=errors, **extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


_LOCATIONS = ("body", "query", "path", "header", "cookie")


def _loc_to_field(loc: tuple[Any, ...] | list[Any]) -> str:
    # the location (body, query...) is reported in `where`; `field` is the name within it
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in _LOCATIONS else loc)]
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out or "body"


def install_exception_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return JSONResponse(error_body(exc, instance=request.url.path), status_code=exc.status,
                            media_type=PROBLEM_JSON, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for err in exc.errors():
            loc = err.get("loc", ())
            msg = err.get("msg", "invalid")
            if err.get("type") == "json_invalid":
                return problem(400, "Malformed JSON", f"request body is not valid JSON: {err.get('ctx', {}).get('error', msg)}",
                               code="malformed-json", instance=request.url.path, field="body")
            errors.append({"field": _loc_to_field(loc), "message": msg, "where": str(loc[0]) if loc else "body"})
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return problem(422, "Invalid input", f"{first['field']}: {first['message']}", code="invalid-input",
                       instance=request.url.path, field=first["field"], errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        title = {404: "Not found", 405: "Method not allowed"}.get(exc.status_code, "HTTP error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and (allowed := _allowed_methods(app, request.url.path)):
            headers["Allow"] = allowed  # Starlette's names only the first route matching the path
        if exc.status_code == 400:  # the framework's 400s are bodies it could not parse
            detail = ("the JSON body is nested too deeply" if isinstance(exc.__cause__, RecursionError)
                      else str(exc.detail))
            return problem(400, BadRequest.title, detail, code=BadRequest.code, instance=request.url.path,
                           field="body", headers=headers)
        return problem(exc.status_code, title, str(exc.detail), code=title.lower().replace(" ", "-"),
                       instance=request.url.path, headers=headers)

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "Internal error", "an unexpected error occurred; it has been logged",
                       code="internal", instance=request.url.path)


def _allowed_methods(app: FastAPI, path: str) -> str | None:
    """Every method the app documents for `path` (its OpenAPI operations), as an Allow header."""
    methods = {method.upper() for template, operations in app.openapi()["paths"].items()
               if _template_pattern(template).fullmatch(path) for method in operations}
    return ", ".join(sorted(methods)) or None


@lru_cache(maxsize=256)
def _template_pattern(template: str) -> re.Pattern[str]:
    return re.compile(re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)))
