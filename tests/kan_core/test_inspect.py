"""kan_core.inspect.edges: JSON-ready per-edge data for spline, pruned and symbolic models."""

from __future__ import annotations

import json
import math

import pytest
import torch

from kan_core import inspect
from kan_core.model import KAN
from kan_core.prune import prune


def _x(n: int = 300, d: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, d, generator=g, dtype=torch.float64) * 2 - 1


def _model() -> KAN:
    model = KAN([2, 3, 1], grid=5, k=3, seed=0)
    model.update_grid(_x())
    return model


def test_spline_edges():
    model, x = _model(), _x()
    data = inspect.edges(model, x, n_points=11)
    json.dumps(data, allow_nan=False)
    assert [(e["layer"], e["in"], e["out"]) for e in data] == [
        (0, 0, 0), (0, 0, 1), (0, 0, 2), (0, 1, 0), (0, 1, 1), (0, 1, 2), (1, 0, 0), (1, 1, 0), (1, 2, 0)
    ]
    e = data[1]
    layer = model.layers[0]
    assert e["kind"] == "spline" and e["active"] and e["symbolic"] is None
    assert e["knots"] == layer.grid[0].tolist() and len(e["knots"]) == 5 + 2 * 3 + 1
    assert e["coefficients"] == layer.coef[0, 1].tolist() and len(e["coefficients"]) == 5 + 3
    assert e["scale_base"] == layer.scale_base[0, 1].item() and e["scale_sp"] == layer.scale_sp[0, 1].item()
    xs, ys = e["curve"]["x"], e["curve"]["y"]
    assert len(xs) == len(ys) == 11
    assert xs[0] == pytest.approx(float(x[:, 0].min())) and xs[-1] == pytest.approx(float(x[:, 0].max()))
    # the sampled curve is the edge's activation
    expected = layer.edge_outputs(torch.tensor(xs, dtype=torch.float64).unsqueeze(1).expand(-1, 2).contiguous())
    assert ys == pytest.approx(expected[:, 0, 1].tolist(), rel=1e-12, abs=1e-12)
    # second-layer curves span the range of the hidden activations
    hidden = model.layer_inputs(x)[1].detach()
    assert data[-1]["curve"]["x"][0] == pytest.approx(float(hidden[:, 2].min()))
    assert all(e["importance"] >= 0 and math.isfinite(e["importance"]) for e in data)


def test_symbolic_edge_reports_function_affine_and_r2_against_its_spline():
    model, x = _model(), _x()
    layer = model.layers[0]
    # fix edge (0, 0, 0) to x^2 fitted exactly on a spline that *is* a parabola
    with torch.no_grad():
        layer.scale_base[0, 0] = 0.0
    from kan_core import spline

    xs = torch.linspace(-1, 1, 200, dtype=torch.float64).unsqueeze(1).expand(-1, 2).contiguous()
    target = torch.zeros(200, 2, 3, dtype=torch.float64)
    target[:, 0, 0] = 0.5 * xs[:, 0] ** 2 + 0.1
    coef = spline.curve_to_coef(xs, target, layer.grid, layer.k)
    with torch.no_grad():
        layer.coef[0, 0] = coef[0, 0] / layer.scale_sp[0, 0]
    layer.set_symbolic(0, 0, "x^2", (1.0, 0.0, 0.5, 0.1))
    layer.set_symbolic(1, 2, "sin", (2.0, 0.0, 1.0, 0.0))  # nothing like its spline
    data = {(e["layer"], e["in"], e["out"]): e for e in inspect.edges(model, x)}
    good, bad = data[(0, 0, 0)], data[(0, 1, 2)]
    assert good["kind"] == "symbolic"
    assert good["symbolic"]["function"] == "x^2" and good["symbolic"]["affine"] == [1.0, 0.0, 0.5, 0.1]
    assert good["symbolic"]["r2"] == pytest.approx(1.0, abs=1e-6)
    assert bad["symbolic"]["r2"] < 0.5
    assert good["curve"]["y"][0] == pytest.approx(0.5 * good["curve"]["x"][0] ** 2 + 0.1)
    json.dumps(list(data.values()), allow_nan=False)


def test_pruned_model_lists_active_edges_only_unless_asked():
    model, x = _model(), _x()
    with torch.no_grad():
        model.layers[0].scale_base[:, 1] = 0.0
        model.layers[0].scale_sp[:, 1] = 0.0
        model.layers[1].scale_base[0, 0] = 0.0
        model.layers[1].scale_sp[0, 0] = 0.0
    model.layers[1].mask[0, 0] = 0.0  # removed edge
    pruned = prune(model, x)
    assert pruned.width == [2, 2, 1] or pruned.width == [2, 1, 1]
    data = inspect.edges(pruned, x)
    assert all(e["active"] for e in data)
    everything = inspect.edges(model, x, include_inactive=True)
    assert {(e["layer"], e["in"], e["out"]) for e in everything if not e["active"]} == {(1, 0, 0)}
    assert len(inspect.edges(model, x)) == len(everything) - 1


def test_constant_inputs_get_a_small_range():
    model = _model()
    x = torch.zeros(10, 2, dtype=torch.float64)
    data = inspect.edges(model, x, n_points=5)
    xs = data[0]["curve"]["x"]
    assert xs[0] < 0 < xs[-1] and all(math.isfinite(v) for v in data[0]["curve"]["y"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x": torch.zeros(5, 3, dtype=torch.float64)}, "shape"),
        ({"x": torch.zeros(1, 2, dtype=torch.float64)}, "shape"),
        ({"x": torch.full((5, 2), float("nan"), dtype=torch.float64)}, "NaN"),
        ({"x": [[0.0, 0.0]]}, "tensor"),
        ({"n_points": 1}, "n_points"),
    ],
)
def test_bad_arguments(kwargs, message):
    args = {"x": _x(), **kwargs}
    with pytest.raises(ValueError, match=message):
        inspect.edges(_model(), **args)


def test_float32_model_accepts_float64_sample():
    model = KAN([2, 2, 1], seed=1, dtype=torch.float32)
    data = inspect.edges(model, _x())
    assert len(data) == 6
