"""What a worker does with a claimed job, by the job's kind: a small registry of handlers.

A handler runs the job and writes its success outcome through the claim (service.worker.jobstate).
It raises `TrainingCancelled` when the job's `StopSignal` stopped it, and any other exception for the
job's own failure; service.worker.runner writes those outcomes, the same for every kind.

- `train`, `symbolic`: a kan_core pipeline (from the parent model for a symbolic job); the trained
  network, its metrics and formulas become a Model row, written with the `succeeded` status.
- `candidate`: one candidate of a discovery (kan_core.discovery.run_candidate), stopped at the
  discovery's deadline too; its CandidateResult lands in Job.result (service.discovery reads it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from kan_core import discovery as kd
from kan_core import formula as kan_formula
from kan_core import io as kan_io
from kan_core.discovery import dimensional
from kan_core.errors import TrainingCancelled
from kan_core.pipeline import PipelineConfig, PipelineResult, ProgressEvent, run_pipeline
from service import discovery
from service.config import Settings
from service.datasets import load_arrays
from service.ids import new_id
from service.models import Dataset, Job, JobKind, Model, utcnow
from service.worker import jobstate
from service.worker.progress import ProgressReporter, StopSignal, finite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobRun:
    """A claimed job and what its handler runs it with."""

    session_factory: sessionmaker[Session]
    settings: Settings
    claim: jobstate.Claim
    job: Job
    dataset: Dataset
    stop: StopSignal
    reporter: ProgressReporter


Handler = Callable[[JobRun], None]
HANDLERS: dict[JobKind, Handler] = {}


def handles(*kinds: JobKind) -> Callable[[Handler], Handler]:
    """Register the decorated function as the handler of jobs of `kinds`."""

    def register(handler: Handler) -> Handler:
        for kind in kinds:
            HANDLERS[kind] = handler
        return handler

    return register


def handler_for(kind: JobKind) -> Handler:
    if kind not in HANDLERS:  # discovery parents are never claimed: they advance on events
        raise LookupError(f"workers do not run jobs of kind {kind.value!r}")
    return HANDLERS[kind]


# --------------------------------------------------------------------------------------------------
# pipelines: train and symbolic jobs


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
            "r2": finite(metrics[j].get("r2")), "rmse": finite(metrics[j].get("rmse")),
        }
        for j, expr in enumerate(result.formulas)
    ]


def _metrics(result: PipelineResult) -> dict[str, Any]:
    stages = [
        {"name": r.name, "kind": r.kind, "seconds": round(r.seconds, 3), "train_rmse": finite(r.train_rmse),
         "test_rmse": finite(r.test_rmse), "width": list(r.width_after), "details": r.details}
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


@handles(JobKind.train, JobKind.symbolic)
def run_pipeline_job(run: JobRun) -> None:
    """A pipeline on the dataset, from the parent model when the job derives from one."""
    job, dataset = run.job, run.dataset
    initial = None
    if job.parent_model_id is not None:
        with run.session_factory() as session:
            parent = session.get(Model, job.parent_model_id)
        if parent is None:
            raise LookupError(f"model {job.parent_model_id!r}, which this job derives from, was deleted")
        initial = kan_io.loads(parent.weights, parent.kan_config)
    config = PipelineConfig.from_dict(job.config)
    log.info("job %s: running %d stage(s) on dataset %s", job.id, len(config.stages), job.dataset_id)
    result = run_pipeline(load_arrays(dataset), config, on_progress=run.reporter, should_stop=run.stop,
                          initial_model=initial, var_names=dataset.feature_names)
    model = _model_row(job, dataset, result)
    with run.session_factory() as session:
        jobstate.finish_succeeded(session, run.claim, model, run.reporter.progress)


# --------------------------------------------------------------------------------------------------
# discovery candidates


def _discovery_deadline(session_factory: sessionmaker[Session], job: Job) -> datetime | None:
    if job.parent_job_id is None:
        return None
    with session_factory() as session:
        parent = session.get(Job, job.parent_job_id)
        return discovery.candidate_deadline(parent) if parent is not None else None


@handles(JobKind.candidate)
def run_candidate_job(run: JobRun) -> None:
    """The engine's run_candidate, stopped at the discovery's deadline (as well as by cancel, the job
    time limit and shutdown). A candidate that ran but found no formula still succeeds (its result says
    why); one the discovery's deadline stopped is cancelled (the discovery ends and cancels the rest)."""
    job, dataset = run.job, run.dataset
    spec = kd.CandidateSpec.from_dict(job.config)
    deadline = _discovery_deadline(run.session_factory, job)
    left = None if deadline is None else max((deadline - utcnow()).total_seconds(), 0.01)

    def on_progress(event: kd.DiscoveryEvent) -> None:
        if event.pipeline is not None:
            run.reporter(ProgressEvent(**event.pipeline))

    log.info("job %s: candidate %s on dataset %s", job.id, spec.id, job.dataset_id)
    if dataset.units:  # searched in dimensionless groups (service.discovery.engine_dataset), written back
        inputs, target = dimensional.column_units(dataset.units, dataset.feature_names, dataset.target_names[0])
        result = dimensional.run_candidate_with_units(load_arrays(dataset), spec, inputs, target, on_progress,
                                                      run.stop, var_names=dataset.feature_names, max_seconds=left)
    else:
        result = kd.run_candidate(load_arrays(dataset), spec, on_progress, run.stop,
                                  var_names=dataset.feature_names, max_seconds=left)
    if result.status in ("cancelled", "timeout") and run.stop.reason is not None:  # cancel, job limit, shutdown
        raise TrainingCancelled(f"candidate stopped ({run.stop.reason})")
    run.reporter.flush()
    with run.session_factory() as session:
        if result.status == "timeout":  # the discovery's deadline
            jobstate.finish_cancelled(session, run.claim)
        elif result.status == "failed":
            jobstate.finish_failed(session, run.claim, "CandidateFailed", result.error or "the candidate failed",
                                   result=result.to_dict())
        else:
            jobstate.finish_with_result(session, run.claim, result.to_dict(), run.reporter.progress)
