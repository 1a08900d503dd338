"""Serving latency (issue 3): predictions over HTTP next to in-process, and job submit -> start latency.

Starts the real service (uvicorn subprocess on 127.0.0.1, the app on a temporary SQLite data dir),
inserts a small model through the ORM, then measures

- in-process `model(x)` (inference_mode, the model's dtype) for 1 and 1,000 rows;
- POST /v1/models/{id}/predict for 1-row and 1,000-row bodies at concurrency 1 and 16 (httpx async
  client, loopback only, a bounded number of requests per cell; latency percentiles and throughput);
- submit -> start latency of tiny jobs (`Job.started_at - Job.created_at`), one job at a time so a
  worker is always idle when a job arrives: the dispatch latency, not queueing behind other jobs.

Run from the repository root:

    .venv/bin/python bench/bench_serving.py            # full run
    .venv/bin/python bench/bench_serving.py --quick    # smoke run, fewer requests and jobs

The client runs on the same machine as the server, so on a 2-core box it competes for CPU with it;
the HTTP figures are an upper bound on what the service costs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import torch
from safetensors.numpy import save as save_safetensors

from bench_support import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kan_core import io as kan_io  # noqa: E402
from kan_core.model import KAN  # noqa: E402
from service import migrate  # noqa: E402
from service.config import Settings  # noqa: E402
from service.db import make_engine, make_session_factory  # noqa: E402
from service.ids import new_id  # noqa: E402
from service.models import Dataset, Job, JobKind, JobStatus, Model  # noqa: E402

log = logging.getLogger("bench_serving")

WIDTH = [2, 5, 1]  # the shape the seed recipe gives a 2-input, 1-output dataset


# --------------------------------------------------------------------------------------------------
# helpers


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class Row:
    what: str
    rows: int
    concurrency: int
    requests: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    req_per_s: float

    @property
    def rows_per_s(self) -> float:
        return self.req_per_s * self.rows


def table(rows: list[Row]) -> str:
    head = f"| {'what':<22} | {'rows/req':>8} | {'conc':>4} | {'requests':>8} | {'p50 ms':>8} | {'p95 ms':>8} | {'p99 ms':>8} | {'req/s':>8} | {'rows/s':>10} |"
    sep = "|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r.what:<22} | {r.rows:>8} | {r.concurrency:>4} | {r.requests:>8} | {r.p50_ms:>8.3f} | {r.p95_ms:>8.3f} "
            f"| {r.p99_ms:>8.3f} | {r.req_per_s:>8.1f} | {r.rows_per_s:>10.0f} |"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# fixtures: a dataset and a model row


def seed_model(settings: Settings) -> tuple[str, KAN]:
    engine = make_engine(settings)
    migrate.upgrade(engine)
    factory = make_session_factory(engine)
    rng = np.random.default_rng(0)
    x_train, x_test = rng.uniform(-1, 1, (1000, 2)), rng.uniform(-1, 1, (200, 2))

    def f(x: np.ndarray) -> np.ndarray:
        return (np.sin(np.pi * x[:, :1]) + x[:, 1:2] ** 2)

    kan = KAN(WIDTH, grid=5, k=3, seed=0)
    weights, config = kan_io.dumps(kan)
    ds_id, job_id, model_id = new_id("ds"), new_id("job"), new_id("mdl")
    with factory() as s, s.begin():
        s.add(Dataset(
            id=ds_id, name="bench", source="expression", expression="sin(pi*x_1) + x_2**2",
            feature_names=["x_1", "x_2"], target_names=["y"], n_train=len(x_train), n_test=len(x_test),
            arrays=save_safetensors({"train_input": x_train, "train_label": f(x_train),
                                     "test_input": x_test, "test_label": f(x_test)}),
        ))
        s.add(Job(id=job_id, kind=JobKind.train, dataset_id=ds_id, config={}, status=JobStatus.succeeded))
        s.flush()
        s.add(Model(id=model_id, job_id=job_id, dataset_id=ds_id, kan_config=config, weights=weights,
                    width=list(kan.width), metrics={}, formulas=None))
    engine.dispose()
    return model_id, kan


# --------------------------------------------------------------------------------------------------
# the server


@contextmanager
def running_server(cmd: list[str], env: dict[str, str], base_url: str, log_path: Path) -> Iterator[None]:
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_up(proc, f"{base_url}/v1/models", 60, log_path, every=0.1)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------------------------------
# measurements


def bench_in_process(kan: KAN, n_rows: int, reps: int) -> Row:
    x = torch.as_tensor(np.random.default_rng(1).uniform(-1, 1, (n_rows, WIDTH[0])), dtype=torch.float64)
    times = []
    with torch.inference_mode():
        for _ in range(10):
            kan(x)
        for _ in range(reps):
            t0 = time.perf_counter()
            kan(x)
            times.append(time.perf_counter() - t0)
    ms = [t * 1e3 for t in times]
    return Row("in-process model(x)", n_rows, 1, reps, percentile(ms, 50), percentile(ms, 95), percentile(ms, 99),
               reps / sum(times))


async def _http_cell(base_url: str, model_id: str, n_rows: int, concurrency: int, n_requests: int) -> Row:
    x = np.random.default_rng(2).uniform(-1, 1, (n_rows, WIDTH[0]))
    body = httpx.Request("POST", "/", json={"inputs": x.tolist()}).content  # encode once
    url = f"/v1/models/{model_id}/predict"
    headers = {"content-type": "application/json"}
    latencies: list[float] = []
    remaining = iter(range(n_requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=60) as client:
        for _ in range(min(5, n_requests)):  # warm the connection and the model cache
            (await client.post(url, content=body, headers=headers)).raise_for_status()

        async def user() -> None:
            for _ in remaining:
                t0 = time.perf_counter()
                response = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                response.raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    ms = [t * 1e3 for t in latencies]
    return Row("HTTP predict", n_rows, concurrency, n_requests, percentile(ms, 50), percentile(ms, 95),
               percentile(ms, 99), n_requests / elapsed)


def bench_http(base_url: str, model_id: str, n_rows: int, concurrency: int, n_requests: int) -> Row:
    return asyncio.run(_http_cell(base_url, model_id, n_rows, concurrency, n_requests))


TINY_JOB = {"model": {"width": [2, 1], "grid": 3}, "stages": [{"kind": "train", "steps": 1, "update_grid": False}]}


@dataclass
class JobTimes:
    cold_start_ms: float      # the first job: the worker process may still be importing torch
    start_ms: list[float]     # Job.started_at - Job.created_at
    finish_ms: list[float]    # Job.finished_at - Job.created_at


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _run_job(client: httpx.Client, dataset_id: str) -> tuple[float, float]:
    """Submit one tiny job, wait for its end; (start, finish) latency in ms from server timestamps."""
    created = client.post("/v1/jobs", json={"dataset_id": dataset_id, **TINY_JOB}).raise_for_status()
    job_id = created.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        job = client.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id} did not finish in 120 s: {job}")
        time.sleep(0.02)
    if job["status"] != "succeeded":
        raise RuntimeError(f"job {job_id} ended {job['status']}: {job.get('error')}")
    t0 = _ts(job["created_at"])
    return (_ts(job["started_at"]) - t0).total_seconds() * 1e3, (_ts(job["finished_at"]) - t0).total_seconds() * 1e3


def bench_jobs(base_url: str, n_jobs: int, poll_interval_s: float) -> JobTimes:
    """Tiny jobs one at a time, so the worker is idle when each arrives. Before each submission the
    client waits a random 0-2 poll intervals: submitting right after the previous job ends would
    always land at the start of the worker's sleep and measure the poll interval, not the dispatch."""
    rng = np.random.default_rng(0)
    with httpx.Client(base_url=base_url, timeout=60) as client:
        ds = client.post("/v1/datasets", json={"expression": "x1 + x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]},
                                               "n_train": 64, "n_test": 16}).raise_for_status()
        dataset_id = ds.json()["id"]
        times = JobTimes(_run_job(client, dataset_id)[0], [], [])
        for i in range(n_jobs):
            time.sleep(rng.uniform(0, 2 * poll_interval_s))
            start, finish = _run_job(client, dataset_id)
            times.start_ms.append(start)
            times.finish_ms.append(finish)
            if (i + 1) % 25 == 0:
                log.info("  %d/%d jobs", i + 1, n_jobs)
    return times


