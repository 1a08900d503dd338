"""Alembic migrations, applied programmatically on start (`upgrade`) and checked by /readyz."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, text

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


# pg_advisory_xact_lock key held while migrating (any constant unique to this application)
PG_MIGRATION_LOCK = 0x6B616E_6D6967  # "kan" "mig"


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent; safe to call from several processes).

    The whole upgrade is one transaction. On SQLite it begins with BEGIN IMMEDIATE (service.db), so
    concurrent upgrades run one after the other; on PostgreSQL, whose DDL is transactional too, a
    transaction-scoped advisory lock does the same: the second process waits, then finds the schema
    at head and does nothing (without it both would try to create the same tables)."""
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def is_up_to_date(engine: Engine) -> bool:
    return current_revision(engine) == head_revision()
