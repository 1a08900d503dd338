"""Formula discovery, no HTTP: a discovery is a parent job (kind `discovery`) whose candidates run as
child jobs (kind `candidate`, Job.parent_job_id) through the normal queue, so local and Celery workers
share them. The engine decides what to try and what to keep: `kan_core.discovery.candidates` gives
the candidate specs (stored as the children's Job.config), each worker runs one with
`kan_core.discovery.run_candidate` (its CandidateResult lands in Job.result), and the parent keeps
`pareto_front` / `choose` of the results and stops early on `good_enough` or `at_noise_floor` (all
of them read each candidate's validation rows, carved from the training split; the test split only
measures).

The parent never holds a worker: it is created `running` (claims only take `queued` jobs) and is
advanced event-driven by `advance_discovery`, which the worker calls right after it finishes a
candidate and every worker's heartbeat calls for every running discovery (the deadline). It ends the
search when every candidate is final, the deadline passed, a candidate is good enough, or a cancel
was asked; then cancels the remaining candidates and stores the Pareto front (complexity vs validation
RMSE of each candidate's formula) and the chosen formula on the parent, with a compare-and-set on the
parent's status, so two workers finishing candidates at once end it once.

Batches of discoveries are service.batches'.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, defer

from kan_core import discovery as kd
from kan_core.data import Dataset as KanDataset
from kan_core.discovery import dimensional
from kan_core.units import DimensionError, buckingham
from kan_core.pipeline import TrainStage
from service import datasets, idempotency, model_store
from service.datasets import load_arrays
from service.config import Settings, queue_for
from service.errors import Conflict, InvalidInput, NotFound
from service.ids import new_id
from service.models import Dataset, Job, JobKind, JobStatus, utcnow
from service.rows import rows_json, validate_inputs
from service.schemas.common import decode_cursor, split_page
from service.schemas.discoveries import (
    Budget,
    CandidateJob,
    DiscoveryCreate,
    DiscoveryOptions,
    DiscoveryPublic,
    DiscoverySummary,
    FrontPoint,
)
from service.tenancy import get_owned, owned

log = logging.getLogger(__name__)

DISCOVERIES_ENDPOINT = "POST /v1/discoveries"


# --------------------------------------------------------------------------------------------------
# the engine (kan_core.discovery): candidates in, front and choice out


def candidate_specs(settings: Settings, dataset: Dataset, budget: Budget,
                    options: DiscoveryOptions) -> list[kd.CandidateSpec]:
    """The engine's candidates for the dataset (`kan_core.discovery.candidates`), most promising
    first, at most budget.max_candidates. `options.train_steps` overrides the steps of every training
    stage. A dataset the engine cannot search (several targets) is refused, naming `dataset_id`."""
    if options.train_steps is not None and options.train_steps > settings.max_steps:
        raise InvalidInput(f"at most {settings.max_steps} steps per stage, got {options.train_steps}",
                           field="options.train_steps")
    if len(dataset.target_names) != 1:
        raise InvalidInput(f"discovery needs a dataset with one target, {dataset.id!r} has "
                           f"{len(dataset.target_names)}", field="dataset_id")
    engine_budget = kd.Budget(max_candidates=budget.max_candidates, max_seconds=budget.max_seconds)
    try:
        specs = kd.candidates(engine_dataset(dataset), engine_budget, seed=options.seed)
    except ValueError as exc:
        raise InvalidInput(str(exc), field="dataset_id") from exc
    if options.train_steps is None:
        return specs
    steps = options.train_steps
    return [replace(spec, pipeline=replace(spec.pipeline, stages=tuple(
        replace(stage, steps=steps, stop_grid_update_step=min(stage.stop_grid_update_step, steps))
        if isinstance(stage, TrainStage) else stage for stage in spec.pipeline.stages)))
        for spec in specs]


def engine_dataset(dataset: Dataset) -> KanDataset:
    """What the candidates search: the stored arrays, or with units their dimensionless π groups
    (`kan_core.discovery.dimensional`; the workers write each formula back in the columns). Units
    that allow no dimensionally consistent formula are refused, naming `dataset_id`."""
    data = load_arrays(dataset)
    if not dataset.units:
        return data
    try:
        inputs, target = dimensional.column_units(dataset.units, dataset.feature_names, dataset.target_names[0])
        return dimensional.reduce_dataset(data, buckingham(inputs, target, dataset.feature_names))
    except DimensionError as exc:
        raise InvalidInput(f"the dataset's units: {exc}", field="dataset_id") from None


def candidate_deadline(parent: Job) -> datetime:
    """When the discovery's time budget runs out (its candidates stop there)."""
    return _as_utc(parent.created_at) + timedelta(seconds=float(parent.config["budget"]["max_seconds"]))


