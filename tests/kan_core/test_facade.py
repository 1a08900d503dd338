"""The pykan-style facade (kan_core.facade): the seed article's code, as written, recovers
exp(sin(pi*x1) + x2^2); pykan's dict datasets and kan_core Datasets both work; nothing is written
to the working directory; plot gives a matplotlib Figure."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy
import torch
from matplotlib.figure import Figure

import kan_core
from kan_core.data import Dataset
from kan_core.facade import DATASET_KEYS, KAN, as_dataset, create_dataset
from kan_core.judge import is_solution
from kan_core.model import KAN as KANModule

ARTICLE_LIB = ["x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "tanh", "sin", "abs"]


def _seed_formula(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(torch.sin(torch.pi * x[:, [0]]) + x[:, [1]] ** 2)


@pytest.fixture
def no_files_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty working directory, and check it is still empty afterwards (pykan writes
    ./model checkpoints and ./figures)."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert list(tmp_path.iterdir()) == []


def test_the_seed_article_code_recovers_the_seed_formula(no_files_here):
    dataset = create_dataset(_seed_formula, n_var=2)
    model = KAN(width=[2, 5, 1], grid=5, k=3, seed=0)
    model.fit(dataset, opt="LBFGS", steps=20, lamb=0.01, lamb_entropy=10.0)
    model = model.prune()
    assert model.width[1] < 5
    model.fit(dataset, opt="LBFGS", steps=50)
    model.auto_symbolic(lib=ARTICLE_LIB)
    results = model.fit(dataset, opt="LBFGS", steps=50)
    formula = model.symbolic_formula()[0][0]
    assert is_solution(formula, "exp(sin(pi*x_1) + x_2**2)", ["x_1", "x_2"]), formula
    assert results["test_loss"][-1] < 1e-6
    assert isinstance(model.plot(), Figure)


def test_dict_and_dataset_train_alike():
    data = create_dataset(lambda x: x[:, [0]] ** 2, n_var=1, train_num=50, test_num=20)
    assert sorted(data) == sorted(DATASET_KEYS) and data["train_input"].shape == (50, 1)
    as_core = Dataset.from_arrays(*(data[k] for k in DATASET_KEYS))
    runs = []
    for given in (data, as_core):
        model = KAN(width=[1, 1], grid=3, k=3, seed=1)
        results = model.fit(given, steps=3)
        assert sorted(results) == ["reg", "test_loss", "train_loss"] and len(results["train_loss"]) == 3
        runs.append(results["test_loss"])
    assert runs[0] == runs[1]


def test_fix_symbolic_then_formula_and_forward():
    data = create_dataset(lambda x: 2 * torch.sin(x[:, [0]]) + 1, n_var=1, ranges=[-2, 2], train_num=100, test_num=50)
    model = KAN([1, 1], grid=5, k=3, seed=0, var_names=["t"])
    model.fit(data, steps=5)
    best = model.suggest_symbolic(0, 0, 0, lib=["x", "sin", "exp"], topk=2)
    assert best[0].name == "sin" and len(best) == 2
    model.fix_symbolic(0, 0, 0, "sin")
    formula, variables = model.symbolic_formula()
    assert variables == [sympy.Symbol("t")]
    assert is_solution(formula[0], "2*sin(t) + 1", ["t"]), formula[0]
    x = torch.linspace(-2, 2, 7, dtype=torch.float64).unsqueeze(1)
    assert torch.allclose(model(x), 2 * torch.sin(x) + 1, atol=1e-3)
    assert torch.allclose(model(x.tolist()), model.forward(x))


def test_refine_keeps_the_function_and_the_samples():
    data = create_dataset(lambda x: x[:, [0]] * x[:, [1]], n_var=2, train_num=60, test_num=20)
    model = KAN([2, 2, 1], grid=3, k=3, seed=0)
    model.fit(data, steps=2)
    fine = model.refine(6)
    x = data["test_input"]
    assert fine.module.grid == 6 and torch.allclose(fine(x), model(x), atol=1e-2)
    assert fine.prune().width[0] == 2  # the last fit's samples carry over


def test_errors_are_value_errors():
    model = KAN([2, 3, 1])
    with pytest.raises(ValueError, match="call fit"):
        model.prune()
    with pytest.raises(ValueError, match="call fit"):
        model.auto_symbolic()
    with pytest.raises(ValueError, match="still a spline"):
        model.symbolic_formula()
    with pytest.raises(ValueError, match="missing"):
        model.fit({"train_input": torch.zeros(3, 2)})
    with pytest.raises(ValueError, match="Dataset or a dict"):
        as_dataset([1, 2, 3])
    data = create_dataset(lambda x: x[:, [0]], n_var=2, train_num=10, test_num=5)
    with pytest.raises(ValueError, match="save_fig"):
        model.fit(data, steps=1, save_fig=True)


def test_plot_is_a_figure_and_writes_nothing(no_files_here):
    data = create_dataset(lambda x: x[:, [0]] + x[:, [1]], n_var=2, train_num=40, test_num=10)
    model = KAN([2, 1], grid=3, seed=0)
    model.fit(data, steps=1)
    fig = model.plot(in_vars=["a", "b"], title="sum")
    assert isinstance(fig, Figure) and fig.get_size_inches()[0] > 1
    assert len(fig.axes) == 1 and fig.axes[0].images  # the engine's picture, shown as an image


def test_package_exports_the_facade_and_keeps_the_engine_module():
    assert kan_core.KAN is KAN and kan_core.create_dataset is create_dataset
    assert isinstance(KAN([2, 1]).module, KANModule)
    with pytest.raises(AttributeError):
        kan_core.not_a_name  # noqa: B018
