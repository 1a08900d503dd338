"""service.formula_export and service.named_inputs without HTTP: code printed in every format runs and
agrees with the formula, whatever the variable names (keywords, sympy's own names, module names);
the front's CSV reads back; named columns land in input order or are refused naming the field."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import sympy
import torch

from kan_core.expr import STORED_LIMITS, parse
from kan_core.functions import DEFAULT_LIBRARY
from service.errors import InvalidInput
from service.formula_export import FRONT_COLUMNS, FormulaFormat, export, front_csv, function_library
from service.named_inputs import check_shape, positional
from service.schemas.models import PredictRequest

# names that clash with Python keywords, the printed modules or sympy's namespace
VARIABLES = ["lambda_", "E", "numpy", "x1"]
ENTRIES = [
    {"text": "exp(sin(pi*x1) + E**2)/3 + Abs(numpy)*lambda_", "variables": VARIABLES, "name": "y"},
    {"text": "sqrt(x1**2 + 1) - log(E + 2)", "variables": VARIABLES, "name": "class"},
    {"text": "2.5", "variables": VARIABLES, "name": "y"},  # a constant; a repeated output name
]
X = np.random.default_rng(0).uniform(0.1, 0.9, (5, len(VARIABLES)))


def expected() -> list[np.ndarray]:
    symbols = [sympy.Symbol(v) for v in VARIABLES]
    out = []
    for entry in ENTRIES:
        expr = parse(entry["text"], VARIABLES, limits=STORED_LIMITS)
        out.append(np.broadcast_to(sympy.lambdify(symbols, expr, "numpy")(*X.T), (len(X),)))
    return out


def _run(code: str) -> dict:
    namespace: dict = {}
    exec(compile(code, "<formula>", "exec"), namespace)  # the printed code must run as printed
    return namespace


def test_code_in_every_format_runs_and_agrees() -> None:
    want = expected()
    names = ["y", "class_", "y_"]  # keyword and repeated output names made distinct identifiers
    numpy_ns, python_ns, torch_ns = (_run(export(ENTRIES, f)) for f in
                                     (FormulaFormat.numpy, FormulaFormat.python, FormulaFormat.torch))
    for name, values in zip(names, want):
        np.testing.assert_allclose(np.broadcast_to(numpy_ns[name](*X.T), (len(X),)), values, rtol=1e-12)
        np.testing.assert_allclose([python_ns[name](*row) for row in X], values, rtol=1e-12)
        got = torch_ns[name](*torch.as_tensor(X.T, dtype=torch.float64))
        np.testing.assert_allclose(np.broadcast_to(got.numpy(), (len(X),)), values, rtol=1e-12)
    sympy_ns = _run(export(ENTRIES, FormulaFormat.sympy))
    params = sympy.symbols("lambda_ E_ numpy x1")  # sympy's E is taken: the variable is E_
    for name, values in zip(names, want):
        fn = sympy.lambdify(params, sympy_ns[name], "numpy")
        np.testing.assert_allclose(np.broadcast_to(fn(*X.T), (len(X),)), values, rtol=1e-12)
    code = export(ENTRIES, FormulaFormat.sympy)
    assert "E_**S(2)" in code and "/S(3)" in code  # integers stay exact: 1/3 is no float
    latex = export(ENTRIES, FormulaFormat.latex).splitlines()
    assert latex[0].startswith("y = ") and latex[1].startswith("class = ") and len(latex) == 3


def test_front_csv_reads_back() -> None:
    point = {"complexity": 7, "test_rmse": 1.5e-9, "r2": 1.0, "train_rmse": None, "formula": "x1*x2 + 1",
             "latex": 'x_{1} x_{2} + 1, "quoted"', "variables": ["x1", "x2"], "job_id": "job_a",
             "candidate": {"id": "00-kan", "family": "kan", "label": "a, b"}}
    other = {**point, "complexity": 3, "test_rmse": 0.5, "formula": "x1", "job_id": "job_b", "candidate": None}
    rows = list(csv.DictReader(io.StringIO(front_csv([other, point], chosen=point))))
    assert list(rows[0]) == list(FRONT_COLUMNS)
    assert [r["chosen"] for r in rows] == ["false", "true"] and rows[1]["latex"] == point["latex"]
    assert float(rows[1]["test_rmse"]) == 1.5e-9 and rows[1]["train_rmse"] == "" and rows[1]["label"] == "a, b"
    assert rows[1]["variables"].split() == ["x1", "x2"] and rows[0]["candidate_id"] == ""
    assert front_csv([], None) == ",".join(FRONT_COLUMNS) + "\n"


def test_function_library_lists_every_function() -> None:
    listed = {f["name"]: f for f in function_library()}
    assert set(listed) == set(DEFAULT_LIBRARY)
    assert listed["sqrt"] == {**listed["sqrt"], "complexity": 2, "sympy": "sqrt(x)", "latex": r"\sqrt{x}"}


def _body(**fields) -> PredictRequest:
    return PredictRequest.model_validate(fields)


def test_named_columns_and_records_land_in_input_order() -> None:
    names = ["a", "b", "c"]
    assert positional(_body(columns=["c", "a", "b"], rows=[[3, 1, 2], [6, 4, 5]]), names) == [[1, 2, 3], [4, 5, 6]]
    assert positional(_body(records=[{"b": 2, "c": 3, "a": 1}]), names) == [[1, 2, 3]]
    assert positional(_body(inputs=[[1, 2, 3]]), names) == [[1, 2, 3]]


@pytest.mark.parametrize(("fields", "field"), [
    ({"columns": ["a", "b", "a"], "rows": [[1, 2, 3]]}, "columns[2]"),      # repeated
    ({"columns": ["a", "b", "z"], "rows": [[1, 2, 3]]}, "columns[2]"),      # unknown
    ({"columns": ["a", "b"], "rows": [[1, 2]]}, "columns"),                 # c missing
    ({"columns": ["a", "b", "c"], "rows": [[1, 2, 3], [1, 2]]}, "rows[1]"),  # ragged
    ({"records": [{"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 2}]}, "records[1].c"),
    ({"records": [{"a": 1, "b": 2, "c": 3, "d": 4}]}, "records[0].d"),
])
def test_named_inputs_refused_naming_the_field(fields: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        positional(_body(**fields), ["a", "b", "c"])
    assert caught.value.field == field


@pytest.mark.parametrize(("fields", "field"), [
    ({}, "inputs"), ({"rows": [[1]]}, "columns"), ({"columns": ["a"]}, "rows"),
    ({"inputs": [[1]], "records": [{"a": 1}]}, "records"),
])
def test_exactly_one_shape(fields: dict, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_shape(_body(**fields))
    assert caught.value.field == field
