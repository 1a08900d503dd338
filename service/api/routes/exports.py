"""What clients read besides the resources themselves: a discovery's event stream and its front as
CSV (listed under the discoveries tag), and the symbolic function library (/v1/functions).

Routers only translate HTTP <-> service calls (service.discovery_events, service.formula_export).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session, sessionmaker
from sse_starlette import EventSourceResponse

from service import discovery, discovery_events, formula_export
from service.api.deps import SessionDep, TenantDep
from service.api.sse import EVENT_POLL_S, event_stream
from service.schemas.common import problem_responses

router = APIRouter()

DiscoveryId = Annotated[str, Path(max_length=40, description="A discovery id (`dsc_...`).")]


def get_session_factory(request: Request) -> sessionmaker[Session]:
    return request.app.state.read_session_factory


SessionFactoryDep = Annotated[sessionmaker[Session], Depends(get_session_factory)]


class FunctionOut(BaseModel):
    name: str = Field(description="The name pipelines and `fixes` use.")
    complexity: int = Field(description="What a formula pays for using it (discovery's complexity measure).")
    sympy: str = Field(description="The function at `x`, in sympy's printing.")
    latex: str
    seed_library: bool = Field(description="In the seed pipeline's auto_symbolic library.")
    discovery_library: bool = Field(description="In the library discovery's candidates use.")


@router.get("/functions", response_model=list[FunctionOut], tags=["models"],
            summary="The symbolic function library: names, complexities, formulas")
def list_functions() -> list[FunctionOut]:
    return [FunctionOut(**fn) for fn in formula_export.function_library()]


@router.get(
    "/discoveries/{discovery_id}/events", tags=["discoveries"], response_class=EventSourceResponse,
    summary="Follow a discovery (server-sent events)",
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "`progress` (status, candidates done / total, best so far) whenever it changes; "
                                    "`candidate_started` and `candidate_finished` per candidate job; `best` when the "
                                    "most accurate formula so far changes; then one `end` (status, reason, chosen)."},
               **problem_responses(404, 422)},
)
async def discovery_events_stream(discovery_id: DiscoveryId, session_factory: SessionFactoryDep,
                                  tenant: TenantDep) -> EventSourceResponse:
    events = discovery_events.follow(session_factory, tenant, discovery_id, interval_s=EVENT_POLL_S)
    return await event_stream(events)  # NotFound is raised before the stream (and its 200) starts


@router.get(
    "/discoveries/{discovery_id}/front.csv", tags=["discoveries"], response_class=Response,
    summary="A discovery's Pareto front as CSV",
    responses={200: {"content": {"text/csv": {}},
                     "description": f"Header `{','.join(formula_export.FRONT_COLUMNS)}`; one row per formula, "
                                    "simplest first; `variables` space-separated; empty while the search runs."},
               **problem_responses(404, 422)},
)
def front_csv(discovery_id: DiscoveryId, session: SessionDep, tenant: TenantDep) -> Response:
    result = discovery.get_discovery(session, tenant, discovery_id).result or {}
    body = formula_export.front_csv(result.get("front") or [], result.get("chosen"))
    return Response(body, media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{discovery_id}-front.csv"'})
