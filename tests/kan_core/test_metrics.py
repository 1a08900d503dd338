"""RMSE and R², the constant-target case included; the shared Levenberg-Marquardt core."""

import math

import numpy as np
import pytest
import torch

from kan_core.lstsq import levenberg_marquardt
from kan_core.metrics import fit_metrics, r2, rmse


def test_rmse_and_r2_on_numpy_and_torch():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    pred = y + np.array([0.1, -0.1, 0.1, -0.1])
    assert rmse(pred, y) == pytest.approx(0.1)
    assert r2(pred, y) == pytest.approx(1 - 0.04 / 5.0)
    assert rmse(torch.tensor(pred), torch.tensor(y)) == pytest.approx(0.1)
    assert fit_metrics(y, y) == {"rmse": 0.0, "r2": 1.0}


def test_constant_target_and_non_finite_predictions():
    y = np.full(5, 3.0)
    assert r2(y, y) == 1.0 and r2(y + 0.1, y) is None
    bad = np.array([1.0, np.nan, 3.0, 4.0, 5.0])
    assert fit_metrics(bad, y) == {"rmse": None, "r2": None}
    assert math.isnan(rmse(bad, y))
    with pytest.raises(ValueError):
        rmse(np.zeros(3), np.zeros(4))


def test_levenberg_marquardt_fits_and_respects_refused_points():
    x = np.linspace(0.1, 2.0, 50)
    y = 2.5 * np.exp(-1.3 * x)

    def residual(t):
        return t[0] * np.exp(t[1] * x) - y

    def jacobian(t):
        return np.stack([np.exp(t[1] * x), t[0] * x * np.exp(t[1] * x)], 1)

    fit = levenberg_marquardt(residual, jacobian, np.array([1.0, -0.5]), steps=100)
    assert np.allclose(fit.theta, [2.5, -1.3], rtol=1e-9) and fit.iterations > 0 and not fit.stopped
    # a bound the optimum lies outside: every refused point counts as a worse one
    capped = levenberg_marquardt(lambda t: residual(t) if t[0] <= 2.0 else None, jacobian, np.array([1.0, -0.5]),
                                 steps=100)
    assert capped.theta[0] <= 2.0 and capped.loss > 0
    stopped = levenberg_marquardt(residual, jacobian, np.array([1.0, -0.5]), steps=100, should_stop=lambda: True)
    assert stopped.stopped and stopped.iterations == 0
    assert levenberg_marquardt(lambda t: None, jacobian, np.zeros(2), steps=5).loss == math.inf
