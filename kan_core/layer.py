"""One KAN layer: a learnable 1-D function on every edge i -> j, summed at the outputs.

    spline edge:    phi_ij(x) = scale_base_ij * silu(x) + scale_sp_ij * sum_m coef_ijm B_m(x)
    symbolic edge:  phi_ij(x) = c * f(a * x + b) + d,    (a, b, c, d) = sym_affine_ij
    y_j = sum_i mask_ij * phi_ij(x_i)

The spline edges of a layer are one matrix product. With the per-input features

    F_i(x) = [silu(x_i), B_1(x_i), ..., B_K(x_i)]      stored feature-major: Ft (I, K+1, B)

and the per-edge weights  W_ij = m_ij * [scale_base_ij, scale_sp_ij * coef_ij]  stored output-major
as Wt (O, I, K+1), m = mask * (1 - sym_mask), the layer output is one GEMM,
y = (Wt.reshape(O, I*(K+1)) @ Ft.reshape(I*(K+1), B)).T: no (B, I, O) tensor on the hot path.
Symbolic edges are few; they are grouped by function and evaluated only where set
(`kan_core.symbolic_edges`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from kan_core import spline
from kan_core.functions import SymbolicFunction
from kan_core.spline_edges import FixedFeatures, SplineEdges, SplineWeights, std_from_cov
from kan_core.symbolic_edges import IDENTITY_AFFINE, SymbolicEdges, SymbolicEdgesMixin

__all__ = ["IDENTITY_AFFINE", "KANLayer"]


class KANLayer(SymbolicEdgesMixin, nn.Module):
    """A layer of ``in_dim x out_dim`` learnable edges (see the module docstring).

    Initialisation (the KAN paper's, as in pykan 0.2.8):
      - grid: ``G`` uniform intervals over ``grid_range``, extended by ``k`` knots each side;
      - coef: least-squares spline through uniform noise in ``[-noise_scale/2G, noise_scale/2G]``
        drawn at the ``G+1`` domain knots (a nearly flat spline);
      - scale_base = (scale_base_mu + scale_base_sigma * U(-1, 1)) / sqrt(in_dim);
      - scale_sp = 1 / sqrt(in_dim);  mask = 1;  no symbolic edges, sym_affine = (1, 0, 1, 0).

    Random draws come from ``generator`` (a CPU ``torch.Generator``; a fresh one seeded 0 if None),
    so a seed gives the same layer on every device.
    """

    grid: torch.Tensor
    mask: torch.Tensor
    sym_mask: torch.Tensor

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        grid: int = 5,
        k: int = 3,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
        noise_scale: float = 0.1,
        *,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        for name, v in (("in_dim", in_dim), ("out_dim", out_dim)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not isinstance(grid, int) or grid < 1:
            raise ValueError(f"grid (number of intervals) must be an integer >= 1, got {grid!r}")
        spline._check_k(k)
        _check_grid_eps(grid_eps)
        if not noise_scale >= 0:
            raise ValueError(f"noise_scale must be >= 0, got {noise_scale}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        gen = generator if generator is not None else torch.Generator().manual_seed(0)

        def draw(*shape: int) -> torch.Tensor:  # U(0, 1) on the CPU generator, then to device
            return torch.rand(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=device)

        knots = spline.extend_grid(spline.uniform_grid(in_dim, grid, grid_range, dtype=dtype, device=device), k)
        noise = (draw(grid + 1, in_dim, out_dim) - 0.5) * (noise_scale / grid)  # (G+1, I, O)
        coef = spline.curve_to_coef(spline.interior(knots, k).T, noise, knots, k)  # (I, O, K)
        root = float(in_dim) ** 0.5
        scale_base = (scale_base_mu + scale_base_sigma * (2 * draw(in_dim, out_dim) - 1)) / root
        scale_sp = torch.full((in_dim, out_dim), 1.0 / root, dtype=dtype, device=device)
        self._set_state(knots, k, grid_eps, coef, scale_base, scale_sp)

    # ------------------------------------------------------------------------------------------
    # state

    def _set_state(
        self,
        grid: torch.Tensor,
        k: int,
        grid_eps: float,
        coef: torch.Tensor,
        scale_base: torch.Tensor,
        scale_sp: torch.Tensor,
        mask: torch.Tensor | None = None,
        sym_mask: torch.Tensor | None = None,
        sym_affine: torch.Tensor | None = None,
        sym_names: list[list[str]] | None = None,
        sym_fns: dict[str, SymbolicFunction] | None = None,
    ) -> None:
        I, O, _ = coef.shape
        like = dict(dtype=coef.dtype, device=coef.device)
        self.k = k
        self.grid_eps = float(grid_eps)
        self.register_buffer("grid", grid)  # (I, G+2k+1)
        self.coef = nn.Parameter(coef)  # (I, O, K)
        self.scale_base = nn.Parameter(scale_base)  # (I, O)
        self.scale_sp = nn.Parameter(scale_sp)  # (I, O)
        self.register_buffer("mask", mask if mask is not None else torch.ones(I, O, **like))
        self.register_buffer("sym_mask", sym_mask if sym_mask is not None else torch.zeros(I, O, **like))
        if sym_affine is None:
            sym_affine = torch.tensor(IDENTITY_AFFINE, **like).expand(I, O, 4).clone()
        self.sym_affine = nn.Parameter(sym_affine)  # (I, O, 4): a, b, c, d
        self.sym_names: list[list[str]] = sym_names if sym_names is not None else [[""] * O for _ in range(I)]
        self._sym_fns: dict[str, SymbolicFunction] = dict(sym_fns or {})
        self._tables_key: tuple | None = None
        self._tables: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._mask_key: tuple | None = None
        self._mask = torch.empty(0)
        self._any_spline = True
        self._sym_edges: SymbolicEdges | None = None
        self._sym_edges_stale = True
        self._fixed: list[FixedFeatures] | None = None  # None: fixed-input cache off

    @classmethod
    def _from_state(cls, **state) -> KANLayer:
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._set_state(**state)
        return layer

    @property
    def in_dim(self) -> int:
        return self.coef.shape[0]

    @property
    def out_dim(self) -> int:
        return self.coef.shape[1]

    @property
    def G(self) -> int:
        """Number of grid intervals."""
        return self.grid.shape[1] - 2 * self.k - 1

    @property
    def K(self) -> int:
        """Number of B-spline basis functions per input, ``G + k``."""
        return self.coef.shape[2]

    def extra_repr(self) -> str:
        n_sym = int(self.sym_mask.sum())
        return f"in_dim={self.in_dim}, out_dim={self.out_dim}, G={self.G}, k={self.k}, symbolic_edges={n_sym}"

    # ------------------------------------------------------------------------------------------
    # forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, I) -> y (B, O)``, ``y_j = sum_i mask_ij * phi_ij(x_i)``."""
        self._check_x(x)
        return self._forward(x, with_std=False)[0]

    def forward_with_edge_std(self, x: torch.Tensor, precise: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``forward(x)`` and ``spline_edge_std(x, precise)`` from one basis evaluation (the training
        path). ``precise``: accumulate the std's covariance in float64 (see `SplineEdges`)."""
        self._check_x(x, min_batch=2)
        return self._forward(x, with_std=True, precise=precise)

    def _forward(
        self, x: torch.Tensor, with_std: bool, precise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output ``(B, O)`` and, if asked, the spline edges' std ``(I, O)``. A layer without spline
        edges (all symbolic or masked) skips the basis; symbolic edges are added when present."""
        y = std = None
        m = self._spline_mask_t()  # (O, I, 1); also sets _any_spline
        if self._any_spline:
            wt = self._spline_weights_t(m)  # (O, I, K+1)
            fixed = self._fixed_features(x)
            if fixed is not None:
                yt, cov = fixed.output_t(wt), (fixed.cov(precise) if with_std else None)
            else:
                yt, cov = SplineEdges.apply(
                    x.T.contiguous(), wt, self.grid, self.k, self._knot_tables(), with_std, precise
                )
            y = yt.T  # (B, O), the transpose of a contiguous (O, B): the next layer's x.T
            std = std_from_cov(cov, wt) if with_std else None
        elif with_std:
            std = x.new_zeros(self.in_dim, self.out_dim)
        edges = self._symbolic_edges(x.device)
        if edges is not None:
            sym = x.new_zeros(x.shape[0], self.out_dim).index_add_(1, edges.jj, self._symbolic_values(x, edges))
            y = sym if y is None else y + sym
        return (y if y is not None else x.new_zeros(x.shape[0], self.out_dim)), std

    def cache_fixed_inputs(self, enabled: bool) -> None:
        """Turn the fixed-input cache on or off (off drops it). While on, the features of the two
        most recent inputs that need no gradient (training and test data) are kept and reused
        until that tensor or the grid changes (see `kan_core.spline_edges.FixedFeatures`); `fit`
        turns it on for its duration. Off by default: the cache holds the data and its features."""
        self._fixed = [] if enabled else None

    def _fixed_features(self, x: torch.Tensor) -> FixedFeatures | None:
        """The cached features of ``x`` (computed now if new), or None when the cache is off or
        ``x`` needs a gradient (then the basis depends on parameters)."""
        if self._fixed is None or x.requires_grad:
            return None
        key = _cache_key(self.grid)
        if key is None or _cache_key(x) is None:
            return None
        for i, entry in enumerate(self._fixed):
            if entry.matches(x, key):
                if i:  # most recent first
                    self._fixed = [entry, self._fixed[0]]
                return entry
        entry = FixedFeatures(x, self.grid, self.k, self._knot_tables(), key)
        self._fixed = [entry, *self._fixed[:1]]
        return entry

    def spline_edge_std(self, x: torch.Tensor, precise: bool = True) -> torch.Tensor:
        """Unbiased batch std of every non-symbolic edge's output, ``(I, O)`` (~0 on symbolic and
        masked edges), computed exactly from the ``(K+1) x (K+1)`` feature covariance of each input:

            std_ij = sqrt(W_ij^T Cov(F_i) W_ij),   Cov(F_i) = Fc_i Fc_i^T / (B - 1)  (K+1, K+1)

        with ``Fc`` the batch-centred features; never materialises the ``(B, I, O)`` edge outputs.
        ``precise`` (default): centre and accumulate ``Cov`` in float64 whatever the layer's dtype,
        so that nearly dead edges keep their digits; False: in the input dtype (faster in float32;
        the same in float64). See `SplineEdges`.
        """
        self._check_x(x, min_batch=2)
        return self._forward(x, with_std=True, precise=precise)[1]

    def edge_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """Every edge's output ``mask_ij * phi_ij(x_i)``: ``(B, I, O)``. For inspection, not training."""
        self._check_x(x)
        wt = self._spline_weights_t()  # (O, I, K+1)
        out = torch.einsum("ikb,oik->bio", self._features_t(x), wt)  # (B, I, O)
        edges = self._symbolic_edges(x.device)
        if edges is not None:
            out[:, edges.ii, edges.jj] = self._symbolic_values(x, edges)  # spline branch is 0 there
        return out

    def _features_t(self, x: torch.Tensor) -> torch.Tensor:
        """Features ``[silu(x_i), B_1(x_i), .., B_K(x_i)]``, feature-major: ``(B, I) -> (I, K+1, B)``
        (plain autograd; the training path computes them inside `SplineEdges`)."""
        xt = x.T.contiguous()  # (I, B)
        bas = spline.basis_t(xt, self.grid, self.k, self._knot_tables())  # (I, K, B)
        return torch.cat([torch.nn.functional.silu(xt).unsqueeze(1), bas], dim=1)

    def _spline_weights_t(self, m: torch.Tensor | None = None) -> torch.Tensor:
        """``W_ij = m_ij * [scale_base_ij, scale_sp_ij * coef_ij]``, output-major: ``(O, I, K+1)``
        (``m``: `_spline_mask_t`'s result when the caller has it)."""
        m = self._spline_mask_t() if m is None else m
        return SplineWeights.apply(self.coef, self.scale_base, self.scale_sp, m)

    def _spline_mask_t(self) -> torch.Tensor:
        """``m = mask * (1 - sym_mask)`` as ``(O, I, 1)``: the spline edges. Cached between changes."""
        key = (_cache_key(self.mask), _cache_key(self.sym_mask))
        if None in key or key != self._mask_key:
            self._mask = (self.mask * (1 - self.sym_mask)).T.unsqueeze(-1)
            self._any_spline = bool(self._mask.any())
            self._mask_key = key
        return self._mask

    def _has_spline(self) -> bool:
        """Whether any edge is an active spline edge."""
        self._spline_mask_t()
        return self._any_spline

    def _knot_tables(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Cox-de Boor knot tables, recomputed only when the grid tensor changes."""
        key = _cache_key(self.grid)
        if key is None or key != self._tables_key:
            self._tables = spline.knot_tables(self.grid, self.k)
            self._tables_key = key
        return self._tables

    def _check_x(self, x: torch.Tensor, min_batch: int = 1) -> None:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"layer input must have shape (B, {self.in_dim}), got {tuple(x.shape)}")
        if x.shape[0] < min_batch:
            raise ValueError(f"need a batch of at least {min_batch} samples, got {x.shape[0]}")

    # ------------------------------------------------------------------------------------------
    # grids

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Fit the grid to the samples ``x (B, I)``, keeping the spline functions.

        Per input, the new domain knots are ``grid_eps * uniform + (1 - grid_eps) * quantiles`` over
        the samples' range (``G+1`` of each); an input whose samples are (nearly) all equal gets a
        small uniform grid around them. The coefficients are refit by least squares on the samples,
        so every spline edge keeps its values there (up to the fit error of the new knots).
        """
        self._check_x(x)
        spline._check_finite(x, "x")
        G, dtype = self.G, x.dtype
        q = torch.linspace(0, 1, G + 1, dtype=dtype, device=x.device)  # (G+1,)
        adaptive = torch.quantile(x, q, dim=0).T  # (I, G+1)
        lo, hi = adaptive[:, :1], adaptive[:, -1:]  # (I, 1)
        tiny = (hi - lo) <= 1e-6 * (1 + lo.abs() + hi.abs())
        half = torch.where(tiny, 1e-3 * (1 + lo.abs()), torch.zeros_like(lo))
        uniform = (lo - half) + (hi - lo + 2 * half) * q  # (I, G+1)
        eps = self.grid_eps
        knots = torch.where(tiny, uniform, eps * uniform + (1 - eps) * adaptive)
        new_grid = spline.extend_grid(knots, self.k).to(self.grid.dtype)
        xg = x.to(self.grid.dtype)
        self.coef.copy_(spline.project_coef(xg, self.grid, self.coef, new_grid, self.k))
        self.grid.copy_(new_grid)

    @torch.no_grad()
    def refine(self, G_new: int) -> KANLayer:
        """A copy on a grid of ``G_new`` intervals over the same domain, spline functions kept.

        The new domain knots interpolate the old ones piecewise linearly (an adaptive grid keeps its
        shape; when ``G_new`` is a multiple of ``G`` the old knots are kept and the fit is exact).
        Coefficients are fit by least squares at ``k + 2`` points inside every new interval.
        Scales, masks and symbolic state are copied.
        """
        if not isinstance(G_new, int) or G_new < 1:
            raise ValueError(f"G_new must be an integer >= 1, got {G_new!r}")
        old = spline.interior(self.grid, self.k)  # (I, G+1)
        pos = torch.linspace(0, self.G, G_new + 1, dtype=old.dtype, device=old.device)  # (G_new+1,)
        left = pos.floor().long().clamp(max=self.G - 1)
        knots = torch.lerp(old[:, left], old[:, left + 1], pos - left)  # (I, G_new+1)
        new_grid = spline.extend_grid(knots, self.k)
        m = self.k + 2
        frac = (torch.arange(m, dtype=old.dtype, device=old.device) + 0.5) / m  # (m,)
        width = (knots[:, 1:] - knots[:, :-1]).unsqueeze(-1)  # (I, G_new, 1)
        xs = (knots[:, :-1].unsqueeze(-1) + width * frac).reshape(self.in_dim, -1).T  # (G_new*m, I)
        coef = spline.project_coef(xs, self.grid, self.coef, new_grid, self.k)
        return self._copy_with(grid=new_grid, coef=coef)

    def _copy_with(self, **changes: torch.Tensor) -> KANLayer:
        state = dict(
            grid=self.grid,
            k=self.k,
            grid_eps=self.grid_eps,
            coef=self.coef,
            scale_base=self.scale_base,
            scale_sp=self.scale_sp,
            mask=self.mask,
            sym_mask=self.sym_mask,
            sym_affine=self.sym_affine,
        )
        state.update(changes)
        state = {n: v.detach().clone() if isinstance(v, torch.Tensor) else v for n, v in state.items()}
        names = [list(row) for row in self.sym_names]
        return KANLayer._from_state(**state, sym_names=names, sym_fns=self._used_functions(names))

    # ------------------------------------------------------------------------------------------
    # pruning

    @torch.no_grad()
    def subset(self, in_ids: Sequence[int], out_ids: Sequence[int]) -> KANLayer:
        """The layer restricted to inputs ``in_ids`` and outputs ``out_ids`` (in that order): a copy."""
        ii = _check_ids(in_ids, self.in_dim, "in_ids", self.grid.device)
        jj = _check_ids(out_ids, self.out_dim, "out_ids", self.grid.device)
        state = dict(
            grid=self.grid[ii],
            k=self.k,
            grid_eps=self.grid_eps,
            coef=self.coef[ii][:, jj],
            scale_base=self.scale_base[ii][:, jj],
            scale_sp=self.scale_sp[ii][:, jj],
            mask=self.mask[ii][:, jj],
            sym_mask=self.sym_mask[ii][:, jj],
            sym_affine=self.sym_affine[ii][:, jj],
        )
        names = [[self.sym_names[i][j] for j in out_ids] for i in in_ids]
        state = {n: v.detach().clone() if isinstance(v, torch.Tensor) else v for n, v in state.items()}
        return KANLayer._from_state(**state, sym_names=names, sym_fns=self._used_functions(names))


def _cache_key(t: torch.Tensor) -> tuple[int, int] | None:
    """Identity and version of a tensor; None (do not cache) for inference tensors, which keep no
    version, and in inference mode, whose results autograd could not use later."""
    if t.is_inference() or torch.is_inference_mode_enabled():
        return None
    return (t.data_ptr(), t._version)


def _check_grid_eps(grid_eps: float) -> None:
    if not 0.0 <= grid_eps <= 1.0:
        raise ValueError(f"grid_eps must be in [0, 1], got {grid_eps}")


def _check_ids(ids: Sequence[int], n: int, what: str, device: torch.device) -> torch.Tensor:
    ids = [int(i) for i in ids]
    if not ids:
        raise ValueError(f"{what} must not be empty")
    if len(set(ids)) != len(ids) or min(ids) < 0 or max(ids) >= n:
        raise ValueError(f"{what} must be distinct indices in [0, {n}), got {ids}")
    return torch.tensor(ids, dtype=torch.long, device=device)
