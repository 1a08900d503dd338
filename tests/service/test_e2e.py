"""End to end over real HTTP: `kan-service serve` (uvicorn + local worker processes) in a subprocess
on a fresh SQLite file, driven with httpx like any client service would."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e_support import (PNG_SIGNATURE, SEED_EXPRESSION, Server, assert_predictions, assert_solution, create_dataset,
                         follow, formula_text, submit, wait_final)
from jobs_support import tiny_pipeline


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


# --------------------------------------------------------------------------------------------------


def test_restarted_service_serves_every_dataset_job_and_model(data_dir, server):
    with server.client() as http:
        dataset = create_dataset(http, "x1 + 0.5*x2", 200, 100)
        done = [submit(http, {"dataset_id": dataset["id"], **tiny_pipeline(steps=3)}, key=f"k{i}")["id"]
                for i in range(2)]
        finals = [wait_final(http, job_id, 300) for job_id in done]  # a hang bound; seconds unloaded
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


@pytest.mark.slow
def test_seed_formula_end_to_end(server):
    """The seed example over HTTP: dataset by expression, the default pipeline followed by SSE and
    polling, the formula judged a symbolic solution, the model served every way; then the manual
    route, fixing the edges of the pruned model by hand."""
    with server.client() as http:
        dataset = create_dataset(http, SEED_EXPRESSION, 1000, 1000)
        job = submit(http, {"dataset_id": dataset["id"]}, key="seed")
        assert [s["name"] for s in job["config"]["stages"]] == ["train", "prune", "retrain", "auto_symbolic",
                                                                "symbolic_fit"]
        events: list[tuple[str, dict]] = []
        follower = threading.Thread(target=follow, args=(server.url, job["id"], events))
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
        assert_solution(formula_text(model))
        assert_predictions(http, model["id"], dataset["id"])
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
        pruned_job = wait_final(http, submit(http, {"dataset_id": dataset["id"], "stages": seed_stages[:3]})["id"],
                                 600)
        assert pruned_job["status"] == "succeeded", pruned_job["error"]
        pruned = http.get(f"/v1/models/{pruned_job['model_id']}").json()
        assert pruned["width"] == [2, 1, 1] and not pruned["formulas"]
        fixes = [{"layer": 0, "in": 0, "out": 0, "function": "sin"},
                 {"layer": 0, "in": 1, "out": 0, "function": "x^2"},
                 {"layer": 1, "in": 0, "out": 0, "function": "exp"}]
        derived_job = submit(http, {"fixes": fixes, "auto": False}, url=f"/v1/models/{pruned['id']}/symbolic")
        assert derived_job["kind"] == "symbolic" and derived_job["parent_model_id"] == pruned["id"]
        derived_job = wait_final(http, derived_job["id"], 600)
        assert derived_job["status"] == "succeeded", derived_job["error"]
        derived = http.get(f"/v1/models/{derived_job['model_id']}").json()
        assert derived["parent_model_id"] == pruned["id"]
        assert_solution(formula_text(derived))
        assert_predictions(http, derived["id"], dataset["id"])
