"""Issue 18's memory defects: a job's memory is estimated at submission and refused past
KAN_MAX_JOB_MEMORY_MB (422 naming the field, nothing stored); each worker process's address space is
capped, so a runaway allocation fails in that process with an error instead of starving the machine."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.config import Settings
from service.limits import estimate_job_memory
from service.models import Job
from service.schemas.jobs import PipelineSpec

FORMULA = {"expression": "x1 * x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 4000, "n_test": 1000}


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings(max_job_memory_mb=256)


@pytest.fixture
def dataset_id(client: TestClient) -> str:
    response = client.post("/v1/datasets", json=FORMULA)
    assert response.status_code == 201, response.text
    return response.json()["id"]


@pytest.fixture
def few_rows_id(client: TestClient) -> str:
    response = client.post("/v1/datasets", json={**FORMULA, "n_train": 100, "n_test": 25})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def jobs_stored(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Job)) or 0


def test_a_wide_deep_fine_network_is_refused_naming_the_width(client, session_factory, few_rows_id) -> None:
    # the probe's job: within every per-field limit, 1.7 GB in its worker before it was cancelled
    body = {"dataset_id": few_rows_id, "model": {"width": [2, *[256] * 6, 1], "grid": 200}}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["field"] == "model.width" and problem["max_job_memory_mb"] == 256
    assert problem["estimated_mb"] > 256 and "KAN_MAX_JOB_MEMORY_MB" in problem["detail"]
    assert jobs_stored(session_factory) == 0


def test_a_fine_grid_on_a_narrow_network_names_the_grid(client, session_factory, few_rows_id) -> None:
    stages = [{"kind": "train", "steps": 5}, {"kind": "refine", "grid": 200}, {"kind": "train", "steps": 5}]
    body = {"dataset_id": few_rows_id, "model": {"width": [2, 100, 100, 1]}, "stages": stages}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.json()["field"] == "stages[1].grid", response.text
    assert jobs_stored(session_factory) == 0


def test_full_batch_features_name_the_batch_and_a_smaller_batch_passes(client, session_factory, dataset_id) -> None:
    stage = {"kind": "train", "steps": 5, "batch": -1}
    body = {"dataset_id": dataset_id, "model": {"width": [2, 64, 64, 1], "grid": 40}, "stages": [stage]}
    response = client.post("/v1/jobs", json=body)
    assert response.status_code == 422 and response.json()["field"] == "stages[0].batch", response.text
    assert jobs_stored(session_factory) == 0
    body["stages"] = [{**stage, "batch": 64, "opt": "Adam"}]
    assert client.post("/v1/jobs", json=body).status_code == 202
    assert jobs_stored(session_factory) == 1


def test_the_default_pipeline_is_well_under_the_default_limit(dataset_id) -> None:
    config = PipelineSpec().pipeline_dict()
    config["model"]["width"] = [64, 5, 1]
    estimate = estimate_job_memory(config, n_train=8_000, n_test=2_000)
    assert estimate.mb < Settings.model_fields["max_job_memory_mb"].default / 10


def test_the_estimate_grows_with_width_grid_rows_and_lbfgs() -> None:
    def mb(width, grid=5, rows=1000, opt="LBFGS") -> float:
        config = PipelineSpec.model_validate({"model": {"width": width, "grid": grid},
                                              "stages": [{"kind": "train", "opt": opt}]}).pipeline_dict()
        return estimate_job_memory(config, rows, rows // 4).mb

    base = mb([2, 16, 1])
    assert mb([2, 64, 1]) > base and mb([2, 16, 1], grid=50) > base and mb([2, 16, 1], rows=8000) > base
    assert mb([2, 64, 64, 1], grid=50, opt="Adam") < mb([2, 64, 64, 1], grid=50)


def test_a_capped_worker_process_fails_the_allocation_and_lives_on() -> None:
    # in a child process: the cap is per process (RLIMIT_AS) and cannot be lifted again
    code = textwrap.dedent("""
        import torch
        from service.config import Settings
        from service.limits import cap_process_memory
        cap_process_memory(Settings(_env_file=None, worker_memory_limit_mb=3072))
        small = torch.ones(1000, 1000)  # fine under the cap
        try:
            torch.empty(8 * 2**30, dtype=torch.uint8).fill_(1)  # 8 GiB
        except (RuntimeError, MemoryError) as exc:
            print("refused:", type(exc).__name__, str(exc).splitlines()[0][:120])
        print("alive", float(small.sum()))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "refused:" in out.stdout and "alive 1000000.0" in out.stdout, out.stdout
