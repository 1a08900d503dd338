"""SQLAlchemy 2.0 tables. The database is the source of truth for every job's state; executors only
carry job ids. Large payloads (dataset arrays, model weights) are safetensors bytes in the row, so any
process that can reach the database can read them."""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from service.config import CPU_QUEUE

DEFAULT_TENANT = "default"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class Scope(str, enum.Enum):
    """What an API key may do: `read` the GET routes, `write` also create and delete (POST / DELETE),
    `admin` everything. Each scope includes the ones before it."""

    read = "read"
    write = "write"
    admin = "admin"

    def allows(self, required: Scope) -> bool:
        order = list(Scope)
        return order.index(self) >= order.index(required)


class JobKind(str, enum.Enum):
    train = "train"          # the staged pipeline on a dataset
    symbolic = "symbolic"    # fix / auto-symbolic + retrain on an existing model -> derived model
    discovery = "discovery"  # a formula search: never claimed by a worker, advanced as its candidates finish
    candidate = "candidate"  # one pipeline of a discovery (parent_job_id), run like a train job


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    source: Mapped[str] = mapped_column(String(16))  # json | csv | expression
    expression: Mapped[str | None] = mapped_column(Text)
    feature_names: Mapped[list[Any]]
    target_names: Mapped[list[Any]]
    n_train: Mapped[int]
    n_test: Mapped[int]
    units: Mapped[dict[str, Any] | None]  # column name -> unit text (kan_core.units), or None
    # safetensors bytes: train_input (n_train, d), train_label (n_train, o), test_input, test_label (float64)
    arrays: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_status_queue_id", "status", "queue", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    kind: Mapped[JobKind] = mapped_column(Enum(JobKind, native_enum=False, length=16))
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    # no foreign key: models reference jobs, and a cycle of constraints cannot be created on SQLite
    parent_model_id: Mapped[str | None] = mapped_column(String(40), index=True)
    # a candidate's discovery job (no foreign key, as above)
    parent_job_id: Mapped[str | None] = mapped_column(String(40), index=True)
    config: Mapped[dict[str, Any]]  # validated JobCreate.model_dump(): model + pipeline stages
    queue: Mapped[str] = mapped_column(String(16), default=CPU_QUEUE)  # service.config.QUEUES
    status: Mapped[JobStatus] = mapped_column(Enum(JobStatus, native_enum=False, length=16), default=JobStatus.queued)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(80))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # stage, step, steps, train/test loss
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{stage, step, train_rmse, test_rmse, reg}]
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)      # {type, detail}
    # discovery: {front, chosen, reason}; candidate: {spec} (the engine's CandidateSpec.to_dict())
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # when the job id was last handed to a broker (executor=celery); None: never, or re-queued since
    dispatched_at: Mapped[datetime | None]


class Model(Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    # unique: a job produces at most one model, even when a re-queued job finishes twice
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="RESTRICT"), index=True)
    parent_model_id: Mapped[str | None] = mapped_column(ForeignKey("models.id", ondelete="SET NULL"))
    kan_config: Mapped[dict[str, Any]]   # kan_core.io config (versioned JSON)
    weights: Mapped[bytes] = mapped_column(LargeBinary)  # kan_core.io safetensors bytes
    width: Mapped[list[Any]]
    metrics: Mapped[dict[str, Any]]      # per stage and final train/test RMSE
    formulas: Mapped[list[Any] | None] = mapped_column(JSON)  # per output: text, latex, complexity, r2, rmse
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Batch(Base):
    """Several datasets, each searched for a formula by its own discovery job. `items` keeps, in
    request order, {index, status: accepted | rejected, dataset_id, discovery_id, problem}."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    budget: Mapped[dict[str, Any]]
    items: Mapped[list[Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Worker(Base):
    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # local | celery
    hostname: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int]
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """An API key: the client holds `kan_<id>.<secret>`, the table only the SHA-256 of the secret
    (a 256-bit random value, so a fast hash is enough: there is nothing to brute-force). The id is
    the lookup prefix; a revoked key stays listed with its `revoked_at`."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), default=DEFAULT_TENANT, index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    scope: Mapped[Scope] = mapped_column(Enum(Scope, native_enum=False, length=16))
    secret_hash: Mapped[str] = mapped_column(String(64))  # sha256 hex of the secret part
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]


class IdempotencyRecord(Base):
    """The answer to a POST made with an Idempotency-Key, replayed for the same key and body."""

    __tablename__ = "idempotency_keys"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(200), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int]
    resource_id: Mapped[str] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