# --------------------------------------------------------------------------------------------------
# create, read, list, cancel


def check_budget(settings: Settings, budget: Budget, where: str = "budget") -> Budget:
    """The budget within the deployment's caps: defaults are lowered to them, explicit values past them
    are refused."""
    budget = budget.model_copy(update={
        name: min(getattr(budget, name), cap) for name, cap in (
            ("max_candidates", settings.max_discovery_candidates), ("max_seconds", settings.max_discovery_seconds))
        if name not in budget.model_fields_set})
    if budget.max_candidates > settings.max_discovery_candidates:
        raise InvalidInput(f"at most {settings.max_discovery_candidates} candidates, got {budget.max_candidates}",
                           field=f"{where}.max_candidates")
    if budget.max_seconds > settings.max_discovery_seconds:
        raise InvalidInput(f"at most {settings.max_discovery_seconds:g} s, got {budget.max_seconds:g}",
                           field=f"{where}.max_seconds")
    return budget


def add_discovery(session: Session, settings: Settings, tenant: str, dataset: Dataset, budget: Budget,
                   options: DiscoveryOptions) -> tuple[Job, list[Job]]:
    """The parent and its candidate jobs, added to the session (not committed)."""
    now = utcnow()
    parent = Job(id=new_id("dsc"), tenant_id=tenant, kind=JobKind.discovery, dataset_id=dataset.id,
                 config={"budget": budget.model_dump(mode="json"), "options": options.model_dump(mode="json")},
                 status=JobStatus.running, started_at=now, created_at=now)
    specs = candidate_specs(settings, dataset, budget, options)
    # workers claim queued jobs in id order; ids made in the same millisecond differ only by their random
    # part, so sort them to make claims follow the engine's order (most promising first)
    ids = sorted(new_id("job") for _ in specs)
    children = [
        Job(id=job_id, tenant_id=tenant, kind=JobKind.candidate, dataset_id=dataset.id, parent_job_id=parent.id,
            config=spec.to_dict(), queue=queue_for(spec.pipeline.model.device))
        for job_id, spec in zip(ids, specs)
    ]
    if not children:
        raise InvalidInput("the engine proposed no candidate for this dataset", field="dataset_id")
    parent.progress = {"candidates_done": 0, "candidates_total": len(children), "best": None}
    session.add(parent)
    session.add_all(children)
    return parent, children


def create_discovery(session: Session, settings: Settings, tenant: str, body: DiscoveryCreate, *,
                     idempotency_key: str | None = None) -> tuple[Job, list[Job]]:
    """Queue a discovery on a dataset: the parent job and its candidates (to be dispatched). A retry
    with the same Idempotency-Key and body returns the first request's discovery (and no candidates)."""
    children: list[Job] = []

    def add() -> Job:
        budget = check_budget(settings, body.budget)
        dataset = datasets.get_dataset(session, tenant, body.dataset_id)
        parent, made = add_discovery(session, settings, tenant, dataset, budget, body.options)
        children.extend(made)
        return parent

    parent, created = idempotency.create_once(
        session, tenant, DISCOVERIES_ENDPOINT, idempotency_key, idempotency.fingerprint(body.model_dump(mode="json")),
        create=add, load=lambda discovery_id: get_discovery(session, tenant, discovery_id))
    if not created:
        return parent, []
    log.info("discovery %s: %d candidate(s) queued for dataset %s", parent.id, len(children), parent.dataset_id)
    return parent, children


