"""The Docker deployment drill (docker/drill.sh) as a test: minutes of building and running the compose
stack, so it is marked `docker` (and `slow`) and stays out of `make test`. Run it with
`pytest -m docker tests/test_docker_drill.py`; KAN_DRILL_ARGS adds drill options (`--local-images` on
a machine without Docker Hub)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(7200)]


def test_the_drill_passes(tmp_path: Path) -> None:
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        pytest.skip("no Docker engine here")
    report = tmp_path / "drill.json"
    args = shlex.split(os.environ.get("KAN_DRILL_ARGS", ""))
    done = subprocess.run([str(REPO / "docker" / "drill.sh"), *args, "--json", str(report)], cwd=REPO)
    assert done.returncode == 0, "the drill failed: see its output above"
    assert report.exists()
