"""Input/target transforms (standardisation, log space) and their exact undoing in formulas."""

import json

import numpy as np
import pytest
import sympy
import torch

from kan_core.data import Dataset, make_dataset
from kan_core.formula import evaluate_formula, symbolic_formula
from kan_core.judge import is_solution
from kan_core.model import KAN
from kan_core.pipeline import ModelConfig, PipelineConfig, PolishStage, SymbolicStage, TrainStage, run_pipeline
from kan_core.transform import AffineMap, FittedTransform, TransformConfig, fit_transform, identity_transform


@pytest.fixture(scope="module")
def positive() -> Dataset:
    return make_dataset(lambda x: x[:, 0] ** 2 * x[:, 1] / 2, 2, ranges=[(1, 5), (2, 4)], n_train=300, n_test=200)


def test_identity_by_default(positive):
    assert TransformConfig().identity
    fitted = fit_transform(positive, TransformConfig())
    assert fitted.identity and fitted == identity_transform(2)


def test_standardisation_maps_train_range_and_target_moments(positive):
    fitted = fit_transform(positive, TransformConfig(standardize_inputs=True, standardize_target=True))
    data = fitted.apply(positive)
    x = data.train_input
    torch.testing.assert_close(x.min(0).values, -torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.max(0).values, torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    assert float(data.train_label.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(data.train_label.std(correction=0)) == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(fitted.inverse_target(data.test_label), positive.test_label)


def test_log_maps_need_positive_values():
    signed = make_dataset(lambda x: x[:, 0] * x[:, 1], 2, n_train=50, n_test=50)
    with pytest.raises(ValueError, match="log_target"):
        fit_transform(signed, TransformConfig(log_target=True))
    with pytest.raises(ValueError, match="log_inputs"):
        fit_transform(signed, TransformConfig(log_inputs=True))
    two_out = make_dataset(lambda x: torch.stack([x[:, 0], x[:, 1]], 1), 2, n_train=20, n_test=20)
    with pytest.raises(ValueError, match="single output"):
        fit_transform(two_out, TransformConfig(standardize_target=True))
    with pytest.raises(ValueError):
        AffineMap(False, 0.0, 0.0)


def test_json_round_trip(positive):
    fitted = fit_transform(positive, TransformConfig(standardize_inputs=True, log_target=True, log_inputs=True))
    again = FittedTransform.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again == fitted
    with pytest.raises(ValueError):
        FittedTransform.from_dict({"inputs": []})


@pytest.mark.parametrize("config", [
    TransformConfig(standardize_inputs=True, standardize_target=True),
    TransformConfig(log_inputs=True, log_target=True),
    TransformConfig(log_inputs=True, standardize_inputs=True, log_target=True, standardize_target=True),
])
def test_composed_formula_evaluates_equal_to_the_network(positive, config):
    """Round trip: the network's formula composed with the inverse maps computes, on original
    inputs, what the network computes in transformed space mapped back."""
    fitted = fit_transform(positive, config)
    model = KAN([2, 2, 1], seed=3)
    for (i, j), name in zip([(0, 0), (1, 0), (0, 1), (1, 1)], ["sin", "x^2", "x", "exp"]):
        model.layers[0].set_symbolic(i, j, name, (0.7, 0.2, 1.3, -0.4))
    model.layers[1].set_symbolic(0, 0, "x", (1.0, 0.0, 0.8, 0.1))
    model.layers[1].set_symbolic(1, 0, "sin", (0.5, 0.0, 0.3, 0.0))
    names = ["a", "b"]
    (raw,) = symbolic_formula(model, names, simplify=False, digits=15, tol=0.0)
    composed = fitted.compose(raw, names)
    x = positive.test_input
    expected = fitted.predict(model, x)[:, 0].detach().numpy()
    np.testing.assert_allclose(evaluate_formula(composed, names, x), expected, rtol=1e-10, atol=1e-10)


def test_pipeline_config_round_trips_the_transform():
    config = PipelineConfig(transform=TransformConfig(standardize_target=True, log_inputs=True))
    assert PipelineConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PipelineConfig.from_dict({}).transform == TransformConfig()
    with pytest.raises(ValueError, match="transform"):
        PipelineConfig.from_dict({"transform": {"standardise": True}})
    with pytest.raises(ValueError, match="transform"):
        PipelineConfig(transform={"log_target": True})


def test_pipeline_in_log_space_recovers_a_product(positive):
    stages = (TrainStage(steps=30, lamb=0.0), SymbolicStage(lib=("x", "x^2", "log", "sqrt")), PolishStage())
    config = PipelineConfig(model=ModelConfig(width=(2, 1)), stages=stages,
                            transform=TransformConfig(standardize_inputs=True, log_target=True))
    result = run_pipeline(positive, config, var_names=["k", "x"])
    assert result.transform is not None and result.transform.target.log
    (expr,) = result.formulas
    assert is_solution(expr, "k**2*x/2", ["k", "x"])
    assert result.formula_metrics[0]["r2"] > 0.999999  # measured in the original units
    plain = run_pipeline(positive, PipelineConfig(model=ModelConfig(width=(2, 1)), stages=stages[:1]))
    assert plain.transform is None
