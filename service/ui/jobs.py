"""Dashboard pages: jobs (list with status filters; one job with its live loss curves, stage progress,
cancel, and its error if it failed)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from service import jobs
from service.models import JobStatus
from service.ui.core import PREFIX, CallerDep, SameOrigin, live_stream, render

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
    return await live_stream(caller, jobs.follow, job_id)


@router.post("/jobs/{job_id}/cancel", dependencies=[SameOrigin])
async def cancel(caller: CallerDep, job_id: str) -> RedirectResponse:
    await caller.json("POST", f"/jobs/{job_id}/cancel")
    return RedirectResponse(f"{PREFIX}/jobs/{job_id}", status_code=303)
