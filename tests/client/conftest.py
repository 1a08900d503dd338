"""Fixtures for the client tests: the real service (`kan-service serve` in a subprocess, on
127.0.0.1, SQLite, one local worker) shared by the client tests (one start-up for all: it is the
slow part), and clients of it. No mocks: every client call crosses real HTTP to the real app.

- `server`: the live service (tests/service/e2e_support.Server).
- `client`: a kan_client.Client on it; `seed_dataset`: the seed formula sampled by the service.

Constants and helpers shared with the test modules are in client_support.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from client_support import SEED_EXPRESSION, SEED_RANGES, SERVICE_SETTINGS, Server, wait_for
from kan_client import Client


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    live = Server(tmp_path_factory.mktemp("client-server"), workers=1, **SERVICE_SETTINGS).start()
    try:
        wait_for(lambda: httpx.get(f"{live.url}/readyz", timeout=10).status_code == 200, 300, 0.5,
                 f"a worker heartbeat\n{live.log()}")
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="session")
def client(server: Server) -> Iterator[Client]:
    with Client(server.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def seed_dataset(client: Client):
    return client.create_dataset(expression=SEED_EXPRESSION, ranges=SEED_RANGES, n_train=200, n_test=100,
                                 name="seed")
