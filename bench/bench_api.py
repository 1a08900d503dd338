"""Formula discovery through the HTTP API, the way issue #12's hidden set is run: one worker, a 120 s budget.

For each formula of a benchmark file (the format of shared/benchmarks/formulas.json): the data of
bench/bench_discovery.py (its make_data: 1000 train + 1000 test points uniform in the variables'
ranges, numpy seeded with --data-seed + the formula's index in the file, so the results compare
with bench_discovery's), then over HTTP:

1. ``POST /v1/datasets`` with the arrays and the explicit test split (``inputs``, ``targets``,
   ``test_inputs``, ``test_targets``) and the benchmark's variable names as ``feature_names``. A
   judge that draws 1000 + 1000 points, as shared/benchmarks/README.md says, gives both splits
   rather than letting the service carve a test_fraction of one pool. The target is named ``y``
   (``y_out`` when a variable is called ``y``); names the service refuses fall back to x1, x2, ...
   and the formula is written back in the benchmark's names before judging.
2. ``POST /v1/discoveries`` with ``budget: {max_seconds: --budget}`` only: the documented default
   of 16 candidates and no ``options`` (seed 0, the candidates' own steps). That is what a judge
   reading docs/api.md sends. Note bench_discovery calls the engine with max_candidates=20.
3. Poll ``GET /v1/discoveries/{id}`` (every 0.25 s) until the status is final; seconds are
   client-side, from the POST's answer to the first final status seen (``server_s`` is the
   service's own finished_at - created_at).
4. Judge ``chosen.formula`` with kan_core.judge.is_solution (bench_discovery.judge: a forked child
   with a time cap); R² on the test split is computed here from the formula text, as the judge would.

The server is ``kan-service serve --workers 1`` on a free 127.0.0.1 port with a fresh temporary
KAN_DATA_DIR (SQLite), started with this interpreter and PYTHONPATH = this file's checkout, so a
snapshot made with ``git archive HEAD | tar -x -C /tmp/snap_X`` runs its own code (the kan_core
the worker imports is printed at start). KAN_WORKER_NICE=0 (--worker-nice): the default 10 lets
other processes of a shared machine take the worker's core, which a judge's idle machine would not
do. Rate limits are left as they are (one discovery per formula stays far below them). --url runs
against a server already started instead. CPU seconds of the server's processes per formula
(``cpu_s``, /proc) are recorded, since wall-clock on a loaded machine is distorted.

    .venv/bin/python bench/bench_api.py [--formulas PATH] [--only ID ...] [--budget 120] [--jsonl PATH] [--url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import sympy

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_discovery import FORMULAS, judge, make_data, r2_of, tree_lines  # noqa: E402
from bench_support import free_port, summary_line, wait_until_up  # noqa: E402

FINAL = {"succeeded", "failed", "cancelled"}


def _proc_tree_cpu(root_pid: int) -> float:
    """CPU seconds (user + system, reaped children included) of a process and its descendants."""
    tick = os.sysconf("SC_CLK_TCK")
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            stats[int(entry)] = text[text.rindex(")") + 2:].split()
    children: dict[int, list[int]] = {}
    for pid, fields in stats.items():
        children.setdefault(int(fields[1]), []).append(pid)
    total, todo = 0.0, [root_pid]
    while todo:
        pid = todo.pop()
        if pid in stats:
            f = stats[pid]
            total += sum(int(v) for v in f[11:15]) / tick  # utime stime cutime cstime
        todo.extend(children.get(pid, []))
    return total


class Server:
    """`kan-service serve --workers 1` on a free port with a fresh data directory (a context manager)."""

    def __init__(self, worker_nice: int, log_level: str = "warning") -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAN_")}
        env.update(KAN_DATA_DIR=str(self.tmp / "data"), KAN_WORKERS="1", KAN_PORT=str(self.port),
                   KAN_HOST="127.0.0.1", KAN_WORKER_NICE=str(worker_nice), KAN_LOG_LEVEL=log_level,
                   PYTHONPATH=str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""))
        self.env = env
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen | None = None

    def kan_core_file(self) -> str:
        """Where the server's interpreter, with the server's environment, imports kan_core from."""
        out = subprocess.run([sys.executable, "-c", "import kan_core, service; print(kan_core.__file__, service.__file__)"],
                             env=self.env, cwd=self.tmp, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def __enter__(self) -> Server:
        cmd = [sys.executable, "-c", "from service.cli import main; main()", "serve", "--workers", "1",
               "--host", "127.0.0.1", "--port", str(self.port)]
        self.log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, env=self.env, cwd=self.tmp, stdout=self.log, stderr=subprocess.STDOUT)
        wait_until_up(self.proc, f"{self.url}/healthz", 600, self.log_path)
        # a worker heartbeat (/readyz 200) before the first discovery, whose clock starts at its creation;
        # a worker that imports torch on a loaded machine can take minutes
        deadline = time.monotonic() + 600
        while httpx.get(f"{self.url}/readyz", timeout=30).status_code != 200:
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"no worker became ready:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if not os.environ.get("BENCH_API_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)


def upload(client: httpx.Client, entry: dict, names: list[str], data: Any) -> tuple[str, list[str]]:
    """POST the two splits as a dataset; (dataset id, the names the service knows the inputs by)."""
    target = "y_out" if "y" in names else "y"
    body = {"name": entry["id"], "target_names": [target],
            "inputs": data.train_input.tolist(), "targets": data.train_label[:, 0].tolist(),
            "test_inputs": data.test_input.tolist(), "test_targets": data.test_label[:, 0].tolist()}
    answer = client.post("/v1/datasets", json={**body, "feature_names": names})
    if answer.status_code == 422:  # a name the service refuses: x1, x2, ... and rename back
        safe = [f"x{i + 1}" for i in range(len(names))]
        print(f"    feature names refused ({answer.json().get('detail', '')[:120]}); using {safe}")
        answer = client.post("/v1/datasets", json={**body, "feature_names": safe, "target_names": ["y"]})
        answer.raise_for_status()
        return answer.json()["id"], safe
    answer.raise_for_status()
    return answer.json()["id"], names


def candidate_summary(client: httpx.Client, discovery: dict) -> list[dict]:
    """Each candidate job: engine id, status, test R², formula (what a miss report needs)."""
    out = []
    for ref in discovery.get("candidates", []):
        job = client.get(f"/v1/jobs/{ref['job_id']}").json()
        result = job.get("result") or {}
        out.append({"id": (job.get("config") or {}).get("id"), "status": job.get("status"),
                    "r2": result.get("test_r2"), "formula": (result.get("formula") or "")[:200],
                    "seconds": result.get("seconds"), "result_status": result.get("status"),
                    "error": (job.get("error") or {}).get("detail", "")[:160] if job.get("error") else None})
    return out


def run_one(client: httpx.Client, entry: dict, index: int, args: argparse.Namespace,
            server_pid: int | None) -> dict:
    names, true, data = make_data(entry, args.data_seed + index)
    dataset_id, api_names = upload(client, entry, names, data)
    cpu0 = _proc_tree_cpu(server_pid) if server_pid else None
    start = time.perf_counter()
    answer = client.post("/v1/discoveries", json={"dataset_id": dataset_id, "budget": {"max_seconds": args.budget}})
    answer.raise_for_status()
    discovery = answer.json()
    cap = args.budget + args.grace
    while discovery["status"] not in FINAL:
        if time.perf_counter() - start > cap:  # a safety cap: the service should have ended it long ago
            print(f"    still {discovery['status']} after {cap:g} s: cancelling")
            client.post(f"/v1/discoveries/{discovery['id']}/cancel")
        time.sleep(0.25)
        discovery = client.get(f"/v1/discoveries/{discovery['id']}").json()
    seconds = time.perf_counter() - start
    cpu = _proc_tree_cpu(server_pid) - cpu0 if server_pid else None
    chosen = discovery.get("chosen") or {}
    text = chosen.get("formula")
    expr = None
    if text is not None:
        local = {v: sympy.Symbol(v) for v in api_names}
        expr = sympy.sympify(text, locals=local).xreplace(
            {sympy.Symbol(a): sympy.Symbol(b) for a, b in zip(api_names, names)})
    ok = judge(expr, true, names, timeout=args.judge_timeout)
    r2 = r2_of(expr, names, data)
    verdict = "SOLVED" if ok else ("accurate fit" if r2 is not None and r2 > 0.999 else "not solved")
    server_s = None
    if discovery.get("finished_at") and discovery.get("created_at"):
        from datetime import datetime
        server_s = (datetime.fromisoformat(discovery["finished_at"].replace("Z", "+00:00"))
                    - datetime.fromisoformat(discovery["created_at"].replace("Z", "+00:00"))).total_seconds()
    return {"id": entry["id"], "formula": entry["formula"], "variables": entry["variables"],
            "status": discovery["status"], "verdict": verdict, "solved": bool(ok), "seconds": round(seconds, 2),
            "server_s": server_s, "cpu_s": None if cpu is None else round(cpu, 2), "r2": r2,
            "found": None if expr is None else str(expr), "reason": discovery.get("reason"),
            "error": discovery.get("error"), "complexity": chosen.get("complexity"),
            "chosen_candidate": chosen.get("candidate"), "structure": chosen.get("structure"),
            "candidates": candidate_summary(client, discovery), "discovery_id": discovery["id"],
            "load": round(os.getloadavg()[0], 2)}


def code_commit() -> str:
    """The checkout's commit; a snapshot (git archive, no .git) names it in a COMMIT file."""
    if (ROOT / "COMMIT").exists():
        return (ROOT / "COMMIT").read_text().strip()
    out = subprocess.run(["git", "-C", str(ROOT), "log", "-1", "--format=%h"], capture_output=True, text=True)
    return out.stdout.strip() or "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formulas", type=Path, default=FORMULAS)
    parser.add_argument("--only", nargs="+", metavar="ID", help="formula ids to run (default: all)")
    parser.add_argument("--budget", type=float, default=120.0, help="budget.max_seconds of each discovery")
    parser.add_argument("--jsonl", type=Path, help="append one JSON line per formula as it finishes")
    parser.add_argument("--url", help="use this running service instead of starting one")
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--worker-nice", type=int, default=0, help="KAN_WORKER_NICE of the started server")
    parser.add_argument("--grace", type=float, default=300.0, help="seconds past the budget before cancelling")
    parser.add_argument("--judge-timeout", type=float, default=300.0)
    args = parser.parse_args()
    entries = json.loads(args.formulas.read_text())["formulas"]
    if args.only:
        unknown = set(args.only) - {e["id"] for e in entries}
        if unknown:
            parser.error(f"unknown formula id(s): {sorted(unknown)}")
    selected = [(i, e) for i, e in enumerate(entries) if not args.only or e["id"] in args.only]
    commit = code_commit()
    print(f"{args.formulas}: {len(selected)}/{len(entries)} formulas over HTTP, budget {args.budget:g} s, code {ROOT} "
          f"(commit {commit}), load {os.getloadavg()[0]:.1f} at start", flush=True)

    # SIGTERM (kill PID) ends the run like Ctrl-C: the server it started is stopped, not orphaned
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    server = None if args.url else Server(args.worker_nice)
    rows: list[dict] = []
    try:
        if server is not None:
            print(f"server imports: {server.kan_core_file()}", flush=True)
            server.__enter__()
            print(f"server {server.url}, data {server.tmp}", flush=True)
        url = args.url or server.url
        with httpx.Client(base_url=url, timeout=120) as client:
            for index, entry in selected:
                print(f"\n[{entry['id']}] {entry['formula']}   (load {os.getloadavg()[0]:.1f})", flush=True)
                row = run_one(client, entry, index, args, server.proc.pid if server else None)
                row["commit"] = commit
                rows.append(row)
                r2 = row["r2"]
                print(f"  {row['verdict']:12s} {row['seconds']:7.1f}s cpu {row['cpu_s']}s  "
                      f"R2={r2 if r2 is None else round(r2, 9)}  {(row['found'] or '-')[:160]}")
                print(f"        {row['status']}: {row['reason']}; chosen {(row['chosen_candidate'] or {}).get('id')}")
                for line in tree_lines(row["structure"]):
                    print(f"        | {line[:200]}")
                sys.stdout.flush()
                if args.jsonl:
                    with args.jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    finally:
        if server is not None:
            server.__exit__(None, None, None)
    if not rows:
        return
    print("\n" + summary_line("http", rows))
    print("misses: " + (", ".join(r["id"] for r in rows if not r["solved"]) or "none"))
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
