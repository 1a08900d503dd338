"""Load: 1-row predictions under a running training job (issue 5), with locust over real HTTP.

Starts the real service (`kan-service serve --workers 1`, authentication on as in the Docker
deployment) on 127.0.0.1 with a temporary SQLite data dir, then

1. creates a read key with `kan-service keys create` and a write key for the set-up;
2. samples a dataset from exp(sin(pi*x1) + x2**2) and trains a small model on it (a [2, 5, 1] job
   of 20 LBFGS steps), waiting for it to succeed;
3. submits a long training job (Adam, 20,000 steps) and waits until the worker is training it;
4. runs locust headless in a subprocess (`bench/locustfile_predict.py`, FastHttpUser): USERS users
   sending 1-row POST /v1/models/{id}/predict, each at RATE/USERS requests per second (or back to
   back with --rate 0), for DURATION seconds after all users are spawned;
5. reports exact latency percentiles (every request's time, from a locust event hook), the error
   rate, throughput, and the training job's steps per second before and during the load, then
   cancels the job and stops the service.

Run from the repository root:

    .venv/bin/python bench/bench_load.py                      # 16 users, 160 req/s offered, 30 s
    .venv/bin/python bench/bench_load.py --rate 0             # 16 users back to back (saturation)
    .venv/bin/python bench/bench_load.py --pacing poisson     # random (exponential) gaps, not users in step
    .venv/bin/python bench/bench_load.py --duration 10        # shorter

The load generator shares the machine's cores with the server and the training worker (loopback
only), so the figures are an upper bound on what the service itself costs.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from bench_support import free_port, wait_until_up

ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "bench" / "locustfile_predict.py"
PYTHON = sys.executable
EXPRESSION = "exp(sin(pi*x1) + x2**2)"
SMALL_JOB = {"model": {"width": [2, 5, 1], "grid": 5},
             "stages": [{"kind": "train", "opt": "LBFGS", "steps": 20, "lamb": 0.0}]}
LONG_JOB = {"model": {"width": [2, 5, 1], "grid": 5},
            "stages": [{"kind": "train", "opt": "Adam", "lr": 0.01, "steps": 20_000, "update_grid": False}]}

log = logging.getLogger("bench_load")


@dataclass
class Service:
    url: str
    env: dict[str, str]
    process: subprocess.Popen[bytes]


def service_env(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
    env.update(KAN_DATA_DIR=str(data_dir), PYTHONPATH=str(ROOT), KAN_AUTH_ENABLED="true",
               # one key sends all the load: the default per-key limit (100/s) would answer 429s
               KAN_RATE_LIMIT_PREDICT_PER_S="0", **extra)
    return env


def cli(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([PYTHON, "-m", "service.cli", "--log-level", "warning", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    return result.stdout.strip()


@contextmanager
def running_service(data_dir: Path, extra: dict[str, str]) -> Iterator[Service]:
    port = free_port()
    env = service_env(data_dir, extra)
    with open(data_dir / "server.log", "wb") as out:
        process = subprocess.Popen([PYTHON, "-m", "service.cli", "serve", "--port", str(port), "--workers", "1"],
                                   cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    service = Service(f"http://127.0.0.1:{port}", env, process)
    try:
        wait_until_up(process, f"{service.url}/readyz", 120, data_dir / "server.log")
        yield service
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def wait_job(http: httpx.Client, job_id: str, done: callable, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
        if done(job):
            return job
        if job["status"] in ("failed", "cancelled") or time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id}: {job['status']} {job.get('error')}")
        time.sleep(0.2)


def descendants(pid: int) -> list[int]:
    out = []
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        out += [int(child), *descendants(int(child))]
    return out


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine used (every core), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def step_of(http: httpx.Client, job_id: str) -> tuple[float, int]:
    job = http.get(f"/v1/jobs/{job_id}").raise_for_status().json()
    return time.monotonic(), int((job.get("progress") or {}).get("step") or 0)


def run_locust(service: Service, model_id: str, key: str, users: int, rate: float, pacing: str, duration: float,
               out_dir: Path) -> tuple[np.ndarray, int, float, dict[str, float]]:
    latency_file = out_dir / "latencies.txt"
    env = {**os.environ, "KAN_BENCH_MODEL_ID": model_id, "KAN_BENCH_API_KEY": key,
           "KAN_BENCH_USER_RATE": str(rate / users if rate > 0 else 0), "KAN_BENCH_PACING": pacing,
           "KAN_BENCH_LATENCY_FILE": str(latency_file)}
    spawn_s = 1.0
    command = [PYTHON, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", service.url,
               "--users", str(users), "--spawn-rate", str(users / spawn_s), "--run-time", f"{duration + spawn_s:.0f}s",
               "--only-summary", "--loglevel", "WARNING", "--csv", str(out_dir / "locust"), "--exit-code-on-error", "0"]
    log.info("locust: %s", " ".join(command[2:]))
    api, workers = service.process.pid, descendants(service.process.pid)
    before = (cpu_seconds(api), sum(cpu_seconds(p) for p in workers), machine_busy_seconds())
    started = time.monotonic()
    locust = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    locust_cpu = 0.0
    while locust.poll() is None:  # the locust process's CPU, read while it exists
        try:
            locust_cpu = cpu_seconds(locust.pid)
        except (FileNotFoundError, ProcessLookupError):
            break
        time.sleep(0.2)
    locust.wait(duration + 120)
    wall = time.monotonic() - started
    after = (cpu_seconds(api), sum(cpu_seconds(p) for p in workers), machine_busy_seconds())
    lines = latency_file.read_text().split()
    failures = sum(line.startswith("!") for line in lines)
    latencies = np.array([float(line.lstrip("!")) for line in lines])
    api_cpu, worker_cpu, machine_cpu = (b - a for a, b in zip(before, after))
    cpu = {"api": api_cpu, "worker": worker_cpu, "locust": locust_cpu, "machine": machine_cpu}
    return latencies, failures, wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=16, help="concurrent locust users (default 16)")
    parser.add_argument("--rate", type=float, default=160.0,
                        help="offered load in requests/s over all users; 0: back to back (default 160)")
    parser.add_argument("--pacing", choices=("constant", "poisson"), default="constant",
                        help="how each user spaces its requests at a given --rate: constant (locust's "
                             "constant_throughput, users in step) or poisson (random exponential gaps)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of load (default 30)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir (logs, locust CSV)")
    parser.add_argument("--env", action="append", default=[], metavar="KAN_X=V",
                        help="extra server setting, e.g. --env KAN_LOG_LEVEL=warning (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    extra = dict(item.split("=", 1) for item in args.env)

    data_dir = Path(tempfile.mkdtemp(prefix="kan-bench-load-"))
    try:
        env = service_env(data_dir, extra)
        cli(env, "migrate")
        read_key = cli(env, "keys", "create", "--scope", "read", "--name", "bench-load")
        write_key = cli(env, "keys", "create", "--scope", "write", "--name", "bench-setup")
        with running_service(data_dir, extra) as service, \
                httpx.Client(base_url=service.url, timeout=60, headers={"Authorization": f"Bearer {write_key}"}) as http:
            dataset = http.post("/v1/datasets", json={"expression": EXPRESSION, "ranges": {"x1": [-1, 1], "x2": [-1, 1]},
                                                      "n_train": 1000, "n_test": 1000}).raise_for_status().json()
            small = http.post("/v1/jobs", json={"dataset_id": dataset["id"], **SMALL_JOB}).raise_for_status().json()
            small = wait_job(http, small["id"], lambda j: j["status"] == "succeeded", 300)
            model_id = small["model_id"]
            log.info("model %s trained (job %s)", model_id, small["id"])

            long_job = http.post("/v1/jobs", json={"dataset_id": dataset["id"], **LONG_JOB}).raise_for_status().json()
            wait_job(http, long_job["id"], lambda j: j["status"] == "running" and (j["progress"] or {}).get("step"), 120)
            t0, s0 = step_of(http, long_job["id"])
            time.sleep(5)
            t1, s1 = step_of(http, long_job["id"])
            latencies, failures, wall, cpu = run_locust(service, model_id, read_key, args.users, args.rate, args.pacing,
                                                   args.duration, data_dir)
            t2, s2 = step_of(http, long_job["id"])
            job = http.get(f"/v1/jobs/{long_job['id']}").json()
            still_running = job["status"] == "running"
            http.post(f"/v1/jobs/{long_job['id']}/cancel")

        n = len(latencies)
        pct = {q: float(np.percentile(latencies, q)) for q in (50, 90, 99)} if n else {}
        offered = (f"{args.rate:g} req/s offered ({args.rate / args.users:g} per user, {args.pacing} pacing)"
                   if args.rate else "back to back")
        print()
        print(f"load: {args.users} locust users (FastHttpUser), 1-row POST /v1/models/{{id}}/predict, {offered}, "
              f"{args.duration:g} s after a 1 s spawn; server: kan-service serve --workers 1, auth on"
              + (f", {' '.join(args.env)}" if args.env else ""))
        print(f"training job during the load: Adam on [2, 5, 1], 1,000 rows; "
              f"{(s1 - s0) / (t1 - t0):.0f} steps/s before the load, {(s2 - s1) / (t2 - t1):.0f} steps/s during it "
              f"({'still running' if still_running else job['status']} at the end)")
        print()
        print("| requests | errors | error rate | req/s | p50 ms | p90 ms | p99 ms | max ms |")
        print("|---------:|-------:|-----------:|------:|-------:|-------:|-------:|-------:|")
        print(f"| {n} | {failures} | {failures / max(n, 1):.2%} | {n / wall:.1f} | {pct.get(50, 0):.1f} | "
              f"{pct.get(90, 0):.1f} | {pct.get(99, 0):.1f} | {latencies.max() if n else 0:.1f} |")
        others = cpu["machine"] - cpu["api"] - cpu["worker"] - cpu["locust"]
        print(f"\nCPU over the {wall:.0f} s of load ({os.cpu_count()} cores = {os.cpu_count() * wall:.0f} core-s): "
              f"API process {cpu['api']:.1f} s ({1000 * cpu['api'] / max(n, 1):.2f} ms per request), "
              f"training worker {cpu['worker']:.1f} s, locust {cpu['locust']:.1f} s, everything else on the machine "
              f"{max(others, 0):.1f} s; load average {os.getloadavg()[0]:.1f}")
        target = failures == 0 and n > 0 and pct[99] < 50.0
        print(f"\ntarget (0 errors, p99 < 50 ms): {'met' if target else 'MISSED'}")
        return 0
    finally:
        if args.keep:
            print(f"data dir kept: {data_dir}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
