"""Dashboard pages: discoveries (list; one discovery live: candidates, best so far, the Pareto front,
cancel; the chosen formula typeset, with copy buttons for text, LaTeX and Python) and batches (each
item's discovery, status and chosen formula)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from service import discovery_events, formula_export
from service.ui.core import PREFIX, CallerDep, SameOrigin, live_stream, render

router = APIRouter()


@router.get("/discoveries")
async def discoveries_page(caller: CallerDep, cursor: str | None = None):
    page = await caller.get("/discoveries", limit=200, cursor=cursor)
    return render(caller, "discoveries.html", page=page)


@router.get("/discoveries/{discovery_id}")
async def discovery_page(caller: CallerDep, discovery_id: str):
    found = await caller.get(f"/discoveries/{discovery_id}")
    dataset = await caller.get(f"/datasets/{found['dataset_id']}")
    chosen = found.get("chosen")
    copies = _copies(chosen, dataset["target_names"][0]) if chosen else None
    return render(caller, "discovery.html", discovery=found, dataset=dataset, chosen=chosen, copies=copies)


def _copies(point: dict[str, Any], target: str) -> dict[str, str]:
    """The formula as text, LaTeX and a Python function (service.formula_export, as the API exports)."""
    entry = {"text": point["formula"], "variables": point["variables"], "name": target}
    python = formula_export.export([entry], formula_export.FormulaFormat.python).strip()
    return {"text": point["formula"], "latex": point["latex"], "python": python}


@router.get("/discoveries/{discovery_id}/events")
async def discovery_events_page(caller: CallerDep, discovery_id: str):
    """The discovery's event stream (as GET /v1/discoveries/{id}/events) for the caller's tenant."""
    return await live_stream(caller, discovery_events.follow, discovery_id)


@router.post("/discoveries/{discovery_id}/cancel", dependencies=[SameOrigin])
async def cancel(caller: CallerDep, discovery_id: str) -> RedirectResponse:
    await caller.json("POST", f"/discoveries/{discovery_id}/cancel")
    return RedirectResponse(f"{PREFIX}/discoveries/{discovery_id}", status_code=303)


@router.get("/batches/{batch_id}")
async def batch_page(caller: CallerDep, batch_id: str):
    return render(caller, "batch.html", batch=await caller.get(f"/batches/{batch_id}"))
