"""Shared by the client tests (a module of its own: `conftest` is ambiguous when tests/service's
conftest is loaded too): the live-service helpers of tests/service/e2e_support, the service settings
of the client tests, small discoveries and pipelines."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))

from e2e_support import REPO, SEED_EXPRESSION, Server  # noqa: E402
from jobs_support import wait_for  # noqa: E402

SEED_RANGES = {"x1": [-1, 1], "x2": [-1, 1]}
# a discovery that ends in seconds: two candidates, a few steps each
SMALL_DISCOVERY = {"budget": 120, "max_candidates": 2, "train_steps": 5}
# high rate limits; a worker counts as alive for 60 s without a heartbeat (a loaded machine stalls)
SERVICE_SETTINGS = {"rate_limit_predict_per_s": 1000, "rate_limit_predict_burst": 1000,
                    "rate_limit_jobs_per_min": 6000, "rate_limit_jobs_burst": 1000, "heartbeat_timeout_s": 60}


def tiny_pipeline(steps: int = 5) -> dict:
    """Train a [2, 2, 1] network briefly, then fit every edge to a function: a formula per output."""
    return {
        "model": {"width": [2, 2, 1], "grid": 3},
        "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": steps, "update_grid": False},
                   {"kind": "symbolic", "auto": True, "lib": ["x", "x^2", "sin", "exp"]}],
    }


__all__ = ["REPO", "SEED_EXPRESSION", "SEED_RANGES", "SERVICE_SETTINGS", "SMALL_DISCOVERY", "Server", "tiny_pipeline",
           "wait_for"]
