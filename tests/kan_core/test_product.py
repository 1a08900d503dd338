"""Multiplication nodes: ProductLayer, the separable product network, ALS initialisation."""

import numpy as np
import pytest
import sympy
import torch

from kan_core.data import make_dataset
from kan_core.formula import evaluate_formula, symbolic_formula
from kan_core.layer import KANLayer
from kan_core.model import KAN
from kan_core.product import ProductLayer, als_init, balance_products, separable_product_kan
from kan_core.prune import attribute, prune
from kan_core.symbolic import auto_symbolic
from kan_core.train import fit


def product_model(seed: int = 0) -> KAN:
    """[3 -> 4 subnodes grouped (0,) (1, 2, 3) -> 2 nodes -> 1]."""
    base = KAN([3, 4, 1], seed=seed)
    layer0 = ProductLayer.from_layer(base.layers[0], [[0], [1, 2, 3]])
    layer1 = KANLayer(2, 1, generator=torch.Generator().manual_seed(seed))
    return KAN._with_layers(base, [layer0, layer1])


def test_forward_multiplies_subnodes_in_groups():
    model = product_model()
    x = torch.rand(50, 3, dtype=torch.float64) * 2 - 1
    layer = model.layers[0]
    sub = layer.edge_outputs(x).sum(1)  # (B, 4): each subnode is the sum of its edges
    nodes = layer(x)
    assert nodes.shape == (50, 2)
    torch.testing.assert_close(nodes[:, 0], sub[:, 0])
    torch.testing.assert_close(nodes[:, 1], sub[:, 1] * sub[:, 2] * sub[:, 3])
    torch.testing.assert_close(layer.subnode_values(x), sub)
    assert model.width == [3, 2, 1]
    torch.testing.assert_close(model(x), model.layers[1](nodes))


def test_groups_must_partition_the_subnodes():
    base = KANLayer(2, 3)
    for bad in ([[0, 1]], [[0, 1], [1, 2]], [[0], [1], [2], []], [[0, 1, 3]]):
        with pytest.raises(ValueError, match="partition"):
            ProductLayer.from_layer(base, bad)


def test_refine_and_subset_keep_the_groups():
    model = product_model()
    x = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    fine = model.refine(10)
    assert isinstance(fine.layers[0], ProductLayer) and fine.layers[0].groups == ((0,), (1, 2, 3))
    torch.testing.assert_close(fine(x), model(x), atol=1e-2, rtol=0)
    small = model.layers[0].subset([0, 2], [1])  # node 1 only: subnodes 1, 2, 3
    assert small.groups == ((0, 1, 2),) and small.out_dim == 3 and small.n_nodes == 1
    torch.testing.assert_close(small.coef, model.layers[0].coef[[0, 2]][:, [1, 2, 3]])


def test_formula_of_a_symbolic_product_layer_matches_the_network():
    model = product_model()
    l0, l1 = model.layers
    l0.set_symbolic(0, 0, "sin", (2.0, 0.5, 1.5, 0.1))
    l0.set_symbolic(1, 1, "x", (1.0, 0.0, 2.0, 1.0))
    l0.set_symbolic(2, 2, "x^2", (1.0, 0.3, 1.0, 0.0))
    l0.set_symbolic(0, 3, "exp", (0.5, 0.0, 1.0, 0.0))
    with torch.no_grad():
        l0.mask.copy_(torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 0]], dtype=torch.float64))
    l1.set_symbolic(0, 0, "x", (1.0, 0.0, 1.0, 0.0))
    l1.set_symbolic(1, 0, "x", (1.0, 0.0, 3.0, -2.0))
    (expr,) = symbolic_formula(model, simplify=False, digits=15, tol=0.0)
    x = torch.rand(100, 3, dtype=torch.float64) * 2 - 1
    np.testing.assert_allclose(evaluate_formula(expr, ["x_1", "x_2", "x_3"], x), model(x)[:, 0].detach().numpy(),
                               rtol=1e-10, atol=1e-10)


