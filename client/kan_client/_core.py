"""What the sync and async clients share, without I/O: every API call as a generator that yields
`Call`s and receives their decoded answers (the client drives it with its own transport), the retry
policy, and the decoding of answers into values or typed errors.

Retries: a request that fails in transit (connect or read timeout, dropped connection) or gets 502,
503 or 504 is sent again after a backoff; a 429 after the server's Retry-After. POSTs carry an
`Idempotency-Key` (the same on every attempt), so a retried creation returns the resource the first
attempt made rather than a second one.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

import httpx

from kan_client import data as payloads
from kan_client.errors import from_response, retry_after_seconds
from kan_client.results import PNG, Dataset, DiscoveryResult, Formula, Job, Model

DEFAULT_URL = "http://127.0.0.1:8000"
RETRY_STATUSES = frozenset({429, 502, 503, 504})


@dataclass
class Call:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bool = False  # the answer's body as bytes / text instead of JSON

    def __post_init__(self) -> None:
        if self.method == "POST":
            self.headers.setdefault("Idempotency-Key", str(uuid.uuid4()))


Flow = Generator[Call, Any, Any]


@dataclass(frozen=True)
class RetryPolicy:
    retries: int = 3           # extra attempts after the first
    backoff_s: float = 0.5     # first wait after a transport error or 5xx; doubled each time
    max_wait_s: float = 60.0   # the longest wait, Retry-After included; a longer Retry-After is not waited for

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up (and report this one)."""
        if attempt >= self.retries:
            return None
        backoff = min(self.backoff_s * 2**attempt, self.max_wait_s)
        if response is None:
            return backoff
        if response.status_code not in RETRY_STATUSES:
            return None
        after = retry_after_seconds(response.headers.get("retry-after"))
        if after is None:
            return backoff
        return after if after <= self.max_wait_s else None


def decode(response: httpx.Response, raw: bool) -> Any:
    """The value of a 2xx answer; a KanError for any other."""
    if response.is_success:
        if raw:
            return response.content
        if response.status_code == 204 or not response.content:
            return None
        return response.json()
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text
    raise from_response(response.status_code, response.headers, body)


def stream_timeout(timeout: float, deadline: float | None) -> httpx.Timeout:
    """An event stream's timeouts: reads wait past the server's 15 s pings, never past `deadline`."""
    read = 60.0 if deadline is None else max(0.05, min(60.0, deadline - time.monotonic()))
    return httpx.Timeout(timeout, read=read)


