"""Dashboard pages: jobs (list with status filters; one job with its live loss curves, stage progress,
cancel, and its error if it failed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from service import jobs
from service.api.sse import EVENT_POLL_S, event_stream
from service.errors import NotFound
from service.models import JobStatus
from service.ui.core import PREFIX, CallerDep, SameOrigin, problem_page, render

router = APIRouter()
STATUSES = [status.value for status in JobStatus]
PAGE_ROWS = 200  # jobs on one list page (the API's largest page); "Older…" follows the cursor


@router.get("/jobs")
async def jobs_page(caller: CallerDep, status: str | None = None, cursor: str | None = None):
    page = await caller.get("/jobs", limit=PAGE_ROWS, cursor=cursor, status=status or None)
    return render(caller, "jobs.html", page=page, status=status or "", statuses=STATUSES)


@router.get("/jobs/{job_id}")
async def job_page(caller: CallerDep, job_id: str):
    job = await caller.get(f"/jobs/{job_id}")
    history = await caller.get(f"/jobs/{job_id}/history")
    return render(caller, "job.html", job=job, history=history["points"])


@router.get("/jobs/{job_id}/events")
async def job_events(caller: CallerDep, job_id: str):
    """The job's event stream (as GET /v1/jobs/{id}/events) for the caller's tenant."""
    factory = caller.request.app.state.read_session_factory
    events = jobs.follow(factory, caller.principal.tenant_id, job_id, interval_s=EVENT_POLL_S)
    try:
        return await event_stream(events)
    except NotFound as exc:
        return problem_page(caller.request, caller, exc)


@router.post("/jobs/{job_id}/cancel", dependencies=[SameOrigin])
async def cancel(caller: CallerDep, job_id: str) -> RedirectResponse:
    await caller.json("POST", f"/jobs/{job_id}/cancel")
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)
