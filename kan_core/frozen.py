"""A frozen numpy copy of a KAN's forward pass, for evaluating small batches fast (serving).

`KAN.forward` on a handful of rows is dominated by the per-operation cost of torch (~5 us a call,
~100 calls for a two-layer network), not by arithmetic. `FrozenKAN` takes a snapshot of a network's
state (knot grids, Cox-de Boor tables, the combined spline weights ``W = m * [scale_base,
scale_sp * coef]``, the symbolic edges) and evaluates the same computation as `KANLayer._forward`
with numpy: the same features, the same one GEMM per layer, the same symbolic edges (their
`SymbolicFunction.torch` form, on a zero-copy tensor view), in the network's dtype. The results
agree with the network's to rounding.

It is a snapshot: changing the network afterwards (training, set_symbolic, pruning) does not change
it. `FrozenKAN.of(model)` answers None for a network with a layer type it does not know.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from kan_core import spline
from kan_core.functions import SymbolicFunction
from kan_core.layer import KANLayer
from kan_core.product import ProductLayer


@dataclass(frozen=True)
class _FrozenLayer:
    k: int
    t: np.ndarray                            # (I, M, 1) extended knots
    tables: list[tuple[np.ndarray, np.ndarray]]  # Cox-de Boor (inv, shift), each (I, M-p, 1)
    w: np.ndarray | None                     # (O, I*(K+1)) spline weights; None without spline edges
    out_dim: int                             # O (subnodes of a product layer)
    sym: list[tuple[SymbolicFunction, np.ndarray, np.ndarray, np.ndarray]]  # (fn, ii, jj, (n, 4) a b c d * mask)
    groups: tuple[tuple[int, ...], ...] | None  # product layer: subnodes multiplied per node

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``x (B, I) -> (B, O)`` (or ``(B, nodes)`` for a product layer)."""
        B = x.shape[0]
        y = None
        if self.w is not None:
            xt = x.T  # (I, B)
            sig = 1.0 / (1.0 + np.exp(-xt))
            silu = sig * xt
            xe = xt[:, None, :]  # (I, 1, B)
            b = (xe >= self.t).astype(x.dtype)  # (I, M, B): 1 where x >= t_j
            b = b[:, :-1] - b[:, 1:]  # order 0
            for inv, shift in self.tables:
                v = (xe * inv + shift) * b  # w_j B_j
                u = b - v  # (1 - w_j) B_j
                b = v[:, :-1] + u[:, 1:]
            feats = np.concatenate([silu[:, None, :], b], axis=1)  # (I, K+1, B)
            y = (self.w @ feats.reshape(-1, B)).T  # (B, O)
        if self.sym:  # summed apart, then added to the splines' sum, as the layer does
            sym = np.zeros((B, self.out_dim), dtype=x.dtype)
            for fn, ii, jj, abcd in self.sym:
                z = x[:, ii] * abcd[:, 0] + abcd[:, 1]  # (B, n)
                f = fn.torch(torch.from_numpy(np.ascontiguousarray(z))).numpy()
                np.add.at(sym, (slice(None), jj), (f * abcd[:, 2] + abcd[:, 3]) * abcd[:, 4])
            y = sym if y is None else y + sym
        if y is None:
            y = np.zeros((B, self.out_dim), dtype=x.dtype)
        if self.groups is not None:
            y = np.stack([y[:, g[0]] if len(g) == 1 else y[:, list(g)].prod(1) for g in self.groups], 1)
        return y


class FrozenKAN:
    """``FrozenKAN.of(model)(x (B, n_in)) -> (B, n_out)``, in the model's dtype; no autograd, no checks
    on ``x`` beyond its shape (the caller checks that it is finite)."""

    def __init__(self, layers: Sequence[_FrozenLayer], n_in: int, dtype: np.dtype):
        self._layers = list(layers)
        self.n_in = n_in
        self.dtype = dtype
        # the largest temporary per row: inputs x knots of the widest layer (its Cox-de Boor work
        # arrays are this times the batch; torch's kernel works in blocks, this evaluator does not)
        self.cells_per_row = max(layer.t.shape[0] * layer.t.shape[1] for layer in self._layers)

    @classmethod
    def of(cls, model: torch.nn.Module) -> FrozenKAN | None:
        """A snapshot of ``model`` (a `kan_core.model.KAN`) on the CPU; None when one of its layers is
        neither a `KANLayer` nor a `ProductLayer`."""
        layers = list(model.layers)
        if not layers or not all(type(layer) in (KANLayer, ProductLayer) for layer in layers):
            return None
        with torch.no_grad():
            frozen = [_freeze(layer) for layer in layers]
        dtype = np.dtype(torch.empty(0, dtype=layers[0].coef.dtype).numpy().dtype)
        return cls(frozen, layers[0].in_dim, dtype)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"input must have shape (B, {self.n_in}), got {x.shape}")
        with np.errstate(over="ignore"):  # exp(-x) of a very negative x: inf, sigmoid 0, as in torch
            for layer in self._layers:
                x = layer(x)
        return x


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu").numpy().copy()


def _freeze(layer: KANLayer) -> _FrozenLayer:
    I, O, K = layer.coef.shape
    spline_mask = layer.mask * (1 - layer.sym_mask)  # (I, O)
    w = None
    if bool(spline_mask.any()):
        wt = torch.cat([layer.scale_base.T.unsqueeze(-1), layer.coef.transpose(0, 1) * layer.scale_sp.T.unsqueeze(-1)],
                       dim=-1) * spline_mask.T.unsqueeze(-1)  # (O, I, K+1), as KANLayer._spline_weights_t
        w = _numpy(wt.reshape(O, I * (K + 1)))
    tables = [(_numpy(inv), _numpy(shift)) for inv, shift in spline.knot_tables(layer.grid, layer.k)]
    by_fn: dict[str, list[tuple[int, int]]] = {}
    for i, row in enumerate(layer.sym_names):
        for j, name in enumerate(row):
            if name:
                by_fn.setdefault(name, []).append((i, j))
    sym = []
    for name, edges in by_fn.items():
        ii = np.array([i for i, _ in edges], dtype=np.intp)
        jj = np.array([j for _, j in edges], dtype=np.intp)
        affine = layer.sym_affine[ii, jj]  # (n, 4)
        mask = layer.mask[ii, jj].unsqueeze(-1)  # (n, 1)
        sym.append((layer._sym_fns[name], ii, jj, _numpy(torch.cat([affine, mask], dim=-1))))
    groups = layer.groups if isinstance(layer, ProductLayer) else None
    return _FrozenLayer(layer.k, _numpy(layer.grid.unsqueeze(-1)), tables, w, O, sym, groups)
