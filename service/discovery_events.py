"""A discovery's server-sent event stream, no HTTP: what changed since the last look, as (event, JSON
data) pairs. The database is the source of truth (candidates run on workers anywhere), so this polls
it from a worker thread, as `jobs.follow` does for one job.

Events, in the order they happen:
- `progress`: the discovery's status and DiscoveryProgress (candidates done / total, best so far),
  whenever either changes; the first event of every stream.
- `candidate_started`: a candidate job began running (job id, candidate id, family, label).
- `candidate_finished`: a candidate job ended (status; its formula, complexity, test RMSE if any).
- `best`: the most accurate formula so far changed (a FrontPoint).
- `end`: once, last: final status, why the search ended, the chosen formula, the front's size.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sqlalchemy import select
from sqlalchemy.orm import Session, load_only, sessionmaker

from service import discovery
from service.models import Job, JobStatus

_RESULT_FIELDS = ("status", "formula", "complexity", "test_rmse", "test_r2", "error")


def _candidate(child: Job) -> dict[str, Any]:
    config = child.config or {}
    return {"job_id": child.id, "status": child.status.value, "candidate_id": config.get("id"),
            "family": config.get("family"), "label": config.get("label", "")}


def _snapshot(session_factory: sessionmaker[Session], tenant: str, discovery_id: str
              ) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any] | None]:
    """(progress event data, candidates with their results once final, end event data or None)."""
    with session_factory() as session:
        parent = discovery.get_discovery(session, tenant, discovery_id)
        children = session.scalars(
            select(Job).options(load_only(Job.id, Job.status, Job.config, Job.result))
            .where(Job.parent_job_id == parent.id).order_by(Job.id)
        ).all()
        candidates = []
        for child in children:
            data = _candidate(child)
            if child.status.is_final:
                data["result"] = {k: (child.result or {}).get(k) for k in _RESULT_FIELDS} if child.result else None
            candidates.append(data)
        progress = {"discovery_id": parent.id, "status": parent.status.value, "progress": parent.progress}
        end = None
        if parent.status.is_final:
            result = parent.result or {}
            end = {"discovery_id": parent.id, "status": parent.status.value, "reason": result.get("reason"),
                   "chosen": result.get("chosen"), "front_size": len(result.get("front") or []),
                   "error": parent.error}
        return progress, candidates, end


async def follow(session_factory: sessionmaker[Session], tenant: str, discovery_id: str, *,
                 interval_s: float = 0.25) -> AsyncIterator[tuple[str, str]]:
    """(event, JSON data) pairs until the discovery ends; NotFound (before any event) when it does not
    exist for this tenant."""
    last_progress: dict[str, Any] | None = None
    seen: dict[str, str] = {}  # candidate job id -> the status last reported
    best: dict[str, Any] | None = None
    while True:
        progress, candidates, end = await anyio.to_thread.run_sync(_snapshot, session_factory, tenant, discovery_id)
        if progress != last_progress:
            yield "progress", json.dumps(progress)
            last_progress = progress
        for candidate in candidates:
            before, now = seen.get(candidate["job_id"]), candidate["status"]
            if now == JobStatus.running.value and before != now:
                yield "candidate_started", json.dumps({k: v for k, v in candidate.items() if k != "result"})
            if JobStatus(now).is_final and (before is None or not JobStatus(before).is_final):
                yield "candidate_finished", json.dumps(candidate)
            seen[candidate["job_id"]] = now
        new_best = (progress["progress"] or {}).get("best")
        if new_best is not None and new_best != best:
            yield "best", json.dumps(new_best)
            best = new_best
        if end is not None:
            yield "end", json.dumps(end)
            return
        await asyncio.sleep(interval_s)
