import json

import pytest
import torch

from kan_core import spline
from kan_core.model import KAN

f64 = torch.float64


def inputs(n=200, d=2, seed=0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=f64) * 2 - 1


def test_shapes_and_width():
    model = KAN([2, 5, 3, 1], grid=4, k=2)
    assert model.width == [2, 5, 3, 1] and model.depth == 3 and model.grid == 4 and model.k == 2
    assert model(inputs()).shape == (200, 1)
    acts = model.layer_inputs(inputs())
    assert [a.shape[1] for a in acts] == [2, 5, 3, 1]
    assert torch.equal(acts[-1], model(inputs()))
    assert torch.equal(acts[1], model.layers[0](inputs()))


def test_seed_reproducible_and_global_rng_untouched():
    state = torch.get_rng_state()
    a, b = KAN([3, 4, 2], seed=7), KAN([3, 4, 2], seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    for (n, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), n
    assert torch.equal(a(inputs(d=3)), b(inputs(d=3)))
    assert not torch.equal(a.layers[0].scale_base, KAN([3, 4, 2], seed=8).layers[0].scale_base)


def test_float32_and_float64():
    m32 = KAN([2, 3, 1], dtype=torch.float32)
    m64 = KAN([2, 3, 1])
    assert all(p.dtype == torch.float32 for p in m32.parameters()) and m32.dtype == torch.float32
    y32, y64 = m32(inputs().float()), m64(inputs())
    assert y32.dtype == torch.float32
    assert torch.allclose(y32.double(), y64, atol=1e-5)  # same init, up to rounding


def test_update_grid_layer_by_layer():
    model = KAN([2, 3, 1], grid=5)
    x = inputs(500) * 2
    before = model(x)
    model.update_grid(x)
    acts = model.layer_inputs(x)
    for layer, a in zip(model.layers, acts):
        inner = spline.interior(layer.grid, layer.k)
        assert torch.allclose(inner[:, 0], a.min(0).values) and torch.allclose(inner[:, -1], a.max(0).values)
    assert (model(x) - before).abs().max() < 5e-3  # the initial splines are near flat (noise 0.1 / G)


def test_refine():
    model = KAN([2, 3, 1], grid=3)
    with torch.no_grad():
        for layer in model.layers:
            layer.coef.normal_(generator=torch.Generator().manual_seed(1))
    model.layers[1].set_symbolic(2, 0, "sin", (1.0, 0.0, 0.5, 0.0))
    x = inputs(300)
    model.update_grid(x)  # every grid domain covers its layer's inputs on x
    fine = model.refine(6)
    assert fine.grid == 6 and fine.width == model.width
    assert fine.config()["sym_names"] == model.config()["sym_names"]
    assert torch.allclose(fine(x), model(x), atol=1e-9)


def test_config_round_trip():
    model = KAN([2, 4, 1], grid=6, k=2, seed=3, dtype=torch.float32, grid_range=(-2, 3))
    model.layers[0].set_symbolic(1, 2, "exp", (1.0, 0.0, 1.0, 0.0))
    model.layers[0].mask[0, 3] = 0
    cfg = model.config()
    assert cfg["format_version"] == 1 and cfg["width"] == [2, 4, 1] and cfg["dtype"] == "float32"
    cfg = json.loads(json.dumps(cfg))
    rebuilt = KAN.from_config(cfg)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.config() == cfg
    x = inputs().float()
    assert torch.equal(rebuilt(x), model(x))


def test_from_config_errors():
    cfg = KAN([2, 1]).config()
    with pytest.raises(ValueError, match="format_version"):
        KAN.from_config({**cfg, "format_version": 2})
    with pytest.raises(ValueError, match="missing 'k'"):
        KAN.from_config({n: v for n, v in cfg.items() if n != "k"})
    with pytest.raises(ValueError, match="sym_names"):
        KAN.from_config({**cfg, "sym_names": [[[""]]]})
    with pytest.raises(ValueError, match="unknown symbolic function"):
        KAN.from_config({**cfg, "sym_names": [[["nope"], [""]]]})


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: KAN([3]), "at least two"),
        (lambda: KAN([2, 0, 1]), "integer >= 1"),
        (lambda: KAN([2, 1], grid=0), "grid"),
        (lambda: KAN([2, 1], k=0), "k"),
        (lambda: KAN([2, 1], dtype=torch.int32), "dtype"),
        (lambda: KAN([2, 1])(torch.zeros(4, 3, dtype=f64)), r"shape \(B, 2\)"),
        (lambda: KAN([2, 1])(torch.tensor([[0.0, float("nan")]], dtype=f64)), "NaN"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_inference_mode_and_autograd_mix():
    with torch.inference_mode():
        built_there = KAN([2, 3, 1])
        assert built_there(inputs()).shape == (200, 1)
    model = KAN([2, 3, 1])
    with torch.inference_mode():
        y = model(inputs())
    model(inputs()).sum().backward()  # nothing cached in inference mode leaks into autograd
    assert torch.equal(model(inputs()).detach(), y)


def test_input_gradients_and_repeated_backward():
    model = KAN([2, 3, 2], seed=1)
    x = inputs(5)
    jac = torch.autograd.functional.jacobian(lambda v: model(v).sum(0), x)  # one backward per output
    eps = 1e-6
    for d in range(2):
        shift = torch.zeros_like(x)
        shift[:, d] = eps
        fd = (model(x + shift) - model(x - shift)) / (2 * eps)  # (B, 2)
        assert torch.allclose(jac[:, :, d], fd.T, atol=1e-6)
