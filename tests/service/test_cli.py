"""The `kan-service` command line, run as a real subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service import migrate
from service.config import Settings
from service.db import make_engine

REPO = Path(__file__).resolve().parents[2]


def cli_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    return {**env, "KAN_DATA_DIR": str(data_dir), "PYTHONPATH": str(REPO), **extra}


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service.cli", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, status: int, process: subprocess.Popen[str], timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()[1]
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == status:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout} s")


def test_help_lists_the_commands(tmp_path: Path) -> None:
    result = run_cli("--help", env=cli_env(tmp_path))
    assert result.returncode == 0
    assert all(command in result.stdout for command in ("serve", "worker", "migrate"))


def test_migrate_brings_the_database_to_head(tmp_path: Path) -> None:
    result = run_cli("migrate", env=cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert f"is at revision {migrate.head_revision()}" in result.stderr
    engine = make_engine(Settings(_env_file=None, data_dir=tmp_path, database_url=None))
    try:
        assert migrate.is_up_to_date(engine)
    finally:
        engine.dispose()
    again = run_cli("migrate", env=cli_env(tmp_path))  # idempotent
    assert again.returncode == 0, again.stderr


def test_bad_arguments_are_usage_errors(tmp_path: Path) -> None:
    result = run_cli("serve", "--workers", "-1", env=cli_env(tmp_path))
    assert result.returncode == 2 and "--workers" in result.stderr
    assert run_cli("fly", env=cli_env(tmp_path)).returncode == 2


def test_serve_without_workers_answers_and_stops_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "0"],
        cwd=REPO, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/healthz", 200, process)
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 503  # no worker anywhere
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0  # a hang guard; it stops in about a second
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "kan.db").exists()


@pytest.mark.slow  # spawns the API and a worker pool, each importing torch
def test_serve_starts_workers_and_stops_them(tmp_path: Path) -> None:
    pytest.importorskip("service.worker.local")
    port = free_port()
    env = cli_env(tmp_path, KAN_HEARTBEAT_INTERVAL_S="0.2", KAN_POLL_INTERVAL_S="0.1")
    process = subprocess.Popen(
        [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/readyz", 200, process, timeout=180)  # a worker's heartbeat arrived
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    stderr = process.stderr.read() if process.stderr else ""
    assert "stopping the worker processes" in stderr

