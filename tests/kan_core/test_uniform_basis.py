"""The closed-form basis of uniform grids (kan_core.uniform_basis) against Cox-de Boor."""

from fractions import Fraction

import pytest
import torch

from kan_core import spline
from kan_core.spline_edges import SplineEdges
from kan_core.uniform_basis import cardinal_pieces, uniform_spec

f64 = torch.float64


def _grid(I=3, G=5, k=3, lo=-1.0, hi=1.0, dtype=f64):
    return spline.extend_grid(spline.uniform_grid(I, G, (lo, hi), dtype=dtype), k)


def _basis(x, grid, tables, deriv=True):
    I, B = x.shape
    K = grid.shape[1] - len(tables) - 1
    out = torch.full((I, K, B), 7.0, dtype=x.dtype)  # garbage: the kernels overwrite it
    d = torch.full_like(out, 7.0) if deriv else None
    spline.cox_de_boor_t(x, grid, tables, out, d)
    return out, d


def test_cardinal_pieces_are_the_known_ones():
    assert cardinal_pieces(1) == [[0, 1], [1, -1]]
    cubic = cardinal_pieces(3)  # N_3 pieces times 6: f^3, 1+3f+3f^2-3f^3, 4-6f^2+3f^3, (1-f)^3
    six = [[Fraction(6) * c for c in p] for p in cubic]
    assert six == [[0, 0, 0, 1], [1, 3, 3, -3], [4, 0, -6, 3], [1, -3, 3, -1]]
    for k in range(1, 6):  # partition of unity: the pieces at the same f sum to 1
        sums = [sum(p[d] for p in cardinal_pieces(k)) for d in range(k + 1)]
        assert sums == [1] + [0] * k


def test_uniform_grids_are_detected_and_others_not():
    assert uniform_spec(_grid(), 3) is not None
    assert uniform_spec(_grid(dtype=torch.float32, lo=-3.7, hi=12.1), 3) is not None
    knots = torch.tensor([[-1.0, -0.5, 0.1, 0.5, 1.0]], dtype=f64)
    assert uniform_spec(spline.extend_grid(knots, 3), 3) is None
    assert spline.knot_tables(spline.extend_grid(knots, 3), 3).uniform is None


@pytest.mark.parametrize("k", [1, 2, 3, 5])
@pytest.mark.parametrize("G", [1, 4, 10])
def test_closed_form_matches_cox_de_boor(k, G):
    grid = _grid(I=4, G=G, k=k, lo=-1.3, hi=0.7)
    tables = spline.knot_tables(grid, k)
    x = torch.rand(4, 500, generator=torch.Generator().manual_seed(k * 10 + G), dtype=f64) * 4 - 2
    x[1, :3] = torch.tensor([1e30, -1e30, 0.0])  # far outside: 0
    new, dnew = _basis(x, grid, tables)
    old, dold = _basis(x, grid, list(tables))  # a plain list: Cox-de Boor
    torch.testing.assert_close(new, old, atol=1e-13, rtol=0)
    torch.testing.assert_close(dnew, dold, atol=1e-11, rtol=1e-12)
    assert (new[1, :, :2] == 0).all()


def test_closed_form_float32_is_as_accurate_as_cox_de_boor():
    grid64 = _grid(I=4, G=20, k=3)
    x64 = torch.rand(4, 4000, generator=torch.Generator().manual_seed(0), dtype=f64) * 2.4 - 1.2
    ref = _basis(x64, grid64, list(spline.knot_tables(grid64, 3)))[0]
    grid, x = grid64.float(), x64.float()
    tables = spline.knot_tables(grid, 3)
    err_new = (_basis(x, grid, tables)[0].double() - ref).abs().max()
    err_old = (_basis(x, grid, list(tables))[0].double() - ref).abs().max()
    assert err_new <= 4 * err_old + 1e-7


@pytest.mark.parametrize("with_cov", [False, True])
def test_spline_edges_gradcheck_on_a_uniform_grid(with_cov):
    k, I, O = 3, 3, 2
    grid = _grid(I=I, G=4, k=k)
    tables = spline.knot_tables(grid, k)
    assert tables.uniform is not None
    g = torch.Generator().manual_seed(0)
    xt = (torch.rand(I, 30, generator=g, dtype=f64) * 3 - 1.5).requires_grad_()
    wt = torch.randn(O, I, grid.shape[1] - k, generator=g, dtype=f64, requires_grad=True)

    def f(xt, wt):
        return tuple(t for t in SplineEdges.apply(xt, wt, grid, k, tables, with_cov, True) if t.numel())

    assert torch.autograd.gradcheck(f, (xt, wt))
    # the same values and gradients as the Cox-de Boor path
    out = f(xt, wt)
    ref = tuple(t for t in SplineEdges.apply(xt, wt, grid, k, list(tables), with_cov, True) if t.numel())
    w = [torch.randn(t.shape, generator=g, dtype=f64) for t in out]
    grads = torch.autograd.grad(sum((a * b).sum() for a, b in zip(out, w)), (xt, wt))
    grads_ref = torch.autograd.grad(sum((a * b).sum() for a, b in zip(ref, w)), (xt, wt))
    for a, b in zip(out + grads, ref + grads_ref):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