def check_deadline(deadline: float | None, what: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise TimeoutError(f"{what}: no end before the timeout")


def _numpy_or_lists(rows: list[list[float | None]]) -> Any:
    try:
        import numpy
    except ImportError:
        return rows
    return numpy.array([[float("nan") if v is None else v for v in row] for row in rows], dtype=float)


class BaseClient:
    """The API, once for both clients. Subclasses define `_drive(flow)` (and the event stream)."""

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0):
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff_s, max_retry_wait_s)
        self.headers = {"Accept": "application/json, application/problem+json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout

    def _drive(self, flow: Flow) -> Any:  # pragma: no cover - defined by the subclasses
        raise NotImplementedError

    def _one(self, call: Call, build: Any = None) -> Any:
        def flow() -> Flow:
            value = yield call
            return build(value) if build else value

        return self._drive(flow())

    # ---- service

    def health(self) -> Any:
        """GET /healthz."""
        return self._one(Call("GET", "/healthz"))

    def ready(self) -> Any:
        """GET /readyz: ServerError (503) naming what is not ready."""
        return self._one(Call("GET", "/readyz"))

    def functions(self) -> Any:
        """The symbolic function library: [{name, complexity, sympy, latex, ...}]."""
        return self._one(Call("GET", "/v1/functions"))

    # ---- datasets

    def _dataset_flow(self, data: Any, **kwargs: Any) -> Flow:
        if isinstance(data, Dataset):
            return data
        if (isinstance(data, str) and data.startswith("ds_") and kwargs.get("expression") is None
                and not os.path.exists(data)):  # a dataset id
            return Dataset.of((yield Call("GET", f"/v1/datasets/{data}")))
        request = payloads.dataset_request(data, **kwargs)
        if request.csv is not None:
            call = Call("POST", "/v1/datasets", content=request.csv, params=request.params,
                        headers={"Content-Type": "text/csv"})
        else:
            call = Call("POST", "/v1/datasets", json=request.json)
        return Dataset.of((yield call))

    def create_dataset(self, data: Any = None, **kwargs: Any) -> Any:
        """A dataset from a DataFrame (`target=`), arrays (`data`, `y=`), a CSV path, or `expression=`
        with `ranges=`; `units=` ({column: unit}) for every column; other keywords are fields of the
        request (name, test_fraction, seed...)."""
        return self._drive(self._dataset_flow(data, **kwargs))

    def dataset(self, dataset_id: str) -> Any:
        return self._one(Call("GET", f"/v1/datasets/{dataset_id}"), Dataset.of)

    def datasets(self, limit: int = 50) -> Any:
        return self._one(Call("GET", "/v1/datasets", params={"limit": limit}),
                         lambda page: [Dataset.of(d) for d in page["items"]])

    def dataset_rows(self, dataset_id: str, split: str = "train", offset: int = 0, limit: int = 1000) -> Any:
        """{inputs, targets, ...} of one split."""
        return self._one(Call("GET", f"/v1/datasets/{dataset_id}/data",
                              params={"split": split, "offset": offset, "limit": limit}))

    def delete_dataset(self, dataset_id: str) -> Any:
        return self._one(Call("DELETE", f"/v1/datasets/{dataset_id}"))

    # ---- jobs

    def train(self, data: Any = None, *, model: dict[str, Any] | None = None, stages: list[dict[str, Any]] | None = None,
              **dataset_options: Any) -> Any:
        """Queue a training pipeline on `data` (anything `create_dataset` takes, a Dataset, or a dataset
        id); `model` / `stages` default to the seed pipeline. Returns a JobHandle."""
        def flow() -> Flow:
            dataset = yield from self._dataset_flow(data, **dataset_options)
            body: dict[str, Any] = {"dataset_id": dataset.id}
            if model is not None:
                body["model"] = model
            if stages is not None:
                body["stages"] = stages
            return JobHandle(self, (yield Call("POST", "/v1/jobs", json=body)))

        return self._drive(flow())

    def job(self, job_id: str) -> Any:
        """A JobHandle on an existing job."""
        return self._one(Call("GET", f"/v1/jobs/{job_id}"), lambda d: JobHandle(self, d))

    def jobs(self, status: str | None = None, limit: int = 50) -> Any:
        params = {"limit": limit, **({"status": status} if status else {})}
        return self._one(Call("GET", "/v1/jobs", params=params), lambda page: [Job.of(j) for j in page["items"]])

    def job_history(self, job_id: str) -> Any:
        return self._one(Call("GET", f"/v1/jobs/{job_id}/history"), lambda d: d["points"])

    def cancel_job(self, job_id: str) -> Any:
        return self._one(Call("POST", f"/v1/jobs/{job_id}/cancel"), Job.of)

    def symbolic(self, model_id: str, *, fixes: list[dict[str, Any]] | None = None, auto: bool = True,
                 **options: Any) -> Any:
        """Derive a model: fix edges to functions (`fixes`), auto-fit the rest, retrain. A JobHandle."""
        body = {"fixes": fixes or [], "auto": auto, **options}
        return self._one(Call("POST", f"/v1/models/{model_id}/symbolic", json=body), lambda d: JobHandle(self, d))

    # ---- models

    def model(self, model_id: str) -> Any:
        return self._one(Call("GET", f"/v1/models/{model_id}"), lambda d: Model(self, d))

    def models(self, limit: int = 50, dataset_id: str | None = None) -> Any:
        params = {"limit": limit, **({"dataset_id": dataset_id} if dataset_id else {})}
        return self._one(Call("GET", "/v1/models", params=params), lambda page: [Model(self, m) for m in page["items"]])

    def predict(self, model_id: str, x: Any, mode: str = "network") -> Any:
        """Outputs (numpy array when numpy is installed; NaN where not finite) for rows `x`."""
        return self._one(Call("POST", f"/v1/models/{model_id}/predict", json=payloads.predict_body(x),
                              params={"mode": mode}), lambda d: _numpy_or_lists(d["outputs"]))

    def formula(self, model_id: str, format: str | None = None) -> Any:
        """[Formula] per output, or with `format` (sympy, latex, python, numpy, torch) the code as text."""
        if format is None:
            return self._one(Call("GET", f"/v1/models/{model_id}/formula"),
                             lambda d: [Formula.of(f) for f in d["formulas"]])
        return self._one(Call("GET", f"/v1/models/{model_id}/formula", params={"format": format}, raw=True),
                         lambda b: b.decode())

    def splines(self, model_id: str, n_points: int = 101) -> Any:
        """Per-edge data: knots, coefficients, sampled curve, symbolic fit, importance."""
        return self._one(Call("GET", f"/v1/models/{model_id}/splines", params={"n_points": n_points}))

    def plot(self, model_id: str) -> Any:
        """The network as PNG bytes (shown inline in Jupyter)."""
        return self._one(Call("GET", f"/v1/models/{model_id}/plot.png", raw=True), PNG)

    def artifact(self, model_id: str, path: str | None = None) -> Any:
        """The model as safetensors bytes (kan_core.io.from_bytes loads it); written to `path` if given."""
        def save(blob: bytes) -> bytes:
            if path is not None:
                with open(path, "wb") as f:
                    f.write(blob)
            return blob

        return self._one(Call("GET", f"/v1/models/{model_id}/artifact", raw=True), save)

    def delete_model(self, model_id: str) -> Any:
        return self._one(Call("DELETE", f"/v1/models/{model_id}"))

    # ---- discoveries

    def discover(self, data: Any = None, *, target: Any = None, budget: float | dict[str, Any] | None = None,
                 max_candidates: int | None = None, seed: int | None = None, train_steps: int | None = None,
                 **dataset_options: Any) -> Any:
        """Search `data` for formulas. `budget`: seconds (or the API's budget object); `max_candidates`,
        `seed`, `train_steps` as in the API. Returns a DiscoveryHandle; `.wait()` gives the result."""
        def flow() -> Flow:
            dataset = yield from self._dataset_flow(data, target=target, **dataset_options)
            body: dict[str, Any] = {"dataset_id": dataset.id}
            plan = dict(budget) if isinstance(budget, dict) else ({"max_seconds": budget} if budget is not None else {})
            if max_candidates is not None:
                plan["max_candidates"] = max_candidates
            if plan:
                body["budget"] = plan
            options = {k: v for k, v in (("seed", seed), ("train_steps", train_steps)) if v is not None}
            if options:
                body["options"] = options
            return DiscoveryHandle(self, (yield Call("POST", "/v1/discoveries", json=body)))

        return self._drive(flow())

    def discovery(self, discovery_id: str) -> Any:
        """A DiscoveryHandle on an existing discovery."""
        return self._one(Call("GET", f"/v1/discoveries/{discovery_id}"), lambda d: DiscoveryHandle(self, d))

    def discoveries(self, limit: int = 50) -> Any:
        return self._one(Call("GET", "/v1/discoveries", params={"limit": limit}), lambda page: page["items"])

    def discovery_result(self, discovery_id: str) -> Any:
        return self._one(Call("GET", f"/v1/discoveries/{discovery_id}"), lambda d: DiscoveryResult(self, d))

    def cancel_discovery(self, discovery_id: str) -> Any:
        return self._one(Call("POST", f"/v1/discoveries/{discovery_id}/cancel"), lambda d: DiscoveryResult(self, d))

    def predict_discovery(self, discovery_id: str, x: Any, point: int | None = None) -> Any:
        params = {"point": point} if point is not None else None
        return self._one(Call("POST", f"/v1/discoveries/{discovery_id}/predict", json=payloads.predict_body(x),
                              params=params), lambda d: _numpy_or_lists(d["outputs"]))

    def front_csv(self, discovery_id: str) -> Any:
        """The Pareto front as CSV text."""
        return self._one(Call("GET", f"/v1/discoveries/{discovery_id}/front.csv", raw=True), lambda b: b.decode())


class JobHandle:
    """A queued or running job: `wait()` follows it (server-sent events) and gives its Model."""

    kind = "job"

    def __init__(self, client: BaseClient, data: dict[str, Any]):
        self.client = client
        self.id: str = data["id"]
        self.job = Job.of(data)

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r}, status={self.job.status!r})"

    @property
    def events_path(self) -> str:
        return f"/v1/jobs/{self.id}/events"

    def refresh(self) -> Any:
        """The job now (a Job)."""
        def flow() -> Flow:
            self.job = Job.of((yield Call("GET", f"/v1/jobs/{self.id}")))
            return self.job

        return self.client._drive(flow())

    def cancel(self) -> Any:
        return self.client.cancel_job(self.id)

    def events(self) -> Any:
        """(event, data) pairs until the job ends: an iterator (async iterator with AsyncClient)."""
        return self.client._events(self.events_path)

    def wait(self, progress: bool = False, callback: Any = None, timeout: float | None = None) -> Any:
        """Follow the job to its end; its Model when it succeeded, JobFailed otherwise. `progress`
        shows a tqdm bar; `callback(event, data)` sees every event; TimeoutError after `timeout` s."""
        return self.client._wait(self, progress, callback, timeout)

    def _finish(self, end: dict[str, Any]) -> Flow:
        from kan_client.errors import JobFailed

        self.job = Job.of((yield Call("GET", f"/v1/jobs/{self.id}")))
        if end["status"] != "succeeded":
            raise JobFailed("job", self.id, end["status"], end.get("error"))
        return Model(self.client, (yield Call("GET", f"/v1/models/{end['model_id']}")))


