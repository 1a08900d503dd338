"""Engine and session factory. SQLite runs in WAL mode with a busy timeout and foreign keys on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from service.config import Settings

SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_POOL_SIZE = 40
_READ_ONLY_OPTION = "kan_read_only"


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=FULL")  # an acknowledged write survives an OS crash too
    cur.close()


def make_engine(settings: Settings) -> Engine:
    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            # a file cannot drop the connection: no ping query before each checkout; and enough pooled
            # connections for FastAPI's threadpool (40), so busy moments do not open and close more
            pool_size=SQLITE_POOL_SIZE, max_overflow=SQLITE_POOL_SIZE,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # Let SQLAlchemy emit BEGIN itself so that writers take the lock up front (BEGIN IMMEDIATE)
        # instead of failing on a read->write upgrade under concurrency.
        @event.listens_for(engine, "connect")
        def _no_pysqlite_begin(dbapi_conn, _record):
            dbapi_conn.isolation_level = None

        # Read-only sessions (see make_session_factory) begin DEFERRED: readers never queue for the lock.
        @event.listens_for(engine, "begin")
        def _begin(conn):
            deferred = conn.get_execution_options().get(_READ_ONLY_OPTION, False)
            conn.exec_driver_sql("BEGIN DEFERRED" if deferred else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def make_session_factory(engine: Engine, *, read_only: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`. On SQLite a writer's transaction takes the write lock up front (BEGIN
    IMMEDIATE); `read_only=True` sessions begin DEFERRED so that GET requests never wait for it."""
    if read_only:
        engine = engine.execution_options(**{_READ_ONLY_OPTION: True})
    return sessionmaker(engine, expire_on_commit=False)


def begin_read(session: Session) -> None:
    """Start a writer session's next transaction read-only (DEFERRED on SQLite), for a request that
    reads before it computes, such as predict (a POST). Call it before the transaction's first query
    and commit before writing; inside a transaction already begun it changes nothing."""
    if not session.in_transaction():
        session.connection(execution_options={_READ_ONLY_OPTION: True})


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
