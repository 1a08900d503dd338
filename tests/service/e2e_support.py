"""Helpers for the end-to-end tests over real HTTP and real processes: `Server` (`kan-service serve`
in a subprocess), `WorkerProcess` (`kan-service worker` in a subprocess), and httpx calls shared by
test_e2e.py (local workers, SQLite) and test_celery.py (Celery workers, PostgreSQL, Redis)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np

from jobs_support import FAST, read_events, wait_for
from kan_core.judge import is_solution

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED_EXPRESSION = "exp(sin(pi*x1)+x2**2)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_env(data_dir: Path, **settings: object) -> dict[str, str]:
    """The environment of a service process: ours without KAN_*, then FAST and `settings` as KAN_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update({f"KAN_{k.upper()}": str(v) for k, v in {**FAST, **settings}.items()})
    env.update(KAN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
    return env


class _Process:
    """A `python -m service.cli ...` subprocess whose output goes to a log file (for failure messages)."""

    def __init__(self, data_dir: Path, name: str, **settings: object):
        self.log_path = data_dir / f"{name}.log"
        self.env = service_env(data_dir, **settings)
        self.process: subprocess.Popen | None = None

    def _start(self, *args: str) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 60) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""


class Server(_Process):
    """`kan-service serve` with `workers` worker processes (0: the API alone)."""

    def __init__(self, data_dir: Path, workers: int, **settings: object):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        super().__init__(data_dir, f"server-{self.port}", **settings)

    def start(self) -> Server:
        self._start("serve", "--port", str(self.port), "--workers", str(self.workers))
        wait_for(self._healthy, 180, 0.2, f"the server to answer\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        assert self.alive(), f"server exited with {self.process.returncode}\n{self.log()}"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=120)  # generous: the machine may be loaded


class WorkerProcess(_Process):
    """`kan-service worker -n N`: N local worker processes, or with executor=celery one Celery worker
    with N pool processes. `start()` returns once `ready()` says so (the caller knows what to check:
    e.g. N rows in the workers table), so that no test waits for a worker's start-up by accident."""

    count = 0

    def __init__(self, data_dir: Path, n: int = 1, **settings: object):
        WorkerProcess.count += 1
        self.n = n
        super().__init__(data_dir, f"worker-{WorkerProcess.count}", **settings)

    def start(self, ready=None, timeout: float = 120) -> WorkerProcess:
        self._start("worker", "-n", str(self.n))
        if ready is not None:
            def started() -> bool:
                assert self.alive(), f"worker exited with {self.process.returncode}\n{self.log()}"
                return ready()

            wait_for(started, timeout, 0.2, f"the worker to start\n{self.log()}")
        return self

    def kill(self) -> None:
        """SIGKILL, as when its machine dies (Celery pool processes die with it: PR_SET_PDEATHSIG)."""
        self.process.kill()
        self.process.wait()


def create_dataset(http: httpx.Client, expression: str, n_train: int, n_test: int) -> dict:
    r = http.post("/v1/datasets", json={
        "expression": expression, "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": n_train, "n_test": n_test,
        "seed": 0,
    })
    assert r.status_code == 201, r.text
    return r.json()


def submit(http: httpx.Client, body: dict, url: str = "/v1/jobs", key: str | None = None) -> dict:
    r = http.post(url, json=body, headers={"Idempotency-Key": key} if key else {})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def wait_final(http: httpx.Client, job_id: str, timeout: float) -> dict:
    def final():
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout, 0.25, f"job {job_id}")


def follow(url: str, job_id: str, out: list[tuple[str, dict]]) -> None:
    """Collect a job's server-sent events until the stream ends."""
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30, read=120)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for event in read_events(r.iter_lines()):
            out.append(event)


def formula_text(model: dict) -> str:
    (formula,) = model["formulas"]
    return formula["text"]


def assert_solution(found: str) -> None:
    assert is_solution(found, SEED_EXPRESSION, ["x1", "x2"]), found


def assert_predictions(http: httpx.Client, model_id: str, dataset_id: str) -> None:
    test = http.get(f"/v1/datasets/{dataset_id}/data", params={"split": "test", "limit": 1000}).json()
    x, y = np.asarray(test["inputs"]), np.asarray(test["targets"])
    for mode in ("network", "formula"):
        r = http.post(f"/v1/models/{model_id}/predict", params={"mode": mode}, json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        rmse = float(np.sqrt(np.mean((np.asarray(r.json()["outputs"], dtype=float) - y) ** 2)))
        assert rmse < 1e-3, (mode, rmse)
