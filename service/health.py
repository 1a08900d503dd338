"""Readiness: the checks behind /readyz (database reachable, schema at the newest migration, a worker
heartbeat seen recently). Liveness (/healthz) needs none of them."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service import migrate
from service.config import Settings
from service.models import Worker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def readiness(engine: Engine, settings: Settings) -> list[Check]:
    """Every readiness check, in order; later checks are skipped when the database is unreachable.

    Each check uses its own short-lived connection, one at a time: on SQLite every transaction takes
    the write lock, so two open at once from one request would wait on each other."""
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        log.warning("readiness: database unreachable: %s", exc)
        skipped = "skipped: the database is unreachable"
        return [Check("database", False, f"unreachable ({type(exc).__name__})"),
                Check("migrations", False, skipped), Check("workers", False, skipped)]
    return [Check("database", True, "reachable"), _migrations(engine), _workers(engine, settings)]


def _migrations(engine: Engine) -> Check:
    current, head = migrate.current_revision(engine), migrate.head_revision()
    if current == head:
        return Check("migrations", True, f"at head ({head})")
    return Check("migrations", False, f"at {current or 'no revision'}, head is {head}; run `kan-service migrate`")


def _workers(engine: Engine, settings: Settings) -> Check:
    timeout = settings.heartbeat_timeout_s
    cutoff = datetime.now(timezone.utc) - timedelta(seconds=timeout)
    with Session(engine) as session:
        alive = session.scalar(select(func.count()).select_from(Worker).where(Worker.heartbeat_at >= cutoff)) or 0
    if alive:
        return Check("workers", True, f"{alive} worker(s) with a heartbeat in the last {timeout:g} s")
    return Check("workers", False, f"no worker heartbeat in the last {timeout:g} s")
