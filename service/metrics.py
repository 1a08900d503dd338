"""Prometheus metrics, in one CollectorRegistry per app (several apps in one process never clash).

- `kan_http_requests_total` and `kan_http_request_duration_seconds`: by method, route template
  (`/v1/datasets/{dataset_id}`, never the raw path) and status, recorded by `MetricsMiddleware`.
- Read from the database at scrape time by `DatabaseCollector`: jobs by status, queue depth per
  queue, live workers, and training throughput (steps per second of the running jobs, from the
  progress and history the workers write).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.middleware import HttpMiddleware
from service.config import QUEUES, Settings
from service.models import Job, JobStatus, Worker

log = logging.getLogger(__name__)

UNMATCHED_ROUTE = "<unmatched>"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The registry of one app, and the HTTP instruments its middleware records into."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self.registry = CollectorRegistry()
        labels = ("method", "route", "status")
        self.requests = Counter("kan_http_requests", "HTTP requests answered.", labels, registry=self.registry)
        self.latency = Histogram("kan_http_request_duration_seconds", "Time to answer an HTTP request.", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(DatabaseCollector(session_factory, settings))

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route, str(status)).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST


class DatabaseCollector(Collector):
    """Gauges computed from the database on every scrape. A database error yields `kan_database_up 0`
    and no other database gauges, rather than a failed scrape."""

    def __init__(self, session_factory: sessionmaker[Session], settings: Settings) -> None:
        self.session_factory = session_factory
        self.settings = settings

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily("kan_database_up", "1 when the database answered this scrape.")
        try:
            with self.session_factory() as session:
                families = list(self._families(session))
        except Exception:  # a scrape must not fail because the database did
            log.warning("metrics: database query failed", exc_info=True)
            up.add_metric([], 0)
            return [up]
        up.add_metric([], 1)
        return [up, *families]

    def _families(self, session: Session | None = None) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("kan_jobs", "Jobs by status.", labels=["status"])
        depth = GaugeMetricFamily("kan_queue_depth", "Queued jobs waiting for a worker, per queue.", labels=["queue"])
        workers = GaugeMetricFamily("kan_workers_alive", "Workers whose heartbeat is within heartbeat_timeout_s.")
        rate = GaugeMetricFamily("kan_training_steps_per_second",
                                 "Training steps per second summed over running jobs (steps done / time running).")
        if session is not None:
            by_status = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for status in JobStatus:
                jobs.add_metric([status.value], by_status.get(status, 0))
            queued = dict(session.execute(
                select(Job.queue, func.count()).where(Job.status == JobStatus.queued).group_by(Job.queue)
            ).all())
            for queue in sorted(set(QUEUES) | set(queued)):
                depth.add_metric([queue], queued.get(queue, 0))
            now = datetime.now(timezone.utc)
            cutoff = now - timedelta(seconds=self.settings.heartbeat_timeout_s)
            alive = select(func.count()).select_from(Worker).where(Worker.heartbeat_at >= cutoff)
            workers.add_metric([], session.scalar(alive) or 0)
            running = session.execute(
                select(Job.started_at, Job.progress, Job.history).where(Job.status == JobStatus.running)
            ).all()
            rate.add_metric([], sum(_steps_per_second(started, progress, history, now)
                                    for started, progress, history in running))
        yield from (jobs, depth, workers, rate)


def _steps_per_second(started_at: datetime | None, progress: dict[str, Any] | None, history: list[Any] | None,
                      now: datetime) -> float:
    """Steps a running job has done (the highest step reached in every stage) per second since it started."""
    if started_at is None:
        return 0.0
    if started_at.tzinfo is None:  # SQLite hands back naive datetimes; the service writes UTC
        started_at = started_at.replace(tzinfo=timezone.utc)
    elapsed = (now - started_at).total_seconds()
    if elapsed <= 0:
        return 0.0
    best: dict[Any, int] = {}
    for point in [*(history or []), progress or {}]:
        if isinstance(point, dict) and isinstance(point.get("step"), int | float):
            stage = point.get("stage_index", point.get("stage"))
            best[stage] = max(best.get(stage, 0), int(point["step"]))
    return sum(best.values()) / elapsed


def route_template(scope: Scope) -> str:
    """The path template of the route that served this request (`/v1/datasets/{dataset_id}`), for
    low-cardinality labels: the path with every path-parameter segment replaced by its name.
    Requests no route matched (404, 405, or refused before routing) share one label."""
    params = scope.get("path_params")
    if params is None:
        return UNMATCHED_ROUTE
    names = {str(value): name for name, value in params.items()}
    return "/".join(f"{{{names[segment]}}}" if segment in names else segment for segment in scope["path"].split("/"))


class MetricsMiddleware(HttpMiddleware):
    """Pure ASGI middleware counting and timing every HTTP request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = time.perf_counter()
        status = 500  # if the app raises before answering, the server answers 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            self.metrics.observe(scope["method"], route_template(scope), status, time.perf_counter() - start)
