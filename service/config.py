"""All configuration, from the environment (prefix ``KAN_``) through one pydantic-settings class."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


CPU_QUEUE, GPU_QUEUE = "cpu", "gpu"
QUEUES = (CPU_QUEUE, GPU_QUEUE)  # every worker consumes "cpu"; workers with KAN_GPU_WORKER=true also "gpu"


def queue_for(device: str) -> str:
    """The queue of a job on `device`: CUDA jobs wait for a GPU worker; `cpu` and `auto` run anywhere."""
    return GPU_QUEUE if device.startswith("cuda") else CPU_QUEUE


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="KAN_", env_file=".env", extra="ignore")

    # storage
    data_dir: Path = Field(Path("./data"), description="Directory for the SQLite file and worker scratch.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default sqlite:///<data_dir>/kan.db. PostgreSQL: postgresql+psycopg://..."
    )

    # workers
    executor: Literal["local", "celery"] = Field(
        "local",
        description="How jobs reach workers: `local` (workers poll the database) or `celery` (over the broker).",
    )
    workers: int = Field(
        1, ge=0, le=64,
        description="Worker processes of `kan-service serve` and `worker` (executor=celery: the pool size).",
    )
    torch_threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per worker process.")
    worker_nice: int = Field(
        10, ge=0, le=19,
        description="Niceness of worker processes (local, Celery pool): training yields the CPU to requests.",
    )
    poll_interval_s: float = Field(0.2, gt=0, le=10, description="How often an idle local worker looks for jobs.")
    heartbeat_interval_s: float = Field(2.0, gt=0, le=60, description="How often a worker stamps its heartbeat.")
    heartbeat_timeout_s: float = Field(15.0, gt=0, le=3600, description="A running job whose worker is silent this long is re-queued.")
    max_attempts: int = Field(3, ge=1, le=20, description="Attempts before a job whose workers keep dying fails.")
    job_timeout_s: float = Field(3600.0, gt=0, description="A job running longer fails with a clear reason.")
    job_kill_grace_s: float = Field(
        60.0, gt=0,
        description="Local workers: a job still running this long after its time limit or a cancel (stuck in a "
                    "step that cannot be interrupted) is ended with its worker process, which is restarted.",
    )
    broker_url: str = Field("redis://127.0.0.1:6379/0", description="Celery broker (executor=celery).")
    queue_prefix: str = Field(
        "", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$",
        description="Prefix of the broker queue names (`<prefix>cpu`, `<prefix>gpu`); lets deployments share a broker.",
    )
    redispatch_after_s: float = Field(
        300.0, gt=0, description="A job still queued this long after its id was sent to the broker is sent again.",
    )
    gpu_worker: bool = Field(False, description="This worker has a GPU and also consumes the GPU queue.")

    # limits
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    max_rows: int = Field(200_000, ge=1, description="Most rows (train + test) in a dataset.")
    max_columns: int = Field(64, ge=1, description="Most input plus target columns in a dataset.")
    max_width: int = Field(256, ge=1, description="Most nodes in one layer.")
    max_layers: int = Field(8, ge=2, description="Most layers (widths) in a network.")
    max_grid: int = Field(200, ge=1, description="Largest spline grid (intervals).")
    max_steps: int = Field(20_000, ge=1, description="Most training steps in one stage.")
    max_predict_rows: int = Field(100_000, ge=1, description="Most rows in one predict request.")
    max_discovery_candidates: int = Field(64, ge=1, description="Most candidate pipelines one discovery may try.")
    max_discovery_seconds: float = Field(3600.0, gt=0, description="Longest time budget of one discovery.")
    max_batch_items: int = Field(100, ge=1, description="Most datasets in one batch.")
    max_job_memory_mb: int = Field(
        4096, ge=0,
        description="A job whose estimated peak memory (service.limits, from its network, grid, optimiser and "
                    "rows) is larger is refused with 422; 0: no check.",
    )
    worker_memory_limit_mb: int = Field(
        8192, ge=0,
        description="Address-space cap (RLIMIT_AS) of each worker process, CPU workers only: a job past it fails "
                    "with an allocation error instead of starving the machine; 0: none.",
    )

    # authentication and rate limits (per API key, or per tenant when authentication is off)
    auth_enabled: bool = Field(
        False, description="Require `Authorization: Bearer <API key>` on every /v1 route (keys: `kan-service keys`)."
    )
    rate_limit_predict_per_s: float = Field(
        100.0, ge=0, description="Sustained predict requests per second per API key; 0: unlimited."
    )
    rate_limit_predict_burst: int = Field(200, ge=1, description="Predict requests an API key may send at once.")
    rate_limit_jobs_per_min: float = Field(
        60.0, ge=0, description="Sustained job submissions per minute per API key; 0: unlimited."
    )
    rate_limit_jobs_burst: int = Field(20, ge=1, description="Job submissions an API key may send at once.")
    rate_limit_storage_url: str = Field(
        "", description="Where rate-limit windows live: a Redis URL shares them between API replicas. Empty: the "
        "broker's Redis when executor=celery, else this process's memory (each API process its own limit).",
    )
    lookup_cache_ttl_s: float = Field(
        2.0, ge=0, le=60,
        description="How long an API process reuses an API key's lookup and a predicted model's row: a key "
        "revoked or a model deleted elsewhere stops working within it. 0: read them on every request.",
    )

    # server
    host: str = Field("127.0.0.1", description="Interface `kan-service serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `kan-service serve` listens on.")
    log_level: str = Field("info", description="Logging level: debug, info, warning, error.")

    @cached_property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'kan.db').resolve()}"

    @property
    def worker_queues(self) -> list[str]:
        """The job queues this deployment's workers consume."""
        return list(QUEUES) if self.gpu_worker else [CPU_QUEUE]

    def broker_queue(self, queue: str) -> str:
        """The broker queue (executor=celery) carrying the jobs of `queue`."""
        return f"{self.queue_prefix}{queue}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")
