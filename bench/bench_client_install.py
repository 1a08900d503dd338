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
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

from bench_support import free_port, wait_until_up

REPO = Path(__file__).resolve().parent.parent


def start_service(data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update(KAN_DATA_DIR=str(data_dir), KAN_HEARTBEAT_TIMEOUT_S="60", PYTHONPATH=str(REPO))
    log = open(data_dir / "server.log", "ab")
    process = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
                               cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(process, f"{url}/readyz", 300, data_dir / "server.log", every=0.5)  # a worker beats too
    except RuntimeError:
        process.terminate()
        raise
    return process, url


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
