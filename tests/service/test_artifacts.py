"""Artifacts and stored text are data, never code.

- Source scan: nothing in service/ or kan_core/ can unpickle (pickle, marshal, shelve, torch.load,
  numpy's allow_pickle, yaml.load) or evaluate text (eval, exec, sympify, parse_expr); the one
  exception is named with its reason, and the service never imports it.
- The artifact the API serves loads back, and every tampered variant of it (shapes, extra or missing
  tensors, dtypes, non-finite values, metadata, huge declared dimensions, unknown functions) is a
  ValueError from kan_core.io before anything is built from it.
- Formulas the worker stores are read back by the whitelist parser (service.expr), not sympy's
  eval-based parse_expr: random fully symbolic networks' formulas round-trip exactly.
"""

from __future__ import annotations

import ast
import io as stdlib_io
import json
import math
import struct
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sympy
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import torch as safetensors_torch

from kan_core import formula as kan_formula
from kan_core import functions
from kan_core import io as kan_io
from kan_core.model import KAN
from security_support import seed_tenant
from service import model_store

REPO = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(REPO / "service").rglob("*.py"), *(REPO / "kan_core").rglob("*.py")])

# names that load pickles or run text as code, wherever they appear as code (not in strings or comments)
FORBIDDEN_NAMES = {"pickle", "cPickle", "dill", "cloudpickle", "marshal", "shelve", "joblib", "sympify", "parse_expr",
                   "__import__", "execfile", "runpy"}
FORBIDDEN_CALLS = {"eval", "exec", "compile"}                          # as builtins, not as methods (model.eval())
FORBIDDEN_ATTRIBUTES = {("torch", "load"), ("yaml", "load"), ("np", "load"), ("numpy", "load"), ("pd", "read_pickle")}
# the one exception: the SRBench judge parses benchmark formulas (files in this repository) with sympy's
# parser and a namespace without builtins; it serves the benchmarks and tests, never the API
ALLOWED = {("kan_core/judge.py", "parse_expr")}


def _findings(source: str, rel: str) -> list[str]:
    """Forbidden uses in `source` (the file `rel`), from its tokens: strings and comments never match."""
    tokens = [t for t in tokenize.generate_tokens(stdlib_io.StringIO(source).readline)
              if t.type in (tokenize.NAME, tokenize.OP)]
    found = []
    for i, tok in enumerate(tokens):
        if tok.type != tokenize.NAME:
            continue
        prev = tokens[i - 1].string if i else ""
        nxt = tokens[i + 1].string if i + 1 < len(tokens) else ""
        after = tokens[i + 2].string if i + 2 < len(tokens) else ""
        if tok.string in FORBIDDEN_NAMES and (rel, tok.string) not in ALLOWED:
            found.append(f"{rel}:{tok.start[0]} {tok.string}")
        if tok.string in FORBIDDEN_CALLS and prev != "." and nxt == "(":
            found.append(f"{rel}:{tok.start[0]} {tok.string}(")
        if nxt == "." and (tok.string, after) in FORBIDDEN_ATTRIBUTES:
            found.append(f"{rel}:{tok.start[0]} {tok.string}.{after}")
    return found


def test_no_source_file_can_unpickle_or_evaluate_text() -> None:
    assert len(SOURCES) > 30
    findings = [f for path in SOURCES
                for f in _findings(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())]
    assert findings == []


def test_the_scan_finds_what_it_looks_for() -> None:
    probe = "import pickle\nx = eval('1')\nm.eval()\nw = torch.load(f)\ns = 'exec(x)'  # eval(y)\n"
    assert [f.split(" ", 1)[1] for f in _findings(probe, "service/probe.py")] == ["pickle", "eval(", "torch.load"]
    assert _findings("from sympy import parse_expr\n", "kan_core/judge.py") == []


def test_the_service_never_imports_the_benchmark_judge() -> None:
    for path in (REPO / "service").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n.startswith("kan_core.judge") for n in names), path


# ---- tampered artifacts


@pytest.fixture
def artifact(app: FastAPI, client: TestClient) -> bytes:
    data = seed_tenant(app.state.session_factory, "default")
    response = client.get(f"/v1/models/{data.model_id}/artifact")
    assert response.status_code == 200
    return response.content


def _split(blob: bytes) -> tuple[dict[str, Any], bytes]:
    (n,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + n]), blob[8 + n:]


