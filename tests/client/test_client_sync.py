"""kan_client.Client against the real service (module-scoped live server, see conftest.py): every
method, results and their conversions, named-column prediction, formula code executed and compared
with the service's own evaluation, the front as CSV, progress events reaching a callback."""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pandas as pd
import pytest
import sympy
import torch

from client_support import SEED_RANGES, SMALL_DISCOVERY, tiny_pipeline
from kan_client import PNG, ConflictError, Dataset, JobFailed, Model, NotFoundError, ValidationError
from kan_core import io as kan_io

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
X = np.array([[0.1, -0.4], [0.5, 0.2], [-0.7, 0.9]])


@pytest.fixture(scope="module")
def trained(client, seed_dataset) -> tuple[Model, list[tuple[str, dict]]]:
    events: list[tuple[str, dict]] = []
    handle = client.train(seed_dataset, **tiny_pipeline())
    model = handle.wait(progress=True, callback=lambda name, data: events.append((name, data)), timeout=600)
    return model, events


@pytest.fixture(scope="module")
def discovered(client, seed_dataset):
    events: list[tuple[str, dict]] = []
    handle = client.discover(seed_dataset, **SMALL_DISCOVERY)
    result = handle.wait(progress=True, callback=lambda name, data: events.append((name, data)), timeout=600)
    return handle, result, events


def test_health_ready_and_function_library(client) -> None:
    assert client.health() == {"status": "ok"}
    assert client.ready()["checks"]["database"]["ok"] is True
    functions = {f["name"]: f for f in client.functions()}
    assert functions["sin"]["complexity"] == 2 and functions["sin"]["sympy"] == "sin(x)"
    assert functions["x^2"]["seed_library"] is True and "latex" in functions["exp"]


def test_datasets_from_a_frame_arrays_a_csv_and_an_expression(client, tmp_path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (40, 2))
    y = x[:, 0] * 2 + x[:, 1]
    frame = pd.DataFrame({"a": x[:, 0], "y": y, "b": x[:, 1]})
    from_frame = client.create_dataset(frame, target="y", name="frame", test_fraction=0.25)
    assert (from_frame.feature_names, from_frame.target_names) == (["a", "b"], ["y"])
    assert (from_frame.n_train, from_frame.n_test) == (30, 10)

    from_arrays = client.create_dataset(x, y=y.reshape(-1, 1), name="arrays")
    assert from_arrays.feature_names == ["x1", "x2"] and from_arrays.n_train + from_arrays.n_test == 40

    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    from_csv = client.create_dataset(str(path), target="y", name="csv")
    assert from_csv.feature_names == ["a", "b"] and from_csv.target_names == ["y"]

    sampled = client.create_dataset(expression="x1 + 2*x2", ranges=SEED_RANGES, n_train=20, n_test=10)
    rows = client.dataset_rows(sampled.id, split="test")
    np.testing.assert_allclose(np.asarray(rows["targets"])[:, 0], np.asarray(rows["inputs"]) @ [1, 2])

    assert client.dataset(from_csv.id) == from_csv
    assert {d.id for d in client.datasets()} >= {from_frame.id, from_arrays.id, from_csv.id, sampled.id}
    client.delete_dataset(from_arrays.id)
    with pytest.raises(NotFoundError) as caught:
        client.dataset(from_arrays.id)
    assert caught.value.status == 404


def test_train_follows_progress_and_gives_a_model(client, trained, seed_dataset) -> None:
    model, events = trained
    names = [name for name, _ in events]
    assert names[-1] == "end" and "progress" in names
    assert any(data.get("progress") for name, data in events if name == "progress")
    assert model.dataset_id == seed_dataset.id and model.width == [2, 2, 1] and len(model.formulas) == 1
    assert client.model(model.id).id == model.id
    assert model.id in {m.id for m in client.models(dataset_id=seed_dataset.id)}
    job = client.job(model.job_id)
    assert job.job.status == "succeeded" and job.refresh().model_id == model.id
    assert client.job_history(model.job_id)
    assert model.job_id in {j.id for j in client.jobs(status="succeeded")}
    with pytest.raises(ConflictError) as caught:  # a finished job cannot be cancelled
        job.cancel()
    assert caught.value.status == 409


def test_model_predict_formula_splines_plot_artifact(client, trained, tmp_path) -> None:
    model, _ = trained
    network = model.predict(X)
    assert network.shape == (3, 1)
    # named columns in any order, and records, give the same rows
    frame = pd.DataFrame({"x2": X[:, 1], "x1": X[:, 0]})
    np.testing.assert_allclose(model.predict(frame), network)
    np.testing.assert_allclose(model.predict([{"x1": a, "x2": b} for a, b in X]), network)
    with pytest.raises(ValidationError) as caught:
        model.predict(pd.DataFrame({"x1": X[:, 0], "z": X[:, 1]}))
    assert caught.value.field == "columns[1]"

    (formula,) = model.formula()
    assert formula.text == model.formulas[0].text and model.latex() == formula.latex()
    table = model.to_pandas()
    assert list(table["formula"]) == [formula.text] and list(table["name"]) == ["y"]
    expr = model.sympy()
    by_formula = model.predict(X, mode="formula")[:, 0]
    f = sympy.lambdify(sorted(expr.free_symbols, key=str), expr, "numpy")
    np.testing.assert_allclose(f(X[:, 0], X[:, 1]), by_formula, rtol=1e-9)

    splines = model.splines(n_points=11)
    assert splines["model_id"] == model.id and len(splines["edges"][0]["curve"]["x"]) == 11
    png = model.plot()
    assert isinstance(png, PNG) and png.startswith(PNG_SIGNATURE) and png._repr_png_() == bytes(png)
    blob = model.download(str(tmp_path / "m.safetensors"))
    assert (tmp_path / "m.safetensors").read_bytes() == blob
    net = kan_io.from_bytes(blob)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.as_tensor(X)).numpy(), network, rtol=1e-6, atol=1e-9)


