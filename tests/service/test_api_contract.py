"""The API against its own OpenAPI document (schemathesis, in process, on a temporary SQLite file):
for every operation, generated requests (valid and invalid) never get a 5xx, and every answer matches
the documented status codes, content types, headers and schemas. Authentication is on, so the
`ignored_auth` check also proves each operation refuses a request without the key.

Every built-in check runs but `positive_data_acceptance`, which expects a 2xx for any request the
schema allows: here a schema-valid request is still refused (422) when its meaning is wrong (a cursor
that is no position, a function name outside the library, widths that do not match the dataset), and
JSON Schema cannot say those things.

Bounded for CI: MAX_EXAMPLES per operation (HYPOTHESIS_PROFILE=thorough runs more).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from schemathesis import checks

from security_support import bearer, make_key, seed_tenant
from service.app import create_app
from service.config import Settings

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE") == "thorough"
MAX_EXAMPLES = 1_000 if THOROUGH else 25


# One app for the whole module (schemathesis reads the schema when the module is collected, and its
# stateful checks follow links on the same app): a temporary SQLite file, removed at exit.
DATA_DIR = Path(tempfile.mkdtemp(prefix="kan-contract-"))
atexit.register(shutil.rmtree, DATA_DIR, ignore_errors=True)
# small limits keep generated datasets cheap; rate limits off, or generated bursts would be 429s
APP = create_app(Settings(
    _env_file=None, data_dir=DATA_DIR, database_url=None, auth_enabled=True,
    rate_limit_predict_per_s=0, rate_limit_jobs_per_min=0, max_rows=2_000, max_steps=200,
))
atexit.register(APP.state.engine.dispose)
seed_tenant(APP.state.session_factory, "default")
AUTH = bearer(make_key(APP.state.session_factory, scope="admin"))

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
