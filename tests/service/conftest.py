"""Fixtures for testing the service against the real app and a real SQLite file (no mocks).

- `make_settings(**overrides)`: a Settings on a fresh SQLite file under the test's tmp_path, read from
  neither `.env` nor a KAN_DATABASE_URL in the environment.
- `settings`, `app`, `client` (a TestClient with the app's lifespan running), `session_factory`,
  `session`: the defaults built from them; override `settings` in a test module to change limits.
- PostgreSQL and Redis (tests marked `postgres` / `redis`, skipped when the server is unreachable; see
  backends.py): `postgres_server` (creates databases, drops them at the end of the session),
  `postgres_url` (this session's database, migrated), `postgres_db` (the same, emptied for the test),
  `broker` (queue names of the test's own on the test Redis database, purged afterwards).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker

from backends import BrokerNamespace, PostgresServer, Unreachable, truncate_all
from service import migrate
from service.app import create_app
from service.config import Settings
from service.db import make_engine


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {"data_dir": tmp_path, "database_url": None, **overrides}
        return Settings(_env_file=None, **values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    pytest.importorskip("psycopg")
    try:
        server = PostgresServer()
    except Unreachable as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        server.close()


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
    pytest.importorskip("redis")
    try:
        namespace = BrokerNamespace()
    except Unreachable as exc:
        pytest.skip(str(exc))
    try:
        yield namespace
    finally:
        namespace.purge()
