"""The symbolic edges of a KAN layer: ``phi_ij(x) = c * f(a * x + b) + d``, ``(a, b, c, d) = sym_affine_ij``.

`SymbolicEdgesMixin` holds the bookkeeping (set / clear / look up an edge's function) and the
evaluation of `kan_core.layer.KANLayer`'s symbolic edges. They are few, so they are grouped by
function (one call of ``f`` per function) and evaluated only where set; the spline edges are
`kan_core.spline_edges`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from kan_core.functions import SymbolicFunction
from kan_core.functions import get as get_function

IDENTITY_AFFINE = (1.0, 0.0, 1.0, 0.0)


class SymbolicEdges(NamedTuple):
    """A layer's symbolic edges ``ii[e] -> jj[e]``, sorted by function: edges ``lo:hi`` use ``fn``."""

    ii: torch.Tensor  # (n,)
    jj: torch.Tensor  # (n,)
    spans: list[tuple[SymbolicFunction, int, int]]  # (fn, lo, hi)


class SymbolicEdgesMixin:
    """The symbolic-edge methods of `KANLayer` (which owns the state named below).

    State: ``sym_affine (I, O, 4)`` (a parameter), ``sym_mask (I, O)`` and ``mask (I, O)`` (buffers),
    ``sym_names`` (``I x O`` function names, "" for a spline edge), ``_sym_fns`` (name -> function),
    ``_sym_edges`` / ``_sym_edges_stale`` (the grouping, cached until an edge changes).
    """

    sym_affine: torch.Tensor
    sym_mask: torch.Tensor
    mask: torch.Tensor
    sym_names: list[list[str]]
    _sym_fns: dict[str, SymbolicFunction]
    _sym_edges: SymbolicEdges | None
    _sym_edges_stale: bool
    in_dim: int
    out_dim: int

    def set_symbolic(
        self,
        i: int,
        j: int,
        name: SymbolicFunction | str,
        affine: Sequence[float] = IDENTITY_AFFINE,
    ) -> None:
        """Make edge ``i -> j`` the symbolic function ``c * f(a*x + b) + d``, ``affine = (a, b, c, d)``.

        ``name`` is a `SymbolicFunction` (custom ones allowed) or a name in ``kan_core.functions``.
        The layer keeps the function object under its name: a later function with the same name
        replaces it for every edge of this layer.
        """
        self._check_edge(i, j)
        fn = get_function(name) if isinstance(name, str) else name
        if not isinstance(fn, SymbolicFunction):
            raise ValueError(f"expected a SymbolicFunction or a function name, got {type(name).__name__}")
        aff = torch.as_tensor(affine, dtype=self.sym_affine.dtype).reshape(-1)
        if aff.numel() != 4 or not bool(torch.isfinite(aff).all()):
            raise ValueError(f"affine must be 4 finite numbers (a, b, c, d), got {affine!r}")
        with torch.no_grad():
            self.sym_affine[i, j] = aff.to(self.sym_affine.device)
            self.sym_mask[i, j] = 1.0
        self.sym_names[i][j] = fn.name
        self._sym_fns[fn.name] = fn
        self._sym_edges_stale = True

    def clear_symbolic(self, i: int, j: int) -> None:
        """Turn edge ``i -> j`` back into a spline edge (its coefficients were kept meanwhile)."""
        self._check_edge(i, j)
        with torch.no_grad():
            self.sym_affine[i, j] = torch.tensor(IDENTITY_AFFINE, dtype=self.sym_affine.dtype)
            self.sym_mask[i, j] = 0.0
        self.sym_names[i][j] = ""
        self._sym_edges_stale = True

    def symbolic_function(self, i: int, j: int) -> SymbolicFunction | None:
        """The function object of edge ``i -> j``, None for a spline edge."""
        self._check_edge(i, j)
        name = self.sym_names[i][j]
        return self._sym_fns[name] if name else None

    def _symbolic_edges(self, device: torch.device) -> SymbolicEdges | None:
        """The symbolic edges grouped by function, None if there are none; cached."""
        if self._sym_edges_stale or (self._sym_edges is not None and self._sym_edges.ii.device != device):
            by_fn: dict[str, list[tuple[int, int]]] = {}
            for i, row in enumerate(self.sym_names):
                for j, name in enumerate(row):
                    if name:
                        by_fn.setdefault(name, []).append((i, j))
            pairs = [ij for edges in by_fn.values() for ij in edges]
            spans, start = [], 0
            for name, edges in by_fn.items():
                spans.append((self._sym_fns[name], start, start + len(edges)))
                start += len(edges)
            self._sym_edges = SymbolicEdges(
                torch.tensor([i for i, _ in pairs], dtype=torch.long, device=device),
                torch.tensor([j for _, j in pairs], dtype=torch.long, device=device),
                spans,
            ) if pairs else None
            self._sym_edges_stale = False
        return self._sym_edges

    def _symbolic_values(self, x: torch.Tensor, edges: SymbolicEdges) -> torch.Tensor:
        """``mask_ij * (c f(a x_i + b) + d)`` of every symbolic edge: ``x (B, I)`` -> ``(B, n)``."""
        a, b, c, d = self.sym_affine[edges.ii, edges.jj].unbind(-1)  # each (n,)
        z = x[:, edges.ii] * a + b  # (B, n)
        if len(edges.spans) == 1:
            f = edges.spans[0][0].torch(z)
        else:
            f = torch.cat([fn.torch(z[:, lo:hi]) for fn, lo, hi in edges.spans], dim=1)
        return (f * c + d) * self.mask[edges.ii, edges.jj]

    def _used_functions(self, names: list[list[str]]) -> dict[str, SymbolicFunction]:
        """The function objects of the names in ``names`` (for a copy of the layer)."""
        used = {n for row in names for n in row if n}
        return {n: f for n, f in self._sym_fns.items() if n in used}

    def _check_edge(self, i: int, j: int) -> None:
        if not (0 <= i < self.in_dim and 0 <= j < self.out_dim):
            raise ValueError(f"edge ({i}, {j}) out of range for a {self.in_dim} x {self.out_dim} layer")