def _load(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<formula>", "exec"), namespace)  # the service's printed code must run as printed
    return namespace


def test_formula_code_runs_and_matches_the_service(client, trained) -> None:
    model, _ = trained
    expected = model.predict(X, mode="formula")[:, 0]
    python = _load(model.formula(format="python"))["y"]
    np.testing.assert_allclose([python(a, b) for a, b in X], expected, rtol=1e-9)
    numpy_fn = _load(model.formula(format="numpy"))["y"]
    np.testing.assert_allclose(numpy_fn(X[:, 0], X[:, 1]), expected, rtol=1e-9)
    torch_fn = _load(model.formula(format="torch"))["y"]
    t = torch.as_tensor(X, dtype=torch.float64)
    np.testing.assert_allclose(torch_fn(t[:, 0], t[:, 1]).numpy(), expected, rtol=1e-9)
    namespace = _load(model.formula(format="sympy"))
    expr = namespace["y"]
    assert sympy.simplify(expr - model.sympy()) == 0
    latex = model.formula(format="latex")
    assert latex.startswith("y = ") and latex.strip().endswith(sympy.latex(model.sympy()))


def test_symbolic_job_and_model_deletion(client, trained) -> None:
    model, _ = trained
    derived = client.symbolic(model.id, fixes=[{"layer": 0, "in": 0, "out": 0, "function": "sin"}], auto=True,
                              retrain={"steps": 2, "opt": "Adam", "update_grid": False}).wait(timeout=600)
    assert derived.data["parent_model_id"] == model.id and derived.formulas
    client.delete_model(derived.id)
    with pytest.raises(NotFoundError):
        client.model(derived.id)


def test_discovery_events_reach_the_callback_and_the_result_converts(client, discovered) -> None:
    handle, result, events = discovered
    names = [name for name, _ in events]
    assert names[0] == "progress" and names[-1] == "end" and names.count("end") == 1
    assert "candidate_finished" in names and "best" in names
    finished = [data for name, data in events if name == "candidate_finished"]
    assert {d["job_id"] for d in finished} <= {c["job_id"] for c in result.data["candidates"]}
    assert events[-1][1]["status"] == result.status == "succeeded"
    assert events[-1][1]["chosen"]["formula"] == result.formula

    assert result.chosen.test_rmse < 0.05, result.formula  # the seed formula's values span about 0.1 to 7
    assert result.sympy() == result.chosen.sympy() and result.latex() == result.chosen.latex_text
    frame = result.to_pandas()
    assert list(frame["formula"]) == [p.text for p in result.front] and frame["chosen"].sum() == 1
    expr = result.sympy()  # read back without eval, evaluated here: the service's predict agrees
    local = sympy.lambdify([sympy.Symbol("x1"), sympy.Symbol("x2")], expr, "numpy")(X[:, 0], X[:, 1])
    np.testing.assert_allclose(result.predict(X)[:, 0], local, rtol=1e-9)
    np.testing.assert_allclose(result.predict(pd.DataFrame({"x2": X[:, 1], "x1": X[:, 0]}))[:, 0], local, rtol=1e-9)
    np.testing.assert_allclose(local, np.exp(np.sin(np.pi * X[:, 0]) + X[:, 1] ** 2), rtol=0.05)
    np.testing.assert_allclose(result.predict(X, point=0)[:, 0], client.predict_discovery(result.id, X, 0)[:, 0])

    assert handle.refresh().status == "succeeded" and client.discovery_result(result.id).formula == result.formula
    with pytest.raises(ValidationError) as caught:  # records must name every input
        result.predict([{"x1": 0.5}])
    assert caught.value.field == "records[0].x2"
    assert result.id in {d["id"] for d in client.discoveries()}
    assert client.discovery(result.id).wait().formula == result.formula  # an ended one: at once
    with pytest.raises(ConflictError):
        handle.cancel()


def test_front_csv_parses_back_to_the_front(client, discovered) -> None:
    _, result, _ = discovered
    rows = list(csv.DictReader(io.StringIO(result.id and client.front_csv(result.id))))
    assert [r["formula"] for r in rows] == [p.text for p in result.front]
    for row, point in zip(rows, result.front):
        assert int(row["complexity"]) == point.complexity and row["job_id"] == point.job_id
        assert math.isclose(float(row["test_rmse"]), point.test_rmse, rel_tol=1e-12, abs_tol=1e-300)
        assert row["variables"].split() == point.variables and row["latex"] == point.latex_text
        assert row["chosen"] == ("true" if point.job_id == result.chosen.job_id else "false")


def test_a_cancelled_job_raises_job_failed_from_wait(client, seed_dataset) -> None:
    handle = client.train(seed_dataset.id, model={"width": [2, 1]},
                          stages=[{"kind": "train", "opt": "Adam", "steps": 20000, "update_grid": False}])
    cancelled = handle.cancel()
    assert cancelled.id == handle.id and cancelled.status in ("cancelled", "running")
    with pytest.raises(JobFailed) as caught:
        handle.wait(timeout=600)
    assert caught.value.status == "cancelled" and handle.job.status == "cancelled"


def test_discover_refuses_a_bad_budget_naming_the_field(client, seed_dataset) -> None:
    with pytest.raises(ValidationError) as caught:
        client.discover(seed_dataset, budget=-1)
    assert caught.value.status == 422 and caught.value.field == "budget.max_seconds"
    with pytest.raises(ValueError):  # caught before any request
        client.create_dataset(expression="x1")
    assert isinstance(client.dataset(seed_dataset.id), Dataset)