def _join(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def _retensor(blob: bytes, edit: Callable[[dict[str, torch.Tensor]], None]) -> bytes:
    header, _ = _split(blob)
    tensors = safetensors_torch.load(blob)
    edit(tensors)
    return safetensors_torch.save(tensors, metadata=header["__metadata__"])


def _reconfig(blob: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    header, data = _split(blob)
    config = json.loads(header["__metadata__"][kan_io.CONFIG_METADATA_KEY])
    edit(config)
    header["__metadata__"][kan_io.CONFIG_METADATA_KEY] = json.dumps(config)
    return _join(header, data)


def _reheader(blob: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    header, data = _split(blob)
    edit(header)
    return _join(header, data)


def _set(mapping: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        mapping = mapping[key]
    mapping[last] = value


TAMPERED: dict[str, Callable[[bytes], bytes]] = {
    "coef shape": lambda b: _retensor(b, lambda t: t.update({"layers.0.coef": t["layers.0.coef"][:, :, :-1].clone()})),
    "extra tensor": lambda b: _retensor(b, lambda t: t.update({"layers.0.payload": torch.zeros(4)})),
    "missing tensor": lambda b: _retensor(b, lambda t: t.pop("layers.1.scale_base")),
    "dtype": lambda b: _retensor(b, lambda t: t.update({"layers.0.scale_sp": t["layers.0.scale_sp"].float()})),
    "nan": lambda b: _retensor(b, lambda t: t["layers.1.coef"].view(-1).__setitem__(0, math.nan)),
    "mask not 0/1": lambda b: _retensor(b, lambda t: t["layers.0.mask"].mul_(0.5)),
    "no config": lambda b: _reheader(b, lambda h: h.pop("__metadata__")),
    "config not json": lambda b: _reheader(b, lambda h: h["__metadata__"].update({kan_io.CONFIG_METADATA_KEY: "{"})),
    "format": lambda b: _reconfig(b, lambda c: _set(c, "format", "pickle")),
    "format version": lambda b: _reconfig(b, lambda c: _set(c, "format_version", 99)),
    "huge width": lambda b: _reconfig(b, lambda c: _set(c, "model.width", [2, 10**9, 1])),
    "huge grid": lambda b: _reconfig(b, lambda c: _set(c, "model.grid", 10**12)),
    "many layers": lambda b: _reconfig(b, lambda c: _set(c, "model.width", [2] * 10_000)),
    "width type": lambda b: _reconfig(b, lambda c: _set(c, "model.width", "__import__('os')")),
    "unknown function": lambda b: _reconfig(b, lambda c: c["model"]["sym_names"][0][0].__setitem__(0, "__import__")),
    "dtype name": lambda b: _reconfig(b, lambda c: _set(c, "model.dtype", "object")),
    "huge declared shape": lambda b: _reheader(b, lambda h: h["layers.0.coef"].update({"shape": [10**6, 10**6, 10**6]})),
    "offsets past the end": lambda b: _reheader(b, lambda h: h["layers.0.coef"].update({"data_offsets": [0, 2**40]})),
    "header size lies": lambda b: struct.pack("<Q", 2**60) + b[8:],
    "truncated": lambda b: b[: len(b) // 2],
    "not safetensors": lambda b: b"\x80\x04\x95" + b[3:],  # a pickle protocol-4 prefix
}


def test_the_served_artifact_loads_back(artifact: bytes) -> None:
    model = kan_io.from_bytes(artifact)
    assert model.width == [2, 2, 1]


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_tampered_artifacts_are_refused(artifact: bytes, case: str) -> None:
    tampered = TAMPERED[case](artifact)
    assert tampered != artifact
    with pytest.raises(ValueError):
        kan_io.from_bytes(tampered)


# ---- stored formulas


FUNCTION_NAMES = ["x", "x^2", "x^3", "x^4", "1/x", "sqrt", "exp", "log", "abs", "sin", "cos", "tan", "tanh", "sgn",
                  "arctan", "gaussian", "1/sqrt", "arcsin", "arctanh"]


def _kan_like_formula(seed: int, names: list[str], variables: list[str]) -> sympy.Expr:
    """What kan_core.formula writes for a fully symbolic [2, 2, 1] network: sums of c*f(a*x + b) + d,
    composed, with the registry's sympy forms and 4-digit constants (symbolic_formula itself takes
    seconds per network; this takes microseconds)."""
    rng = np.random.default_rng(seed)

    def edge(x: sympy.Expr) -> sympy.Expr:
        a, b, c, d = (sympy.Float(round(float(v), 4)) for v in rng.uniform(-1.5, 1.5, 4))
        return c * functions.get(names[int(rng.integers(len(names)))]).sympy(a * x + b) + d

    inputs = [sympy.Symbol(v) for v in variables]
    hidden = [sum(edge(x) for x in inputs) for _ in range(2)]
    return sum(edge(h) for h in hidden)


@given(st.integers(0, 2**32 - 1), st.lists(st.sampled_from(FUNCTION_NAMES), min_size=1, max_size=4, unique=True))
@settings(max_examples=25)
def test_stored_formulas_are_read_by_the_whitelist(seed: int, names: list[str]) -> None:
    variables = ["x_1", "x_2"]
    formula = _kan_like_formula(seed, names, variables)
    parsed = model_store._parse(str(formula), variables)
    assert parsed.free_symbols <= set(formula.free_symbols)
    symbols = [sympy.Symbol(v) for v in variables]
    x = np.random.default_rng(seed).uniform(0.1, 0.9, size=(32, 2))
    with np.errstate(all="ignore"):
        expected = sympy.lambdify(symbols, formula, "numpy")(x[:, 0], x[:, 1]) * np.ones(32)
        got = sympy.lambdify(symbols, parsed, "numpy")(x[:, 0], x[:, 1]) * np.ones(32)
    both = np.isfinite(np.real(expected)) & np.isfinite(np.real(got))
    np.testing.assert_allclose(got[both], expected[both], rtol=1e-9, atol=1e-12)


def test_a_formula_written_by_kan_core_is_read_back() -> None:
    kan = KAN([2, 1], grid=3, k=3, seed=0)
    kan.layers[0].set_symbolic(0, 0, "sin", (math.pi, 0.0, 1.0, 0.0))
    kan.layers[0].set_symbolic(1, 0, "abs", (1.0, 0.5, 2.0, 0.0))
    (formula,) = kan_formula.symbolic_formula(kan, var_names=["x_1", "x_2"])
    assert "Abs(" in str(formula)  # sympy's name, which client formulas do not accept
    assert sympy.simplify(model_store._parse(str(formula), ["x_1", "x_2"]) - formula) == 0
