"""What the sync and async clients share above the transport: every API call as a generator that
yields `Call`s and receives their decoded answers (the client drives it with its own transport), and
the handles of jobs and discoveries. Retries, decoding and event-stream reconnection: `_wire`.
"""

from __future__ import annotations

import os
from typing import Any

import httpx

from kan_client import data as payloads
from kan_client._wire import Call, Flow, RetryPolicy
from kan_client.results import PNG, Dataset, DiscoveryResult, Formula, Job, Model

DEFAULT_URL = "http://127.0.0.1:8000"


def _numpy_or_lists(rows: list[list[float | None]]) -> Any:
    try:
        import numpy
    except ImportError:
        return rows
    return numpy.array([[float("nan") if v is None else v for v in row] for row in rows], dtype=float)


class BaseClient:
    """The API, once for both clients. Subclasses name their httpx client class (`_http_class`) and
    define `_drive(flow)`, the event stream and `_wait` with its I/O.

    `timeout`: seconds for a request; `retries`, `backoff_s`, `max_retry_wait_s`: see `RetryPolicy`;
    `transport`: an httpx transport (tests)."""

    _http_class: Any = None  # httpx.Client or httpx.AsyncClient

    def __init__(self, url: str = DEFAULT_URL, api_key: str | None = None, *, timeout: float = 30.0,
                 retries: int = 3, backoff_s: float = 0.5, max_retry_wait_s: float = 60.0,
                 transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None):
        self.url = url.rstrip("/")
        self.retry = RetryPolicy(retries, backoff_s, max_retry_wait_s)
        self.headers = {"Accept": "application/json, application/problem+json"}
        if api_key:
            self.headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self._http = self._http_class(base_url=self.url, headers=self.headers, timeout=timeout, transport=transport)

    def _retry_delay(self, attempt: int, outcome: httpx.Response | httpx.TransportError) -> float | None:
        """Seconds to wait before sending a call again after `outcome`, or None when `outcome` is
        the answer; a transport error with no retry left is raised."""
        if isinstance(outcome, httpx.TransportError):
            delay = self.retry.delay(attempt, None)
            if delay is None:
                raise outcome
            return delay
        return None if outcome.is_success else self.retry.delay(attempt, outcome)

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

    kind, collection = "job", "jobs"

    def __init__(self, client: BaseClient, data: dict[str, Any]):
        self.client = client
        self.id: str = data["id"]
        self._keep(data)

    def _keep(self, data: dict[str, Any]) -> Any:
        """The API's latest word on this job, kept as `job` (and returned)."""
        self._latest = self.job = Job.of(data)
        return self.job

    def __repr__(self) -> str:
        return f"{type(self).__name__}(id={self.id!r}, status={self._latest.status!r})"

    @property
    def path(self) -> str:
        return f"/v1/{self.collection}/{self.id}"

    @property
    def events_path(self) -> str:
        return f"{self.path}/events"

    def refresh(self) -> Any:
        """The job now (a Job; a DiscoveryResult for a discovery)."""
        def flow() -> Flow:
            return self._keep((yield Call("GET", self.path)))

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

        self._keep((yield Call("GET", self.path)))
        if end["status"] != "succeeded":
            raise JobFailed("job", self.id, end["status"], end.get("error"))
        return Model(self.client, (yield Call("GET", f"/v1/models/{end['model_id']}")))


class DiscoveryHandle(JobHandle):
    """A running discovery: `wait()` follows it and gives its DiscoveryResult."""

    kind, collection = "discovery", "discoveries"

    def _keep(self, data: dict[str, Any]) -> Any:
        """The API's latest word on this discovery, kept as `result` (and returned)."""
        self._latest = self.result = DiscoveryResult(self.client, data)
        return self.result

    def cancel(self) -> Any:
        return self.client.cancel_discovery(self.id)

    def front_csv(self) -> Any:
        return self.client.front_csv(self.id)

    def _finish(self, end: dict[str, Any]) -> Flow:
        from kan_client.errors import JobFailed

        result = self._keep((yield Call("GET", self.path)))
        if end["status"] == "failed" or (end["status"] == "cancelled" and result.chosen is None):
            raise JobFailed("discovery", self.id, end["status"], end.get("error"))
        return result
