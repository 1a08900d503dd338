"""Operations: liveness, readiness and Prometheus metrics (no /v1 prefix, no tenant)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import Engine

from service import health
from service.api.deps import SettingsDep
from service.errors import Unavailable
from service.metrics import Metrics
from service.schemas.common import problem_responses
from service.schemas.health import Liveness, Readiness, ReadinessCheck

router = APIRouter(tags=["health"])


def get_engine(request: Request) -> Engine:
    return request.app.state.engine


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


@router.get("/healthz", response_model=Liveness, summary="Liveness: the process answers (no dependency checked)")
def healthz() -> Liveness:
    return Liveness()


@router.get("/readyz", response_model=Readiness, summary="Readiness: database, migrations and a live worker",
            responses=problem_responses(503))
def readyz(engine: EngineDep, settings: SettingsDep) -> Readiness:
    checks = {check.name: ReadinessCheck(ok=check.ok, detail=check.detail)
              for check in health.readiness(engine, settings)}
    failed = [f"{name} ({check.detail})" for name, check in checks.items() if not check.ok]
    if failed:
        raise Unavailable(f"not ready: {'; '.join(failed)}", failed=[name for name, c in checks.items() if not c.ok],
                          checks={name: check.model_dump() for name, check in checks.items()})
    return Readiness(checks=checks)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition format)",
            responses={200: {"content": {"text/plain": {}}}})
def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)
