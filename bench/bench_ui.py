"""Dashboard page time (issue 16): the server time of the jobs list page at /ui/jobs with 1,000 jobs in
the database, against the JSON list route it is built on (GET /v1/jobs, one page of 200) in the same run.

A fresh SQLite database gets one dataset and --jobs jobs (rows written through the ORM, as workers
would: a third running with progress, the rest queued, succeeded or failed). The app runs in-process
(Starlette's TestClient: no socket, so the figure is the server's own time: routing, the in-process
API calls, the template) with authentication off. Each route is requested --warmup times, then
--repeats times in turns; the table gives the median and the 95th percentile. Run from the repository
root:

    .venv/bin/python bench/bench_ui.py               # 1,000 jobs, 30 timed requests per route
    .venv/bin/python bench/bench_ui.py --jobs 200 --repeats 5   # smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastapi.testclient import TestClient  # noqa: E402

from service.app import create_app  # noqa: E402
from service.config import Settings  # noqa: E402
from service.ids import new_id  # noqa: E402
from service.models import Dataset, Job, JobKind, JobStatus  # noqa: E402

PIPELINE = {"model": {"width": [2, 3, 1], "grid": 5},
            "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": 200, "update_grid": False}]}


def fill(app, n_jobs: int) -> None:
    with app.state.session_factory() as session:
        dataset = Dataset(id=new_id("ds"), tenant_id="default", name="bench", source="json", feature_names=["x1", "x2"],
                          target_names=["y"], n_train=1, n_test=1, arrays=b"")
        session.add(dataset)
        statuses = [JobStatus.running, JobStatus.queued, JobStatus.succeeded, JobStatus.failed]
        for i in range(n_jobs):
            status = statuses[i % len(statuses)]
            progress = {"stage": "train", "stage_index": 0, "stages": 1, "step": i % 200, "steps": 200,
                        "train_rmse": 0.1, "test_rmse": 0.12} if status is JobStatus.running else None
            error = {"type": "ValueError", "detail": "bench"} if status is JobStatus.failed else None
            session.add(Job(id=new_id("job"), tenant_id="default", kind=JobKind.train, dataset_id=dataset.id,
                            config=PIPELINE, status=status, progress=progress, error=error, history=[]))
        session.commit()


def time_routes(client: TestClient, paths: list[str], warmup: int, repeats: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {path: [] for path in paths}
    for round_ in range(warmup + repeats):
        for path in paths:
            start = time.perf_counter()
            response = client.get(path)
            elapsed = time.perf_counter() - start
            assert response.status_code == 200, (path, response.status_code, response.text[:300])
            if round_ >= warmup:
                times[path].append(elapsed * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        app = create_app(Settings(_env_file=None, data_dir=Path(data_dir), database_url=None, auth_enabled=False))
        fill(app, args.jobs)
        with TestClient(app) as client:
            rows = client.get("/ui/jobs").text.count("<tr><td><a href=\"/ui/jobs/")
            paths = ["/v1/jobs?limit=200", "/ui/jobs", "/ui/jobs?status=running"]
            times = time_routes(client, paths, args.warmup, args.repeats)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"{args.jobs} jobs in the database; /ui/jobs lists {rows} rows; cores {os.cpu_count()}; {load}")
    print("| route | median ms | p95 ms |")
    print("|---|---|---|")
    for path, values in times.items():
        p95 = statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]
        print(f"| `GET {path}` | {statistics.median(values):.1f} | {p95:.1f} |")


if __name__ == "__main__":
    main()
