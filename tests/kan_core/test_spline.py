import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import BSpline

from kan_core import spline

f64 = torch.float64


def random_grid(n_in: int, G: int, k: int, seed: int) -> torch.Tensor:
    """Non-uniform sorted knots, extended: (I, G+2k+1)."""
    g = torch.Generator().manual_seed(seed)
    steps = 0.2 + torch.rand(n_in, G, generator=g, dtype=f64)
    knots = torch.cat([torch.zeros(n_in, 1, dtype=f64), steps.cumsum(1)], 1) - 1.0
    return spline.extend_grid(knots, k)


def scipy_basis(x: np.ndarray, t: np.ndarray, k: int) -> np.ndarray:
    """(B, K): each B-spline from scipy, 0 outside its support."""
    cols = [BSpline.basis_element(t[m : m + k + 2], extrapolate=False)(x) for m in range(len(t) - k - 1)]
    return np.nan_to_num(np.stack(cols, 1))


def test_uniform_grid():
    g = spline.uniform_grid(3, 4, (-2, 2), dtype=f64)
    assert g.shape == (3, 5)
    assert torch.equal(g[1], torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0], dtype=f64))


def test_extend_grid_continues_end_intervals():
    knots = torch.tensor([[0.0, 0.1, 0.5, 2.0]], dtype=f64)
    e = spline.extend_grid(knots, 2)
    assert torch.allclose(e, torch.tensor([[-0.2, -0.1, 0.0, 0.1, 0.5, 2.0, 3.5, 5.0]], dtype=f64))


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_basis_matches_scipy(k):
    grid = random_grid(3, 6, k, seed=k)
    g = torch.Generator().manual_seed(10 + k)
    lo, hi = grid[:, :1].T, grid[:, -1:].T
    x = lo + (hi - lo) * torch.rand(200, 3, generator=g, dtype=f64)  # covers the extension knots too
    b = spline.b_spline_basis(x, grid, k)
    assert b.shape == (200, 3, 6 + k)
    for i in range(3):
        ref = scipy_basis(x[:, i].numpy(), grid[i].numpy(), k)
        np.testing.assert_allclose(b[:, i].numpy(), ref, atol=1e-13)


def test_basis_partition_of_unity_inside_domain():
    grid = random_grid(2, 5, 3, seed=0)
    inner = spline.interior(grid, 3)
    x = inner[:, :1].T + (inner[:, -1:] - inner[:, :1]).T * torch.rand(100, 2, dtype=f64)
    assert torch.allclose(spline.b_spline_basis(x, grid, 3).sum(-1), torch.ones(100, 2, dtype=f64))


def test_basis_zero_outside_and_repeated_knots_finite():
    grid = torch.tensor([[0.0, 0.0, 0.0, 1.0, 2.0, 2.0, 3.0, 4.0]], dtype=f64)
    x = torch.tensor([[-5.0], [0.0], [1.5], [2.0], [10.0]], dtype=f64)
    b = spline.b_spline_basis(x, grid, 2)
    assert torch.isfinite(b).all()
    assert b[0].abs().sum() == 0 and b[-1].abs().sum() == 0


@pytest.mark.parametrize("k", [1, 2, 3])
def test_basis_gradient(k):
    grid = random_grid(2, 4, k, seed=3)
    x = (torch.rand(20, 2, dtype=f64) * 1.6 - 0.8).requires_grad_()
    assert torch.autograd.gradcheck(lambda x: spline.b_spline_basis(x, grid, k), (x,))


def test_basis_gradient_matches_scipy_derivative():
    k = 3
    grid = random_grid(1, 5, k, seed=7)
    x = (torch.rand(50, 1, dtype=f64) * 1.5 - 0.5).requires_grad_()
    c = torch.randn(5 + k, dtype=f64)
    (spline.b_spline_basis(x, grid, k)[:, 0] @ c).sum().backward()
    ref = BSpline(grid[0].numpy(), c.numpy(), k).derivative()(x.detach()[:, 0].numpy())
    np.testing.assert_allclose(x.grad[:, 0].numpy(), ref, atol=1e-11)


def test_coef_curve_round_trip():
    k, G = 3, 7
    grid = random_grid(2, G, k, seed=1)
    coef = torch.randn(2, 3, G + k, dtype=f64)
    inner = spline.interior(grid, k)
    x = inner[:, :1].T + (inner[:, -1:] - inner[:, :1]).T * torch.rand(400, 2, dtype=f64)
    y = spline.coef_to_curve(x, grid, coef, k)
    assert y.shape == (400, 2, 3)
    coef2 = spline.curve_to_coef(x, y, grid, k)
    assert torch.allclose(coef2, coef, atol=1e-8)
    assert torch.allclose(spline.coef_to_curve(x, grid, coef2, k), y, atol=1e-10)


