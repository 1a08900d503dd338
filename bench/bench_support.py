"""What the service benchmarks share: a free local port, and waiting for a server subprocess to answer."""

from __future__ import annotations

import contextlib
import socket
import statistics
import subprocess
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until_up(process: subprocess.Popen, url: str, timeout: float, log_path: Path, every: float = 0.3) -> None:
    """Return once GET `url` answers 200; RuntimeError (with the tail of the server's log at `log_path`)
    when `process` exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s; see {log_path}")
        time.sleep(every)
    raise RuntimeError(f"the server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")


def summary_line(who: str, rows: list[dict]) -> str:
    """``who: solved a/n (p%), accurate fits ..., median ... s``: one formula set's result (rows with
    ``solved``, ``verdict`` and ``seconds``), printed alike by bench_discovery and bench_api."""
    solved = sum(r["solved"] for r in rows)
    accurate = sum(r["verdict"] == "accurate fit" for r in rows)
    med = statistics.median(r["seconds"] for r in rows)
    n = len(rows)
    return (f"{who}: solved {solved}/{n} ({100 * solved / n:.0f}%), accurate fits (not solutions) "
            f"{accurate} ({100 * accurate / n:.0f}%), median {med:.1f} s per formula")
