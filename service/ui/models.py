"""Dashboard pages: models (list; one model's network drawing, each edge's function, its formulas with
their fit figures, a predict form, the artifact download, a derived model's parent)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Response

from service.ui.core import ApiProblem, CallerDep, SameOrigin, render

router = APIRouter()
MAX_EDGES_DRAWN = 60  # edge plots on one page; the network drawing shows them all
SPLINE_POINTS = 51


@router.get("/models")
async def models_page(caller: CallerDep, cursor: str | None = None):
    page = await caller.get("/models", limit=200, cursor=cursor)
    return render(caller, "models.html", page=page)


async def _model_page(caller, model_id: str, predict: dict[str, Any] | None = None, status_code: int = 200):
    model = await caller.get(f"/models/{model_id}")
    splines = await caller.get(f"/models/{model_id}/splines", n_points=SPLINE_POINTS)
    dataset = await caller.get(f"/datasets/{model['dataset_id']}")
    edges = [{"label": f"layer {e['layer']}: {e['in']} → {e['out']}", "kind": e["kind"],
              "function": (e.get("symbolic") or {}).get("function"), "x": e["curve"]["x"], "y": e["curve"]["y"]}
             for e in splines["edges"][:MAX_EDGES_DRAWN]]
    example = ", ".join("0.5" for _ in dataset["feature_names"])
    predict = predict or {"values": {"rows": example, "mode": "network"}, "errors": {}, "outputs": None}
    return render(caller, "model.html", status_code=status_code, model=model, edges=edges,
                  n_edges=len(splines["edges"]), dataset=dataset, predict=predict)


@router.get("/models/{model_id}")
async def model_page(caller: CallerDep, model_id: str):
    return await _model_page(caller, model_id)


@router.post("/models/{model_id}/predict", dependencies=[SameOrigin])
async def predict(caller: CallerDep, model_id: str, rows: Annotated[str, Form()] = "",
                  mode: Annotated[str, Form()] = "network"):
    """Rows of comma-separated inputs, one per line, sent to POST /v1/models/{id}/predict."""
    values = {"rows": rows, "mode": mode}
    try:
        inputs = [[float(v) for v in line.replace(";", ",").split(",")] for line in rows.splitlines() if line.strip()]
    except ValueError:
        return await _model_page(caller, model_id, status_code=422, predict={
            "values": values, "errors": {"rows": "write numbers separated by commas, one row per line"},
            "outputs": None})
    try:
        answer = await caller.json("POST", f"/models/{model_id}/predict", params={"mode": mode},
                                   json={"inputs": inputs})
    except ApiProblem as exc:
        if exc.status == 404:
            raise
        errors = {"rows" if k.startswith("inputs") or k == "body" else k: v for k, v in exc.field_errors().items()}
        return await _model_page(caller, model_id, status_code=exc.status,
                                 predict={"values": values, "errors": errors, "outputs": None})
    outputs = list(zip(inputs, answer["outputs"]))
    return await _model_page(caller, model_id, predict={"values": values, "errors": {}, "outputs": outputs})


async def _passthrough(caller, path: str) -> Response:
    """A binary answer of the API (plot, artifact) handed to the browser, which holds no key itself."""
    response = await caller.call("GET", path)
    if response.status_code >= 400:
        raise ApiProblem(response.status_code, response.json())
    keep = {k: v for k, v in response.headers.items() if k in ("content-type", "content-disposition", "cache-control")}
    return Response(response.content, status_code=response.status_code, headers=keep)


@router.get("/models/{model_id}/plot.png")
async def plot(caller: CallerDep, model_id: str) -> Response:
    return await _passthrough(caller, f"/models/{model_id}/plot.png")


@router.get("/models/{model_id}/artifact")
async def artifact(caller: CallerDep, model_id: str) -> Response:
    return await _passthrough(caller, f"/models/{model_id}/artifact")