def test_attribution_and_pruning_of_a_product_model():
    model = product_model()
    x = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    attr = attribute(model, x)
    assert [tuple(e.shape) for e in attr.edge_scores] == [(3, 4), (2, 1)]
    pruned = prune(model, x, node_th=0.0, edge_th=10.0)  # a threshold that would cut every edge
    layer = pruned.layers[0]
    assert isinstance(layer, ProductLayer) and layer.groups == ((0,), (1, 2, 3))
    assert bool((layer.mask.sum(0) >= 1).all())  # every product subnode keeps an edge


def test_separable_product_kan_structure():
    model = separable_product_kan(3, additive=True)
    layer = model.layers[0]
    assert model.width == [3, 2, 1] and layer.groups == ((0,), (1, 2, 3))
    assert layer.mask.tolist() == [[1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]]
    assert separable_product_kan(2).layers[0].groups == ((0, 1),)
    two = separable_product_kan(2, rank=2)
    assert two.width == [2, 2, 1] and two.layers[0].groups == ((0, 1), (2, 3))
    assert two.layers[0].mask.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    for bad in (dict(n_in=1), dict(n_in=2, rank=0)):
        with pytest.raises(ValueError):
            separable_product_kan(**bad)


def test_als_fits_a_sum_of_two_products():
    # x1*x2*(log(x4) - log(x3)) = x1 x2 log(x4) * 1 + x1 x2 * 1 * (-log(x3)): rank 2
    data = make_dataset(lambda x: x[:, 0] * x[:, 1] * torch.log(x[:, 3] / x[:, 2]), 4, ranges=(1, 5),
                        n_train=400, n_test=100)
    scaled = (data.train_input - 3) / 2  # on the grid
    one = als_init(separable_product_kan(4, grid=8), scaled, data.train_label, restarts=6)
    two = als_init(separable_product_kan(4, rank=2, grid=8), scaled, data.train_label, restarts=8)
    assert two < 1e-2 * float(data.train_label.std()) and two < 0.2 * one


def test_als_fits_a_signed_product_and_training_keeps_it():
    data = make_dataset(lambda x: x[:, 0] * torch.sin(2 * x[:, 1]) * (x[:, 2] + 0.5), 3, n_train=400, n_test=200)
    model = separable_product_kan(3, grid=8)
    rmse = als_init(model, data.train_input, data.train_label, restarts=6)
    assert rmse < 1e-3 * float(data.train_label.std())
    pred = model(data.train_input).detach()
    assert float((pred - data.train_label).pow(2).mean().sqrt()) == pytest.approx(rmse, rel=1e-6, abs=1e-12)
    with pytest.raises(ValueError, match="separable_product_kan"):
        als_init(KAN([3, 2, 1]), data.train_input, data.train_label)


def test_balance_keeps_the_function_and_equalises_factors():
    data = make_dataset(lambda x: x[:, 0] * x[:, 1], 2, n_train=300, n_test=100)
    model = separable_product_kan(2)
    als_init(model, data.train_input, data.train_label, restarts=2)
    fit(model, data, steps=3, update_grid=False)
    auto_symbolic(model, data.train_input, lib=["x", "x^2", "sin"])
    x = data.train_input
    with torch.no_grad():
        model.layers[0].sym_affine[:, 0, 2:] *= 100.0  # a badly scaled pair: 100 f0 * g1 / 100
        model.layers[0].sym_affine[:, 1, 2:] /= 100.0
    before = model(x).detach()
    balance_products(model, x)
    torch.testing.assert_close(model(x), before, rtol=1e-10, atol=1e-12)
    rms = model.layers[0].subnode_values(x).detach().pow(2).mean(0).sqrt()
    assert float(rms.max() / rms.min()) == pytest.approx(1.0, rel=1e-9)


def test_product_formula_is_exact_after_symbolic_fit():
    data = make_dataset(lambda x: x[:, 0] * x[:, 1], 2, n_train=300, n_test=100, seed=1)
    model = separable_product_kan(2)
    als_init(model, data.train_input, data.train_label, restarts=2)
    auto_symbolic(model, data.train_input, lib=["x", "x^2", "sin"])
    balance_products(model, data.train_input)
    fit(model, data, steps=10, update_grid=False)
    (expr,) = symbolic_formula(model)
    x1, x2 = sympy.symbols("x_1 x_2")
    assert sympy.simplify(expr - x1 * x2) == 0
