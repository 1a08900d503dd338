import pytest
import torch

from kan_core.data import make_dataset
from kan_core.model import KAN
from kan_core.prune import Attribution, attribute, prune
from kan_core.train import fit

f64 = torch.float64


def inputs(n=300, d=2, seed=0) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(seed), dtype=f64) * 2 - 1


def test_attribution_formula():
    model = KAN([2, 3, 2], seed=2)
    model.layers[1].set_symbolic(1, 0, "sin", (2.0, 0.0, 1.0, 0.0))
    x = inputs()
    attr = attribute(model, x)
    assert isinstance(attr, Attribution)
    assert [s.shape[0] for s in attr.node_scores] == [2, 3, 2]
    assert [tuple(e.shape) for e in attr.edge_scores] == [(2, 3), (3, 2)]
    assert torch.equal(attr.node_scores[-1], torch.ones(2, dtype=f64))
    acts = model.layer_inputs(x)
    e1 = model.layers[1].edge_outputs(acts[1]).std(0) / (acts[2].std(0) + 1e-4)
    assert torch.allclose(attr.edge_scores[1], e1)
    assert e1[1, 0] > 0  # the symbolic edge counts
    assert torch.allclose(attr.node_scores[1], e1.sum(1))
    e0 = model.layers[0].edge_outputs(acts[0]).std(0) / (acts[1].std(0) + 1e-4) * attr.node_scores[1]
    assert torch.allclose(attr.edge_scores[0], e0)
    assert torch.allclose(attr.node_scores[0], e0.sum(1))


def test_pruning_dead_nodes_keeps_outputs_exactly():
    model = KAN([2, 4, 1], seed=0)
    model.layers[1].mask[1, 0] = 0  # hidden nodes 1 and 3 feed nothing
    model.layers[1].mask[3, 0] = 0
    model.layers[0].set_symbolic(0, 2, "x^2", (1.0, 0.0, 1.0, 0.0))
    x = inputs()
    small = prune(model, x, node_th=1e-2, edge_th=0.0)
    assert small.width == [2, 2, 1]
    assert small.layers[0].sym_names == [["", "x^2"], ["", ""]]
    # the same sums without the zero terms: equal up to the GEMM's summation order
    assert torch.allclose(small(x), model(x), rtol=0, atol=1e-15)
    assert model.width == [2, 4, 1]  # the original is untouched


def test_pruning_a_trained_sparse_model():
    f = lambda x: torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2)  # noqa: E731
    ds = make_dataset(f, 2, n_train=300, n_test=300)
    model = KAN([2, 5, 1], seed=0)
    fit(model, ds, steps=10, lamb=0.01, lamb_entropy=10.0)
    small = prune(model, ds.train_input)
    assert small.width[0] == 2 and small.width[-1] == 1 and small.width[1] < 5
    x = ds.test_input
    rel = (small(x) - model(x)).pow(2).mean().sqrt() / ds.test_label.std()
    assert rel < 1e-2  # the removed nodes' near-constant outputs were folded into kept edges


def test_edge_pruning_keeps_the_mean():
    model = KAN([2, 2, 1], seed=0)
    with torch.no_grad():
        model.layers[0].coef[1, 0] += 3.0  # edge 1 -> 0: a large constant, tiny variation
        model.layers[0].scale_base[1, 0] = 1e-6
        model.layers[0].coef[1, 0, :] = 3.0 / model.layers[0].scale_sp[1, 0]
    x = inputs()
    small = prune(model, x, node_th=0.0, edge_th=1e-3)
    assert small.layers[0].mask[1, 0] == 0
    assert (small(x) - model(x)).abs().max() < 1e-4


def test_hidden_layer_keeps_its_best_node():
    model = KAN([2, 3, 1], seed=0)
    small = prune(model, inputs(), node_th=1e9, edge_th=0.0)
    assert small.width == [2, 1, 1]


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: attribute(KAN([2, 1]), inputs(d=3)), "shape"),
        (lambda: attribute(KAN([2, 1]), inputs(n=1)), "at least 2"),
        (lambda: prune(KAN([2, 1]), inputs(), node_th=-1.0), "thresholds"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
