"""FastAPI dependencies, as `Annotated` aliases routers declare in their signatures.

Authentication: `get_principal` turns the `Authorization: Bearer` header into a Principal (tenant,
scope, key); `require_scope` refuses keys without a scope: service.app puts `ReadScope` on every /v1
router, routes that create or delete add `WriteScope`; `get_tenant` is the tenant every domain call is
scoped to; `rate_limit` spends one request of the caller's window (`rate_limit_accepted`: once accepted).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from service import auth
from service.auth import ANONYMOUS, CHALLENGE, Principal
from service.config import Settings
from service.errors import Forbidden, RateLimited, Unauthorized
from service.executors.base import Executor
from service.model_store import ModelStore
from service.models import Scope
from service.ratelimit import RateLimiter, RouteClass, retry_after

# Dependencies that only read app.state are `async def`: FastAPI runs a plain `def` dependency in its
# threadpool, one thread hop per dependency per request.


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_session(request: Request) -> AsyncIterator[Session]:
    """A database session; GET and HEAD requests get a read-only one (no SQLite write lock).

    Creating a session does no I/O, nor does closing one that holds no connection (a route that
    ended its transactions): only a close that must roll back goes to the threadpool, so most
    requests save two thread hops."""
    state = request.app.state
    factory = state.read_session_factory if request.method in ("GET", "HEAD") else state.session_factory
    session = factory()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


async def get_executor(request: Request) -> Executor:
    return request.app.state.executor


async def get_rate_limiter(request: Request) -> RateLimiter:
    return request.app.state.rate_limiter


async def get_model_store(request: Request) -> ModelStore:
    return request.app.state.model_store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
RateLimiterDep = Annotated[RateLimiter, Depends(get_rate_limiter)]
ModelStoreDep = Annotated[ModelStore, Depends(get_model_store)]

bearer = HTTPBearer(
    auto_error=False, bearerFormat="kan_<key id>.<secret>",
    description="An API key from `kan-service keys create` (required when KAN_AUTH_ENABLED is true).",
)
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def get_principal(request: Request, credentials: BearerDep) -> Principal:
    """The caller. With authentication off, everyone is the default tenant with every scope.

    A key's lookup is reused for `lookup_cache_ttl_s` (the cache is keyed by the whole token's digest:
    a hit is the same key with the same secret, already checked): a revoked key is refused within that
    time. Only a miss reads the database, in the threadpool and in a read transaction of its own."""
    state = request.app.state
    if not state.settings.auth_enabled:
        return ANONYMOUS
    if credentials is None:
        raise Unauthorized("this route needs an API key: send `Authorization: Bearer <key>`", headers=CHALLENGE)
    token = credentials.credentials
    cache_key = hashlib.sha256(token.encode()).digest()
    principal = state.key_cache.get(cache_key)
    if principal is None:
        principal = await run_in_threadpool(_authenticate, state.read_session_factory, token)
        state.key_cache.put(cache_key, principal)
    return principal


def _authenticate(factory: sessionmaker[Session], token: str) -> Principal:
    with factory() as session:  # read-only: DEFERRED on SQLite, never waits for the write lock
        return auth.authenticate(session, token)


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def _check_scope(principal: Principal, required: Scope) -> Principal:
    if not principal.scope.allows(required):
        raise Forbidden(f"this route needs an API key with scope {required.value!r}; this key has "
                        f"{principal.scope.value!r}", required_scope=required.value)
    return principal


def require_scope(required: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that refuses (403) callers whose key lacks `required`."""

    async def dependency(principal: PrincipalDep) -> Principal:
        return _check_scope(principal, required)

    return dependency


async def get_tenant(principal: PrincipalDep) -> str:
    """The caller's tenant: every dataset, job and model a request reaches belongs to it."""
    return principal.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]


def _caller(principal: Principal) -> str:
    return f"{principal.tenant_id}/{principal.key_id or '-'}"  # the API key, or the tenant with auth off


