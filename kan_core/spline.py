"""B-spline math on per-input knot grids: pure functions, no state.

Shapes: ``B`` samples, ``I`` inputs (one knot vector per input), ``O`` outputs, ``G`` grid intervals,
``k`` spline order (degree), ``K = G + k`` basis functions per input.

A grid is stored *extended*: ``G + 1`` knots spanning the domain plus ``k`` extra knots on each side,
``G + 2k + 1`` knots in all, which carry exactly ``K`` B-splines of order ``k``.

The functions validate their arguments (``ValueError``), except the hot-path kernels the layer
calls with arguments it owns: `knot_tables`, `basis_t` and `cox_de_boor_t`, which work in the
feature-major layout ``(I, K, B)`` (samples last).
"""

from __future__ import annotations

import math

import torch

from kan_core.uniform_basis import UniformSpec, uniform_basis_t, uniform_spec

# Relative ridge of the least-squares fits: lambda = RIDGE * mean(diag(B^T B)).
DEFAULT_RIDGE = 1e-8
REFINE_STEPS = 2


# ----------------------------------------------------------------------------------------------
# grids


def uniform_grid(
    in_dim: int,
    G: int,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """``G + 1`` evenly spaced knots over ``grid_range``, the same for each of ``in_dim`` inputs.

    Returns ``(I, G+1)``.
    """
    if in_dim < 1:
        raise ValueError(f"in_dim must be >= 1, got {in_dim}")
    if G < 1:
        raise ValueError(f"grid (number of intervals) must be >= 1, got {G}")
    lo, hi = (float(v) for v in grid_range)
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"grid_range must be finite with lo < hi, got {tuple(grid_range)}")
    knots = torch.linspace(lo, hi, G + 1, dtype=dtype, device=device)  # (G+1,)
    return knots.expand(in_dim, G + 1).contiguous()


def extend_grid(grid: torch.Tensor, k: int) -> torch.Tensor:
    """Add ``k`` knots on each side of ``grid (I, G+1)``, spaced like the end interval they continue.

    Returns ``(I, G+2k+1)``.
    """
    _check_k(k)
    if grid.dim() != 2 or grid.shape[1] < 2:
        raise ValueError(f"grid must have shape (I, G+1) with G >= 1, got {tuple(grid.shape)}")
    steps = torch.arange(1, k + 1, dtype=grid.dtype, device=grid.device)  # (k,)
    h_lo = (grid[:, 1] - grid[:, 0]).unsqueeze(1)  # (I, 1)
    h_hi = (grid[:, -1] - grid[:, -2]).unsqueeze(1)  # (I, 1)
    left = grid[:, :1] - h_lo * steps.flip(0)  # (I, k), increasing
    right = grid[:, -1:] + h_hi * steps  # (I, k)
    return torch.cat([left, grid, right], dim=1)


def interior(grid: torch.Tensor, k: int) -> torch.Tensor:
    """The ``G + 1`` domain knots of an extended grid ``(I, G+2k+1)`` -> ``(I, G+1)``."""
    return grid[:, k : grid.shape[1] - k]


# ----------------------------------------------------------------------------------------------
# basis


def b_spline_basis(x: torch.Tensor, grid: torch.Tensor, k: int) -> torch.Tensor:
    """All order-``k`` B-splines of each input's knot vector at ``x``, by Cox-de Boor.

    ``x (B, I)``, ``grid (I, G+2k+1)`` -> ``(B, I, K)`` (a permuted view of `basis_t`'s result).
    Zero outside ``[grid[:, 0], grid[:, -1])``; repeated knots are allowed (their 0/0 terms are 0).
    Differentiable in ``x`` (analytic backward), not in ``grid``.
    """
    _check_k(k)
    _check_x_grid(x, grid, k)
    _check_finite(x, "x")
    _check_finite(grid, "grid")
    return basis_t(x.T.contiguous(), grid, k, knot_tables(grid, k)).permute(2, 0, 1)


class KnotTables(list):
    """Per Cox-de Boor level ``p = 1..k``: ``(inv, shift)`` (see `knot_tables`), and ``uniform``: the
    closed-form data of a uniform grid (`kan_core.uniform_basis`), None for any other grid."""

    uniform: UniformSpec | None = None


