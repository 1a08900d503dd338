"""Cancels land inside symbolic fitting (issue 18: a cancelled candidate kept its worker for 60 s in
auto_symbolic): the stop callback is consulted before every function's fit of every layer, not only
between pipeline stages. No clocks: the callbacks count their calls."""

import pytest
import torch

from kan_core.data import make_dataset
from kan_core.errors import TrainingCancelled
from kan_core.model import KAN
from kan_core.pipeline import ModelConfig, PipelineConfig, SymbolicStage, run_pipeline
from kan_core.symbolic import auto_symbolic, fit_affine

LIB = ("x", "x^2", "sin", "exp", "tanh")


class StopAfter:
    """should_stop: False for the first `n` calls, then True; counts the calls."""

    def __init__(self, n: int):
        self.n, self.calls = n, 0

    def __call__(self) -> bool:
        self.calls += 1
        return self.calls > self.n


def _x(n: int = 64, d: int = 2) -> torch.Tensor:
    return torch.rand(n, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2 - 1


def test_fit_affine_asks_before_every_function() -> None:
    x = _x()[:, :1].T.expand(3, -1).contiguous()  # (E=3, N)
    stop = StopAfter(len(LIB))
    fit_affine(x, torch.sin(x), LIB, should_stop=stop)
    assert stop.calls == len(LIB)
    with pytest.raises(TrainingCancelled, match="'sin'"):
        fit_affine(x, torch.sin(x), LIB, should_stop=StopAfter(2))


def test_auto_symbolic_stops_within_a_layer_and_keeps_the_layers_done() -> None:
    model = KAN([2, 3, 1], grid=5, seed=0)
    x = _x()
    counting = StopAfter(10**6)
    auto_symbolic(KAN([2, 3, 1], grid=5, seed=0), x, lib=LIB, should_stop=counting)
    assert counting.calls == 2 * len(LIB)  # both layers, every function

    stop = StopAfter(len(LIB) + 1)  # the first layer done, the second cancelled at its second function
    with pytest.raises(TrainingCancelled):
        auto_symbolic(model, x, lib=LIB, should_stop=stop)
    assert stop.calls == len(LIB) + 2
    assert bool((model.layers[0].sym_mask == 1).all()) and not bool(model.layers[1].sym_mask.any())


def test_a_pipeline_cancelled_inside_auto_symbolic_raises_there() -> None:
    data = make_dataset(lambda x: torch.sin(x[:, :1]) + x[:, 1:] ** 2, n_var=2, n_train=64, n_test=16, seed=0)
    config = PipelineConfig(model=ModelConfig(width=(2, 3, 1), grid=5), stages=(SymbolicStage(lib=LIB),))
    stop = StopAfter(3)  # past the stage boundary check, inside the first layer's fit
    with pytest.raises(TrainingCancelled, match="symbolic fitting cancelled"):
        run_pipeline(data, config, should_stop=stop)


def test_polish_formula_asks_between_rewrites_and_keeps_the_best_so_far() -> None:
    """A cancel or deadline during formula simplification waits for one sympy rewrite at most:
    stopped at once, the formula comes back as given; never stopped, the rewrites run (and ask
    before each one)."""
    import sympy

    from kan_core.discovery import polish_formula

    a, b = sympy.symbols("a b")
    messy = (a**2 - b**2) / (a - b)
    data = make_dataset(lambda x: x[:, :1] + x[:, 1:], n_var=2, ranges=(1, 2), n_train=32, n_test=32, seed=0)
    assert polish_formula(messy, ["a", "b"], data, should_stop=lambda: True) == messy
    counting = StopAfter(10**6)
    polished = polish_formula(messy, ["a", "b"], data, should_stop=counting)
    assert polished == a + b
    assert counting.calls >= 5  # before cleaning, before the rewrites and before each of them
