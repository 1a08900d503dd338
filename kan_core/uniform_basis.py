"""The B-spline basis on a uniform knot grid in closed form: ``k + 1`` nonzero values per sample.

On knots ``t_j = t_0 + j h`` every B-spline is the cardinal one shifted, ``B_m(x) = N_k((x - t_m) / h)``,
and in interval ``j`` (``t_j <= x < t_{j+1}``) only ``B_{j-k}, .., B_j`` are nonzero:

    B_{j-k+r}(x) = N_k(f + k - r) = sum_d C[r, d] f^d,      f = (x - t_j) / h in [0, 1),  r = 0..k

with ``C`` the (exact, rational) polynomial pieces of ``N_k``. So the basis of ``xt (I, B)`` costs
``O(k)`` passes over ``(I, k+1, B)`` and one scatter into the dense ``(I, K, B)`` features, instead
of Cox-de Boor's ``~4k`` passes over ``(I, G+2k, B)``; the values agree up to rounding.
`kan_core.spline.cox_de_boor_t` uses it when `uniform_spec` finds the grid uniform.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import torch


class UniformSpec(NamedTuple):
    """A uniform extended grid ``grid (I, M)`` in closed form (see `uniform_spec`)."""

    grid: torch.Tensor  # (I, M)
    t0: torch.Tensor  # (I, 1): the first knot
    inv_h: torch.Tensor  # (I, 1): 1 / knot spacing
    C: torch.Tensor  # (k+1, k+1, 1, 1): C[d, r], the pieces of N_k (powers d of f, values r)
    D: torch.Tensor  # (k, k+1, 1, 1): the same for N_k' (times 1/h: dB/dx)


def cardinal_pieces(k: int) -> list[list[Fraction]]:
    """The ``k + 1`` polynomial pieces of the cardinal B-spline ``N_k`` (support ``[0, k+1)``):
    piece ``q`` is ``N_k(q + f)`` for ``f`` in ``[0, 1)``, as coefficients of ``f^0 .. f^k``.

    ``N_0 = 1`` on ``[0, 1)``;  ``N_p(t) = t/p N_{p-1}(t) + (p + 1 - t)/p N_{p-1}(t - 1)``.
    """
    pieces = [[Fraction(1)]]
    for p in range(1, k + 1):
        zero = [Fraction(0)] * p
        new = []
        for q in range(p + 1):
            a = pieces[q] if q < p else zero  # N_{p-1}(q + f)
            b = pieces[q - 1] if q >= 1 else zero  # N_{p-1}(q - 1 + f)
            poly = [Fraction(0)] * (p + 1)
            for d in range(p):  # (q + f) a / p + (p + 1 - q - f) b / p
                poly[d] += (q * a[d] + (p + 1 - q) * b[d]) / p
                poly[d + 1] += (a[d] - b[d]) / p
            new.append(poly)
        pieces = new
    return pieces


def uniform_spec(grid: torch.Tensor, k: int) -> UniformSpec | None:
    """The closed-form data of ``grid (I, M)`` when every input's knots are evenly spaced (up to a
    few ulps of the knots' magnitude), else None. Depends on the grid only (cache it with it)."""
    M = grid.shape[1]
    span = grid[:, -1:] - grid[:, :1]  # (I, 1)
    h = span / (M - 1)
    tol = 64 * torch.finfo(grid.dtype).eps * (grid.abs().amax(1, keepdim=True) + span)
    if not bool(((grid.diff(dim=1) - h).abs() <= tol).all() and (h > 0).all()):
        return None
    pieces = cardinal_pieces(k)
    C = [[float(pieces[k - r][d]) for r in range(k + 1)] for d in range(k + 1)]
    D = [[float((d + 1) * pieces[k - r][d + 1]) for r in range(k + 1)] for d in range(k)]
    like = dict(dtype=grid.dtype, device=grid.device)
    C, D = (torch.tensor(c, **like)[..., None, None] for c in (C, D))
    return UniformSpec(grid.clone(), grid[:, :1].clone(), 1.0 / h, C, D)


class UniformBasis(NamedTuple):
    """The nonzero basis values of ``xt (I, B)``: ``rows (I, k+1, B)`` (long), ``vals`` and, if
    asked, ``dvals = dB/dx`` (both ``(I, k+1, B)``); dense ``B[i, rows[i, r, b], b] = vals[i, r, b]``."""

    rows: torch.Tensor
    vals: torch.Tensor
    dvals: torch.Tensor | None


def uniform_basis_compact(xt: torch.Tensor, spec: UniformSpec, deriv: bool) -> UniformBasis:
    """The ``k + 1`` nonzero values per sample (see `UniformBasis`). No autograd.

    0 outside ``[t_0, t_{M-1})``: the values of basis functions that do not exist (near and
    outside the grid's ends) are 0, their rows clamped into ``0..K-1`` (scatter them by addition).
    """
    I, B = xt.shape
    M, k1 = spec.grid.shape[1], spec.C.shape[1]
    K, k = M - k1, k1 - 1
    j = (xt - spec.t0).mul_(spec.inv_h).floor_().clamp_(-1, M - 1)  # (I, B): interval, -1 / M-1 outside
    j = torch.nan_to_num_(j, nan=M - 1)
    jl = j.long()
    # f from the interval's own left knot (not u - j): keeps f's rounding at the knots' scale
    f = (xt - spec.grid.gather(1, jl.clamp(0, M - 1))).mul_(spec.inv_h).clamp_(0, 1)  # (I, B)
    # (k+1, I, B) throughout, one operation per step for all r (their (I, k+1, B) views are returned)
    rows = (jl + torch.arange(-k, 1, device=jl.device).view(-1, 1, 1)).clamp_(0, K - 1)  # (k+1, I, B)
    lo = torch.arange(k, -1, -1, dtype=j.dtype, device=j.device).view(-1, 1, 1)  # value r of interval j is
    live = (j >= lo).logical_and_(j < lo + K).to(xt.dtype)  # basis function j - k + r: exists if 0 <= it < K
    vals = _horner(spec.C, f, live).to(xt.dtype)  # (a no-op unless the grid has another dtype)
    dvals = _horner(spec.D, f, live).mul_(spec.inv_h).to(xt.dtype).transpose(0, 1) if deriv else None
    return UniformBasis(rows.transpose(0, 1), vals.transpose(0, 1), dvals)


def _horner(coef: torch.Tensor, f: torch.Tensor, live: torch.Tensor) -> torch.Tensor:
    """``live * sum_d c[d, r] f^d``: ``c (n, k+1, 1, 1)``, ``f (I, B)``, ``live (k+1, I, B)`` -> ``(k+1, I, B)``."""
    c = coef
    if len(c) == 1:
        return live * c[0]
    acc = torch.addcmul(c[-2], f, c[-1])
    for d in range(len(c) - 3, -1, -1):
        torch.addcmul(c[d], acc, f, out=acc)
    return acc.mul_(live)


def uniform_basis_t(
    xt: torch.Tensor, spec: UniformSpec, out: torch.Tensor, deriv_out: torch.Tensor | None = None
) -> None:
    """Write the basis of ``xt (I, B)`` into ``out (I, K, B)`` and, if given, ``dB/dx`` into
    ``deriv_out (I, K, B)`` (any strided views; overwritten). No autograd."""
    basis = uniform_basis_compact(xt, spec, deriv_out is not None)
    out.zero_().scatter_add_(1, basis.rows, basis.vals)
    if deriv_out is not None:
        deriv_out.zero_().scatter_add_(1, basis.rows, basis.dvals)
