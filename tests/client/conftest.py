"""Fixtures for the client tests: the real service (`kan-service serve` in a subprocess, on
127.0.0.1, SQLite, one local worker) shared by the client tests (one start-up for all: it is the
slow part), and clients of it. No mocks: every client call crosses real HTTP to the real app.

- `server`: the live service (tests/service/e2e_support.Server).
- `client`: a kan_client.Client on it; `seed_dataset`: the seed formula sampled by the service.
- `tiny_pipeline()`: a pipeline that trains in a second or two and ends with a formula.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from e2e_support import REPO, SEED_EXPRESSION, Server  # noqa: E402
from jobs_support import wait_for  # noqa: E402

from kan_client import Client  # noqa: E402

SEED_RANGES = {"x1": [-1, 1], "x2": [-1, 1]}
# a discovery that ends in seconds: two candidates, a few steps each
SMALL_DISCOVERY = {"budget": 120, "max_candidates": 2, "train_steps": 5}
# high rate limits; a worker counts as alive for 60 s without a heartbeat (a loaded machine stalls)
SERVICE_SETTINGS = {"rate_limit_predict_per_s": 1000, "rate_limit_predict_burst": 1000,
                    "rate_limit_jobs_per_min": 6000, "rate_limit_jobs_burst": 1000, "heartbeat_timeout_s": 60}

__all__ = ["REPO", "SEED_EXPRESSION", "SEED_RANGES", "SMALL_DISCOVERY", "tiny_pipeline"]


def tiny_pipeline(steps: int = 5) -> dict:
    """Train a [2, 2, 1] network briefly, then fit every edge to a function: a formula per output."""
    return {
        "model": {"width": [2, 2, 1], "grid": 3},
        "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": steps, "update_grid": False},
                   {"kind": "symbolic", "auto": True, "lib": ["x", "x^2", "sin", "exp"]}],
    }


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
