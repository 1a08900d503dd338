"""Dataset units on the API: JSON, CSV units row, CSV form field; bad units are 422 naming the column."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from jobs_support import assert_problem, wait_for
from service.worker.local import WorkerPool

ARRAYS = {"feature_names": ["L", "g"], "target_names": ["T"], "inputs": [[1, 9.8], [2, 9.8], [0.5, 3.7], [1.5, 1.6]],
          "targets": [2.0, 2.8, 2.3, 6.0], "test_fraction": 0.25}
UNITS = {"L": "m", "g": "m/s^2", "T": "s"}


def test_units_are_stored_with_the_dataset(client: TestClient) -> None:
    created = client.post("/v1/datasets", json={**ARRAYS, "units": UNITS})
    assert created.status_code == 201, created.text
    assert created.json()["units"] == UNITS
    assert client.get(f"/v1/datasets/{created.json()['id']}").json()["units"] == UNITS
    plain = client.post("/v1/datasets", json=ARRAYS).json()
    assert plain["units"] is None


def test_a_bad_unit_is_422_naming_the_column(client: TestClient) -> None:
    body = assert_problem(client.post("/v1/datasets", json={**ARRAYS, "units": {**UNITS, "g": "m/s^^2"}}), 422,
                          "units.g")
    assert "'g'" in body["detail"] and "m/s^^2" in body["detail"]
    assert_problem(client.post("/v1/datasets", json={**ARRAYS, "units": {**UNITS, "T": "parsec"}}), 422, "units.T")
    assert_problem(client.post("/v1/datasets", json={**ARRAYS, "units": {"L": "m", "g": "m/s^2"}}), 422, "units.T")
    assert_problem(client.post("/v1/datasets", json={**ARRAYS, "units": {**UNITS, "z": "m"}}), 422, "units.z")
    synthetic = {"expression": "2*pi*sqrt(L/g)", "ranges": {"L": [0.5, 2], "g": [1, 20]}, "target_name": "T",
                 "n_train": 20, "n_test": 5, "units": {**UNITS, "L": "__import__('os')"}}
    assert_problem(client.post("/v1/datasets", json=synthetic), 422, "units.L")


CSV = "L,g,T\n1,9.8,2.0\n2,9.8,2.8\n0.5,3.7,2.3\n1.5,1.6,6.0\n"


def test_csv_units_row_or_form_field(client: TestClient) -> None:
    with_row = CSV.replace("L,g,T\n", "L,g,T\nm,m/s^2,s\n")
    made = client.post("/v1/datasets", files={"file": ("d.csv", with_row.encode())})
    assert made.status_code == 201, made.text
    assert made.json()["units"] == UNITS and made.json()["n_train"] + made.json()["n_test"] == 4
    form = client.post("/v1/datasets", files={"file": ("d.csv", CSV.encode())}, data={"units": "L=m, g=m/s^2, T=s"})
    assert form.status_code == 201, form.text
    assert form.json()["units"] == UNITS
    bad_row = CSV.replace("L,g,T\n", "L,g,T\nm,m/s^2,sec\n")
    assert_problem(client.post("/v1/datasets", files={"file": ("d.csv", bad_row.encode())}), 422, "units.T")
    assert_problem(client.post("/v1/datasets", files={"file": ("d.csv", CSV.encode())},
                               data={"units": "L=m, g=furlong, T=s"}), 422, "units.g")
    assert_problem(client.post("/v1/datasets", files={"file": ("d.csv", CSV.encode())}, data={"units": "L m"}),
                   422, "units")


def test_discovery_on_a_dataset_with_units_searches_pi_groups(client: TestClient, settings) -> None:
    """A pendulum with a mass that drops out: the service's discovery returns T = 2*pi*sqrt(L/g)."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.uniform(0.1, 5, 120), rng.uniform(0.2, 3, 120), rng.uniform(1, 20, 120)])
    t = 2 * np.pi * np.sqrt(x[:, 1] / x[:, 2])
    made = client.post("/v1/datasets", json={"feature_names": ["m", "L", "g"], "target_names": ["T"],
                                             "inputs": x.tolist(), "targets": t.tolist(),
                                             "units": {"m": "kg", "L": "m", "g": "m/s^2", "T": "s"}})
    assert made.status_code == 201, made.text
    r = client.post("/v1/discoveries", json={"dataset_id": made.json()["id"],
                                             "budget": {"max_candidates": 3, "max_seconds": 300}})
    assert r.status_code in (201, 202), r.text
    with WorkerPool(settings, 1):
        done = wait_for(lambda: (d := client.get(r.headers["Location"]).json())["status"] in
                        ("succeeded", "failed", "cancelled") and d, 600, 0.5, "the discovery to end")
    assert done["status"] == "succeeded", done
    assert done["chosen"]["formula"] == "2*pi*sqrt(L/g)" and done["chosen"]["variables"] == ["m", "L", "g"]


def test_units_without_a_consistent_formula_are_refused(client: TestClient) -> None:
    made = client.post("/v1/datasets", json={**ARRAYS, "units": {"L": "m", "g": "m/s^2", "T": "kg"}})
    body = assert_problem(client.post("/v1/discoveries", json={"dataset_id": made.json()["id"]}), 422, "dataset_id")
    assert "no dimensionally consistent formula" in body["detail"]
