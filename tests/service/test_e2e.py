"""End to end over real HTTP: `kan-service serve` (uvicorn + local worker processes) in a subprocess
on a fresh SQLite file, driven with httpx like any client service would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from jobs_support import FAST, tiny_pipeline, wait_for
from kan_core.judge import is_solution

REPO = Path(__file__).resolve().parents[2]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SEED_EXPRESSION = "exp(sin(pi*x1)+x2**2)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m service.cli serve` subprocess; its log is kept in a file for failure messages."""

    def __init__(self, data_dir: Path, workers: int, **settings: object):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
        self.env.update({f"KAN_{k.upper()}": str(v) for k, v in {**FAST, **settings}.items()})
        self.env.update(KAN_DATA_DIR=str(data_dir), PYTHONPATH=str(REPO))
        self.workers = workers
        self.process: subprocess.Popen | None = None

    def start(self) -> Server:
        cmd = [sys.executable, "-m", "service.cli", "serve", "--port", str(self.port), "--workers", str(self.workers)]
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(cmd, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self._healthy, 90, 0.2, f"the server to answer\n{self.log()}")
        return self

    def _healthy(self) -> bool:
        assert self.process.poll() is None, f"server exited with {self.process.returncode}\n{self.log()}"
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def server(data_dir: Path) -> Iterator[Server]:
    srv = Server(data_dir, workers=1).start()
    try:
        yield srv
    finally:
        srv.stop()


def _create_dataset(http: httpx.Client, expression: str, n_train: int, n_test: int) -> dict:
    r = http.post("/v1/datasets", json={
        "expression": expression, "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": n_train, "n_test": n_test,
        "seed": 0,
    })
    assert r.status_code == 201, r.text
    return r.json()


def _submit(http: httpx.Client, body: dict, url: str = "/v1/jobs", key: str | None = None) -> dict:
    r = http.post(url, json=body, headers={"Idempotency-Key": key} if key else {})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/v1/jobs/{r.json()['id']}"
    return r.json()


