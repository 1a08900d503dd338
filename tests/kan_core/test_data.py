import numpy as np
import pytest
import torch

from kan_core.data import Dataset, make_dataset


def test_from_arrays_converts_and_reshapes():
    ds = Dataset.from_arrays(np.zeros((5, 2)), np.arange(5), [[1.0, 2.0]], [3.0], dtype=torch.float32)
    assert ds.train_input.dtype == torch.float32 and ds.train_label.shape == (5, 1)
    assert ds.test_input.shape == (1, 2) and ds.test_label.shape == (1, 1)
    assert ds.n_var == 2 and ds.n_out == 1
    assert ds.to(dtype=torch.float64).train_input.dtype == torch.float64


@pytest.mark.parametrize(
    "args, match",
    [
        ((np.zeros((5, 2)), np.zeros(4), np.zeros((2, 2)), np.zeros(2)), "train_input has 5 samples"),
        ((np.zeros((5, 2)), np.zeros(5), np.zeros((2, 3)), np.zeros(2)), "variables"),
        ((np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((2, 2)), np.zeros(2)), "outputs"),
        ((np.zeros((5, 2)), np.zeros(5), np.zeros((2, 2)), np.array([0.0, np.nan])), "test_label contains NaN"),
        ((np.zeros((5, 2)), np.full(5, np.inf), np.zeros((2, 2)), np.zeros(2)), "train_label contains NaN"),
        ((np.zeros((0, 2)), np.zeros(0), np.zeros((2, 2)), np.zeros(2)), "empty"),
        ((np.zeros((5, 2, 1)), np.zeros(5), np.zeros((2, 2)), np.zeros(2)), "2-D"),
        ((["a", "b"], np.zeros(2), np.zeros(2), np.zeros(2)), "not a numeric array"),
    ],
)
def test_from_arrays_rejects(args, match):
    with pytest.raises(ValueError, match=match):
        Dataset.from_arrays(*args)


def test_frozen():
    ds = Dataset.from_arrays(np.zeros((3, 1)), np.zeros(3), np.zeros((3, 1)), np.zeros(3))
    with pytest.raises(AttributeError):
        ds.train_input = None


def test_make_dataset():
    f = lambda x: torch.exp(torch.sin(torch.pi * x[:, 0]) + x[:, 1] ** 2)  # noqa: E731
    state = torch.get_rng_state()
    ds = make_dataset(f, 2, [(-1, 1), (0, 2)], n_train=100, n_test=50, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert ds.train_input.shape == (100, 2) and ds.test_label.shape == (50, 1)
    assert ds.train_input[:, 1].min() >= 0 and ds.train_input[:, 1].max() <= 2
    assert torch.allclose(ds.train_label[:, 0], f(ds.train_input))
    again = make_dataset(f, 2, [(-1, 1), (0, 2)], n_train=100, n_test=50, seed=3)
    assert torch.equal(again.test_input, ds.test_input)
    assert not torch.equal(make_dataset(f, 2, seed=4).train_input[:100], ds.train_input)


def test_make_dataset_multi_output_and_dtype():
    ds = make_dataset(lambda x: torch.stack([x[:, 0], -x[:, 0]], 1), 1, n_train=10, n_test=10, dtype=torch.float32)
    assert ds.train_label.shape == (10, 2) and ds.train_label.dtype == torch.float32


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(n_var=0), "n_var"),
        (dict(n_var=2, ranges=[(0, 1)]), "ranges"),
        (dict(n_var=1, ranges=(1, 0)), "lo < hi"),
        (dict(n_var=1, n_train=0), "n_train"),
        (dict(n_var=1, f=lambda x: x[:3]), "f must map"),
        (dict(n_var=1, f=lambda x: torch.log(x - 5)), "NaN"),
    ],
)
def test_make_dataset_rejects(kw, match):
    kw = {"f": lambda x: x[:, 0], **kw}
    with pytest.raises(ValueError, match=match):
        make_dataset(**kw)
