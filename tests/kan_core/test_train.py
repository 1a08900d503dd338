import math

import pytest
import torch

from kan_core.data import Dataset, make_dataset
from kan_core.errors import NonFiniteLossError, TrainingCancelled
from kan_core.model import KAN
from kan_core.train import History, StepInfo, fit, regularizer

f64 = torch.float64


@pytest.fixture(scope="module")
def dataset() -> Dataset:
    return make_dataset(lambda x: torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2), 2, n_train=300, n_test=300)


def reference_reg(model: KAN, x: torch.Tensor, l1: float, ent: float, coef: float, coefdiff: float) -> torch.Tensor:
    """The regulariser from materialised per-edge activations (pykan's way)."""
    reg = 0.0
    for layer, h in zip(model.layers, model.layer_inputs(x)):
        edges = layer.edge_outputs(h) * (1 - layer.sym_mask)  # spline edges only
        a = edges.std(0) / (h.std(0)[:, None] + 0.1)
        p_row = a / (a.sum(1, keepdim=True) + 1)
        p_col = a / (a.sum(0, keepdim=True) + 1)
        ent_row = -(p_row * torch.log2(p_row + 1e-4)).sum(1).mean()
        ent_col = -(p_col * torch.log2(p_col + 1e-4)).sum(0).mean()
        m = layer.mask * (1 - layer.sym_mask)
        reg = reg + l1 * a.sum() + ent * (ent_row + ent_col)
        reg = reg + coef * (m * layer.coef.abs().mean(-1)).sum()
        reg = reg + coefdiff * (m * layer.coef.diff(dim=-1).abs().mean(-1)).sum()
    return reg


def test_regularizer_matches_materialised_reference(dataset):
    model = KAN([2, 3, 2], seed=1)
    model.layers[0].mask[1, 2] = 0
    model.layers[1].set_symbolic(0, 1, "sin", (1.0, 0.0, 1.0, 0.0))
    x = dataset.train_input
    got = regularizer(model, x, 1.0, 2.0, 0.5, 0.25)
    assert torch.allclose(got, reference_reg(model, x, 1.0, 2.0, 0.5, 0.25), rtol=1e-10)


def test_fit_lbfgs_learns(dataset):
    model = KAN([2, 5, 1], seed=0)
    seen: list[StepInfo] = []
    hist = fit(model, dataset, steps=10, callback=seen.append, stage="train")
    assert isinstance(hist, History) and len(hist) == 10
    assert hist.last.test_rmse < 0.1 * hist.test_rmse[0] or hist.last.test_rmse < 0.05
    assert [s.step for s in seen] == list(range(10)) and seen[-1].steps == 10 and seen[0].stage == "train"
    assert seen[-1] == hist.last
    assert hist.reg == [0.0] * 10


def test_fit_with_regulariser_reports_reg(dataset):
    model = KAN([2, 5, 1], seed=0)
    hist = fit(model, dataset, steps=3, lamb=0.01, lamb_entropy=10.0, lamb_coef=0.1, lamb_coefdiff=0.1)
    assert all(r > 0 and math.isfinite(r) for r in hist.reg)
    assert math.isfinite(hist.last.train_rmse)


@pytest.mark.parametrize("opt, precise_reg, expected", [
    ("LBFGS", None, True), ("Adam", None, False), ("LBFGS", False, False), ("Adam", True, True),
])
def test_fit_chooses_precise_reg_per_optimiser(dataset, monkeypatch, opt, precise_reg, expected):
    """None: float64 edge-std accumulation for LBFGS (line search), the model's dtype for Adam
    (on either objective path: autograd's `forward_with_edge_std` or `fast_objective.objective`)."""
    from kan_core import fast_objective
    from kan_core.layer import KANLayer

    seen: list[bool] = []
    orig, orig_net = KANLayer.forward_with_edge_std, fast_objective.objective

    def spy(self, x, precise=True):
        seen.append(precise)
        return orig(self, x, precise)

    def spy_net(model, x, y, lamb, lamb_l1, lamb_entropy, precise, u0):
        seen.append(precise)
        return orig_net(model, x, y, lamb, lamb_l1, lamb_entropy, precise, u0)

    monkeypatch.setattr(KANLayer, "forward_with_edge_std", spy)
    monkeypatch.setattr(fast_objective, "objective", spy_net)
    model = KAN([2, 3, 1], seed=0, dtype=torch.float32)
    hist = fit(model, dataset, opt=opt, steps=2, lr=0.01 if opt == "Adam" else 1.0, lamb=0.01,
               precise_reg=precise_reg, lbfgs_max_iter=2)
    assert seen and set(seen) == {expected}
    assert math.isfinite(hist.last.train_rmse) and math.isfinite(hist.last.reg)


def test_fit_adam_minibatch(dataset):
    model = KAN([2, 3, 1], seed=0)
    hist = fit(model, dataset, opt="Adam", steps=30, lr=0.02, batch=64, lamb=0.001)
    assert hist.last.train_rmse < hist.train_rmse[0]


