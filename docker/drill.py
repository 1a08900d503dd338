#!/usr/bin/env python3
"""The Docker deployment drill (issue 17): build the image, run the compose stack as a user would,
use it through the published port, break it, and check nothing was lost. Standard library only.

Phases: build; first ready (compose up: postgres, redis, migrate, api, two workers; /readyz);
API key (`compose run --rm api keys create`); seed discovery and a batch (formulas judged with
kan_core.judge, inside the image); failover (`docker kill` the worker running a job: the job must end
once, on the other worker); API restart (nothing lost); shared rate limit (a second API container: one
limit between the two); scale to three workers; `compose down -v`. Exits 1 at the first failure (after
printing the stack's logs and taking it down), and prints each phase's time.

    docker/drill.sh                  # Docker Hub images (python:3.11-slim, postgres:16, redis:7)
    docker/drill.sh --local-images   # stand-ins from Debian packages (docker/local-images.sh)

The stack is the compose project `kan-drill` with the API on 127.0.0.1:$DRILL_PORT (default 18000),
so a deployment named `kan` on the same machine is left alone.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker" / "compose.yaml"
PROJECT = "kan-drill"
IMAGE = "kan-service:latest"
LOCAL_IMAGES = {"POSTGRES_IMAGE": "kan-local/postgres:15", "REDIS_IMAGE": "kan-local/redis:7"}
PREDICT_BURST = 6  # the drill's predict limit: 6 per 600 s window, so the shared-limit check is exact
SEED = {"name": "seed formula", "expression": "exp(sin(pi*x1) + x2**2)",
        "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 1000, "n_test": 1000, "seed": 0}
BATCH = [("x1*x2", {"x1": [1, 3], "x2": [1, 3]}), ("x1 + x2**2", {"x1": [-1, 1], "x2": [-1, 1]})]
TERMINAL = {"succeeded", "failed", "cancelled"}


class DrillFailed(Exception):
    pass


def check(condition: bool, what: str) -> None:
    if not condition:
        raise DrillFailed(what)
    print(f"   ok: {what}", flush=True)


def run(cmd: list[str], *, env: dict[str, str] | None = None, capture: bool = False,
        check_rc: bool = True, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    shown = " ".join(cmd)
    print(f"   $ {shown if len(shown) < 160 else shown[:157] + '...'}", flush=True)
    done = subprocess.run(cmd, env=env, text=True, timeout=timeout,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None)
    if check_rc and done.returncode != 0:
        raise DrillFailed(f"`{shown}` exited {done.returncode}: {(done.stderr or '')[-2000:]}")
    return done


def docker_cli() -> tuple[str, dict[str, str]]:
    """A docker client that can build with BuildKit (the Dockerfile mounts a secret and an image):
    $DOCKER, else the first `docker` on PATH with buildx or a built-in BuildKit (clients before 23)."""
    names = [os.environ["DOCKER"]] if os.environ.get("DOCKER") else []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        candidate = Path(directory) / "docker"
        if candidate.is_file() and os.access(candidate, os.X_OK) and str(candidate) not in names:
            names.append(str(candidate))
    for name in names:
        if subprocess.run([name, "buildx", "version"], capture_output=True).returncode == 0:
            return name, {}
        version = subprocess.run([name, "version", "-f", "{{.Client.Version}}"], capture_output=True, text=True)
        major = re.match(r"(\d+)\.", version.stdout.strip())
        if major and int(major.group(1)) < 23:
            return name, {"DOCKER_BUILDKIT": "1"}
    raise DrillFailed(f"no docker client with BuildKit among {names or ['(none on PATH)']}: install buildx")


class Drill:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.docker, build_env = docker_cli()
        self.port, self.port2 = args.port, args.port + 1
        self.env = {**os.environ, **build_env, "API_PORT": str(self.port), "KAN_IMAGE": IMAGE,
                    "KAN_RATE_LIMIT_PREDICT_PER_S": str(PREDICT_BURST / 600), "KAN_RATE_LIMIT_PREDICT_BURST": str(PREDICT_BURST),
                    "KAN_RATE_LIMIT_JOBS_PER_MIN": "600", "KAN_RATE_LIMIT_JOBS_BURST": "100"}
        if args.local_images:
            self.env.update(LOCAL_IMAGES)
        self.compose_cmd = self._compose_cmd()
        self.times: dict[str, float] = {}
        self.facts: dict[str, object] = {}

    def _compose_cmd(self) -> list[str]:
        if subprocess.run([self.docker, "compose", "version"], capture_output=True).returncode == 0:
            return [self.docker, "compose", "-p", PROJECT, "-f", str(COMPOSE_FILE)]
        legacy = shutil.which("docker-compose")
        if legacy is None:
            raise DrillFailed("neither `docker compose` nor `docker-compose` is installed")
        # docker-compose 1.x does not know the top-level `name:` (the -p flag sets it anyway)
        text = re.sub(r"(?m)^name:.*\n", "", COMPOSE_FILE.read_text())
        copy = Path(tempfile.mkstemp(prefix="kan-drill-compose-", suffix=".yaml")[1])
        copy.write_text(text)
        return [legacy, "-p", PROJECT, "--project-directory", str(COMPOSE_FILE.parent), "-f", str(copy)]

    # ---- plumbing

    @contextlib.contextmanager
    def phase(self, name: str):
        print(f"== {name}", flush=True)
        start = time.monotonic()
        yield
        self.times[name] = time.monotonic() - start
        print(f"-- {name}: {self.times[name]:.1f} s", flush=True)

    def compose(self, *args: str, **kwargs) -> subprocess.CompletedProcess[str]:
        return run([*self.compose_cmd, *args], env=self.env, **kwargs)

    def containers(self, service: str) -> list[str]:
        out = run([self.docker, "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.compose.project={PROJECT}",
                   "--filter", f"label=com.docker.compose.service={service}"], capture=True).stdout
        return out.split()

    def http(self, method: str, path: str, body: object = None, *, key: str | None = None,
             port: int | None = None, expect: int | tuple[int, ...] | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port or self.port}{path}", data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if key:
            request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        payload = json.loads(raw) if raw[:1] in (b"{", b"[") else {}
        if expect is not None and status not in (expect if isinstance(expect, tuple) else (expect,)):
            raise DrillFailed(f"{method} {path} answered {status}, expected {expect}: {raw[:500]!r}")
        return status, payload

    def wait(self, what: str, predicate, timeout: float, every: float = 2.0):
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):  # not up yet, cut off
                value = predicate()
                if value:
                    return value
            if time.monotonic() > deadline:
                raise DrillFailed(f"{what}: not within {timeout:.0f} s")
            time.sleep(every)

    def ready(self, port: int | None = None) -> bool:
        return self.http("GET", "/readyz", port=port)[0] == 200

    def sql(self, query: str) -> str:
        return self.compose("exec", "-T", "postgres", "psql", "-U", "kan", "-d", "kan", "-tAc", query,
                            capture=True).stdout.strip()

    def judge(self, found: str, true: str, variables: list[str]) -> bool:
        code = ("import sys; from kan_core.judge import is_solution; "
                "sys.exit(0 if is_solution(sys.argv[1], sys.argv[2], sys.argv[3].split(',')) else 3)")
        done = self.compose("exec", "-T", "api", "python", "-c", code, found, true, ",".join(variables),
                            capture=True, check_rc=False)
        if done.returncode not in (0, 3):
            raise DrillFailed(f"the judge failed: {done.stderr[-1000:]}")
        return done.returncode == 0

    def finished(self, path: str, key: str):
        _, body = self.http("GET", path, key=key, expect=200)
        return body if body.get("status") in TERMINAL | {"finished"} else None

    # ---- phases

    def main(self) -> None:
        print(f"docker: {self.docker}; compose: {' '.join(self.compose_cmd[:2])}; API on 127.0.0.1:{self.port}")
        stale = self.containers("api") + self.containers("worker") + self.containers("postgres")
        self.volumes_before = set(self.volumes())
        check(not stale, f"no `{PROJECT}` stack is running already (else: docker compose -p {PROJECT} -f docker/compose.yaml down -v)")
        if self.args.local_images:
            with self.phase("local images"):
                run([str(REPO / "docker" / "local-images.sh")], env={**self.env, "DOCKER": self.docker})
        self.build()
        try:
            self.exercise()
        except BaseException:
            self.logs()
            raise
        finally:
            if not self.args.keep:
                self.down()

    def build(self) -> None:
        with self.phase("build"):
            cmd = [self.docker, "build", "-t", IMAGE, "-f", str(REPO / "Dockerfile")]
            if self.args.local_images:
                cmd += ["--build-arg", "BASE_IMAGE=kan-local/python:3.11", "--build-arg", "TORCH_WHEELS_IMAGE=kan-local/wheels"]
            cert = os.environ.get("PIP_CERT") or "/etc/ssl/certs/ca-certificates.crt"
            if Path(cert).is_file():  # a proxy's CA for pip in the build, as a secret: never in a layer
                cmd += ["--secret", f"id=pip_cert,src={cert}"]
            run([*cmd, str(REPO)], env=self.env)
        # every module imports: a dependency missing from the image (a dev-only package, say) shows here
        smoke = ("import importlib, pkgutil, kan_core, service; "
                 "[importlib.import_module(m.name) for p in (kan_core, service) "
                 "for m in pkgutil.walk_packages(p.__path__, p.__name__ + '.')]")
        run([self.docker, "run", "--rm", "--network", "none", "--entrypoint", "python", IMAGE, "-c", smoke])
        print("   ok: every module of kan_core and service imports in the image")
        size = int(run([self.docker, "image", "inspect", "-f", "{{.Size}}", IMAGE], capture=True).stdout)
        self.facts["image_size_mb"] = round(size / 1e6)
        print(f"   image {IMAGE}: {size / 1e6:.0f} MB")

    def exercise(self) -> None:
        with self.phase("first ready"):
            self.compose("up", "-d", "--no-build", "--scale", "worker=2", "postgres", "redis", "migrate", "api", "worker")
            self.wait("/readyz answers 200", self.ready, timeout=600)
            ports = run([self.docker, "port", self.containers("api")[0]], capture=True).stdout.split()
            check(all(p.startswith("127.0.0.1:") for p in ports if ":" in p), f"the API is published on 127.0.0.1 only ({ports})")
            networks = run([self.docker, "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={PROJECT}"],
                           capture=True).stdout.split()
            driver = run([self.docker, "network", "inspect", "-f", "{{.Driver}}", *networks], capture=True).stdout.split()
            check(len(networks) == 1 and driver == ["bridge"], "the stack has its own bridge network")

        with self.phase("api key"):
            key, self.limit_key = self.new_key(), self.new_key()
        self.discover(key)
        self.batch(key)
        self.failover(key)
        self.restart_api(key)
        self.shared_limit()
        self.scale(key)

    def new_key(self) -> str:
        out = self.compose("run", "--rm", "--no-deps", "-T", "api", "keys", "create", "--scope", "write", capture=True).stdout
        match = re.search(r"kan_[A-Za-z0-9_.-]+", out)
        if not match:
            raise DrillFailed(f"`keys create` printed no key: {out!r}")
        return match.group(0)

    def discover(self, key: str) -> None:
        with self.phase("seed discovery"):
            _, dataset = self.http("POST", "/v1/datasets", SEED, key=key, expect=201)
            _, created = self.http("POST", "/v1/discoveries", {
                "dataset_id": dataset["id"], "budget": {"max_candidates": 8, "max_seconds": 240}}, key=key, expect=202)
            self.discovery = self.wait("the seed discovery ends", lambda: self.finished(f"/v1/discoveries/{created['id']}", key),
                                       timeout=600)
            check(self.discovery["status"] == "succeeded", f"the seed discovery succeeded ({self.discovery.get('reason')})")
            chosen = self.discovery["chosen"]
            print(f"   chosen: {chosen['formula']} (R² {chosen['r2']}, complexity {chosen['complexity']})")
            check(self.judge(chosen["formula"], SEED["expression"], ["x1", "x2"]),
                  f"kan_core.judge: {chosen['formula']} solves {SEED['expression']}")
            self.facts["seed_formula"] = chosen["formula"]
            self.seed_dataset = dataset["id"]

    def batch(self, key: str) -> None:
        with self.phase("batch"):
            items = [{"dataset": {"expression": e, "ranges": r, "n_train": 500, "n_test": 500}} for e, r in BATCH]
            items.append({"dataset": {"expression": "log(x1)", "ranges": {"x1": [-1, 1]}}})  # refused, the rest go on
            _, created = self.http("POST", "/v1/batches", {"items": items, "budget": {"max_candidates": 6, "max_seconds": 240}},
                                   key=key, expect=202)
            done = self.wait("the batch finishes", lambda: self.finished(f"/v1/batches/{created['id']}", key), timeout=900)
            rejected = done["items"][-1]
            check(rejected["status"] == "rejected" and rejected["problem"]["field"] == "items[2].dataset.expression",
                  "the bad batch item is rejected naming items[2].dataset.expression")
            for (expression, ranges), item in zip(BATCH, done["items"]):
                check(item["status"] == "succeeded" and item["chosen"] is not None, f"batch item {expression!r} succeeded")
                found = item["chosen"]["formula"]
                check(self.judge(found, expression, list(ranges)), f"kan_core.judge: {found} solves {expression}")

    def failover(self, key: str) -> None:
        with self.phase("failover"):
            body = {"dataset_id": self.seed_dataset, "stages": [{"kind": "train", "steps": self.args.failover_steps}]}
            _, job = self.http("POST", "/v1/jobs", body, key=key, expect=202)
            path = f"/v1/jobs/{job['id']}"

            def running() -> str | None:
                _, now = self.http("GET", path, key=key, expect=200)
                if now["status"] in TERMINAL:
                    raise DrillFailed(f"the failover job ended ({now['status']}) before its worker could be killed: "
                                      "raise --failover-steps")
                return self.sql(f"SELECT worker_id FROM jobs WHERE id = '{job['id']}'") if (now["progress"] or {}).get("step") else None

            worker_id = self.wait("the failover job runs", running, timeout=300, every=0.5)
            victim = next((c for c in self.containers("worker") if worker_id.startswith(c[:12])), None)
            check(victim is not None, f"the job runs on a worker container ({worker_id})")
            killed_at = time.monotonic()
            run([self.docker, "kill", victim])

            def reclaimed() -> bool:
                _, now = self.http("GET", path, key=key, expect=200)
                return now["attempts"] >= 2 or now["status"] in TERMINAL

            self.wait("another worker takes the job over", reclaimed, timeout=600, every=0.5)
            self.times["failover: kill to re-claim"] = time.monotonic() - killed_at
            end = self.wait("the job ends after its worker was killed", lambda: self.finished(path, key), timeout=900)
            self.times["failover: kill to job end"] = time.monotonic() - killed_at
            check(end["status"] == "succeeded", f"the job succeeded on another worker (attempts {end['attempts']})")
            check(end["attempts"] == 2, "the job ran exactly twice: the killed attempt and the one that ended")
            models = self.sql(f"SELECT count(*) FROM models WHERE job_id = '{job['id']}'")
            check(models == "1", f"the job made exactly one model ({models})")
            _, listed = self.http("GET", f"/v1/models?job_id={job['id']}", key=key, expect=200)
            check([m["id"] for m in listed["items"]] == [end["model_id"]], "the API lists that one model")
            # the killed container: back with the restart policy, or started again by `up`
            self.compose("up", "-d", "--no-build", "--no-deps", "--no-recreate", "--scale", "worker=2", "worker")

    def restart_api(self, key: str) -> None:
        with self.phase("api restart"):
            counts = "SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM jobs), (SELECT count(*) FROM models)"
            before = self.sql(counts)
            run([self.docker, "restart", self.containers("api")[0]])
            self.wait("/readyz after the API restart", self.ready, timeout=300)
            check(self.sql(counts) == before, f"datasets, jobs, models unchanged across the restart ({before})")
            _, again = self.http("GET", f"/v1/discoveries/{self.discovery['id']}", key=key, expect=200)
            check(again["chosen"] == self.discovery["chosen"], "the seed discovery and its formula are still there")
            _, out = self.http("POST", f"/v1/discoveries/{self.discovery['id']}/predict", {"inputs": [[0.5, 0.5]]},
                               key=key, expect=200)
            value = out["outputs"][0][0]
            check(abs(value - math.exp(1.25)) < 1e-3, f"the API key still works and the formula predicts exp(1.25) ({value})")

    def shared_limit(self) -> None:
        with self.phase("shared rate limit"):
            self.compose("run", "-d", "--no-deps", "--name", f"{PROJECT}-api-2", "-p", f"127.0.0.1:{self.port2}:8000",
                         "api", "serve", "--workers", "0")
            self.wait("the second API answers /readyz", lambda: self.ready(self.port2), timeout=300)
            path, body = f"/v1/discoveries/{self.discovery['id']}/predict", {"inputs": [[0.1, 0.2]]}
            answers = [(port, self.http("POST", path, body, key=self.limit_key, port=port)[0])
                       for _ in range(PREDICT_BURST) for port in (self.port, self.port2)]
            granted = sum(status == 200 for _, status in answers)
            refused_by = {port for port, status in answers if status == 429}
            print(f"   answers: {[status for _, status in answers]}")
            check(granted == PREDICT_BURST, f"two API containers granted {granted} predicts: one limit of {PREDICT_BURST}")
            check(refused_by == {self.port, self.port2}, "both API containers refuse once the shared window is full")

    def scale(self, key: str) -> None:
        with self.phase("scale to 3 workers"):
            self.compose("up", "-d", "--no-build", "--no-deps", "--no-recreate", "--scale", "worker=3", "worker")
            check(len(self.containers("worker")) == 3, "three worker containers run")
            alive = lambda: int(self.sql("SELECT count(*) FROM workers WHERE heartbeat_at > now() - interval '10 seconds'")) >= 3
            self.wait("three workers stamp heartbeats", alive, timeout=300)
            jobs = [self.http("POST", "/v1/jobs", {"dataset_id": self.seed_dataset, "stages": [{"kind": "train", "steps": 5}]},
                              key=key, expect=202)[1]["id"] for _ in range(3)]
            for job in jobs:
                end = self.wait(f"job {job} ends", lambda job=job: self.finished(f"/v1/jobs/{job}", key), timeout=600)
                check(end["status"] == "succeeded", f"job {job} succeeded on the scaled-out stack")

    def volumes(self) -> list[str]:
        return run([self.docker, "volume", "ls", "-q"], capture=True).stdout.split()

    def logs(self) -> None:
        print("== logs of the stack (last lines)", flush=True)
        self.compose("logs", "--tail", "40", check_rc=False)

    def down(self) -> None:
        with self.phase("down"):
            run([self.docker, "rm", "-f", "-v", f"{PROJECT}-api-2"], capture=True, check_rc=False)
            self.compose("down", "-v", "--remove-orphans")
            left = set(self.volumes()) - self.volumes_before  # the project's and the containers' anonymous ones
            check(not left and not self.containers("api") + self.containers("worker"), "no container or volume is left")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-images", action="store_true",
                        help="build and use the Debian-package stand-ins (docker/local-images.sh) instead of Docker Hub's")
    parser.add_argument("--port", type=int, default=int(os.environ.get("DRILL_PORT", "18000")),
                        help="the API's port on 127.0.0.1 (the second API container takes the next one)")
    parser.add_argument("--failover-steps", type=int, default=150, help="training steps of the job whose worker is killed")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end (no `down -v`)")
    parser.add_argument("--json", type=Path, help="write the phase times and facts here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    drill = None
    try:
        drill = Drill(args)
        drill.main()
        ok = True
    except DrillFailed as failure:
        print(f"DRILL FAILED: {failure}", file=sys.stderr, flush=True)
        ok = False
    total = time.monotonic() - started
    if drill is not None:
        print("\nphase times (s):")
        for name, seconds in drill.times.items():
            print(f"  {name:28s} {seconds:8.1f}")
        print(f"  {'total':28s} {total:8.1f}")
        load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
        facts = {**drill.facts, "ok": ok, "times_s": {k: round(v, 1) for k, v in drill.times.items()},
                 "total_s": round(total, 1), "loadavg": load, "cpus": os.cpu_count()}
        print(json.dumps(facts))
        if args.json:
            args.json.write_text(json.dumps(facts, indent=2) + "\n")
    print("DRILL PASSED" if ok else "DRILL FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
