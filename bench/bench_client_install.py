"""The client without the server's dependencies (issue 15): a fresh virtualenv gets only
`pip install ./client` (httpx, httpx-sse; no torch, numpy, pandas or sympy), then runs
examples/client_quickstart.py against a service started from the project's own environment.
Prints one JSON object: the install's seconds, the example's seconds, what the venv holds.

    .venv/bin/python bench/bench_client_install.py [--budget 120 --max-candidates 2 --train-steps 5]

The install time depends on the package index pip is configured with (a local mirror here) and its
cache; `--no-cache` installs with `pip --no-cache-dir`. Exit status 1 when the example fails, the
venv can import torch, or the service does not start.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_service(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update(KAN_DATA_DIR=str(data_dir), KAN_HEARTBEAT_TIMEOUT_S="60", PYTHONPATH=str(REPO))
    log = open(data_dir / "server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited: {(data_dir / 'server.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:  # a worker beats too
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError("the service did not become ready within 300 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="120")
    parser.add_argument("--max-candidates", default="2")
    parser.add_argument("--train-steps", default="5")
    parser.add_argument("--no-cache", action="store_true", help="pip install --no-cache-dir")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kan-client-venv-") as tmp:
        tmp_path = Path(tmp)
        env_dir = tmp_path / "venv"
        venv.create(env_dir, with_pip=True)
        python = env_dir / "bin" / "python"
        pip = [str(python), "-m", "pip", "install", "-q", *(["--no-cache-dir"] if args.no_cache else []),
               str(REPO / "client")]
        started = time.perf_counter()
        subprocess.run(pip, check=True)
        install_s = time.perf_counter() - started
        installed = sorted(json.loads(subprocess.run([str(python), "-m", "pip", "list", "--format", "json"],
                                                     check=True, capture_output=True, text=True).stdout),
                           key=lambda d: d["name"].lower())
        has_torch = subprocess.run([str(python), "-c", "import torch"], capture_output=True).returncode == 0

        data_dir = tmp_path / "data"
        data_dir.mkdir()
        service, url = start_service(data_dir)
        try:
            started = time.perf_counter()
            example = subprocess.run([str(python), str(REPO / "examples" / "client_quickstart.py"), "--url", url,
                                      "--budget", args.budget, "--max-candidates", args.max_candidates,
                                      "--train-steps", args.train_steps],
                                     capture_output=True, text=True, timeout=900, cwd=tmp_path)
            example_s = time.perf_counter() - started
        finally:
            service.terminate()
            service.wait(60)
    report = {
        "install_s": round(install_s, 2), "example_s": round(example_s, 2), "example_rc": example.returncode,
        "venv_can_import_torch": has_torch, "packages": [f"{d['name']}=={d['version']}" for d in installed],
        "example_stdout": example.stdout, "example_stderr_tail": example.stderr[-2000:],
    }
    print(json.dumps(report, indent=2))
    return 0 if example.returncode == 0 and not has_torch else 1


if __name__ == "__main__":
    sys.exit(main())
