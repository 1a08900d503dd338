"""Dashboard pages: jobs (list with status filters; one job with its live loss curves, stage progress,
cancel, and its error if it failed)."""

from __future__ import annotations

from fastapi import APIRouter

from service import jobs
from service.models import JobStatus
from service.ui.core import CallerDep, add_run_routes, render

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


add_run_routes(router, "jobs", jobs.follow)
