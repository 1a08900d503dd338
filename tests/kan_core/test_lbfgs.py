import copy

import pytest
import torch

from kan_core.data import make_dataset
from kan_core.lbfgs import LBFGS
from kan_core.model import KAN
from kan_core.train import _forward_with_reg


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(lambda x: torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2), 2, n_train=200, n_test=2)


def _objective(model, x, y, lamb):
    pred, reg = _forward_with_reg(model, x, 1.0, 10.0, 0.0, 0.0, True)
    return (pred - y).pow(2).mean() + lamb * reg


@pytest.mark.parametrize("lamb, reuse", [(0.0, False), (0.01, True)])
def test_iterates_match_torch_lbfgs_bit_for_bit(dataset, lamb, reuse):
    """Same algorithm as torch.optim.LBFGS (strong Wolfe, history 10, the fit's tolerances): in
    float64 every step lands on exactly the same parameters, with the same losses; reusing the
    previous step's last evaluation saves one evaluation per step and changes nothing else."""
    x, y = dataset.train_input, dataset.train_label
    ours = KAN([2, 3, 1], seed=3)
    ours.layers[1].set_symbolic(1, 0, "sin", (1.5, 0.2, 0.7, 0.1))  # a symbolic edge's affine trains too
    ref = copy.deepcopy(ours)
    kw = dict(lr=1.0, max_iter=20, history_size=10, tolerance_grad=1e-32, tolerance_change=1e-32)
    opt_ref = torch.optim.LBFGS(list(ref.parameters()), line_search_fn="strong_wolfe", **kw)
    opt = LBFGS(list(ours.parameters()), **kw)
    evals = {"ref": 0, "ours": 0}

    def closure_ref():
        opt_ref.zero_grad()
        obj = _objective(ref, x, y, lamb)
        obj.backward()
        evals["ref"] += 1
        return obj

    def closure():
        obj = _objective(ours, x, y, lamb)
        obj.backward()
        evals["ours"] += 1
        return obj

    for _ in range(3):
        assert opt.step(closure, reuse=reuse) == float(opt_ref.step(closure_ref).detach())
        for p, q in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(p, q)
    assert evals["ours"] == evals["ref"] - (2 if reuse else 0) and evals["ref"] > 3
    opt.release()
    grads = [p.grad for p in ours.parameters()]
    assert all(g is not None and g._base is None for g in grads)  # no longer views of the flat buffer


def test_no_parameters_rejected():
    with pytest.raises(ValueError):
        LBFGS([])