def get_discovery(session: Session, tenant: str, discovery_id: str) -> Job:
    job = get_owned(session, Job, tenant, discovery_id, resource="discovery", options=[defer(Job.history)],
                    populate_existing=True)
    if job.kind is not JobKind.discovery:
        raise NotFound("discovery", discovery_id)
    return job


def _children(session: Session, parent_id: str) -> list[Job]:
    return list(session.scalars(
        select(Job).options(defer(Job.history)).where(Job.parent_job_id == parent_id).order_by(Job.id)
    ).all())


def public(session: Session, job: Job) -> DiscoveryPublic:
    result = job.result or {}
    return DiscoveryPublic(
        id=job.id, status=job.status, dataset_id=job.dataset_id, budget=job.config["budget"],
        options=job.config["options"], progress=job.progress, front=result.get("front", []),
        chosen=result.get("chosen"), reason=result.get("reason"), error=job.error,
        candidates=[CandidateJob(job_id=c.id, status=c.status) for c in _children(session, job.id)],
        created_at=job.created_at, finished_at=job.finished_at,
    )


def list_discoveries(session: Session, tenant: str, *, limit: int, cursor: str | None) -> tuple[list[DiscoverySummary], str | None]:
    """Newest first; `cursor` continues after the last discovery of the previous page."""
    stmt = owned(select(Job).options(defer(Job.history)), Job, tenant).where(Job.kind == JobKind.discovery)
    if (after := decode_cursor(cursor)) is not None:
        stmt = stmt.where(Job.id < after)
    rows, next_cursor = split_page(session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)).all(), limit)
    return [DiscoverySummary(id=j.id, status=j.status, dataset_id=j.dataset_id, chosen=(j.result or {}).get("chosen"),
                             created_at=j.created_at, finished_at=j.finished_at) for j in rows], next_cursor


def _cancel_children(session: Session, parent_id: str, now: datetime) -> None:
    """Queued candidates are cancelled at once, running ones asked to stop (their worker marks them)."""
    session.execute(update(Job).where(Job.parent_job_id == parent_id, Job.status == JobStatus.queued)
                    .values(status=JobStatus.cancelled, cancel_requested=True, finished_at=now))
    session.execute(update(Job).where(Job.parent_job_id == parent_id, Job.status == JobStatus.running)
                    .values(cancel_requested=True))


def cancel_discovery(session: Session, settings: Settings, tenant: str, discovery_id: str) -> Job:
    """Cancel a discovery and all its candidates; Conflict when it already ended."""
    job = get_discovery(session, tenant, discovery_id)
    asked = session.execute(update(Job).where(Job.id == job.id, Job.status == JobStatus.running)
                            .values(cancel_requested=True)).rowcount
    session.commit()
    if not asked:
        raise Conflict(f"discovery {job.id!r} is already {job.status.value}; only running discoveries can be cancelled",
                       job_status=job.status.value)
    advance_discovery(session, settings, job.id)
    return get_discovery(session, tenant, discovery_id)


def predict(session: Session, settings: Settings, store: model_store.ModelStore, tenant: str, discovery_id: str,
            inputs: Sequence[Sequence[float]], point: int | None) -> tuple[dict[str, Any], list[list[float | None]]]:
    """Evaluate a discovery's formula on input rows: the chosen one, or front[point], compiled once per
    formula text by the model store. Conflict while the discovery has no formula (running, failed,
    cancelled before any)."""
    job = get_discovery(session, tenant, discovery_id)
    result = job.result or {}
    front = result.get("front") or []
    if point is not None and front and point >= len(front):
        raise InvalidInput(f"the front has {len(front)} formula(s); point must be below that, got {point}",
                           field="point")
    chosen = result.get("chosen") if point is None else (front[point] if front else None)
    if chosen is None:
        raise Conflict(f"discovery {job.id!r} ({job.status.value}) has no formula to predict with",
                       job_status=job.status.value)
    names = chosen["variables"]
    x = validate_inputs(inputs, len(names), settings.max_predict_rows)
    return chosen, rows_json(store.text_formula(chosen["formula"], names).evaluate(x))


# --------------------------------------------------------------------------------------------------
# advancing a discovery (workers)


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value