def knot_tables(grid: torch.Tensor, k: int) -> KnotTables:
    """Per Cox-de Boor level ``p = 1..k``: ``(inv, shift)``, both ``(I, G+2k+1-p, 1)``, with
    ``w_j(x) = (x - t_j) / (t_{j+p} - t_j) = x * inv_j + shift_j`` (0 where the knots coincide);
    for a uniform grid also its closed form (``.uniform``), which `cox_de_boor_t` then uses.

    They depend on the grid only; a layer caches them between grid changes.
    """
    tables = KnotTables()
    for p in range(1, k + 1):
        den = grid[:, p:] - grid[:, :-p]  # (I, M-p)
        inv = torch.where(den > 0, 1.0 / torch.where(den > 0, den, 1.0), 0.0)
        tables.append((inv.unsqueeze(-1), (-grid[:, :-p] * inv).unsqueeze(-1)))
    tables.uniform = uniform_spec(grid, k)
    return tables


def basis_t(
    xt: torch.Tensor, grid: torch.Tensor, k: int, tables: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """Unchecked basis in the feature-major layout of the hot path: ``xt (I, B)`` -> ``(I, K, B)``.

    Samples last keeps every elementwise op on long contiguous rows (the knot tables broadcast as
    one scalar per row), which is several times faster on CPUs than ``(B, I, K)`` with short rows.
    """
    return _BSplineBasis.apply(xt, grid, k, tables)


def cox_de_boor_t(
    xt: torch.Tensor,
    grid: torch.Tensor,
    tables: list[tuple[torch.Tensor, torch.Tensor]],
    out: torch.Tensor,
    deriv_out: torch.Tensor | None = None,
) -> None:
    """Write the order-``k`` basis (``k = len(tables)``) of ``xt (I, B)`` into ``out (I, K, B)``
    and, if given, ``dB/dx`` into ``deriv_out (I, K, B)`` (any strided views). No autograd.

    Cox-de Boor from order 0 up:

        B_{j,0} = [t_j <= x < t_{j+1}],   B_{j,p} = w_j B_{j,p-1} + (1 - w_{j+1}) B_{j+1,p-1}
        dB_{j,k}/dx = k * (inv_j B_{j,k-1} - inv_{j+1} B_{j+1,k-1}),   inv_j = 1 / (t_{j+k} - t_j)

    The levels run in place in two small work buffers, one block of samples at a time: each
    block's ~17 elementwise passes stay in cache, and no large temporary is allocated. A uniform
    grid (``tables.uniform`` set by `knot_tables`) takes the closed form of `kan_core.uniform_basis`.
    """
    uniform = getattr(tables, "uniform", None)
    if uniform is not None:
        uniform_basis_t(xt, uniform, out, deriv_out)
        return
    I, B = xt.shape
    M = grid.shape[1]
    block = max(1, min(B, _BLOCK_ELEMENTS // (I * M)))
    work = torch.empty(2, I, M, block, dtype=xt.dtype, device=xt.device)
    t = grid.unsqueeze(-1)  # (I, M, 1)
    for lo in range(0, B, block):
        hi = min(B, lo + block)
        _cox_de_boor_block(
            xt[:, None, lo:hi], t, tables, work[..., : hi - lo], out[..., lo:hi],
            None if deriv_out is None else deriv_out[..., lo:hi],
        )


# samples x (inputs * knots) per block of `cox_de_boor_t`: 2 work buffers of 4 MB (float32) each.
# Fewer, larger blocks mean fewer operations (~17 per block), which matters most when threads
# wait on each other or on a loaded machine; 2**20 cost no more CPU than 2**18 at [8, 64, 64, 1]
# with batch 4096, larger blocks fall out of cache.
_BLOCK_ELEMENTS = 2**20


def _cox_de_boor_block(
    xe: torch.Tensor,
    t: torch.Tensor,
    tables: list[tuple[torch.Tensor, torch.Tensor]],
    work: torch.Tensor,
    out: torch.Tensor,
    deriv_out: torch.Tensor | None,
) -> None:
    """`cox_de_boor_t` on one block: ``xe (I, 1, b)``, ``t (I, M, 1)``, ``work (2, I, M, b)``."""
    M, k = t.shape[1], len(tables)
    free, busy = work[0], work[1]
    step = torch.ge(xe, t, out=free)  # (I, M, b): 1.0 where x >= t_j
    b = torch.sub(step[:, :-1], step[:, 1:], out=busy[:, : M - 1])  # (I, M-1, b): order 0
    for p, (inv, shift) in enumerate(tables, start=1):  # inv, shift (I, n, 1)
        n = b.shape[1]
        if p == k and deriv_out is not None:
            s = torch.mul(b, inv * k, out=free[:, :n])  # (I, K+1, b)
            torch.sub(s[:, :-1], s[:, 1:], out=deriv_out)
        v = torch.addcmul(shift, xe, inv, out=free[:, :n]).mul_(b)  # w_j B_j
        u = b.sub_(v)  # (1 - w_j) B_j
        if p == k:
            torch.add(v[:, :-1], u[:, 1:], out=out)
            return
        b = v[:, :-1].add_(u[:, 1:])  # (I, n-1, b), now in `free`
        free, busy = busy, free
    raise ValueError("need k >= 1 knot tables")


class _BSplineBasis(torch.autograd.Function):
    """`cox_de_boor_t` with an analytic backward: it keeps one tensor, dB/dx (plain autograd
    through the recursion would keep every level's intermediates)."""

    @staticmethod
    def forward(ctx, xt, grid, k, tables):  # xt (I, B), grid (I, M)
        out = torch.empty(xt.shape[0], grid.shape[1] - k - 1, xt.shape[1], dtype=xt.dtype, device=xt.device)
        dbdx = torch.empty_like(out) if ctx.needs_input_grad[0] else None
        cox_de_boor_t(xt, grid, tables, out, dbdx)
        ctx.save_for_backward(dbdx)
        return out  # (I, K, B)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out):  # grad_out (I, K, B)
        (dbdx,) = ctx.saved_tensors
        return (dbdx * grad_out).sum(1), None, None, None  # (I, B)


# ----------------------------------------------------------------------------------------------
# curves <-> coefficients


def coef_to_curve(x: torch.Tensor, grid: torch.Tensor, coef: torch.Tensor, k: int) -> torch.Tensor:
    """Evaluate the splines ``sum_m coef[i, o, m] B_m(x_i)``: ``x (B, I)``, ``coef (I, O, K)`` -> ``(B, I, O)``."""
    _check_k(k)
    _check_x_grid(x, grid, k)
    _check_coef(coef, grid, k)
    _check_finite(x, "x")
    return torch.einsum("bim,iom->bio", b_spline_basis(x, grid, k), coef)


def curve_to_coef(
    x: torch.Tensor, y: torch.Tensor, grid: torch.Tensor, k: int, ridge: float = DEFAULT_RIDGE
) -> torch.Tensor:
    """Least-squares spline coefficients through samples: ``x (B, I)``, ``y (B, I, O)`` -> ``(I, O, K)``.

    Solves ``min_c sum_b (y[b,i,o] - sum_m c[i,o,m] B_m(x[b,i]))^2 + lam |c[i,o]|^2`` per ``(i, o)``
    with ``lam = ridge * mean(diag(B_i^T B_i))`` (see `ridge_solve`): well-posed fits are not
    biased, and basis functions no sample reaches get coefficient 0 instead of NaN.
    """
    _check_k(k)
    _check_x_grid(x, grid, k)
    _check_finite(x, "x")
    _check_finite(y, "y")
    if y.dim() != 3 or y.shape[:2] != x.shape:
        raise ValueError(f"y must have shape (B, I, O) = ({x.shape[0]}, {x.shape[1]}, O), got {tuple(y.shape)}")
    if ridge < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    w = _work_dtype(x)
    bas = b_spline_basis(x.to(w), grid.to(w), k)  # (B, I, K)
    rhs = torch.einsum("bim,bio->imo", bas, y.to(w))  # (I, K, O)
    return ridge_solve(bas, rhs, ridge).transpose(1, 2).to(y.dtype)


def project_coef(
    x: torch.Tensor,
    grid_from: torch.Tensor,
    coef: torch.Tensor,
    grid_to: torch.Tensor,
    k: int,
    ridge: float = DEFAULT_RIDGE,
) -> torch.Tensor:
    """Re-express splines on another grid, least squares at the samples ``x (B, I)``.

    ``coef (I, O, K_from)`` on ``grid_from`` -> ``(I, O, K_to)`` on ``grid_to``; equal to
    ``curve_to_coef(x, coef_to_curve(x, grid_from, coef, k), grid_to, k)`` but never forms the
    ``(B, I, O)`` curve: the right-hand side is ``(B_to^T B_from) coef^T``.
    """
    _check_k(k)
    _check_x_grid(x, grid_from, k)
    _check_x_grid(x, grid_to, k)
    _check_coef(coef, grid_from, k)
    _check_finite(x, "x")
    w = _work_dtype(x)
    x = x.to(w)
    b_to = b_spline_basis(x, grid_to.to(w), k)  # (B, I, K_to)
    cross = torch.einsum("bim,bin->imn", b_to, b_spline_basis(x, grid_from.to(w), k))  # (I, K_to, K_from)
    rhs = cross @ coef.to(w).transpose(1, 2)  # (I, K_to, O)
    return ridge_solve(b_to, rhs, ridge).transpose(1, 2).to(coef.dtype)


def ridge_solve(bas: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve ``(B_i^T B_i + lam_i Id) c_i = rhs_i`` for every input ``i``.

    ``bas (B, I, K)``, ``rhs (I, K, O)`` -> ``(I, K, O)`` in the working dtype (float64: the normal
    equations square the condition number; the fits above also evaluate the basis in it).
    By Cholesky; ``lam_i = ridge * mean(diag(B_i^T B_i))``, floored so that an input without any
    sample still gets a positive definite system (and coefficients 0); ``ridge = 0`` still adds
    machine epsilon. `REFINE_STEPS` of iterated Tikhonov regularisation
    ``c += (A + lam Id)^-1 (rhs - A c)`` then shrink the ridge's bias from ``lam/s`` to ``(lam/s)^3``
    along each singular direction ``s`` of ``A``, while directions no sample sees stay exactly 0.
    """
    work = _work_dtype(bas)
    bas = bas.to(work)
    gram = torch.einsum("bim,bin->imn", bas, bas)  # (I, K, K)
    K = gram.shape[-1]
    eye = torch.eye(K, dtype=work, device=gram.device)
    scale = gram.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1.0 / K)  # (I,)
    lam = max(ridge, torch.finfo(work).eps) * scale
    chol = torch.linalg.cholesky(gram + lam[:, None, None] * eye)  # positive definite: lam > 0
    rhs = rhs.to(work)
    sol = torch.cholesky_solve(rhs, chol)
    for _ in range(REFINE_STEPS):  # iterated Tikhonov: removes the ridge bias, stays in range(gram)
        sol = sol + torch.cholesky_solve(rhs - gram @ sol, chol)
    return sol


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 for the least-squares fits, except on devices without it (Apple MPS)."""
    return torch.float64 if t.device.type != "mps" else t.dtype


# ----------------------------------------------------------------------------------------------
# argument checks


def _check_k(k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"spline order k must be an integer >= 1, got {k!r}")


def _check_x_grid(x: torch.Tensor, grid: torch.Tensor, k: int) -> None:
    if x.dim() != 2:
        raise ValueError(f"x must have shape (B, I), got {tuple(x.shape)}")
    if grid.dim() != 2 or grid.shape[0] != x.shape[1]:
        raise ValueError(f"grid must have shape (I={x.shape[1]}, G+2k+1), got {tuple(grid.shape)}")
    if grid.shape[1] < 2 * k + 2:
        raise ValueError(f"an extended grid of order k={k} needs >= {2 * k + 2} knots, got {grid.shape[1]}")


def _check_coef(coef: torch.Tensor, grid: torch.Tensor, k: int) -> None:
    K = grid.shape[1] - k - 1
    if coef.dim() != 3 or coef.shape[0] != grid.shape[0] or coef.shape[2] != K:
        raise ValueError(f"coef must have shape (I={grid.shape[0]}, O, K={K}), got {tuple(coef.shape)}")


def _check_finite(t: torch.Tensor, name: str) -> None:
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