class DiscoveryHandle(JobHandle):
    """A running discovery: `wait()` follows it and gives its DiscoveryResult."""

    kind = "discovery"

    def __init__(self, client: BaseClient, data: dict[str, Any]):
        self.client = client
        self.id = data["id"]
        self.result = DiscoveryResult(client, data)

    def __repr__(self) -> str:
        return f"DiscoveryHandle(id={self.id!r}, status={self.result.status!r})"

    @property
    def events_path(self) -> str:
        return f"/v1/discoveries/{self.id}/events"

    def refresh(self) -> Any:
        def flow() -> Flow:
            self.result = DiscoveryResult(self.client, (yield Call("GET", f"/v1/discoveries/{self.id}")))
            return self.result

        return self.client._drive(flow())

    def cancel(self) -> Any:
        return self.client.cancel_discovery(self.id)

    def front_csv(self) -> Any:
        return self.client.front_csv(self.id)

    def _finish(self, end: dict[str, Any]) -> Flow:
        from kan_client.errors import JobFailed

        self.result = DiscoveryResult(self.client, (yield Call("GET", f"/v1/discoveries/{self.id}")))
        if end["status"] == "failed" or (end["status"] == "cancelled" and self.result.chosen is None):
            raise JobFailed("discovery", self.id, end["status"], end.get("error"))
        return self.result
