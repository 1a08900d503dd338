"""The web dashboard at /ui: server-rendered pages over the /v1 API (service.ui.core says how).

`install(app)` is the one call service.app makes: the page routes, the vendored static assets (KaTeX,
uPlot: served from here, never from a CDN) and the handlers that turn a missing login or an API error
into a page.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

from service.ui import core, datasets, discoveries, jobs, models

def install(app: FastAPI) -> None:
    app.state.ui_api = core.api_client(app)
    for module in (datasets, discoveries, jobs, models):
        app.include_router(module.router, prefix=core.PREFIX, include_in_schema=False)
    app.mount(f"{core.PREFIX}/static", StaticFiles(directory=core.HERE / "static"), name="ui-static")

    @app.exception_handler(core.LoginRequired)
    async def _login(request: Request, exc: core.LoginRequired) -> RedirectResponse:
        return RedirectResponse(core.login_url(request), status_code=303)

    @app.exception_handler(core.ApiProblem)
    async def _problem(request: Request, exc: core.ApiProblem):
        return core.problem_page(request, None, exc)

