"""What every dashboard page shares: the caller (API key cookie), the in-process API, templates, CSRF.

The dashboard holds no data access of its own. Pages call the /v1 API in-process (httpx over ASGI, no
socket) with the caller's key, so they get the API's validation, scopes, rate limits and tenant checks
exactly; only the live streams call the service layer directly (service.jobs.follow,
service.discovery_events.follow) with the tenant the same key authenticates to.

The key lives in an HttpOnly, SameSite=Strict cookie scoped to /ui. Forms that change something are
also checked for a same-origin `Origin` (or `Referer`) header, so no other site can post them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates

from service.api.deps import get_principal
from service.api.sse import EVENT_POLL_S, event_stream
from service.auth import Principal
from service.errors import Forbidden, NotFound, ServiceError, Unauthorized
from service.models import Scope

PREFIX = "/ui"
COOKIE = "kan_ui_key"
HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
# every page: its scripts, styles, fonts and images come from the service itself (KaTeX writes inline styles)
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self'; "
       "connect-src 'self'; frame-ancestors 'none'; form-action 'self'")


class LoginRequired(Exception):
    """No usable key in the cookie while authentication is on: the page sends the browser to log in."""


class ApiProblem(Exception):
    """The in-process API answered an error: its status and problem+json body."""

    def __init__(self, status: int, body: dict[str, Any]):
        super().__init__(body.get("detail", ""))
        self.status = status
        self.body = body

    def field_errors(self) -> dict[str, str]:
        """field -> message, from the problem's `errors` list or its single `field`."""
        out = {err["field"]: err["message"] for err in self.body.get("errors") or [] if "field" in err}
        if not out:
            out[self.body.get("field") or "body"] = self.body.get("detail", "invalid")
        return out


class Caller:
    """A page's view of its caller: the principal, and the API as that principal."""

    def __init__(self, request: Request, principal: Principal, token: str | None):
        self.request = request
        self.principal = principal
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    @property
    def can_write(self) -> bool:
        return self.principal.scope.allows(Scope.write)

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        client: httpx.AsyncClient = self.request.app.state.ui_api
        headers = {**self._headers, **kwargs.pop("headers", {})}
        return await client.request(method, f"/v1{path}", headers=headers, **kwargs)

    async def json(self, method: str, path: str, **kwargs: Any) -> Any:
        """The answer's JSON; ApiProblem for an error answer."""
        response = await self.call(method, path, **kwargs)
        if response.status_code >= 400:
            try:
                body = response.json()
            except json.JSONDecodeError:
                body = {"detail": response.text}
            raise ApiProblem(response.status_code, body)
        return response.json() if response.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.json("GET", path, params={k: v for k, v in params.items() if v is not None})


def api_client(app: Any) -> httpx.AsyncClient:
    """The app calling itself over ASGI: no network, the same middleware and routes as any client."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=None)


async def get_principal_for_token(request: Request, token: str) -> Principal:
    """The principal `token` authenticates as (Unauthorized if none), through the API's own dependency."""
    return await get_principal(request, HTTPAuthorizationCredentials(scheme="Bearer", credentials=token))


async def get_caller(request: Request) -> Caller:
    """The caller from the key cookie (LoginRequired without one when auth is on). The key is checked
    by the API's own dependency, with its lookup cache."""
    token = request.cookies.get(COOKIE)
    if not request.app.state.settings.auth_enabled:
        return Caller(request, await get_principal(request, None), None)
    if not token:
        raise LoginRequired()
    try:
        principal = await get_principal_for_token(request, token)
    except Unauthorized:
        raise LoginRequired() from None
    return Caller(request, principal, token)


async def same_origin(request: Request) -> None:
    """Refuse a state-changing request another site's page sent (a CSRF check, on top of SameSite)."""
    own = f"{request.url.scheme}://{request.url.netloc}"
    origin = request.headers.get("origin")
    if origin is None and (referer := request.headers.get("referer")):
        origin = "/".join(referer.split("/")[:3])
    if origin != own:
        raise Forbidden("this form may only be sent from the dashboard's own pages", field="Origin")


CallerDep = Annotated[Caller, Depends(get_caller)]
Follow = Callable[..., AsyncIterator[tuple[str, str]]]  # (session factory, tenant, id, *, interval_s)
SameOrigin = Depends(same_origin)


def render(caller: Caller | None, name: str, status_code: int = 200, **context: Any):
    """A page from templates/`name`, with the caller (tenant, scope, what it may do) in its context."""
    request = caller.request if caller else context.pop("request")
    context.update(caller=caller, auth_enabled=request.app.state.settings.auth_enabled, prefix=PREFIX)
    return templates.TemplateResponse(request, name, context, status_code=status_code,
                                      headers={"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff"})


def login_url(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{PREFIX}/login?next={quote(target)}"


def problem_page(request: Request, caller: Caller | None, exc: ApiProblem | ServiceError):
    """The not-found page for a 404 (another tenant's ids included), an error page otherwise."""
    status = exc.status
    body = exc.body if isinstance(exc, ApiProblem) else {"title": exc.title, "detail": exc.detail}
    name = "not_found.html" if status == 404 else "error.html"
    return render(caller, name, status_code=status, request=request, problem=body)


async def live_stream(caller: Caller, follow: Follow, resource_id: str):
    """The server-sent events of ``follow`` (service.jobs.follow, service.discovery_events.follow)
    for the caller's tenant, as the API streams them; the not-found page when there is no such id."""
    factory = caller.request.app.state.read_session_factory
    try:
        return await event_stream(follow(factory, caller.principal.tenant_id, resource_id, interval_s=EVENT_POLL_S))
    except NotFound as exc:
        return problem_page(caller.request, caller, exc)


def add_run_routes(router: APIRouter, collection: str, follow: Follow) -> None:
    """The live event stream (as GET /v1/{collection}/{id}/events, for the caller's tenant) and the
    cancel form of a job or discovery page; `collection` is "jobs" or "discoveries"."""

    @router.get(f"/{collection}/{{run_id}}/events")
    async def events(caller: CallerDep, run_id: str):
        return await live_stream(caller, follow, run_id)

    @router.post(f"/{collection}/{{run_id}}/cancel", dependencies=[SameOrigin])
    async def cancel(caller: CallerDep, run_id: str) -> RedirectResponse:
        await caller.json("POST", f"/{collection}/{run_id}/cancel")
        return RedirectResponse(f"{PREFIX}/{collection}/{run_id}", status_code=303)
