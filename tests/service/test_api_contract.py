"""The API against its own OpenAPI document (schemathesis, in process, on a temporary SQLite file):
for every operation, generated requests (valid and invalid) never get a 5xx, and every answer matches
the documented status codes, content types, headers and schemas. Authentication is on, so the
`ignored_auth` check also proves each operation refuses a request without the key.

Every built-in check runs but `positive_data_acceptance`, which expects a 2xx for any request the
schema allows: here a schema-valid request is still refused (422) when its meaning is wrong (a cursor
that is no position, a function name outside the library, widths that do not match the dataset), and
JSON Schema cannot say those things.

A stateful run follows the document's links (service.api.links) with valid requests, from a model
trained in-process and a queued discovery, so that the routes taking ids (jobs, discoveries,
predict, symbolic) are called with real ones; every check runs there too, the stateful ones included.

Bounded for CI: MAX_EXAMPLES per operation and STATEFUL_EXAMPLES sequences (env CONTRACT_EXAMPLES and
STATEFUL_EXAMPLES change them; HYPOTHESIS_PROFILE=thorough runs more; TestAPIWorkflowLonger is slow).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis.stateful import initialize
from schemathesis import checks
from schemathesis.generation.stateful.state_machine import StepOutput
from sqlalchemy import select

from security_support import bearer, make_key, seed_tenant
from service.app import create_app
from service.config import Settings
from service.models import Model
from service.worker import jobstate
from service.worker.runner import run_job

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
MAX_EXAMPLES = 1_000 if THOROUGH else int(os.environ.get("CONTRACT_EXAMPLES", 25))


# One app for the whole module (schemathesis reads the schema when the module is collected, and its
# stateful checks follow links on the same app): a temporary SQLite file, removed at exit.
DATA_DIR = Path(tempfile.mkdtemp(prefix="kan-contract-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
# small limits keep generated datasets cheap; rate limits far above what the run sends (the limiter
# still runs), or generated bursts would be 429s
APP = create_app(Settings(
    _env_file=None, data_dir=DATA_DIR, database_url=None, auth_enabled=True,
    rate_limit_predict_per_s=1e6, rate_limit_predict_burst=10**6, rate_limit_jobs_per_min=1e8,
    rate_limit_jobs_burst=10**6, max_rows=2_000, max_steps=200,
))
atexit.register(APP.state.engine.dispose)
seed_tenant(APP.state.session_factory, "default")
AUTH = bearer(make_key(APP.state.session_factory, scope="admin"))


def _seed_model() -> str:
    """One trained model (a tiny job run by the real runner in this process) and one queued
    discovery, so that the routes taking their ids (predict, symbolic...) are reached with real ones
    through the links of the list routes: no worker runs here."""
    with TestClient(APP) as client:
        dataset = client.post("/v1/datasets", headers=AUTH, json={
            "expression": "x1 * x2", "ranges": {"x1": [-1, 1], "x2": [-1, 1]}, "n_train": 40, "n_test": 10})
        stages = [{"kind": "train", "steps": 2}, {"kind": "symbolic", "lib": ["x", "x^2"]}]
        job = client.post("/v1/jobs", headers=AUTH, json={"dataset_id": dataset.json()["id"], "stages": stages})
    factory = APP.state.session_factory
    with factory() as session:
        claim = jobstate.claim_job(session, "contract-test", job.json()["id"])
    run_job(factory, APP.state.settings, claim, shutdown=threading.Event())
    with factory() as session:
        model_id = session.scalar(select(Model.id).where(Model.job_id == claim.job_id))
    assert model_id is not None, "the seed job made no model"
    with TestClient(APP) as client:  # a queued discovery (no worker runs its candidates)
        discovery = client.post("/v1/discoveries", headers=AUTH, json={
            "dataset_id": dataset.json()["id"], "budget": {"max_candidates": 2, "max_seconds": 30}})
        assert discovery.status_code == 202, discovery.text
    return model_id


MODEL_ID = _seed_model()

schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
# Unknown query parameters are ignored by the GET routes (as cache-busting clients expect); only
# POST /v1/datasets, whose query configures how the body is read, refuses them. So they are not
# counted as invalid input.
schema.config.generation.update(allow_extra_parameters=False)


@schema.parametrize()
# CI runs the same examples every time (derandomize); the thorough profile explores at random.
@settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=not THOROUGH,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
def test_every_operation_conforms_to_the_schema(case: schemathesis.Case) -> None:
    # /readyz is 503 here by design (no worker runs); its 503 is documented, and checked as such
    excluded = [checks.positive_data_acceptance] + ([checks.not_a_server_error] if case.path == "/readyz" else [])
    case.call_and_validate(headers=AUTH, excluded_checks=excluded)


# Stateful: sequences of calls that follow the links schemathesis infers from the schema (a created
# dataset's id into /v1/jobs, a job's id into /v1/jobs/{job_id}, a discovery's into its routes...), so
# that the routes taking ids are reached with real ones, not only with ids that answer 404.
STATEFUL_EXAMPLES = 400 if THOROUGH else int(os.environ.get("STATEFUL_EXAMPLES", 12))
CALLS: list[tuple[str, str, int]] = []  # (method, path template, status) of every stateful call


# Valid requests only: a sequence goes on from what was created (invalid ones are the test above's).
schema.config.phases.stateful.generation.update(modes=[schemathesis.GenerationMode.POSITIVE])
# the links the document declares (service.api.links); inferred ones made hypothesis report flaky
# strategies (a bundle empty on replay)
schema.config.phases.stateful.inference.algorithms = []


_Workflow = schema.as_state_machine()


class APIWorkflow(_Workflow):  # type: ignore[misc,valid-type]
    # GET /v1/models is never an entry point (schemathesis takes its dataset_id / job_id filters for
    # references it cannot fill), so every sequence starts with the model list in hand: the seeded
    # model's id then reaches predict, symbolic and formula through the list's links.
    @initialize(target=_Workflow.bundles["GET /v1/models -> 200"])
    def list_models(self) -> StepOutput:
        case = schema["/v1/models"]["GET"].Case()
        response = self.call(case, **self.get_call_kwargs(case))
        self.recorder.record_case(case=case)
        self.after_call(response, case)
        self.validate_response(response, case)
        return StepOutput(response, case)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, object]:
        return {"headers": AUTH}

    def after_call(self, response, case: schemathesis.Case) -> None:
        super().after_call(response, case)
        CALLS.append((case.method.upper(), case.path, response.status_code))

    def validate_response(self, response, case: schemathesis.Case, additional_checks=None, **kwargs) -> None:
        excluded = [checks.positive_data_acceptance] + ([checks.not_a_server_error] if case.path == "/readyz" else [])
        case.validate_response(response, additional_checks=additional_checks, excluded_checks=excluded,
                               transport_kwargs=kwargs or None, recorder=self.recorder)


TestAPIWorkflow = APIWorkflow.TestCase
TestAPIWorkflow.settings = settings(
    max_examples=STATEFUL_EXAMPLES, stateful_step_count=8, deadline=None, derandomize=not THOROUGH,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.slow
class TestAPIWorkflowLonger(APIWorkflow.TestCase):  # type: ignore[misc,name-defined]
    """The same, ~25x longer (a few minutes): hundreds of sequences."""

    settings = settings(max_examples=300, stateful_step_count=10, deadline=None, derandomize=True,
                        suppress_health_check=list(HealthCheck))


# ---- what the checks above found, pinned


def test_405_lists_every_method_of_the_path() -> None:
    with TestClient(APP) as client:
        for path, allowed in (("/v1/datasets", "GET, POST"), ("/v1/models/mdl_x", "DELETE, GET"),
                              ("/v1/models/mdl_x/predict", "POST")):
            response = client.request("PUT", path, headers=AUTH)
            assert response.status_code == 405 and response.headers["allow"] == allowed, path


def test_a_repeated_query_parameter_is_422() -> None:
    with TestClient(APP) as client:
        response = client.get("/v1/models?job_id=a&job_id=b", headers=AUTH)
        assert response.status_code == 422 and response.json()["field"] == "job_id"
        assert client.get("/v1/models?job_id=a&unknown=1", headers=AUTH).status_code == 200