def jobs_table(times: JobTimes, poll_interval_s: float) -> str:
    lines = [
        f"tiny jobs, one at a time, 1 local worker polling every {poll_interval_s * 1e3:.0f} ms (KAN_POLL_INTERVAL_S); "
        f"first job after start-up (not counted): submit -> start {times.cold_start_ms:.0f} ms",
        "",
        f"| {'interval':<28} | {'jobs':>5} | {'p50 ms':>8} | {'p95 ms':>8} | {'max ms':>8} |",
        f"|{'-' * 30}|{'-' * 7}|{'-' * 10}|{'-' * 10}|{'-' * 10}|",
    ]
    for label, values in (("submit -> start (started_at)", times.start_ms), ("submit -> done (finished_at)", times.finish_ms)):
        lines.append(f"| {label:<28} | {len(values):>5} | {percentile(values, 50):>8.1f} | {percentile(values, 95):>8.1f} "
                     f"| {max(values):>8.1f} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests and jobs (smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("httpx", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    n_small, n_large, n_jobs, reps = (100, 20, 10, 100) if args.quick else (2000, 300, 100, 1000)
    torch.set_num_threads(1)  # the bench process is the client; leave the cores to the server

    data_dir = Path(tempfile.mkdtemp(prefix="kan-bench-serving-"))
    try:
        settings = Settings(_env_file=None, data_dir=data_dir, database_url=None)
        poll_interval_s = settings.poll_interval_s
        model_id, kan = seed_model(settings)
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "KAN_DATA_DIR": str(data_dir), "KAN_LOG_LEVEL": "warning", "KAN_DATABASE_URL": ""}
        cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]

        results = [bench_in_process(kan, 1, reps), bench_in_process(kan, 1000, reps // 4)]
        with running_server(cmd, env, base_url, data_dir / "server.log"):
            for n_rows, n_requests in ((1, n_small), (1000, n_large)):
                for concurrency in (1, 16):
                    row = bench_http(base_url, model_id, n_rows, concurrency, n_requests)
                    log.info("  %s rows x%d: p50 %.2f ms, %.0f req/s", n_rows, concurrency, row.p50_ms, row.req_per_s)
                    results.append(row)
            jobs = bench_jobs(base_url, n_jobs, poll_interval_s)

        log.info("\nmodel width %s, float64, torch %s, %d CPU cores; server: kan-service serve --workers 1\n",
                 WIDTH, torch.__version__, os.cpu_count())
        log.info(table(results))
        log.info("\n%s", jobs_table(jobs, poll_interval_s))
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
