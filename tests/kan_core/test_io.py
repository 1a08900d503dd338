"""kan_core.io: bitwise round trips, and rejection of malformed artifacts with a precise message."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import torch as st

from kan_core import io
from kan_core.functions import DEFAULT_LIBRARY, SymbolicFunction
from kan_core.model import KAN

DTYPES = [torch.float32, torch.float64]


def _x(dtype: torch.dtype, n: int = 200, d: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1).to(dtype)


def _spline_model(dtype: torch.dtype) -> KAN:
    model = KAN([2, 4, 3, 1], grid=5, k=3, seed=3, dtype=dtype)
    model.update_grid(_x(dtype))  # adaptive (non-uniform) grids
    return model


def _symbolic_model(dtype: torch.dtype) -> KAN:
    model = _spline_model(dtype)
    model.layers[0].set_symbolic(0, 1, "sin", (3.1, 0.2, 0.9, -0.1))
    model.layers[0].set_symbolic(1, 2, "x^2", (1.0, 0.0, 0.5, 0.0))
    model.layers[1].set_symbolic(2, 0, "exp", (0.7, -0.3, 1.2, 0.4))
    return model


def _pruned_model(dtype: torch.dtype) -> KAN:
    prune = pytest.importorskip("kan_core.prune").prune

    model = _symbolic_model(dtype)
    with torch.no_grad():  # make some nodes and edges negligible so that pruning removes them
        model.layers[0].scale_base[:, 3] = 0.0
        model.layers[0].scale_sp[:, 3] = 0.0
        model.layers[1].scale_base[3] = 0.0
        model.layers[1].scale_sp[3] = 0.0
    pruned = prune(model, _x(dtype))
    assert pruned.width[1] < 4
    return pruned


BUILDERS = {
    "spline": _spline_model,
    "refined": lambda dtype: _spline_model(dtype).refine(8),
    "symbolic": _symbolic_model,
    "pruned": _pruned_model,
}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", list(BUILDERS))
def test_round_trip_is_bitwise(kind, dtype):
    model = BUILDERS[kind](dtype)
    weights, config = io.dumps(model)
    assert isinstance(weights, bytes)
    config = json.loads(json.dumps(config, allow_nan=False))  # JSON-able, and survives JSON
    loaded = io.loads(weights, config)
    x = _x(dtype, seed=1)
    assert loaded.width == model.width and loaded.dtype == dtype
    assert torch.equal(loaded(x), model(x))
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), name
    assert [layer.sym_names for layer in loaded.layers] == [layer.sym_names for layer in model.layers]

    blob = io.to_bytes(model)
    assert torch.equal(io.from_bytes(blob)(x), model(x))
    assert io.to_bytes_from(weights, config) == blob


def test_config_envelope():
    weights, config = io.dumps(_symbolic_model(torch.float64))
    assert config["format"] == "kan_core" and config["format_version"] == 1
    assert config["model"]["width"] == [2, 4, 3, 1]
    assert config["model"]["sym_names"][0][0][1] == "sin"
    assert weights[8:9] == b"{"  # a safetensors header, never a pickle


def test_loads_onto_a_device_and_with_a_custom_library():
    half = SymbolicFunction("half", lambda x: 0.5 * x, lambda x: x / 2, 1)
    model = _spline_model(torch.float64)
    model.layers[1].set_symbolic(0, 0, half)
    weights, config = io.dumps(model)
    with pytest.raises(ValueError, match="half"):
        io.loads(weights, config)
    loaded = io.loads(weights, config, library=DEFAULT_LIBRARY.extend(half), device="cpu")
    x = _x(torch.float64)
    assert torch.equal(loaded(x), model(x))


# ---- rejection


def _edit(weights: bytes, edit) -> bytes:
    tensors = st.load(weights)
    edit(tensors)
    return st.save(tensors)


def _set(name, value):
    def edit(t):
        t[name] = value(t[name]) if callable(value) else value

    return edit


BAD_WEIGHTS = {
    "missing": (lambda t: t.pop("layers.1.scale_sp"), "missing \\['layers.1.scale_sp'\\]"),
    "unexpected": (_set("layers.0.extra", torch.zeros(2)), "unexpected \\['layers.0.extra'\\]"),
    "shape": (_set("layers.1.scale_base", lambda v: v[:, :2].contiguous()), "'layers.1.scale_base' has shape"),
    "coef shape": (_set("layers.0.coef", lambda v: v[:, :, :5].contiguous()), "'layers.0.coef' has shape"),
    "dtype": (_set("layers.0.scale_sp", lambda v: v.float()), "'layers.0.scale_sp' has dtype"),
    "nan": (_set("layers.2.coef", lambda v: v.index_fill(0, torch.tensor([0]), float("nan"))), "layers.2.coef"),
    "mask": (_set("layers.0.mask", lambda v: v * 0.5), "'layers.0.mask' must hold only 0 and 1"),
    "sym_mask": (_set("layers.0.sym_mask", lambda v: torch.ones_like(v)), "'layers.0.sym_mask' disagrees"),
    "grid": (_set("layers.1.grid", lambda v: v.flip(1).contiguous()), "'layers.1.grid' must be increasing"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_loads_rejects_inconsistent_weights(case):
    edit, message = BAD_WEIGHTS[case]
    weights, config = io.dumps(_symbolic_model(torch.float64))
    with pytest.raises(ValueError, match=message):
        io.loads(_edit(weights, edit), config)


def _with(config: dict, path: list, value) -> dict:
    config = json.loads(json.dumps(config))
    node = config
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return config


BAD_CONFIGS = {
    "format": (["format"], "pykan", "format must be 'kan_core'"),
    "version": (["format_version"], 2, "format_version 2"),
    "no model": (["model"], KeyError, "config.model"),
    "width": (["model", "width"], [2, 40, 3, 1], "'layers.0.coef' has shape"),
    "width type": (["model", "width"], "2,4,1", "width"),
    "grid": (["model", "grid"], 50, "config implies"),
    "k": (["model", "k"], 0, "grid and k"),
    "dtype": (["model", "dtype"], "float32", "dtype"),
    "missing key": (["model", "seed"], KeyError, "seed"),
    "function": (["model", "sym_names", 0, 0, 1], "sinc", "sinc"),
    "sym_names shape": (["model", "sym_names", 0], [["", "sin"]], "sym_names"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_loads_rejects_bad_configs(case):
    path, value, message = BAD_CONFIGS[case]
    weights, config = io.dumps(_symbolic_model(torch.float64))
    with pytest.raises(ValueError, match=message):
        io.loads(weights, _with(config, path, value))


@pytest.mark.parametrize("weights", [b"", b"not safetensors at all", "a string", None])
def test_loads_rejects_non_safetensors(weights):
    _, config = io.dumps(_spline_model(torch.float64))
    with pytest.raises(ValueError, match="weights"):
        io.loads(weights, config)


def test_loads_rejects_a_non_dict_config():
    weights, _ = io.dumps(_spline_model(torch.float64))
    with pytest.raises(ValueError, match="config must be an object"):
        io.loads(weights, ["kan_core"])


def test_from_bytes_needs_the_config_metadata():
    weights, _ = io.dumps(_spline_model(torch.float64))
    with pytest.raises(ValueError, match="kan_config"):
        io.from_bytes(weights)
    with pytest.raises(ValueError, match="too short"):
        io.from_bytes(b"abc")
    with pytest.raises(ValueError, match="header size"):
        io.from_bytes(b"\xff" * 16)
    blob = st.save({"a": torch.zeros(1)}, metadata={io.CONFIG_METADATA_KEY: "{not json"})
    with pytest.raises(ValueError, match="not valid JSON"):
        io.from_bytes(blob)


def test_dumps_rejects_other_objects():
    with pytest.raises(ValueError, match="KAN"):
        io.dumps(torch.nn.Linear(2, 1))
