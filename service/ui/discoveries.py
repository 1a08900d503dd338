"""Dashboard pages: discoveries (list; one discovery live: candidates, best so far, the Pareto front,
cancel; the chosen formula typeset, with copy buttons for text, LaTeX and Python) and batches (each
item's discovery, status and chosen formula)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from service import discovery_events, formula_export
from service.ui.core import CallerDep, add_run_routes, render

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


add_run_routes(router, "discoveries", discovery_events.follow)


@router.get("/batches/{batch_id}")
async def batch_page(caller: CallerDep, batch_id: str):
    return render(caller, "batch.html", batch=await caller.get(f"/batches/{batch_id}"))
