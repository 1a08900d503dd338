"""Honest model selection: the validation split never touches the test rows, selection never reads
the test split, and noisy data stops at its noise floor."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

from kan_core.data import Dataset
from kan_core.discovery import Budget, candidates, discover, run_candidate
from kan_core.discovery import run as discovery_run
from kan_core.judge import is_solution
from kan_core.validation import noise_floor, round_to_noise, validation_split


def _data(n: int = 400, noise: float = 0.0, seed: int = 1) -> Dataset:
    rng = np.random.default_rng(seed)
    x, xt = rng.uniform(1, 3, (n, 2)), rng.uniform(1, 3, (n, 2))
    y = 2.5 * x[:, 0] * x[:, 1] ** 2
    y = y + rng.normal(0.0, noise * y.std(), n)
    return Dataset.from_arrays(x, y, xt, 2.5 * xt[:, 0] * xt[:, 1] ** 2)


def test_validation_rows_are_training_rows_only_checked_by_index():
    data = _data(100)
    split = validation_split(data)
    fit, val = split.fit_rows, split.val_rows
    assert len(val) == 20 and len(fit) == 80
    assert set(fit).isdisjoint(val) and sorted([*fit, *val]) == list(range(100))  # indices of training rows only
    assert torch.equal(split.search.train_input, data.train_input[torch.as_tensor(fit)])
    assert torch.equal(split.search.test_input, data.train_input[torch.as_tensor(val)])
    assert torch.equal(split.search.test_label, data.train_label[torch.as_tensor(val)])
    # no test row in either part (the test inputs are all distinct from the training inputs here)
    searched = torch.cat([split.search.train_input, split.search.test_input])
    assert not bool((searched[:, None, :] == data.test_input[None, :, :]).all(-1).any())
    again = validation_split(data)  # deterministic
    assert np.array_equal(again.val_rows, val) and np.array_equal(again.fit_rows, fit)


def test_tiny_datasets_validate_on_their_training_rows():
    data = _data(6)
    split = validation_split(data)
    assert torch.equal(split.search.test_input, data.train_input)
    with pytest.raises(ValueError, match="fraction"):
        validation_split(data, fraction=1.0)


def test_selection_never_reads_the_test_split():
    """Scrambled test labels change the reported test figures and nothing else."""
    data = _data(200)
    scrambled = Dataset(data.train_input, data.train_label, data.test_input, data.test_label.flip(0) + 7.0)
    spec = candidates(data, Budget(max_candidates=1))[0]
    a, b = run_candidate(data, spec), run_candidate(scrambled, spec)
    assert a.formula == b.formula == "5*a*b**2/2".replace("a", "x_1").replace("b", "x_2")
    assert a.val_rmse == b.val_rmse and a.train_rmse == b.train_rmse
    assert a.test_r2 == pytest.approx(1.0) and b.test_r2 < 0.5


def test_noise_floor_tells_white_residuals_from_structure():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (800, 2))
    a, b = sympy.symbols("a b")
    clean = np.sin(3 * x[:, 0]) + x[:, 1] ** 2
    noisy = clean + rng.normal(0, 0.05, 800)
    sigma = noise_floor(sympy.sin(3 * a) + b ** 2, ["a", "b"], x, noisy)
    assert sigma == pytest.approx(0.05, rel=0.1)
    assert noise_floor(sympy.sin(3 * a), ["a", "b"], x, noisy) is None  # misses b**2: structured residual
    assert noise_floor(sympy.sin(3 * a) + b ** 2, ["a", "b"], x, clean) is None  # exact: numerical, not noise
    wild = 1 / (a - 0.001)  # a residual with poles looks white, but is far above the data's own spread
    assert noise_floor(wild, ["a", "b"], x, noisy) is None


def test_constants_keep_the_digits_the_noise_allows():
    rng = np.random.default_rng(0)
    x = rng.uniform(1, 3, (800, 2))
    y = 2.5 * x[:, 0] * x[:, 1] ** 2 + rng.normal(0, 0.2, 800)
    a, b = sympy.symbols("a b")
    fitted = sympy.Float(2.4993) * a * b ** 2 + sympy.Float(0.0071)
    assert round_to_noise(fitted, ["a", "b"], x, y, 0.2) == sympy.Rational(5, 2) * a * b ** 2
    precise = sympy.Float(2.4993) * a * b ** 2  # without noise nothing is lost
    kept = round_to_noise(precise, ["a", "b"], x, 2.4993 * x[:, 0] * x[:, 1] ** 2, 1e-9)
    assert [float(f) for f in kept.atoms(sympy.Float)] == [pytest.approx(2.4993, rel=1e-5)]


def test_noisy_data_stops_at_the_noise_floor_not_the_budget():
    data = _data(1000, noise=0.01)
    out = discover(data, Budget(max_candidates=12, max_seconds=600), var_names=["a", "b"])
    assert out.stopped == "noise_floor"
    assert len(out.results) < out.n_candidates
    assert out.chosen is not None and out.chosen.noise_rmse is not None
    assert sympy.simplify(out.chosen.expr - sympy.Rational(5, 2) * sympy.Symbol("a") * sympy.Symbol("b") ** 2) == 0
    assert out.chosen.test_r2 > 0.9999  # the test split is exact here: the formula is the true one


@pytest.mark.parametrize("formula, ranges, seed", [
    ("mu*Nn", {"mu": (1, 5), "Nn": (1, 5)}, 6),
    ("m_0/sqrt(1 - v**2/c**2)", {"m_0": (1, 5), "v": (1, 2), "c": (3, 10)}, 10),
    ("1/sqrt(1 - u**2)", {"u": (0.1, 0.67)}, 0),  # I.10.7 with units: the fewest terms through 1/y**2
])  # the public set's I.12.1 and I.10.7 as bench_discovery.py --noise 0.01 draws them
def test_the_sparse_candidate_at_the_noise_floor_is_the_law_not_an_overfit(formula, ranges, seed, monkeypatch):
    """With 1% noise, fits with more terms or other transforms (``Nn*mu + 0.0137/Nn**2``, the rational
    ``1/(1/m_0 - 0.546*v**2/(c**2*m_0))``) reach the noise floor too; the one with the fewest
    constants the noise can tell from simple numbers is the law itself."""
    names = list(ranges)
    symbols = [sympy.Symbol(n) for n in names]
    true = sympy.sympify(formula, locals=dict(zip(names, symbols)))
    f = sympy.lambdify(symbols, true, "numpy")
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.uniform(lo, hi, 1000) for lo, hi in ranges.values()])
    xt = np.column_stack([rng.uniform(lo, hi, 1000) for lo, hi in ranges.values()])
    y = f(*x.T)
    data = Dataset.from_arrays(x, y + rng.normal(0.0, 0.01 * y.std(), y.shape), xt, f(*xt.T))
    sparse = next(s for s in candidates(data) if s.family == "sparse")
    monkeypatch.setattr(discovery_run, "SPARSE_SECONDS", 3600.0)  # its time limit must not bind on a slow machine
    res = run_candidate(data, sparse, var_names=names)
    assert res.noise_rmse is not None
    assert is_solution(res.formula, formula, names), res.formula  # the law, in a form the judge reads
