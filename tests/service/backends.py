"""The real PostgreSQL and Redis servers the `postgres` / `redis` tests use (`.ci/run` starts them).

- `PostgresServer`: creates databases `kan_test_<random>` on the server of KAN_TEST_POSTGRES_URL
  (default: the `test` database as user postgres, on 127.0.0.1:5432) and drops them at the end;
- `BrokerNamespace`: broker queue names of their own (`queue_prefix`) on the Redis database of
  KAN_TEST_REDIS_URL (default db 13), so that concurrent test runs never see each other's messages;
  `purge()` deletes its queues and any unacknowledged message of them.
Both raise `Unreachable` when the server does not answer; the fixtures turn that into a skip.
"""

from __future__ import annotations

import os
import secrets

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from service.models import Base

POSTGRES_URL = os.environ.get("KAN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("KAN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")


class Unreachable(Exception):
    pass


class PostgresServer:
    def __init__(self, url: str = POSTGRES_URL):
        import psycopg

        self.url = make_url(url)
        try:
            self.admin = psycopg.connect(self.url.set(drivername="postgresql").render_as_string(hide_password=False),
                                         autocommit=True, connect_timeout=3)
        except psycopg.OperationalError as exc:
            safe = self.url.render_as_string(hide_password=True)
            raise Unreachable(f"PostgreSQL at {safe} is unreachable ({exc}); `.ci/run` starts it") from exc
        self.created: list[str] = []

    def create_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        name = f"kan_test_{secrets.token_hex(6)}"
        self.admin.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url.set(database=name).render_as_string(hide_password=False)

    def close(self) -> None:
        for name in self.created:
            self.admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def truncate_all(url: str, attempts: int = 5) -> None:
    """Empty every table of the schema (a clean database for the next test, at migration speed).
    A previous test's worker that has not exited yet (a slow, busy machine) can still hold row locks:
    PostgreSQL then aborts one side as a deadlock, and the TRUNCATE is simply tried again."""
    engine = create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in Base.metadata.sorted_tables)
    try:
        for attempt in range(attempts):
            try:
                with engine.begin() as conn:
                    conn.execute(text(f"TRUNCATE {tables} CASCADE"))
                return
            except OperationalError as exc:
                if "deadlock" not in str(exc).lower() or attempt == attempts - 1:
                    raise
    finally:
        engine.dispose()


class BrokerNamespace:
    def __init__(self, url: str = REDIS_URL):
        import redis

        self.url = url
        self.prefix = f"kan-test-{secrets.token_hex(4)}-"
        self.redis = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            raise Unreachable(f"Redis at {url} is unreachable ({exc}); `.ci/run` starts it") from exc

    @property
    def settings(self) -> dict[str, str]:
        """The Settings fields that put a service or worker in this namespace."""
        return {"broker_url": self.url, "queue_prefix": self.prefix}

    def messages(self, queue: str) -> list[bytes]:
        """The messages waiting in the broker queue of jobs of `queue` ("cpu" or "gpu")."""
        return self.redis.lrange(f"{self.prefix}{queue}", 0, -1)

    def purge(self) -> None:
        keys = list(self.redis.scan_iter(match=f"*{self.prefix}*"))
        if keys:
            self.redis.delete(*keys)
        for tag, message in self.redis.hscan_iter("unacked"):  # taken by a worker that was killed
            if self.prefix.encode() in message:
                self.redis.hdel("unacked", tag)
                self.redis.zrem("unacked_index", tag)
        self.redis.close()
