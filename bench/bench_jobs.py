"""Job throughput (issue 4): jobs per minute for N short jobs on 1 and 2 worker processes, with local
workers and with Celery workers, showing how throughput scales with worker processes.

Each deployment starts `kan-service worker -n W` (local: W worker processes polling the database;
Celery: one Celery worker with W prefork pool processes, ids over Redis) on a fresh database, waits
until its W workers are registered and have run two warm-up jobs per process (start-up and a
process's slower first job are not measured), then queues N jobs through the service code the API uses
(jobs.create_job + dispatch.submit, so Celery jobs really go through the broker) and waits for all of
them. Throughput = N / (last finished_at - first created_at), both stamped by the service. The 1- and
2-process deployments of a backend run side by side and take turns, --repeats rounds each, so that
both see the same background load; the table gives the median and the range of the rounds.

Backends: `local-sqlite` (the embedded default), `local-postgres`, `celery-postgres` (the scaled-out
deployment). PostgreSQL deployments get a fresh database `kan_bench_<random>` (dropped afterwards) on
the server of --postgres-url; Celery ones queue names of their own on --redis-url (purged afterwards).

A job is the tiny pipeline of the worker tests: width [2, 2, 1], grid 3, --steps Adam steps on 200
rows, so that the figure is dominated by what the job system costs per job (claim, load, progress and
history writes, model write) plus a little training. Workers run at niceness 0 (KAN_WORKER_NICE),
so that the figure is not about their priority against whatever else runs. Run from the repository root:

    .venv/bin/python bench/bench_jobs.py          # 5 rounds of 50 jobs, 1 and 2 workers, 3 backends
    .venv/bin/python bench/bench_jobs.py --jobs 10 --repeats 1 --backends celery-postgres   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import save as save_safetensors
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service import dispatch, jobs, migrate  # noqa: E402
from service.config import Settings  # noqa: E402
from service.db import make_engine, make_session_factory  # noqa: E402
from service.executors import make_executor  # noqa: E402
from service.ids import new_id  # noqa: E402
from service.models import DEFAULT_TENANT, Dataset, Job, JobStatus, Worker  # noqa: E402
from service.schemas.jobs import JobCreate  # noqa: E402

log = logging.getLogger("bench_jobs")

BACKENDS = ("local-sqlite", "local-postgres", "celery-postgres")
FINAL = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


@dataclass
class Round:
    seconds: float
    mean_run_s: float
    failed: int


@dataclass
class Cell:
    backend: str
    workers: int
    jobs: int
    rounds: list[Round]

    def jobs_per_min(self) -> list[float]:
        return sorted(60.0 * self.jobs / r.seconds for r in self.rounds)

    @property
    def median(self) -> float:
        return statistics.median(self.jobs_per_min())


# --------------------------------------------------------------------------------------------------
# databases and workers


@contextmanager
def fresh_database(backend: str, postgres_url: str, scratch: Path) -> Iterator[str]:
    if backend.endswith("sqlite"):
        yield f"sqlite:///{scratch / f'bench-{secrets.token_hex(3)}.db'}"
        return
    import psycopg

    base = make_url(postgres_url)
    name = f"kan_bench_{secrets.token_hex(4)}"
    with psycopg.connect(base.set(drivername="postgresql").render_as_string(hide_password=False),
                         autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield base.set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def purge_queues(redis_url: str, prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"*{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


@contextmanager
def running_workers(settings: Settings, n: int, log_path: Path) -> Iterator[None]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update({f"KAN_{k.upper()}": str(v) for k, v in settings.model_dump().items() if v is not None})
    env["PYTHONPATH"] = str(ROOT)
    factory = make_session_factory(make_engine(settings))
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "-n", str(n)], cwd=ROOT, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while True:
            with factory() as session:
                if (session.scalar(select(func.count()).select_from(Worker)) or 0) >= n:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the workers did not start; see {log_path}")
            time.sleep(0.2)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        factory.kw["bind"].dispose()


def insert_dataset(factory) -> str:
    rng = np.random.default_rng(0)
    x_train, x_test = rng.uniform(-1, 1, (200, 2)), rng.uniform(-1, 1, (100, 2))
    arrays = {"train_input": x_train, "train_label": x_train.sum(axis=1, keepdims=True),
              "test_input": x_test, "test_label": x_test.sum(axis=1, keepdims=True)}
    dataset_id = new_id("ds")
    with factory() as session, session.begin():
        session.add(Dataset(id=dataset_id, name="bench", source="json", feature_names=["x1", "x2"],
                            target_names=["y"], n_train=200, n_test=100, arrays=save_safetensors(arrays)))
    return dataset_id


# --------------------------------------------------------------------------------------------------
# one measurement


def queue_and_wait(factory, settings: Settings, sender, body: JobCreate, n: int) -> list[str]:
    """Queue n jobs as the API does and wait until all of them are final; their ids."""
    with factory() as session:
        ids = []
        for _ in range(n):
            job = jobs.create_job(session, settings, DEFAULT_TENANT, body)
            dispatch.submit(session, sender, job)
            ids.append(job.id)
    while True:
        with factory() as session:
            done = session.scalar(select(func.count()).select_from(Job).where(Job.id.in_(ids), Job.status.in_(FINAL)))
        if done == n:
            return ids
        time.sleep(0.05)


class Deployment:
    """One backend with n worker processes on a fresh database and queues of its own, warmed up."""

    def __init__(self, backend: str, n_workers: int, args: argparse.Namespace, scratch: Path, stack: ExitStack):
        self.backend, self.n_workers, self.args = backend, n_workers, args
        executor = backend.split("-")[0]
        url = stack.enter_context(fresh_database(backend, args.postgres_url, scratch))
        self.settings = Settings(_env_file=None, data_dir=scratch, database_url=url, executor=executor,
                                 broker_url=args.redis_url, queue_prefix=f"kan-bench-{secrets.token_hex(4)}-",
                                 workers=n_workers, torch_threads=1, worker_nice=0, log_level="warning")
        if executor == "celery":
            stack.callback(purge_queues, args.redis_url, self.settings.queue_prefix)
        engine = make_engine(self.settings)
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        self.factory = make_session_factory(engine)
        self.body = JobCreate.model_validate({
            "dataset_id": insert_dataset(self.factory), "model": {"width": [2, 2, 1], "grid": 3},
            "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": args.steps, "update_grid": False}],
        })
        self.sender = make_executor(self.settings)
        stack.callback(self.sender.close)
        stack.enter_context(running_workers(self.settings, n_workers, scratch / f"{backend}-{n_workers}.log"))
        queue_and_wait(self.factory, self.settings, self.sender, self.body, 2 * n_workers)  # first jobs are slower
        self.cell = Cell(backend, n_workers, args.jobs, [])

    def measure(self) -> Round:
        measured = queue_and_wait(self.factory, self.settings, self.sender, self.body, self.args.jobs)
        with self.factory() as session:
            rows = session.execute(select(Job.status, Job.created_at, Job.started_at, Job.finished_at)
                                   .where(Job.id.in_(measured))).all()
        seconds = (max(r.finished_at for r in rows) - min(r.created_at for r in rows)).total_seconds()
        runs = [(r.finished_at - r.started_at).total_seconds() for r in rows if r.started_at]
        result = Round(seconds, statistics.mean(runs), sum(r.status is not JobStatus.succeeded for r in rows))
        self.cell.rounds.append(result)
        return result


def run_backend(backend: str, args: argparse.Namespace, scratch: Path) -> list[Cell]:
    """All worker counts of one backend side by side, their rounds interleaved (1, 2, 1, 2, ...): on a
    shared machine every count then sees the same background load. Idle workers of the others only
    poll (local) or wait on Redis (Celery)."""
    with ExitStack() as stack:
        deployments = [Deployment(backend, n, args, scratch, stack) for n in args.workers]
        for _ in range(args.repeats):
            for deployment in deployments:
                result = deployment.measure()
                log.info("%s, %d worker process(es): %.0f jobs/min", backend, deployment.n_workers,
                         60.0 * args.jobs / result.seconds)
        return [d.cell for d in deployments]


def table(cells: list[Cell]) -> str:
    lines = ["| backend | worker processes | jobs/min (median) | min - max | vs 1 worker | mean run s/job | failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    single = {c.backend: c.median for c in cells if c.workers == 1}
    for c in cells:
        ratio = f"{c.median / single[c.backend]:.2f}x" if c.backend in single else "-"
        rates = c.jobs_per_min()
        run_s = statistics.median(r.mean_run_s for r in c.rounds)
        lines.append(f"| {c.backend} | {c.workers} | {c.median:.0f} | {rates[0]:.0f} - {rates[-1]:.0f} | {ratio} "
                     f"| {run_s:.2f} | {sum(r.failed for r in c.rounds)} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=50, help="jobs per cell (default 50)")
    parser.add_argument("--steps", type=int, default=50, help="Adam steps per job (default 50)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds of --jobs jobs per cell (default 5)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker processes (default 1 2)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL server to create the bench databases on (its database: any)")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="the Celery broker")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("alembic", "service"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    scratch = Path(tempfile.mkdtemp(prefix="kan-bench-jobs-"))
    cells = []
    try:
        for backend in args.backends:
            cells.extend(run_backend(backend, args, scratch))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    log.info("\n%d rounds of %d jobs per cell: width [2, 2, 1], grid 3, %d Adam steps on 200 rows; torch 1 thread "
             "per worker process; %d CPU cores, load average %.1f\n", args.repeats, args.jobs, args.steps,
             os.cpu_count(), os.getloadavg()[0])
    log.info(table(cells))


if __name__ == "__main__":
    main()