class SymbolicSaved(NamedTuple):
    """What `symbolic_backward_t` needs of `symbolic_forward_t`: the edges' inputs ``xs (n, B)``,
    ``(a, b, c, d)`` each ``(n, 1)``, ``f`` and ``f'`` at ``a xs + b`` ``(n, B)``, the mask ``m (n, 1)``."""

    xs: torch.Tensor
    affine: tuple[torch.Tensor, ...]
    f: torch.Tensor
    df: torch.Tensor
    m: torch.Tensor


def has_derivatives(edges: SymbolicEdges) -> bool:
    """Whether every function of ``edges`` has its derivative (``dtorch``): `symbolic_forward_t` needs it."""
    return all(fn.dtorch is not None for fn, _, _ in edges.spans)


def symbolic_forward_t(
    sym_affine: torch.Tensor, mask: torch.Tensor, xt: torch.Tensor, edges: SymbolicEdges
) -> tuple[torch.Tensor, SymbolicSaved]:
    """`SymbolicEdgesMixin`'s symbolic edge values summed at the outputs, transposed and without
    autograd: ``xt (I, B)`` -> ``(O, B)`` (``O = mask.shape[1]``), with what `symbolic_backward_t` needs.
    The same elementwise operations as the layer's forward. Every function needs ``dtorch``."""
    a, b, c, d = sym_affine[edges.ii, edges.jj].T.unsqueeze(-1)  # each (n, 1)
    xs = xt.index_select(0, edges.ii)  # (n, B)
    z = xs * a + b
    if len(edges.spans) == 1:
        fn = edges.spans[0][0]
        f, df = fn.torch(z), fn.dtorch(z)
    else:
        f = torch.cat([fn.torch(z[lo:hi]) for fn, lo, hi in edges.spans])
        df = torch.cat([fn.dtorch(z[lo:hi]) for fn, lo, hi in edges.spans])
    m = mask[edges.ii, edges.jj].unsqueeze(1)  # (n, 1)
    yt = xt.new_zeros(mask.shape[1], xt.shape[1]).index_add_(0, edges.jj, (f * c + d) * m)
    return yt, SymbolicSaved(xs, (a, b, c, d), f, df, m)


def symbolic_backward_t(
    saved: SymbolicSaved, grad_yt: torch.Tensor, edges: SymbolicEdges, in_dim: int, need_x: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradient of `symbolic_forward_t`: ``grad_yt (O, B)`` -> the affine parameters' ``(n, 4)``
    (rows in the order of ``edges``) and, if ``need_x``, the input's ``(I, B)``."""
    a, _, c, _ = saved.affine
    gv = grad_yt.index_select(0, edges.jj) * saved.m  # (n, B): d loss / d (c f + d)
    gz = gv * c * saved.df  # d loss / d z
    grad_affine = torch.stack([(gz * saved.xs).sum(1), gz.sum(1), (gv * saved.f).sum(1), gv.sum(1)], dim=1)
    grad_xt = gz.new_zeros(in_dim, gz.shape[1]).index_add_(0, edges.ii, gz * a) if need_x else None
    return grad_affine, grad_xt