def test_fit_is_reproducible(dataset):
    runs = []
    for _ in range(2):
        model = KAN([2, 3, 1], seed=4)
        fit(model, dataset, opt="Adam", steps=5, lr=0.01, batch=50, seed=9)
        runs.append(model.state_dict())
    for name, t in runs[0].items():
        assert torch.equal(t, runs[1][name]), name


def test_grid_updates_follow_schedule(dataset, monkeypatch):
    model = KAN([2, 3, 1])
    calls: list[int] = []
    steps_done: list[int] = []
    orig = KAN.update_grid
    monkeypatch.setattr(KAN, "update_grid", lambda self, x: (calls.append(len(steps_done)), orig(self, x)))
    fit(model, dataset, opt="Adam", lr=0.01, steps=12, grid_update_num=5, stop_grid_update_step=10,
        callback=lambda s: steps_done.append(s.step))
    assert calls == [0, 2, 4, 6, 8]
    calls.clear(), steps_done.clear()
    fit(model, dataset, opt="Adam", lr=0.01, steps=12, update_grid=False, callback=lambda s: steps_done.append(s.step))
    assert calls == []


def test_should_stop_cancels_between_steps(dataset):
    model = KAN([2, 3, 1])
    seen = []
    with pytest.raises(TrainingCancelled):
        fit(model, dataset, opt="Adam", lr=0.01, steps=10, callback=seen.append, should_stop=lambda: len(seen) >= 3)
    assert len(seen) == 3


def test_non_finite_loss_restores_parameters():
    x = torch.linspace(-1, 1, 50, dtype=f64)[:, None]
    ds = Dataset.from_arrays(x, torch.full((50,), 1e300, dtype=f64), x, torch.zeros(50))  # MSE overflows
    model = KAN([1, 2, 1])
    before = {n: t.clone() for n, t in model.state_dict().items()}
    with pytest.raises(NonFiniteLossError) as info:
        fit(model, ds, opt="Adam", steps=3, stage="boom")
    assert info.value.step == 0 and info.value.stage == "boom"
    for name, t in model.state_dict().items():
        assert torch.equal(t, before[name]), name


def test_float32_model_with_float64_data(dataset):
    model = KAN([2, 3, 1], dtype=torch.float32)
    hist = fit(model, dataset, steps=2)
    assert math.isfinite(hist.last.test_rmse) and model.dtype == torch.float32


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(opt="SGD"), "opt"),
        (dict(steps=-1), "steps"),
        (dict(lr=0.0), "lr"),
        (dict(batch=0), "batch"),
        (dict(lamb=-1.0), "lamb"),
        (dict(lamb_entropy=float("nan")), "lamb_entropy"),
        (dict(grid_update_num=0), "grid_update_num"),
        (dict(lamb=0.1, batch=1), "at least 2"),
        (dict(precise_reg=1), "precise_reg"),
    ],
)
def test_bad_arguments(dataset, kw, match):
    with pytest.raises(ValueError, match=match):
        fit(KAN([2, 1]), dataset, **kw)


def test_dataset_shape_mismatch(dataset):
    with pytest.raises(ValueError, match="inputs"):
        fit(KAN([3, 1]), dataset)


@pytest.mark.parametrize("opt", ["LBFGS", "Adam"])
def test_fit_a_model_with_every_edge_masked_is_a_no_op(dataset, opt):
    # e.g. after a strong regulariser let prune() remove every edge: nothing depends on the weights
    model = KAN([2, 2, 1], seed=0)
    for layer in model.layers:
        layer.mask.zero_()
    before = [p.detach().clone() for p in model.parameters()]
    history = fit(model, dataset, opt=opt, steps=3, lr=0.01, update_grid=False)
    assert len(history) == 3 and all(math.isfinite(v) for v in history.train_rmse)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


@pytest.mark.parametrize("opt, batch", [("LBFGS", -1), ("Adam", 100)])
def test_fit_is_bit_for_bit_reproducible(dataset, opt, batch):
    """Two runs with the same seed give identical parameters and histories (the first layer's
    cached features included), and fit leaves no cache behind."""
    runs = []
    for _ in range(2):
        model = KAN([2, 3, 1], seed=3)
        hist = fit(model, dataset, opt=opt, steps=4, batch=batch, lr=1.0 if opt == "LBFGS" else 0.01,
                   lamb=0.01, lamb_entropy=10.0, grid_update_num=2, stop_grid_update_step=4, seed=1)
        runs.append(([p.detach().clone() for p in model.parameters()], hist))
        assert model.layers[0]._fixed is None
    (p1, h1), (p2, h2) = runs
    assert all(torch.equal(a, b) for a, b in zip(p1, p2))
    assert h1.train_rmse == h2.train_rmse and h1.test_rmse == h2.test_rmse and h1.reg == h2.reg


def test_fit_with_regulariser_trains_a_product_network(dataset):
    """A separable product network (ProductLayer first) trains with the regulariser too."""
    from kan_core.product import separable_product_kan

    model = separable_product_kan(2, seed=0)
    hist = fit(model, dataset, steps=2, lamb=0.01, lbfgs_max_iter=3)
    assert math.isfinite(hist.last.train_rmse) and hist.last.reg > 0
