"""The client installs and runs without the server's dependencies: bench/bench_client_install.py makes
a fresh virtualenv with only `pip install ./client`, then runs the client example from it against a
service started from this environment. Slow (a venv, an install, a service, a discovery)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from client_support import REPO


@pytest.mark.slow
def test_a_fresh_venv_with_only_the_client_runs_the_example() -> None:
    done = subprocess.run([sys.executable, "bench/bench_client_install.py"], cwd=REPO, capture_output=True,
                          text=True, timeout=1800)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["example_rc"] == 0, report
    names = {p.split("==")[0].lower() for p in report["packages"]}
    assert "kan-client" in names and "httpx" in names
    assert not names & {"torch", "numpy", "pandas", "sympy", "fastapi", "kan-service"}, names
    assert report["venv_can_import_torch"] is False
    assert "chosen formula: " in report["example_stdout"]
