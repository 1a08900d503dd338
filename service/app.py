"""The FastAPI application factory: wiring only (settings, database, executor, routers, errors)."""

from __future__ import annotations

from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from service import migrate
from service.api.deps import ReadScope, SingleValuedQuery
from service.api.links import add_links
from service.api.middleware import BodySizeLimitMiddleware
from service.api.routes import datasets, discoveries, exports, health, jobs, models
from service.cache import TTLCache
from service.config import Settings
from service.db import make_engine, make_session_factory
from service.errors import install_exception_handlers
from service.executors import make_executor
from service.metrics import Metrics, MetricsMiddleware
from service.model_store import ModelStore
from service.ratelimit import limiter_from
from service.schemas.common import problem_responses
from service.ui import install as install_ui


# Routes are matched in order, one by one: /v1/models (predict, the hot path) first saves the
# matching of every datasets and jobs route on each prediction. No two routers share a path.
V1_ROUTERS = (models, datasets, jobs, discoveries, exports)
# the documentation lists the groups in this order all the same
OPENAPI_TAGS = [{"name": name} for name in ("health", "datasets", "jobs", "models", "discoveries")]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings)
    migrate.upgrade(engine)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        app.state.executor.close()
        engine.dispose()

    app = FastAPI(
        title="KAN formula discovery service",
        version="1.0.0",
        description="Train Kolmogorov-Arnold Networks on your data and get formulas back.",
        lifespan=lifespan,
        openapi_tags=OPENAPI_TAGS,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.read_session_factory = make_session_factory(engine, read_only=True)
    app.state.executor = make_executor(settings)
    # loaded models, formulas, plots cached per model id; predict's model rows for lookup_cache_ttl_s
    app.state.model_store = ModelStore(row_ttl_s=settings.lookup_cache_ttl_s)
    app.state.key_cache = TTLCache(settings.lookup_cache_ttl_s)  # API key lookups (service.api.deps)
    app.state.rate_limiter = limiter_from(settings)  # in Redis when scaled out: shared by the API replicas
    # predictions already run on many request threads; torch's intra-op pool on top of them only
    # oversubscribes the cores (1,000-row p95 went from ~10 ms to ~150-450 ms on a busy 2-core box)
    torch.set_num_threads(settings.torch_threads)
    app.state.metrics = Metrics(app.state.read_session_factory, settings)

    install_exception_handlers(app)
    # the last added runs first: metrics see every answer, 413s from the size limit included
    app.add_middleware(BodySizeLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(health.router)
    for module in V1_ROUTERS:  # every /v1 route needs a key (when auth is on); writes say so
        app.include_router(module.router, prefix="/v1", dependencies=[ReadScope, SingleValuedQuery],
                           responses=problem_responses(401, 403))
    install_ui(app)  # the dashboard at /ui (service.ui): pages over the /v1 routes above
    _document_links(app)
    return app


def _document_links(app: FastAPI) -> None:
    """The generated OpenAPI document with its links (service.api.links)."""
    generate = app.openapi
    app.openapi = lambda: add_links(generate())  # type: ignore[method-assign]