def test_curve_to_coef_rank_deficient_is_finite():
    k = 3
    grid = spline.extend_grid(spline.uniform_grid(2, 10, dtype=f64), k)
    x = torch.full((30, 2), 0.25, dtype=f64)  # all samples at one point: rank 1
    x[:, 1] = torch.linspace(-1, -0.8, 30, dtype=f64)  # only a corner of the grid
    y = torch.randn(30, 2, 1, dtype=f64).expand(30, 2, 1).clone()
    y[:, 0] = 0.7
    coef = spline.curve_to_coef(x, y, grid, k)
    assert torch.isfinite(coef).all()
    fit = spline.coef_to_curve(x, grid, coef, k)
    assert torch.allclose(fit[:, 0], y[:, 0], atol=1e-6)  # the single value is reproduced
    assert coef[1, 0, -4:].abs().max() < 1e-6  # basis functions no sample sees get 0


def test_curve_to_coef_float32():
    grid = spline.extend_grid(spline.uniform_grid(1, 5, dtype=torch.float32), 3)
    x = torch.linspace(-1, 1, 100, dtype=torch.float32)[:, None]
    y = torch.sin(3 * x)[:, :, None]
    coef = spline.curve_to_coef(x, y, grid, 3)
    assert coef.dtype == torch.float32
    assert (spline.coef_to_curve(x, grid, coef, 3) - y).abs().max() < 2e-2


def test_project_coef_equals_curve_to_coef():
    k = 2
    g1, g2 = random_grid(2, 4, k, seed=4), random_grid(2, 9, k, seed=5)
    coef = torch.randn(2, 3, 4 + k, dtype=f64)
    x = torch.rand(300, 2, dtype=f64) * 1.5 - 0.7
    direct = spline.curve_to_coef(x, spline.coef_to_curve(x, g1, coef, k), g2, k)
    assert torch.allclose(spline.project_coef(x, g1, coef, g2, k), direct, atol=1e-10)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 4), G=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_round_trip_property(k, G, seed):
    grid = random_grid(1, G, k, seed)
    gen = torch.Generator().manual_seed(seed)
    coef = torch.randn(1, 2, G + k, generator=gen, dtype=f64)
    inner = spline.interior(grid, k)
    x = torch.linspace(0, 1, 20 * (G + k), dtype=f64)[:, None] * (inner[0, -1] - inner[0, 0]) + inner[0, 0]
    y = spline.coef_to_curve(x, grid, coef, k)
    assert torch.allclose(spline.coef_to_curve(x, grid, spline.curve_to_coef(x, y, grid, k), k), y, atol=1e-8)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: spline.uniform_grid(2, 0), "grid"),
        (lambda: spline.uniform_grid(2, 3, (1, -1)), "grid_range"),
        (lambda: spline.extend_grid(torch.zeros(2, 4), 0), "k"),
        (lambda: spline.b_spline_basis(torch.zeros(3), torch.zeros(1, 8), 3), "x must have shape"),
        (lambda: spline.b_spline_basis(torch.zeros(3, 2), torch.zeros(1, 8), 3), "grid must have shape"),
        (lambda: spline.b_spline_basis(torch.full((3, 1), float("nan")), torch.arange(8.0)[None], 3), "NaN"),
        (lambda: spline.coef_to_curve(torch.zeros(3, 1), torch.arange(8.0)[None], torch.zeros(1, 2, 5), 3), "coef"),
        (lambda: spline.curve_to_coef(torch.zeros(3, 1), torch.zeros(3, 2, 1), torch.arange(8.0)[None], 3), "y must"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_blocked_evaluation_matches(monkeypatch):
    grid = random_grid(3, 6, 3, seed=2)
    x = (torch.rand(257, 3, dtype=f64) * 3 - 1.5).requires_grad_()
    whole = spline.b_spline_basis(x, grid, 3)
    (g_whole,) = torch.autograd.grad(whole.pow(2).sum(), x)
    monkeypatch.setattr(spline, "_BLOCK_ELEMENTS", 3 * 12 * 10)  # blocks of 10 samples, the last one short
    blocked = spline.b_spline_basis(x, grid, 3)
    (g_blocked,) = torch.autograd.grad(blocked.pow(2).sum(), x)
    assert torch.equal(blocked, whole) and torch.equal(g_blocked, g_whole)
