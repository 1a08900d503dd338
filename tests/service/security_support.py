"""Helpers for the authentication, tenant isolation and API contract tests: API keys made with
service.auth (as `kan-service keys create` does), and one tenant's dataset, jobs and model inserted
through the ORM (as the API and a worker would write them)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session, sessionmaker

from jobs_support import insert_dataset, tiny_pipeline
from kan_core import io as kan_io
from kan_core.model import KAN
from service import auth
from service.ids import new_id
from service.models import Batch, Job, JobKind, JobStatus, Model, Scope
from service.schemas.jobs import JobCreate


def make_key(factory: sessionmaker[Session], *, scope: Scope | str = Scope.admin, tenant: str = "default") -> str:
    """A new API key's token."""
    with factory() as session:
        _, token = auth.create_key(session, scope=Scope(scope), tenant=tenant, name="test")
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass(frozen=True)
class TenantData:
    tenant: str
    dataset_id: str
    job_id: str          # succeeded, made model_id
    queued_job_id: str   # still queued (cancellable)
    model_id: str
    discovery_id: str = ""  # running, no candidates (cancellable)
    batch_id: str = ""


def seed_tenant(factory: sessionmaker[Session], tenant: str, *, seed: int = 0) -> TenantData:
    """A dataset (2 inputs, 1 target), a succeeded job with its [2, 2, 1] model, and a queued job."""
    dataset_id = insert_dataset(factory, tenant=tenant, seed=seed)
    weights, config = kan_io.dumps(KAN([2, 2, 1], grid=3, k=3, seed=seed))
    job_config = JobCreate.model_validate({"dataset_id": dataset_id, **tiny_pipeline()}).pipeline_dict()
    job_id, queued_id, model_id = new_id("job"), new_id("job"), new_id("mdl")
    with factory() as session, session.begin():
        for id_, status in ((job_id, JobStatus.succeeded), (queued_id, JobStatus.queued)):
            session.add(Job(id=id_, tenant_id=tenant, kind=JobKind.train, dataset_id=dataset_id,
                            config=job_config, status=status))
        session.flush()
        session.add(Model(id=model_id, tenant_id=tenant, job_id=job_id, dataset_id=dataset_id, kan_config=config,
                          weights=weights, width=[2, 2, 1], metrics={"final": {"train_rmse": 0.1, "test_rmse": 0.1}}))
    discovery_id, batch_id = new_id("dsc"), new_id("bat")
    with factory() as session, session.begin():
        session.add(Job(id=discovery_id, tenant_id=tenant, kind=JobKind.discovery, dataset_id=dataset_id,
                        status=JobStatus.running, config={"budget": {"max_candidates": 1, "max_seconds": 60},
                                                          "options": {"seed": 0}}))
        session.add(Batch(id=batch_id, tenant_id=tenant, budget={"max_candidates": 1, "max_seconds": 60}, items=[
            {"index": 0, "status": "accepted", "dataset_id": dataset_id, "discovery_id": discovery_id, "problem": None}]))
    return TenantData(tenant, dataset_id, job_id, queued_id, model_id, discovery_id, batch_id)