def _wait_final(http: httpx.Client, job_id: str, timeout: float) -> dict:
    def final():
        job = http.get(f"/v1/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout, 0.25, f"job {job_id}")


def _follow(url: str, job_id: str, out: list[tuple[str, dict]]) -> None:
    """Collect a job's server-sent events until the stream ends."""
    name = None
    with httpx.stream("GET", f"{url}/v1/jobs/{job_id}/events", timeout=httpx.Timeout(30, read=120)) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                out.append((name, json.loads(line.split(":", 1)[1])))


# --------------------------------------------------------------------------------------------------


def test_restarted_service_serves_every_dataset_job_and_model(data_dir, server):
    with server.client() as http:
        dataset = _create_dataset(http, "x1 + 0.5*x2", 200, 100)
        done = [_submit(http, {"dataset_id": dataset["id"], **tiny_pipeline(steps=3)}, key=f"k{i}")["id"]
                for i in range(2)]
        finals = [_wait_final(http, job_id, 120) for job_id in done]
        assert {j["status"] for j in finals} == {"succeeded"}, [j["error"] for j in finals]
        before = {
            "dataset": http.get(f"/v1/datasets/{dataset['id']}").json(),
            "jobs": [http.get(f"/v1/jobs/{j}").json() for j in done],
            "histories": [http.get(f"/v1/jobs/{j}/history").json() for j in done],
            "models": [http.get(f"/v1/models/{j['model_id']}").json() for j in finals],
        }
    server.stop()

    again = Server(data_dir, workers=0).start()
    try:
        with again.client() as http:
            after = {
                "dataset": http.get(f"/v1/datasets/{dataset['id']}").json(),
                "jobs": [http.get(f"/v1/jobs/{j}").json() for j in done],
                "histories": [http.get(f"/v1/jobs/{j}/history").json() for j in done],
                "models": [http.get(f"/v1/models/{j['model_id']}").json() for j in finals],
            }
            assert after == before
            assert {j["id"] for j in http.get("/v1/jobs").json()["items"]} == set(done)
            assert http.post(f"/v1/jobs", json={"dataset_id": dataset["id"], **tiny_pipeline(steps=3)},
                             headers={"Idempotency-Key": "k0"}).json()["id"] == done[0]  # keys survive too
            for model in after["models"]:
                r = http.post(f"/v1/models/{model['id']}/predict", json={"inputs": [[0.1, 0.2]]})
                assert r.status_code == 200, r.text
    finally:
        again.stop()


def _formula_text(model: dict) -> str:
    (formula,) = model["formulas"]
    return formula["text"]


def _assert_solution(found: str) -> None:
    assert is_solution(found, SEED_EXPRESSION, ["x1", "x2"]), found


def _assert_predictions(http: httpx.Client, model_id: str, dataset_id: str) -> None:
    test = http.get(f"/v1/datasets/{dataset_id}/data", params={"split": "test", "limit": 1000}).json()
    x, y = np.asarray(test["inputs"]), np.asarray(test["targets"])
    for mode in ("network", "formula"):
        r = http.post(f"/v1/models/{model_id}/predict", params={"mode": mode}, json={"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        rmse = float(np.sqrt(np.mean((np.asarray(r.json()["outputs"], dtype=float) - y) ** 2)))
        assert rmse < 1e-3, (mode, rmse)


@pytest.mark.slow
def test_seed_formula_end_to_end(server):
    """The seed example over HTTP: dataset by expression, the default pipeline followed by SSE and
    polling, the formula judged a symbolic solution, the model served every way; then the manual
    route, fixing the edges of the pruned model by hand."""
    with server.client() as http:
        dataset = _create_dataset(http, SEED_EXPRESSION, 1000, 1000)
        job = _submit(http, {"dataset_id": dataset["id"]}, key="seed")
        assert [s["name"] for s in job["config"]["stages"]] == ["train", "prune", "retrain", "auto_symbolic",
                                                                "symbolic_fit"]
        events: list[tuple[str, dict]] = []
        follower = threading.Thread(target=_follow, args=(server.url, job["id"], events))
        follower.start()
        polled = []
        while (current := http.get(f"/v1/jobs/{job['id']}").json())["status"] in ("queued", "running"):
            if current["progress"]:
                polled.append(current["progress"])
            time.sleep(0.3)
        follower.join(60)
        assert current["status"] == "succeeded", current["error"]

        # SSE: progress through every stage, in order, then one end event
        names = [n for n, _ in events]
        assert names[-1] == "end" and set(names[:-1]) == {"progress"}
        assert events[-1][1] == {"job_id": job["id"], "status": "succeeded", "model_id": current["model_id"],
                                 "error": None}
        stages_seen = [d["progress"]["stage_index"] for n, d in events if n == "progress" and d["progress"]]
        assert stages_seen == sorted(stages_seen) and stages_seen[-1] == 4
        assert polled and all(p["stages"] == 5 for p in polled)
        history = http.get(f"/v1/jobs/{job['id']}/history").json()["points"]
        assert len(history) == 20 + 50 + 50  # every training step of the three train stages

        model = http.get(f"/v1/models/{current['model_id']}").json()
        _assert_solution(_formula_text(model))
        _assert_predictions(http, model["id"], dataset["id"])
        formula = http.get(f"/v1/models/{model['id']}/formula")
        assert formula.status_code == 200 and formula.json()["formulas"][0]["latex"]
        splines = http.get(f"/v1/models/{model['id']}/splines")
        assert splines.status_code == 200 and splines.json()["edges"]
        plot = http.get(f"/v1/models/{model['id']}/plot.png")
        assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
        assert plot.content.startswith(PNG_SIGNATURE)
        artifact = http.get(f"/v1/models/{model['id']}/artifact")
        assert artifact.status_code == 200 and len(artifact.content) > 100

        # the manual route: train and prune, then fix the pruned network's edges by hand
        seed_stages = job["config"]["stages"]
        pruned_job = _wait_final(http, _submit(http, {"dataset_id": dataset["id"], "stages": seed_stages[:3]})["id"],
                                 600)
        assert pruned_job["status"] == "succeeded", pruned_job["error"]
        pruned = http.get(f"/v1/models/{pruned_job['model_id']}").json()
        assert pruned["width"] == [2, 1, 1] and not pruned["formulas"]
        fixes = [{"layer": 0, "in": 0, "out": 0, "function": "sin"},
                 {"layer": 0, "in": 1, "out": 0, "function": "x^2"},
                 {"layer": 1, "in": 0, "out": 0, "function": "exp"}]
        derived_job = _submit(http, {"fixes": fixes, "auto": False}, url=f"/v1/models/{pruned['id']}/symbolic")
        assert derived_job["kind"] == "symbolic" and derived_job["parent_model_id"] == pruned["id"]
        derived_job = _wait_final(http, derived_job["id"], 600)
        assert derived_job["status"] == "succeeded", derived_job["error"]
        derived = http.get(f"/v1/models/{derived_job['model_id']}").json()
        assert derived["parent_model_id"] == pruned["id"]
        _assert_solution(_formula_text(derived))
        _assert_predictions(http, derived["id"], dataset["id"])
