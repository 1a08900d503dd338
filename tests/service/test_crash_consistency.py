"""Crash consistency: SIGKILL the API (a real `kan-service serve --workers 0` on SQLite) in the middle
of a burst of dataset uploads and job submissions from concurrent clients. Afterwards SQLite's
integrity and foreign-key checks pass, and after a restart every request that had been answered 2xx
is there, by id: an acknowledged write is never lost, and nothing half-written is left behind."""

from __future__ import annotations

import signal
import sqlite3
import threading
from pathlib import Path

import httpx

from e2e_support import Server
from jobs_support import wait_for

CLIENTS = 8
KILL_AFTER_ACKS = 60  # acknowledged writes before the kill; the other requests are in flight then
PIPELINE = {"model": {"width": [2, 2, 1], "grid": 3},
            "stages": [{"kind": "train", "opt": "Adam", "steps": 5, "update_grid": False}]}


def _dataset_body(client: int, i: int) -> dict:
    rows = [[(client * 31 + i * 7 + r) % 97 / 97.0, r / 40.0] for r in range(40)]
    return {"name": f"c{client}-{i}", "inputs": rows, "targets": [a + b for a, b in rows], "seed": i}


def test_sigkill_during_a_write_burst_loses_no_acknowledged_write(tmp_path: Path) -> None:
    settings = {"rate_limit_jobs_per_min": 0, "rate_limit_predict_per_s": 0}
    server = Server(tmp_path, workers=0, **settings).start()
    with server.client() as http:
        first = http.post("/v1/datasets", json=_dataset_body(99, 0))
        assert first.status_code == 201, first.text
    acked: dict[str, list[str]] = {"datasets": [first.json()["id"]], "jobs": []}
    lock = threading.Lock()
    killed = threading.Event()
    errors_before_kill: list[str] = []

    def client_loop(n: int) -> None:
        # a generous timeout: on a loaded machine a write may wait seconds for the SQLite lock
        with httpx.Client(base_url=server.url, timeout=120) as http:
            for i in range(10_000):
                if killed.is_set():
                    return
                try:
                    if i % 2 == 0:
                        r = http.post("/v1/datasets", json=_dataset_body(n, i))
                        kind = "datasets"
                    else:
                        with lock:
                            dataset_id = acked["datasets"][-1]
                        r = http.post("/v1/jobs", json={"dataset_id": dataset_id, **PIPELINE},
                                      headers={"Idempotency-Key": f"c{n}-{i}"})
                        kind = "jobs"
                except httpx.TransportError:
                    if not killed.is_set():
                        errors_before_kill.append(f"client {n}: transport error before the kill")
                    return
                if r.is_success:
                    with lock:
                        acked[kind].append(r.json()["id"])
                elif not killed.is_set():
                    errors_before_kill.append(f"client {n}: {r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    wait_for(lambda: len(acked["datasets"]) + len(acked["jobs"]) >= KILL_AFTER_ACKS, 120, 0.001, "acknowledged writes")
    server.process.send_signal(signal.SIGKILL)  # mid-burst: requests are being read, validated, committed
    killed.set()
    server.process.wait()
    for t in threads:
        t.join(30)
    assert errors_before_kill == []
    assert len(acked["jobs"]) > 5 and len(acked["datasets"]) > 5, acked

    # the file as the crash left it (WAL included), before anything else opens it
    db = sqlite3.connect(tmp_path / "kan.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        stored_jobs = {row[0] for row in db.execute("SELECT id FROM jobs")}
        stored_datasets = {row[0] for row in db.execute("SELECT id FROM datasets")}
    finally:
        db.close()
    assert set(acked["jobs"]) <= stored_jobs
    assert set(acked["datasets"]) <= stored_datasets

    restarted = Server(tmp_path, workers=0, **settings).start()
    try:
        with restarted.client() as http:
            for kind, ids in acked.items():
                for id_ in ids:
                    r = http.get(f"/v1/{kind}/{id_}")
                    assert r.status_code == 200, (kind, id_, r.text)
                    if kind == "jobs":
                        assert r.json()["status"] == "queued"
            # what was committed without an answer reaching its client is whole too
            for id_ in stored_datasets - set(acked["datasets"]):
                assert http.get(f"/v1/datasets/{id_}/data", params={"limit": 1}).status_code == 200
            # and the service takes writes again
            assert http.post("/v1/datasets", json=_dataset_body(0, 10_001)).status_code == 201
    finally:
        restarted.stop()
