"""Levenberg-Marquardt polish of symbolic constants, alone and as a pipeline stage."""

import json

import pytest
import torch

from kan_core.data import make_dataset
from kan_core.errors import TrainingCancelled
from kan_core.model import KAN
from kan_core.pipeline import ModelConfig, PipelineConfig, PolishStage, SymbolicStage, TrainStage, run_pipeline
from kan_core.polish import polish_symbolic


def symbolic_model() -> KAN:
    """y = 2*log(x1 + 3) + sin(3*x2 - 1) with perturbed constants."""
    model = KAN([2, 1], seed=0)
    model.layers[0].set_symbolic(0, 0, "log", (1.1, 3.2, 1.9, 0.1))
    model.layers[0].set_symbolic(1, 0, "sin", (2.9, -0.9, 1.05, -0.05))
    return model


def target(x: torch.Tensor) -> torch.Tensor:
    return 2 * torch.log(x[:, 0] + 3) + torch.sin(3 * x[:, 1] - 1)


def test_reaches_the_exact_constants():
    data = make_dataset(target, 2, n_train=500, n_test=100)
    model = symbolic_model()
    report = polish_symbolic(model, data.train_input, data.train_label, steps=50)
    assert report.rmse_after < 1e-10 < report.rmse_before and report.n_params == 8 and not report.skipped
    torch.testing.assert_close(model(data.test_input), data.test_label, atol=1e-9, rtol=0)
    a, b, c, _ = model.layers[0].sym_affine[1, 0].tolist()  # sin(a x + b): a = 3, b = -1 (mod 2π / sign)
    assert abs(a) == pytest.approx(3.0, abs=1e-8)


def test_subsamples_and_skips_spline_networks():
    data = make_dataset(target, 2, n_train=500, n_test=100)
    model = symbolic_model()
    report = polish_symbolic(model, data.train_input, data.train_label, steps=50, max_points=50)
    assert report.rmse_after < 1e-8
    spline = KAN([2, 1], seed=0)
    before = spline.state_dict()
    report = polish_symbolic(spline, data.train_input, data.train_label)
    assert report.skipped == "spline edges remain" and report.iterations == 0
    assert all(torch.equal(before[k], v) for k, v in spline.state_dict().items())
    with pytest.raises(ValueError):
        polish_symbolic(model, data.train_input, data.train_label[:10])


def test_cancellation_keeps_the_last_accepted_step():
    data = make_dataset(target, 2, n_train=200, n_test=50)
    model = symbolic_model()
    calls = []

    def stop() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(TrainingCancelled):
        polish_symbolic(model, data.train_input, data.train_label, steps=50, should_stop=stop)
    assert bool(torch.isfinite(model.layers[0].sym_affine).all())


def test_polish_stage_in_a_pipeline():
    data = make_dataset(target, 2, n_train=400, n_test=200)
    stages = (TrainStage(steps=20), SymbolicStage(lib=("x", "log", "sin")), PolishStage(steps=30))
    config = PipelineConfig(model=ModelConfig(width=(2, 1)), stages=stages)
    assert PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    result = run_pipeline(data, config)
    polish = result.stages[-1]
    assert polish.kind == "polish" and polish.details["rmse_after"] <= polish.details["rmse_before"]
    assert result.formula_metrics[0]["r2"] > 0.999999
    with pytest.raises(ValueError, match="max_points"):
        PolishStage(max_points=1)
