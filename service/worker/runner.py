"""Execute one claimed job: load its inputs, run the kan_core pipeline, store the result.

The database is touched only in short transactions, never across training:
- progress: `ProgressReporter` buffers every step's losses and writes Job.progress plus the new
  Job.history points at most every PROGRESS_INTERVAL_S, and at the end of every stage;
- stopping: `StopSignal` is the pipeline's `should_stop`; it reads the job's cancel flag and
  ownership (at most every STOP_CHECK_INTERVAL_S, so fast steps do not hammer the database) and
  also trips on the job time limit and on worker shutdown;
- the model row and the `succeeded` status are written in one transaction, guarded by the claim.

Outcomes: succeeded; cancelled (a client asked); failed with error {type, detail} (an exception,
the job time limit); re-queued (the worker is shutting down); nothing (the job was taken away from
this worker, e.g. re-queued after a missed heartbeat: whoever holds it now writes the outcome).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from kan_core import discovery as kd
from kan_core import formula as kan_formula
from kan_core import io as kan_io
from kan_core.errors import TrainingCancelled
from kan_core.pipeline import PipelineConfig, PipelineResult, ProgressEvent, run_pipeline
from service import discovery, jobs
from service.config import Settings
from service.datasets import load_arrays
from service.ids import new_id
from service.models import Dataset, Job, JobKind, Model, utcnow

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_S = 0.25
STOP_CHECK_INTERVAL_S = 0.05


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class ProgressReporter:
    """The pipeline's `on_progress`: throttled writes of Job.progress and Job.history."""

    def __init__(self, session_factory: sessionmaker[Session], claim: jobs.Claim, *,
                 interval_s: float = PROGRESS_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.session_factory = session_factory
        self.claim = claim
        self.interval_s = interval_s
        self.clock = clock
        self.progress: dict[str, Any] | None = None
        self._points: list[dict[str, Any]] = []
        self._last_write = -math.inf
        self.writes = 0

    def __call__(self, event: ProgressEvent) -> None:
        self.progress = {"stage": event.stage_name, "stage_index": event.stage_index, "stages": event.n_stages,
                         "step": event.step, "steps": event.steps, "train_rmse": _finite(event.train_rmse),
                         "test_rmse": _finite(event.test_rmse)}
        if event.phase == "step":
            self._points.append({"stage": event.stage_name, "stage_index": event.stage_index, "step": event.step,
                                 "train_rmse": _finite(event.train_rmse), "test_rmse": _finite(event.test_rmse),
                                 "reg": _finite(event.reg)})
            if self.clock() - self._last_write < self.interval_s:
                return
        self.flush()  # every stage start and end, and steps at most every interval_s

    def flush(self) -> bool:
        """Write what is buffered (False when the job is no longer this worker's)."""
        if self.progress is None:
            return True
        with self.session_factory() as session:
            owned = jobs.record_progress(session, self.claim, self.progress, self._points)
        self._points = []
        self._last_write = self.clock()
        self.writes += 1
        return owned


class StopSignal:
    """The pipeline's `should_stop`; `reason` says why it returned True."""

    def __init__(self, session_factory: sessionmaker[Session], claim: jobs.Claim, *, deadline: float,
                 shutdown: threading.Event, interval_s: float = STOP_CHECK_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic):
        self.session_factory = session_factory
        self.claim = claim
        self.deadline = deadline
        self.shutdown = shutdown
        self.interval_s = interval_s
        self.clock = clock
        self.reason: str | None = None  # cancel | lost | timeout | shutdown
        self._last_check = -math.inf

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self._check()
        return self.reason is not None

    def _check(self) -> str | None:
        now = self.clock()
        if self.shutdown.is_set():
            return "shutdown"
        if now >= self.deadline:
            return "timeout"
        if now - self._last_check < self.interval_s:
            return None
        self._last_check = now
        with self.session_factory() as session:
            return jobs.stop_reason(session, self.claim)


def _load_inputs(session: Session, job_id: str) -> tuple[Job, Dataset, Model | None]:
    job = session.get(Job, job_id)
    dataset = session.get(Dataset, job.dataset_id)
    parent = session.get(Model, job.parent_model_id) if job.parent_model_id else None
    if job.parent_model_id and parent is None:
        raise LookupError(f"model {job.parent_model_id!r}, which this job derives from, was deleted")
    return job, dataset, parent


def _formulas(result: PipelineResult, target_names: list[str]) -> list[dict[str, Any]] | None:
    """Per output: the formula (text, latex, complexity) and its R² / RMSE on the test split."""
    if result.formulas is None:
        return None
    metrics = result.formula_metrics or [{} for _ in result.formulas]
    return [
        {
            "output": j, "name": target_names[j] if j < len(target_names) else None, "variables": result.var_names,
            "text": str(expr), "latex": kan_formula.formula_latex(expr),
            "complexity": int(kan_formula.formula_complexity(expr)),
            "r2": _finite(metrics[j].get("r2")), "rmse": _finite(metrics[j].get("rmse")),
        }
        for j, expr in enumerate(result.formulas)
    ]


def _metrics(result: PipelineResult) -> dict[str, Any]:
    stages = [
        {"name": r.name, "kind": r.kind, "seconds": round(r.seconds, 3), "train_rmse": _finite(r.train_rmse),
         "test_rmse": _finite(r.test_rmse), "width": list(r.width_after), "details": r.details}
        for r in result.stages
    ]
    final = {"train_rmse": stages[-1]["train_rmse"], "test_rmse": stages[-1]["test_rmse"]} if stages else {}
    return {"stages": stages, "final": final, "seconds": round(result.seconds, 3)}


def _model_row(job: Job, dataset: Dataset, result: PipelineResult) -> Model:
    weights, kan_config = kan_io.dumps(result.model)
    return Model(
        id=new_id("mdl"), tenant_id=job.tenant_id, job_id=job.id, dataset_id=job.dataset_id,
        parent_model_id=job.parent_model_id, kan_config=kan_config, weights=weights,
        width=[int(w) for w in result.model.width], metrics=_metrics(result),
        formulas=_formulas(result, [str(n) for n in dataset.target_names]),
    )


def run_job(session_factory: sessionmaker[Session], settings: Settings, claim: jobs.Claim, *,
            shutdown: threading.Event) -> None:
    """Run the claimed job to one of its outcomes. Never raises for a job's own failure."""
    started = time.monotonic()
    stop = StopSignal(session_factory, claim, deadline=started + settings.job_timeout_s, shutdown=shutdown)
    reporter = ProgressReporter(session_factory, claim)
    try:
        with session_factory() as session:
            job, dataset, parent = _load_inputs(session, claim.job_id)
            discovery_deadline = _discovery_deadline(session, job)
        if job.kind is JobKind.candidate:
            _run_candidate(session_factory, settings, claim, job, dataset, stop, reporter, discovery_deadline)
            return
        config = PipelineConfig.from_dict(job.config)
        initial = kan_io.loads(parent.weights, parent.kan_config) if parent is not None else None
        log.info("job %s: running %d stage(s) on dataset %s", job.id, len(config.stages), job.dataset_id)
        result = run_pipeline(load_arrays(dataset), config, on_progress=reporter, should_stop=stop,
                              initial_model=initial, var_names=dataset.feature_names)
        model = _model_row(job, dataset, result)
    except TrainingCancelled:
        _stopped(session_factory, claim, stop, reporter, settings)
    except Exception as exc:  # the job's own failure: record it, keep the worker alive
        log.exception("job %s failed", claim.job_id)
        with session_factory() as session:
            jobs.finish_failed(session, claim, type(exc).__name__, str(exc) or repr(exc))
    else:
        with session_factory() as session:
            jobs.finish_succeeded(session, claim, model, reporter.progress)
        log.info("job %s done in %.1f s", claim.job_id, time.monotonic() - started)
    finally:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        _advance_parent(session_factory, settings, claim)


def _discovery_deadline(session: Session, job: Job) -> datetime | None:
    if job.parent_job_id is None:
        return None
    parent = session.get(Job, job.parent_job_id)
    return discovery.candidate_deadline(parent) if parent is not None else None


def _run_candidate(session_factory: sessionmaker[Session], settings: Settings, claim: jobs.Claim, job: Job,
                   dataset: Dataset, stop: StopSignal, reporter: ProgressReporter, deadline: datetime | None) -> None:
    """A discovery candidate: the engine's run_candidate, stopped at the discovery's deadline (as well as
    by cancel, the job time limit and shutdown). Its CandidateResult is stored in Job.result; a candidate
    that ran but found no formula still succeeds (the result says why)."""
    spec = kd.CandidateSpec.from_dict(job.config)
    left = None if deadline is None else max((deadline - utcnow()).total_seconds(), 0.01)

    def on_progress(event: kd.DiscoveryEvent) -> None:
        if event.pipeline is not None:
            reporter(ProgressEvent(**event.pipeline))

    log.info("job %s: candidate %s on dataset %s", job.id, spec.id, job.dataset_id)
    result = kd.run_candidate(load_arrays(dataset), spec, on_progress, stop, var_names=dataset.feature_names,
                              max_seconds=left)
    if result.status in ("cancelled", "timeout") and stop.reason is not None:  # cancel, job limit, shutdown
        _stopped(session_factory, claim, stop, reporter, settings)
        return
    reporter.flush()
    with session_factory() as session:
        if result.status == "timeout":  # the discovery's deadline: it ends and cancels what still runs
            jobs.finish_cancelled(session, claim)
        elif result.status == "failed":
            jobs.finish_failed(session, claim, "CandidateFailed", result.error or "the candidate failed",
                               result=result.to_dict())
        else:
            jobs.finish_with_result(session, claim, result.to_dict(), reporter.progress)


def _advance_parent(session_factory: sessionmaker[Session], settings: Settings, claim: jobs.Claim) -> None:
    """A candidate just ended: move its discovery on now rather than at the next heartbeat."""
    try:
        with session_factory() as session:
            parent_id = session.scalar(select(Job.parent_job_id).where(Job.id == claim.job_id))
            if parent_id is not None:
                discovery.advance_discovery(session, settings, parent_id)
    except Exception:  # the heartbeat's pass advances it anyway
        log.exception("job %s: could not advance its discovery", claim.job_id)


def _stopped(session_factory: sessionmaker[Session], claim: jobs.Claim, stop: StopSignal,
             reporter: ProgressReporter, settings: Settings) -> None:
    if stop.reason in ("cancel", "timeout"):
        reporter.flush()  # keep the history up to the step it stopped at
    with session_factory() as session:
        if stop.reason == "cancel":
            jobs.finish_cancelled(session, claim)
        elif stop.reason == "timeout":
            jobs.finish_failed(session, claim, "JobTimeout", jobs.timeout_detail(settings))
        elif stop.reason == "shutdown":
            jobs.release(session, claim)
        else:
            log.warning("job %s was taken away from worker %s during training; dropping it",
                        claim.job_id, claim.worker_id)
