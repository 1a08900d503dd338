"""FastAPI dependencies, as `Annotated` aliases routers declare in their signatures."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from service.config import Settings
from service.executors.base import Executor
from service.models import DEFAULT_TENANT


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.session_factory() as session:
        yield session


def get_executor(request: Request) -> Executor:
    return request.app.state.executor


def get_tenant(request: Request) -> str:
    """The caller's tenant. Without authentication every caller is the default tenant."""
    return getattr(request.state, "tenant_id", DEFAULT_TENANT)


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
TenantDep = Annotated[str, Depends(get_tenant)]
