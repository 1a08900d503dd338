"""CPU per 1-row predict request, in process: the real app on a temporary SQLite file, auth on.

Drives the ASGI app directly (no HTTP server, no client library: what is measured is the service's own
work, the part bench_load.py's "API process ... ms per request" line covers minus uvicorn's HTTP
parsing), sequentially, and reports `time.process_time()` per request (all threads of the process, the
threadpool included). One thread of torch, as `kan-service serve` runs. A quick number for before/after
comparisons of the predict path; the load itself is bench_load.py's.

    .venv/bin/python bench/predict_cpu.py [--requests 3000] [--repeats 3] [--profile out.pstats]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kan_core import io as kan_io  # noqa: E402
from kan_core.model import KAN  # noqa: E402
from service import auth  # noqa: E402
from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.datasets import DatasetArrays, pack  # noqa: E402
from service.ids import new_id  # noqa: E402
from service.models import Dataset, Job, JobKind, JobStatus, Model, Scope  # noqa: E402


def seed(app) -> tuple[str, str]:
    """A `read` key and a [2, 5, 1] grid-5 spline model (the shape bench_load.py trains): (token, model id)."""
    factory = app.state.session_factory
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (100, 2))
    y = np.sin(np.pi * x[:, :1]) + x[:, 1:] ** 2
    ds_id, job_id, model_id = new_id("ds"), new_id("job"), new_id("mdl")
    weights, config = kan_io.dumps(KAN([2, 5, 1], grid=5, k=3, seed=0))
    with factory() as s, s.begin():
        s.add(Dataset(id=ds_id, name="bench", source="json", feature_names=["x1", "x2"], target_names=["y"],
                      n_train=100, n_test=100, arrays=pack(DatasetArrays(x, y, x, y))))
        s.flush()
        s.add(Job(id=job_id, kind=JobKind.train, dataset_id=ds_id, config={}, status=JobStatus.succeeded))
        s.flush()
        s.add(Model(id=model_id, job_id=job_id, dataset_id=ds_id, kan_config=config, weights=weights, width=[2, 5, 1],
                    metrics={}))
    with factory() as s:
        _, token = auth.create_key(s, scope=Scope.read, name="bench")
    return token, model_id


async def request(app, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> tuple[int, bytes]:
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [*headers, (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }
    sent = False
    status, chunks = 0, []

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status, b"".join(chunks)


async def run(app, path: str, headers, n: int) -> float:
    """CPU ms per request over n sequential 1-row requests."""
    rnd = random.Random(0)
    bodies = [json.dumps({"inputs": [[rnd.uniform(-1, 1), rnd.uniform(-1, 1)]]}).encode() for _ in range(n)]
    cpu0 = time.process_time()
    for body in bodies:
        status, out = await request(app, path, headers, body)
        if status != 200:
            raise SystemExit(f"HTTP {status}: {out[:300]!r}")
    return (time.process_time() - cpu0) * 1000 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", help="write a cProfile of one more run to this .pstats file")
    parser.add_argument("--ttl", type=float, default=None,
                        help="KAN_LOOKUP_CACHE_TTL_S (default: the setting's default; 0: no lookup cache)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        ttl = {} if args.ttl is None else {"lookup_cache_ttl_s": args.ttl}
        settings = Settings(_env_file=None, data_dir=Path(tmp), database_url=None, auth_enabled=True,
                            rate_limit_predict_per_s=0, log_level="warning", **ttl)
        app = create_app(settings)
        torch.set_num_threads(1)
        token, model_id = seed(app)
        path = f"/v1/models/{model_id}/predict"
        headers = [(b"host", b"127.0.0.1:8000"), (b"content-type", b"application/json"),
                   (b"authorization", f"Bearer {token}".encode())]

        async def bench() -> list[float]:
            await run(app, path, headers, 200)  # warm-up: model load, first connections
            results = [await run(app, path, headers, args.requests) for _ in range(args.repeats)]
            if args.profile:
                profiler = cProfile.Profile()
                profiler.enable()
                await run(app, path, headers, args.requests)
                profiler.disable()
                profiler.dump_stats(args.profile)
            return results

        results = asyncio.run(bench())
        app.state.engine.dispose()
    print(f"1-row predict, auth on, {args.requests} sequential requests x {args.repeats}: CPU ms per request "
          + " / ".join(f"{r:.3f}" for r in results) + f" (min {min(results):.3f})")


if __name__ == "__main__":
    main()
