"""Dataset units on the API: JSON, CSV units row, CSV form field; bad units are 422 naming the column."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.service.jobs_support import assert_problem

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
