"""`kan_core.fast_objective`: the objective with a hand-written gradient gives autograd's values and
gradients, applies only where it should, and `fit` trains the same way on either path."""

import pytest
import torch

from kan_core import fast_objective
from kan_core.data import Dataset, make_dataset
from kan_core.model import KAN
from kan_core.objective import mse
from kan_core.product import ProductLayer
from kan_core.train import _forward, _forward_with_reg, fit


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset(lambda x: torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2), 2, n_train=300, n_test=300)


def _model(width, dtype, x, regrid: bool, mask_one: bool) -> KAN:
    model = KAN(width, 5, 3, seed=1, dtype=dtype)
    if regrid:  # quantile grids: Cox-de Boor; fresh grids are uniform: the closed form
        model.update_grid(x)
    if mask_one:
        model.layers[0].mask[0, -1] = 0
    return model


def _autograd(model, x, y, lamb, precise, u0):
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    if lamb > 0:
        pred, reg = _forward_with_reg(model, x, 1.0, 10.0, 0.0, 0.0, precise, u0)
    else:
        pred, reg = _forward(model, x), x.new_zeros(())
    loss = mse(pred, y)
    total = loss + lamb * reg if lamb > 0 else loss
    total.backward()
    return (total, loss, reg), [p.grad for p in params]


def _by_hand(model, x, y, lamb, precise, u0):
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = None
    assert fast_objective.supports(model, lamb, 0.0, 0.0)
    values = fast_objective.objective(model, x, y, lamb, 1.0, 10.0, precise, u0)
    return values, [p.grad for p in params]


def _assert_same_as_autograd(model, x, y, lamb, u0) -> list:
    """The objective's values (relative 1e-12) and gradients (1e-12 of their largest entry) by hand
    and through autograd; returns the gradients by hand."""
    ref_values, ref_grads = _autograd(model, x, y, lamb, True, u0)
    values, grads = _by_hand(model, x, y, lamb, True, u0)
    for a, b in zip(ref_values, values):
        torch.testing.assert_close(b, a, rtol=1e-12, atol=0)
    for a, b in zip(ref_grads, grads):
        assert (a is None) == (b is None)  # sym_affine: no gradient on either path
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-12 * float(a.abs().max()))
    return grads


@pytest.mark.parametrize("width, lamb, cached, regrid, mask_one", [
    ([2, 5, 1], 0.01, True, True, True),
    ([2, 5, 1], 0.01, True, False, False),
    ([2, 5, 1], 0.0, True, True, False),
    ([2, 3, 4, 2], 0.5, False, True, True),
    ([2, 3, 4, 2], 0.0, False, False, True),
    ([2, 1, 1], 0.0, True, True, False),
])
def test_objective_matches_autograd_float64(dataset, width, lamb, cached, regrid, mask_one):
    x = dataset.train_input
    y = torch.cat([dataset.train_label * (j + 1) for j in range(width[-1])], dim=1)
    model = _model(width, torch.float64, x, regrid, mask_one)
    model.layers[0].cache_fixed_inputs(cached)
    u0 = x.std(0) + 0.1 if lamb > 0 else None
    _assert_same_as_autograd(model, x, y, lamb, u0)
    model.layers[0].cache_fixed_inputs(False)


@pytest.mark.parametrize("precise", [True, False])
def test_objective_matches_autograd_float32(dataset, precise):
    x, y = dataset.train_input.float(), dataset.train_label.float()
    model = _model([2, 5, 1], torch.float32, x, True, False)
    u0 = x.std(0) + 0.1
    ref_values, ref_grads = _autograd(model, x, y, 0.01, precise, u0)
    values, grads = _by_hand(model, x, y, 0.01, precise, u0)
    for a, b in zip(ref_values, values):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=0)
    for a, b in zip(ref_grads, grads):
        if a is not None:
            torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * float(a.abs().max()))