def _refuse(route_class: RouteClass, wait_s: float) -> RateLimited:
    return RateLimited(
        f"too many {route_class.value} requests for this API key; retry in {wait_s:.2f} s",
        headers={"Retry-After": retry_after(wait_s)}, retry_after_s=round(wait_s, 3),
    )


async def _ask(limiter: RateLimiter, method: Callable[[str, RouteClass], float | None], caller: str,
               route_class: RouteClass) -> float | None:
    # a shared (Redis) limiter is a network round trip: off the event loop
    if limiter.shared:
        return await run_in_threadpool(method, caller, route_class)
    return method(caller, route_class)


def rate_limit(route_class: RouteClass) -> Callable[[Request, PrincipalDep], Awaitable[Principal]]:
    """A dependency spending one request of the caller's `route_class` window; 429 with Retry-After
    when it is full. It answers the caller, so that a route may take its principal from here.

    (FastAPI resolves a dependency's own dependencies again wherever it is used, cached or not: on the
    predict hot path every dependency that can be left out, is. The limiter is read from app.state.)"""

    async def dependency(request: Request, principal: PrincipalDep) -> Principal:
        limiter: RateLimiter = request.app.state.rate_limiter
        wait_s = await _ask(limiter, limiter.acquire, _caller(principal), route_class)
        if wait_s > 0:
            raise _refuse(route_class, wait_s)
        return principal

    return dependency


def rate_limit_accepted(route_class: RouteClass) -> Callable[[Request, PrincipalDep], AsyncIterator[Principal]]:
    """As `rate_limit`, but only a request the route accepts is counted: one refused with a 4xx (a bad
    body, an unknown dataset) costs nothing. Used with `scope="function"`, so the request is counted
    before its answer leaves (a client's next request already sees it). Concurrent requests of one
    caller may pass the check together and go past the limit by their number."""

    async def dependency(request: Request, principal: PrincipalDep) -> AsyncIterator[Principal]:
        limiter: RateLimiter = request.app.state.rate_limiter
        caller = _caller(principal)
        wait_s = await _ask(limiter, limiter.check, caller, route_class)
        if wait_s > 0:
            raise _refuse(route_class, wait_s)
        yield principal  # the route raised (4xx, 5xx): not counted
        await _ask(limiter, limiter.spend, caller, route_class)

    return dependency


async def single_valued_query(request: Request) -> None:
    """No query parameter of this API takes a list: one given twice is ambiguous (FastAPI would keep
    one of the values silently), so it is a 422 naming it. Like every request body, a request that
    changes something (any method but GET and HEAD) refuses the query parameters its route does not
    declare, as a typo must not silently become a default; GET routes ignore them (cache-busting clients)."""
    if not request.query_params:
        return
    seen: set[str] = set()
    declared = None if request.method in ("GET", "HEAD") else _declared_query(request.scope.get("route"))
    for name, _ in request.query_params.multi_items():
        if name in seen:
            raise RequestValidationError([{"type": "too_long", "loc": ("query", name),
                                           "msg": "must be given at most once"}])
        if declared is not None and name not in declared:
            raise RequestValidationError([{"type": "extra_forbidden", "loc": ("query", name),
                                           "msg": "this route takes no such query parameter"}])
        seen.add(name)


def _declared_query(route: Any) -> set[str] | None:
    """The query parameters a route declares (its dependencies' and its OpenAPI `parameters`); None
    when the request matched no APIRoute."""
    if not isinstance(route, APIRoute):
        return None
    extra = (route.openapi_extra or {}).get("parameters", [])
    return _query_names(route.dependant) | {param["name"] for param in extra if param.get("in") == "query"}


def _query_names(dependant: Dependant) -> set[str]:
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names


# route (or router) dependencies: `dependencies=[WriteScope]`
ReadScope = Depends(require_scope(Scope.read))
WriteScope = Depends(require_scope(Scope.write))
AdminScope = Depends(require_scope(Scope.admin))
SingleValuedQuery = Depends(single_valued_query)
PredictRateLimit = Depends(rate_limit(RouteClass.predict))
JobsRateLimit = Depends(rate_limit_accepted(RouteClass.jobs), scope="function")
