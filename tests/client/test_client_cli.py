"""The command line (kan-client, and kan-service's client commands) and the examples, run as
subprocesses against the live service; their output is checked."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from nbclient import NotebookClient

from client_support import REPO, SMALL_DISCOVERY, tiny_pipeline
from e2e_support import free_port

BIN = Path(sys.executable).parent
SMALL = ["--budget", str(SMALL_DISCOVERY["budget"]), "--max-candidates", str(SMALL_DISCOVERY["max_candidates"]),
         "--train-steps", str(SMALL_DISCOVERY["train_steps"])]


def cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(args[0]), *args[1:]], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def seed_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, (300, 2))
    frame = pd.DataFrame({"y": np.exp(np.sin(np.pi * x[:, 0]) + x[:, 1] ** 2), "x1": x[:, 0], "x2": x[:, 1]})
    path = tmp_path_factory.mktemp("cli") / "seed.csv"
    frame.to_csv(path, index=False)
    return path


def test_kan_client_discover_prints_the_front_and_the_chosen_formula(server, seed_csv) -> None:
    done = cli(BIN / "kan-client", "discover", str(seed_csv), "--target", "y", "--url", server.url, *SMALL)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("discovery dsc_") and " succeeded" in lines[0]
    assert lines[1].split() == ["complexity", "test_rmse", "r2", "formula"]
    chosen = [line for line in lines if line.startswith("*")]
    assert len(chosen) == 1 and lines[-1].startswith("chosen: ")
    assert chosen[0].endswith(lines[-1].removeprefix("chosen: "))
    assert float(chosen[0].split()[2]) < 0.05  # the chosen formula's test RMSE, from the table
    assert "discovery dsc_" in done.stderr  # the progress bar (and the id) go to stderr


def test_kan_service_discover_json_for_scripts(server, seed_csv) -> None:
    done = cli(BIN / "kan-service", "discover", str(seed_csv), "--target", "y", "--json", *SMALL,
               env={"KAN_URL": server.url})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded" and result["front"] and result["chosen"] in result["front"]
    assert result["chosen"]["test_rmse"] < 0.05 and result["chosen"]["variables"] == ["x1", "x2"]


def test_jobs_watch_follows_a_job_to_its_model(server, client, seed_dataset) -> None:
    job = client.train(seed_dataset, **tiny_pipeline())
    done = cli(BIN / "kan-service", "jobs", "watch", job.id, "--url", server.url)
    assert done.returncode == 0, done.stderr
    first, formula = done.stdout.splitlines()[:2]
    assert first.startswith(f"job {job.id} succeeded: model mdl_") and formula.startswith("y = ")
    as_json = cli(BIN / "kan-client", "jobs", "watch", job.id, "--url", server.url, "--json")
    body = json.loads(as_json.stdout)
    assert body["job"]["status"] == "succeeded" and body["model"]["id"] == first.rsplit(" ", 1)[-1]
    assert body["model"]["formulas"][0]["text"] == formula.removeprefix("y = ")


def test_functions_and_a_refused_request(server, seed_csv) -> None:
    done = cli(BIN / "kan-client", "functions", "--url", server.url)
    assert done.returncode == 0 and done.stdout.splitlines()[0].split() == ["name", "complexity", "sympy"]
    assert any(line.split()[:3] == ["sin", "2", "sin(x)"] for line in done.stdout.splitlines())
    refused = cli(BIN / "kan-client", "discover", str(seed_csv), "--target", "nope", "--url", server.url)
    assert refused.returncode == 2 and refused.stderr.startswith("error: 422") and "field" in refused.stderr
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    unreachable = cli(BIN / "kan-service", "functions", "--url", closed)
    assert unreachable.returncode == 2 and unreachable.stderr.startswith(f"error: cannot reach the service at {closed}")


def test_the_client_example_runs(server) -> None:
    done = cli(sys.executable, "examples/client_quickstart.py", "--url", server.url, *SMALL)
    assert done.returncode == 0, done.stderr
    assert any(line.startswith("chosen formula: ") for line in done.stdout.splitlines()), done.stdout
    assert "predictions at [[0.5, 0.5], [-0.25, 0.75]]" in done.stdout


def test_the_notebook_runs(server, monkeypatch) -> None:
    monkeypatch.setenv("KAN_URL", server.url)
    monkeypatch.setenv("KAN_EXAMPLE_FAST", "1")
    notebook = nbformat.read(REPO / "examples" / "client_notebook.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    outputs = {i: cell.get("outputs", []) for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"}
    text = json.dumps(outputs)
    assert "DiscoveryResult(" in text and "succeeded" in text and "def y(x1, x2):" in text
    assert any(o.get("data", {}).get("image/png") for cell in outputs.values() for o in cell)  # the plot, inline
