"""Fixtures for testing the service against the real app and a real SQLite file (no mocks).

- `make_settings(**overrides)`: a Settings on a fresh SQLite file under the test's tmp_path, read from
  neither `.env` nor a KAN_DATABASE_URL in the environment.
- `settings`, `app`, `client` (a TestClient with the app's lifespan running), `session_factory`,
  `session`: the defaults built from them. A test module changes the settings with a module-level
  `SETTINGS = {...}` of overrides, or by overriding the `settings` fixture.
- PostgreSQL and Redis (tests marked `postgres` / `redis`, skipped when the server is unreachable; see
  backends.py): `postgres_server` (creates databases, drops them at the end of the session),
  `postgres_url` (this session's database, migrated), `postgres_db` (the same, emptied for the test),
  `broker` (queue names of the test's own on the test Redis database, purged afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backends import BrokerNamespace, PostgresServer, Unreachable, truncate_all
from service import migrate
from service.app import create_app
from service.config import Settings
from service.db import make_engine

T = TypeVar("T")


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path, "database_url": None, **overrides}
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(**getattr(request.module, "SETTINGS", {}))


@pytest.fixture
def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture
def session_factory(app: FastAPI) -> sessionmaker[Session]:
    return app.state.session_factory


@pytest.fixture
def session(session_factory: sessionmaker[Session]) -> Iterator[Session]:
    with session_factory() as db_session:
        yield db_session


def _reachable(driver: str, connect: Callable[[], T], release: Callable[[T], None]) -> Iterator[T]:
    """`connect()`'s server, released after the test; the test is skipped without `driver` or the server."""
    pytest.importorskip(driver)
    try:
        live = connect()
    except Unreachable as exc:
        pytest.skip(str(exc))
    try:
        yield live
    finally:
        release(live)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    yield from _reachable("psycopg", PostgresServer, PostgresServer.close)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    url = postgres_server.create_database()
    engine = make_engine(Settings(_env_file=None, database_url=url))
    try:
        migrate.upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture
def postgres_db(postgres_url: str) -> str:
    truncate_all(postgres_url)
    return postgres_url


@pytest.fixture
def broker() -> Iterator[BrokerNamespace]:
    yield from _reachable("redis", BrokerNamespace, BrokerNamespace.purge)
