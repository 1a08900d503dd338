"""/v1/models: list, inspect, predict with, export and delete trained models.

Routers only translate HTTP <-> service calls; the work is in service.model_store. Endpoints that
touch torch, sympy or matplotlib are plain `def`, so FastAPI runs them in its threadpool; predict, the
hot path, is `async` and sends only its slow cases there.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from service import formula_export, model_store, named_inputs
from service.api.deps import ModelStoreDep, PredictRateLimit, SessionDep, TenantDep, WriteScope
from service.auth import Principal
from service.formula_export import FormulaFormat
from service.model_store import ModelStore
from service.schemas.common import DEFAULT_PAGE_SIZE, CursorQuery, LimitQuery, Page, problem_responses
from service.schemas.models import (
    FormulaResponse, ModelDetail, ModelSummary, PredictMode, PredictRequest, PredictResponse, SplinesResponse,
)

router = APIRouter(tags=["models"])

IMMUTABLE = "private, max-age=86400, immutable"  # a model never changes once written; only deletion


@router.get("/models", response_model=Page[ModelSummary], summary="List models", responses=problem_responses(422))
def list_models(
    session: SessionDep, tenant: TenantDep,
    limit: LimitQuery = DEFAULT_PAGE_SIZE, cursor: CursorQuery = None,
    dataset_id: Annotated[str | None, Query(max_length=40, description="Only models trained on this dataset.")] = None,
    job_id: Annotated[str | None, Query(max_length=40, description="Only the model this job produced.")] = None,
) -> Page[ModelSummary]:
    rows, next_cursor = model_store.list_models(
        session, tenant, limit=limit, cursor=cursor, dataset_id=dataset_id, job_id=job_id
    )
    return Page[ModelSummary](items=[ModelSummary.from_row(r) for r in rows], next_cursor=next_cursor)


@router.get("/models/{model_id}", response_model=ModelDetail, summary="Get a model", responses=problem_responses(404))
def get_model(model_id: str, session: SessionDep, tenant: TenantDep, store: ModelStoreDep) -> ModelDetail:
    row = model_store.get_model(session, tenant, model_id)
    formulas = store.formulas(session, row) if row.formulas else None
    return ModelDetail.from_row(row, formulas=formulas.entries if formulas else None)


@router.delete("/models/{model_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a model",
               responses=problem_responses(404, 409), dependencies=[WriteScope])
def delete_model(model_id: str, session: SessionDep, tenant: TenantDep, store: ModelStoreDep) -> Response:
    model_store.delete_model(session, store, tenant, model_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# a POST that changes nothing: a `read` key may predict
@router.post("/models/{model_id}/predict", response_model=PredictResponse, summary="Predict with a model",
             responses=problem_responses(400, 404, 409, 413, 422, 429))
async def predict(
    model_id: str, body: PredictRequest, request: Request,
    principal: Annotated[Principal, PredictRateLimit],  # rate-limited; the caller (for its tenant)
    mode: Annotated[PredictMode, Query(description="`network`: the KAN; `formula`: its closed-form formulas.")]
    = PredictMode.network,
) -> Response:
    """One output row per input row. `mode=formula` answers 409 when the model has no formula."""
    # The hot path, `async` so that a small request for a cached model (row, network) is answered on
    # the event loop without a thread hand-off or a database query; the rest goes to the threadpool.
    state = request.app.state
    tenant = principal.tenant_id  # what TenantDep gives, one dependency fewer
    store: ModelStore = state.model_store
    max_rows = state.settings.max_predict_rows
    named_inputs.check_shape(body)
    inputs = body.inputs
    if inputs is None:  # named columns: put them in the model's input order
        inputs = await run_in_threadpool(_named_inputs, state, tenant, model_id, body)
    outputs = store.predict_cached(tenant, model_id, inputs, mode, max_rows=max_rows)
    if outputs is None:
        outputs = await run_in_threadpool(_predict, state, tenant, model_id, inputs, mode, max_rows)
    # The outputs are already JSON-safe floats (None for non-finite values), so skip re-validating
    # them (FastAPI would dump and validate every row again) and serialise in Rust.
    return Response(PredictResponse.model_construct(mode=mode, outputs=outputs).model_dump_json(),
                    media_type="application/json")


def _named_inputs(state: Any, tenant: str, model_id: str, body: PredictRequest) -> list[list[float]]:
    with state.session_factory() as session:
        row = state.model_store.model_row(session, tenant, model_id)
        return named_inputs.positional(body, named_inputs.model_input_names(session, row))


def _predict(state: Any, tenant: str, model_id: str, inputs: list[list[float]], mode: PredictMode,
             max_rows: int) -> list[list[float | None]]:
    store: ModelStore = state.model_store
    with state.session_factory() as session:
        row = store.model_row(session, tenant, model_id)
        return store.predict(session, row, inputs, mode, max_rows=max_rows)


@router.get(
    "/models/{model_id}/formula", response_model=FormulaResponse, summary="The model's formulas",
    responses={200: {"content": {"text/x-python": {}, "text/x-latex": {}},
                     "description": "JSON without `format`; with it, the formulas as a Python module (sympy, "
                                    "python, numpy, torch: one function per output) or LaTeX lines."},
               **problem_responses(404, 409, 422)},
)
def get_formula(
    model_id: str, session: SessionDep, tenant: TenantDep, store: ModelStoreDep,
    format: Annotated[FormulaFormat | None, Query(description="Print the formulas as code (sympy, python: math "
                                                               "module, numpy, torch) or LaTeX instead of JSON.")]
    = None,
) -> FormulaResponse | Response:
    row = model_store.get_model(session, tenant, model_id)
    compiled = store.require_formulas(session, row)
    if format is not None:
        return Response(formula_export.export(compiled.entries, format),
                        media_type=formula_export.MEDIA_TYPES.get(format, formula_export.PYTHON_MEDIA_TYPE))
    return FormulaResponse(model_id=row.id, source=compiled.source, formulas=compiled.entries)


@router.get("/models/{model_id}/splines", response_model=SplinesResponse, summary="Per-edge activation data",
            responses=problem_responses(404, 422))
def get_splines(
    model_id: str, session: SessionDep, tenant: TenantDep, store: ModelStoreDep,
    n_points: Annotated[int, Query(ge=2, le=1001, description="Samples per edge curve.")] = 101,
    include_inactive: Annotated[bool, Query(description="Also list edges that pruning removed.")] = False,
) -> SplinesResponse:
    row = model_store.get_model(session, tenant, model_id)
    edges = store.edges(session, row, n_points, include_inactive)
    n_samples = len(store.training_sample(session, row.dataset_id))
    return SplinesResponse(model_id=row.id, width=row.width, n_samples=n_samples, edges=edges)


@router.get(
    "/models/{model_id}/plot.png", response_class=Response, summary="The network drawn as a PNG",
    responses={200: {"content": {"image/png": {}}}, **problem_responses(404)},
)
def get_plot(model_id: str, session: SessionDep, tenant: TenantDep, store: ModelStoreDep) -> Response:
    """Nodes and edges, each edge drawn as its activation curve; opacity follows edge importance."""
    row = model_store.get_model(session, tenant, model_id)
    return Response(store.plot_png(session, row), media_type="image/png", headers={"Cache-Control": IMMUTABLE})


@router.get(
    "/models/{model_id}/artifact", response_class=Response, summary="Download the model as one safetensors file",
    responses={200: {"content": {"application/octet-stream": {}}}, **problem_responses(404)},
)
def get_artifact(model_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    """The weights as safetensors, with the JSON config in the file's metadata under `kan_config`.
    Load it with `kan_core.io.from_bytes(blob)`, or read the metadata yourself and call
    `kan_core.io.loads(blob, json.loads(metadata["kan_config"]))`."""
    row = model_store.get_model(session, tenant, model_id)
    return Response(
        model_store.artifact(session, row), media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{row.id}.safetensors"', "Cache-Control": IMMUTABLE},
    )


@router.get("/models/{model_id}/config", response_model=dict[str, Any], summary="The model's kan_core config",
            responses=problem_responses(404))
def get_config(model_id: str, session: SessionDep, tenant: TenantDep) -> dict[str, Any]:
    return model_store.get_model(session, tenant, model_id).kan_config