def candidate_result(child: Job) -> kd.CandidateResult | None:
    """What a finished candidate job produced (the engine's CandidateResult), None before it ended."""
    return kd.CandidateResult.from_dict(child.result) if child.result else None


def front_point(child: Job, result: kd.CandidateResult) -> dict[str, Any]:
    config = child.config or {}
    return FrontPoint(
        complexity=result.complexity, test_rmse=result.test_rmse, r2=result.test_r2, train_rmse=result.train_rmse,
        val_rmse=result.val_rmse, noise_rmse=result.noise_rmse,
        formula=result.formula, latex=result.latex or "", variables=list(result.var_names), job_id=child.id,
        candidate={"id": config.get("id"), "family": config.get("family"), "label": config.get("label", "")},
        structure=result.structure,
    ).model_dump(mode="json")


def advance_discovery(session: Session, settings: Settings, parent_id: str, *, now: datetime | None = None) -> bool:
    """Move a running discovery on: record progress, or end it (see the module docstring). True when
    this call ended it. Safe from several workers at once: the end is a compare-and-set on status."""
    now = now or utcnow()
    parent = session.get(Job, parent_id, options=[defer(Job.history)], populate_existing=True)
    if parent is None or parent.kind is not JobKind.discovery or parent.status.is_final:
        session.rollback()
        return False
    children = _children(session, parent_id)
    results = [(c, r) for c in children if (r := candidate_result(c)) is not None]
    job_of = {r.spec_id: c for c, r in results}  # spec ids are unique within a discovery
    scored = [r for _, r in results if r.has_formula]
    done = sum(c.status.is_final for c in children)
    best = min(scored, key=kd.val_rmse, default=None)
    progress = {"candidates_done": done, "candidates_total": len(children),
                "best": front_point(job_of[best.spec_id], best) if best is not None else None}
    max_seconds = float(parent.config["budget"]["max_seconds"])
    if parent.cancel_requested:
        reason = "cancelled"
    elif any(kd.good_enough(r) for r in scored):
        reason = "a candidate's formula fits the validation rows to numerical precision"
    elif any(kd.at_noise_floor(r) for r in scored):
        reason = "a candidate's formula fits the validation rows down to the data's noise"
    elif done == len(children):
        reason = "every candidate finished"
    elif now >= candidate_deadline(parent):
        reason = f"the time budget ({max_seconds:g} s) ran out"
    else:
        if progress != parent.progress:
            session.execute(update(Job).where(Job.id == parent_id, Job.status == JobStatus.running)
                            .values(progress=progress))
        session.commit()
        return False
    front_results = kd.pareto_front(scored)
    chosen_result = kd.choose(front_results)
    front = [front_point(job_of[r.spec_id], r) for r in front_results]
    chosen = front[front_results.index(chosen_result)] if chosen_result is not None else None
    values: dict[str, Any] = {"finished_at": now, "progress": progress,
                              "result": {"front": front, "chosen": chosen, "reason": reason}}
    if parent.cancel_requested:
        values["status"] = JobStatus.cancelled
    elif chosen is not None:
        values["status"] = JobStatus.succeeded
    else:
        failed = [c.error["detail"] for c in children if c.error]
        values["status"] = JobStatus.failed
        values["error"] = {"type": "NoFormula", "detail": f"{reason}, and no candidate produced a formula"
                           + (f" (first failure: {failed[0]})" if failed else "")}
    ended = session.execute(update(Job).where(Job.id == parent_id, Job.status == JobStatus.running)
                            .values(**values)).rowcount == 1
    if not ended:  # another worker ended it first
        session.rollback()
        return False
    _cancel_children(session, parent_id, now)
    session.commit()
    log.info("discovery %s %s: %s; front of %d formula(s)", parent_id, values["status"].value, reason, len(front))
    return True


def advance_all(session: Session, settings: Settings, *, now: datetime | None = None) -> list[str]:
    """Advance every running discovery (the heartbeat's periodic pass: deadlines); the ids it ended."""
    running = session.scalars(
        select(Job.id).where(Job.kind == JobKind.discovery, Job.status == JobStatus.running)
    ).all()
    session.rollback()
    return [job_id for job_id in running if advance_discovery(session, settings, job_id, now=now)]