def test_objective_accumulates_into_existing_gradients_and_skips_frozen_parameters(dataset):
    x, y = dataset.train_input, dataset.train_label
    model = _model([2, 3, 1], torch.float64, x, True, False)
    _, (g_coef, g_sb, *_) = _by_hand(model, x, y, 0.0, True, None)
    g_coef, g_sb = g_coef.clone(), g_sb.clone()
    model.layers[0].scale_sp.requires_grad_(False)
    model.layers[0].scale_sp.grad = None
    fast_objective.objective(model, x, y, 0.0, 1.0, 10.0, True, None)  # a second time: adds
    torch.testing.assert_close(model.layers[0].coef.grad, 2 * g_coef, rtol=1e-15, atol=0)
    torch.testing.assert_close(model.layers[0].scale_base.grad, 2 * g_sb, rtol=1e-15, atol=0)
    assert model.layers[0].scale_sp.grad is None and model.layers[0].sym_affine.grad is None


def test_supports_plain_layers_with_known_derivatives_without_coefficient_terms():
    model = KAN([2, 3, 1], seed=0)
    assert fast_objective.supports(model, 0.01, 0.0, 0.0) and fast_objective.supports(model, 0.0, 1.0, 1.0)
    assert not fast_objective.supports(model, 0.01, 0.1, 0.0) and not fast_objective.supports(model, 0.01, 0.0, 0.1)
    model.layers[1].set_symbolic(0, 0, "sin")
    assert fast_objective.supports(model, 0.0, 0.0, 0.0)  # sin has its derivative
    model.layers[1].set_symbolic(1, 0, "tan")
    assert not fast_objective.supports(model, 0.0, 0.0, 0.0)  # tan has none: autograd
    model.layers[1].clear_symbolic(1, 0)
    assert fast_objective.supports(model, 0.0, 0.0, 0.0)
    model.layers[1].clear_symbolic(0, 0)
    model.layers[1].mask.zero_()
    assert not fast_objective.supports(model, 0.0, 0.0, 0.0)  # a layer with no edge left
    product = KAN([2, 2, 1], seed=0)
    product.layers[0] = ProductLayer.from_layer(product.layers[0], [[0, 1]])
    assert not fast_objective.supports(product, 0.0, 0.0, 0.0)


@pytest.mark.parametrize("lamb", [0.0, 0.01])
@pytest.mark.parametrize("symbolic", [
    [(0, 0, 0, "sin"), (0, 1, 0, "x^2"), (1, 0, 0, "exp")],  # all symbolic (the seed formula's shape)
    [(0, 0, 1, "sin"), (0, 1, 2, "sqrt"), (1, 2, 0, "x^2"), (1, 0, 0, "log")],  # mixed, two into one node
])
def test_objective_with_symbolic_edges_matches_autograd(dataset, lamb, symbolic):
    x, y = dataset.train_input, dataset.train_label
    width = [2, 1, 1] if len(symbolic) == 3 else [2, 3, 1]
    model = _model(width, torch.float64, x, True, False)
    gen = torch.Generator().manual_seed(0)
    for layer, i, j, name in symbolic:
        model.layers[layer].set_symbolic(i, j, name, (torch.rand(4, generator=gen, dtype=torch.float64) + 0.5).tolist())
    model.layers[0].cache_fixed_inputs(True)
    u0 = x.std(0) + 0.1 if lamb > 0 else None
    grads = _assert_same_as_autograd(model, x, y, lamb, u0)
    model.layers[0].cache_fixed_inputs(False)
    assert any(g is not None and g.abs().max() > 0 for g in grads[3::4])  # sym_affine's gradients


@pytest.mark.parametrize("opt, lamb", [("LBFGS", 0.01), ("LBFGS", 0.0), ("Adam", 0.01)])
def test_fit_trains_alike_on_either_path(dataset, monkeypatch, opt, lamb):
    """A few steps with and without the hand-written gradient: the same history up to rounding."""
    def run():
        model = KAN([2, 3, 1], seed=0)
        return fit(model, dataset, opt=opt, steps=3, lr=0.01 if opt == "Adam" else 1.0, lamb=lamb,
                   lamb_entropy=10.0, lbfgs_max_iter=5)

    fast = run()
    monkeypatch.setattr(fast_objective, "supports", lambda *args: False)
    plain = run()
    for a, b in ((fast.train_rmse, plain.train_rmse), (fast.test_rmse, plain.test_rmse), (fast.reg, plain.reg)):
        assert a == pytest.approx(b, rel=1e-8, abs=1e-12)
