"""Multiplication nodes (KAN 2.0): a KAN layer whose outputs are multiplied in groups.

A `ProductLayer` is a `KANLayer` with ``S`` edge outputs ("subnodes", each the sum of its incoming
edges, as in any KAN layer) grouped into ``N`` nodes: node ``g`` is the product of the subnodes in
``groups[g]``; a group of one subnode is an ordinary sum node. So

    node_g(x) = prod_{s in groups[g]} sum_i phi_is(x_i)

and a network ``[n, ProductLayer, 1]`` writes ``x1 * x2``, ``x1 / x2`` (edges ``x`` and ``1/x``),
``r * F * sin(theta)`` or ``beta + beta * alpha * cos(theta)`` exactly, which sums of 1-D functions
express only approximately. Everything that works edge by edge (training, the regulariser, grid
updates, auto_symbolic, pruning edges) works unchanged: the layer's ``forward`` returns the node
values, its edges and masks are the subnodes' (``mask``, ``coef``, ... are ``(I, S, ...)``).

`separable_product_kan` builds the network used by discovery: product nodes whose subnode ``i``
sees input ``i`` only (multiplicatively separable functions ``prod_i f_i(x_i)``; ``rank`` of them,
summed), optionally plus an additive node ``sum_i g_i(x_i)``, and linear output edges. `als_init` fits it by alternating
least squares on the spline bases (each factor's coefficients are a linear least-squares problem
when the others are fixed), a fast, restartable initialisation that gradient descent from random
weights rarely matches on products of three or more factors. `balance_products` rescales the
factors of fully symbolic product nodes to a common size (the product unchanged), which keeps the
final LBFGS fit of the affine parameters well conditioned.

Models with product layers train, prune, fit symbolically and write formulas; `kan_core.io` does
not serialise them yet (its shape checks reject them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import sympy
import torch
from torch import nn

from kan_core.errors import TrainingCancelled
from kan_core.functions import get as get_function
from kan_core.layer import KANLayer
from kan_core.model import KAN


def _check_groups(groups: Sequence[Sequence[int]], n_sub: int) -> tuple[tuple[int, ...], ...]:
    out = tuple(tuple(int(s) for s in g) for g in groups)
    flat = sorted(s for g in out for s in g)
    if not out or any(len(g) == 0 for g in out) or flat != list(range(n_sub)):
        raise ValueError(f"groups must partition the {n_sub} subnodes into non-empty groups, got {groups!r}")
    return out


class ProductLayer(KANLayer):
    """A `KANLayer` with ``out_dim`` subnodes multiplied in ``groups`` (see the module docstring).

    ``groups``: a partition of ``range(out_dim)``; ``n_nodes = len(groups)`` is the layer's output
    width. Build one with ``ProductLayer.from_layer(KANLayer(in_dim, n_subnodes, ...), groups)``.
    """

    groups: tuple[tuple[int, ...], ...]

    @classmethod
    def from_layer(cls, layer: KANLayer, groups: Sequence[Sequence[int]]) -> ProductLayer:
        """A product layer with ``layer``'s edges (its tensors are shared, not copied)."""
        new = cls.__new__(cls)
        nn.Module.__init__(new)
        new._set_state(
            grid=layer.grid, k=layer.k, grid_eps=layer.grid_eps, coef=layer.coef.data,
            scale_base=layer.scale_base.data, scale_sp=layer.scale_sp.data, mask=layer.mask,
            sym_mask=layer.sym_mask, sym_affine=layer.sym_affine.data,
            sym_names=[list(row) for row in layer.sym_names], sym_fns=dict(layer._sym_fns),
        )
        new._set_groups(groups)
        return new

    def _set_groups(self, groups: Sequence[Sequence[int]]) -> None:
        self.groups = _check_groups(groups, self.out_dim)
        owner = [0] * self.out_dim
        for g, members in enumerate(self.groups):
            for s in members:
                owner[s] = g
        self._owner = owner

    @property
    def n_nodes(self) -> int:
        """Output width: the number of nodes (groups)."""
        return len(self.groups)

    @property
    def subnode_owner(self) -> torch.Tensor:
        """``(S,)`` long: the node each subnode belongs to."""
        return torch.tensor(self._owner, dtype=torch.long, device=self.grid.device)

    def subnodes_of(self, nodes: Sequence[int]) -> list[int]:
        """The subnodes of ``nodes``, in order."""
        return [s for g in nodes for s in self.groups[g]]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, groups={[list(g) for g in self.groups]}"

    # ------------------------------------------------------------------------------------------
    # forward

    def _forward(
        self, x: torch.Tensor, with_std: bool, precise: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        y, std = super()._forward(x, with_std, precise)
        return self.combine(y), std

    def combine(self, sub: torch.Tensor) -> torch.Tensor:
        """Subnode values ``(B, S)`` -> node values ``(B, N)``."""
        cols = [sub[:, g[0]] if len(g) == 1 else sub[:, list(g)].prod(1) for g in self.groups]
        return torch.stack(cols, 1)

    def combine_exprs(self, sub: Sequence[sympy.Expr]) -> list[sympy.Expr]:
        """Subnode expressions -> node expressions (`kan_core.formula` calls this)."""
        return [sympy.Mul(*(sub[s] for s in g)) for g in self.groups]

    def subnode_values(self, x: torch.Tensor) -> torch.Tensor:
        """The subnodes (sums of their edges) before multiplication: ``(B, I) -> (B, S)``."""
        self._check_x(x)
        return super()._forward(x, with_std=False)[0]

    # ------------------------------------------------------------------------------------------
    # copies keep the groups

    def _copy_with(self, **changes: torch.Tensor) -> ProductLayer:
        return ProductLayer.from_layer(super()._copy_with(**changes), self.groups)

    def subset(self, in_ids: Sequence[int], out_ids: Sequence[int]) -> ProductLayer:
        """Restricted to inputs ``in_ids`` and *nodes* ``out_ids`` (with all their subnodes)."""
        if not list(out_ids):
            raise ValueError("out_ids must not be empty")
        if len(set(out_ids)) != len(out_ids) or not all(0 <= g < self.n_nodes for g in out_ids):
            raise ValueError(f"out_ids must be distinct node indices in [0, {self.n_nodes}), got {list(out_ids)}")
        sub_ids = self.subnodes_of(out_ids)
        small = super().subset(in_ids, sub_ids)
        position = {s: p for p, s in enumerate(sub_ids)}
        return ProductLayer.from_layer(small, [[position[s] for s in self.groups[g]] for g in out_ids])


# ----------------------------------------------------------------------------------------------
# the separable product network


def separable_product_kan(
    n_in: int,
    *,
    additive: bool = False,
    rank: int = 1,
    grid: int = 5,
    k: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    grid_range: tuple[float, float] = (-1.0, 1.0),
    noise_scale: float = 0.3,
):
    """``y = sum_{r<rank} c_r prod_i f_ri(x_i) [+ sum_i g_i(x_i)] + d`` as a KAN ``[n_in, nodes, 1]``.

    Layer 0 is a `ProductLayer`: ``rank`` product nodes of ``n_in`` subnodes each, subnode ``i`` of
    a product connected to input ``i`` only (the other edges masked off); with ``additive`` one more
    subnode, connected to every input, is a sum node (node 0). Layer 1 is an ordinary
    ``[nodes, 1]`` layer. ``rank`` 2 writes ``n*T*(log(V2) - log(V1))``. Use `als_init` to fit it
    before gradient training. ``n_in >= 2`` (a product of one factor is the additive model).
    """
    if not isinstance(n_in, int) or n_in < 2:
        raise ValueError(f"n_in must be an integer >= 2, got {n_in!r}")
    if not isinstance(rank, int) or rank < 1:
        raise ValueError(f"rank must be an integer >= 1, got {rank!r}")
    n_add = 1 if additive else 0
    n_sub = n_add + rank * n_in
    model = KAN([n_in, n_sub, 1], grid=grid, k=k, seed=seed, dtype=dtype, device=device,
                grid_range=grid_range, noise_scale=noise_scale)
    groups = ([[0]] if additive else []) + [list(range(n_add + r * n_in, n_add + (r + 1) * n_in)) for r in range(rank)]
    layer0 = ProductLayer.from_layer(model.layers[0], groups)
    with torch.no_grad():
        for s in range(n_add, n_sub):
            keep = (s - n_add) % n_in
            for i in range(n_in):
                if i != keep:
                    layer0.mask[i, s] = 0.0
    gen = torch.Generator().manual_seed(int(seed) + 1)
    layer1 = KANLayer(len(groups), 1, grid, k, grid_range, model.grid_eps, noise_scale,
                      dtype=dtype, device=device, generator=gen)
    return KAN._with_layers(model, [layer0, layer1])


def _product_shape(model) -> tuple[int, int] | None:
    """``(n_add, rank)`` of a `separable_product_kan` network, None for any other network."""
    if model.depth != 2 or not isinstance(model.layers[0], ProductLayer) or model.width[-1] != 1:
        return None
    layer = model.layers[0]
    n_in, groups = layer.in_dim, layer.groups
    n_add = 1 if len(groups[0]) == 1 else 0
    products = groups[n_add:]
    if n_in < 2 or not products or (n_add and groups[0] != (0,)):
        return None
    for r, g in enumerate(products):
        if g != tuple(range(n_add + r * n_in, n_add + (r + 1) * n_in)):
            return None
    return n_add, len(products)


@torch.no_grad()
def als_init(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sweeps: int = 50,
    restarts: int = 4,
    seed: int = 0,
    ridge: float = 1e-9,
    tol: float = 1e-10,
    should_stop=None,
) -> float:
    """Fit a `separable_product_kan` to ``x (B, n), y (B, 1)`` by alternating least squares.

    Each product subnode ``(r, i)`` is ``F_i(x) @ w_ri`` with ``F_i`` its input's features (silu and
    B-spline basis on the layer's current grid). With every other factor fixed, the model is linear
    in ``w_ri`` (and in the additive subnode's weights, and an intercept), so every update is a
    small ridge least-squares solve. ``restarts`` random starts, ``sweeps`` sweeps each (stopping
    early when the RMSE changes by < ``tol`` relative; with ``rank > 1`` every other start is
    greedy: product ``r`` first fits what products ``< r`` leave, then all are swept together,
    which finds sums of products that random starts rarely do); the best is written into the model:
    its edges get ``scale_sp = 1``, ``scale_base``/``coef`` from ``w``, and the output edges become
    symbolic identities (the intercept in the first one's ``d``). Returns the training RMSE of
    that fit. ``should_stop()`` is asked between sweeps (True raises `TrainingCancelled`).
    """
    shape = _product_shape(model)
    if shape is None:
        raise ValueError("als_init needs a model built by separable_product_kan")
    n_add, rank = shape
    layer0, layer1 = model.layers
    x = x.to(dtype=model.dtype, device=model.device)
    y = y.to(dtype=model.dtype, device=model.device).reshape(-1)
    if x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x and y must have the same number (>= 2) of rows, got {x.shape[0]} and {y.shape[0]}")
    n_in = layer0.in_dim
    feats = layer0._features_t(x).permute(0, 2, 1)  # (I, B, K+1)
    B, K1 = feats.shape[1], feats.shape[2]
    ones = torch.ones(B, 1, dtype=x.dtype, device=x.device)
    all_feats = feats.permute(1, 0, 2).reshape(B, n_in * K1)  # the additive subnode's design

    def solve(design: torch.Tensor, rhs: torch.Tensor) -> tuple[torch.Tensor, float]:
        a = torch.cat([design, ones], 1)
        ata = a.T @ a
        ata.diagonal().add_(ridge * float(ata.diagonal().mean()) + 1e-300)
        sol = torch.linalg.solve(ata, a.T @ rhs)
        return sol[:-1], float(sol[-1])

    def run(w: torch.Tensor, w_add: torch.Tensor, products: list[int]) -> tuple[float, torch.Tensor, float]:
        """ALS sweeps over the factors of ``products`` (the others fixed) and the additive subnode,
        updating ``w`` in place; returns (rmse, w_add, intercept)."""
        vals = torch.einsum("ibk,rik->rib", feats, w)  # (R, I, B) factor values
        add_val = all_feats @ w_add
        d, prev = 0.0, math.inf
        for _sweep in range(sweeps):
            if should_stop is not None and should_stop():
                raise TrainingCancelled("cancelled during the product initialisation")
            if n_add:
                w_add, d = solve(all_feats, y - vals.prod(1).sum(0))
                add_val = all_feats @ w_add
            for r in products:
                rest = add_val + (vals.prod(1).sum(0) - vals[r].prod(0))  # everything but product r
                for i in range(n_in):
                    others = torch.cat([vals[r, :i], vals[r, i + 1:]]).prod(0)
                    w_ri, d = solve(feats[i] * others[:, None], y - rest)
                    w[r, i] = w_ri
                    vals[r, i] = feats[i] @ w_ri
            rmse = float((add_val + vals.prod(1).sum(0) + d - y).pow(2).mean().sqrt())
            if not math.isfinite(rmse):
                return math.inf, w_add, d
            done = abs(prev - rmse) <= tol * max(rmse, 1e-300) or rmse <= 1e-12 * (1 + float(y.abs().max()))
            prev = rmse
            if done:
                break
        return prev, w_add, d

    def near_one(*shape: int) -> torch.Tensor:
        """Factor weights of a curve near 1 (B-splines sum to 1 on the grid) plus noise: a product of
        such factors starts near 1, so the first solves see y itself (a random zero-mean factor on an
        input y does not depend on makes the product nearly orthogonal to y, and ALS collapses)."""
        w = 0.3 * torch.randn(*shape, K1, generator=gen, dtype=torch.float64)
        w[..., 1:] += 1.0
        return w.to(x)

    gen = torch.Generator().manual_seed(int(seed))
    best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
    for start in range(max(1, restarts)):
        # even starts: factors near 1 (greedy for rank > 1); odd starts: random factors. Neither
        # kind always wins (a zero-mean random factor stalls on an unused input; factors near 1
        # stall more often on sign-changing products), so restarts alternate.
        if start % 2 == 0:
            w = near_one(rank, n_in)
        else:
            w = torch.randn(rank, n_in, K1, generator=gen, dtype=torch.float64).to(x)
        w_add = torch.zeros(n_in * K1, dtype=x.dtype, device=x.device)
        if rank > 1 and start % 2 == 0:  # greedy start: product r fit to what products < r leave
            w[1:] = 0.0
            for r in range(rank - 1):
                run(w, w_add, [r])
                w[r + 1] = near_one(n_in)
        rmse, w_add, d = run(w, w_add, list(range(rank)))
        if math.isfinite(rmse) and (best is None or rmse < best[0]):
            best = (rmse, w.clone(), w_add.clone(), d)
    if best is None:
        raise ValueError("the product initialisation did not converge (non-finite fit)")
    rmse, w, w_add, d = best
    _write_weights(layer0, w, w_add.reshape(n_in, K1), n_add)
    for g in range(layer1.in_dim):  # the output sums the nodes
        layer1.set_symbolic(g, 0, get_function("x"), (1.0, 0.0, 1.0, d if g == 0 else 0.0))
    return rmse


def _write_weights(layer: ProductLayer, w: torch.Tensor, w_add: torch.Tensor, n_add: int) -> None:
    """Edge (i, subnode) = w[..., 0] * silu + w[..., 1:] . B-splines, with scale_sp = 1."""
    rank, n_in, _ = w.shape
    with torch.no_grad():
        layer.scale_sp.fill_(1.0)
        for i in range(n_in):
            for r in range(rank):
                s = n_add + r * n_in + i
                layer.scale_base[i, s] = w[r, i, 0]
                layer.coef[i, s] = w[r, i, 1:]
            if n_add:
                layer.scale_base[i, 0] = w_add[i, 0]
                layer.coef[i, 0] = w_add[i, 1:]


@torch.no_grad()
def balance_products(model, x: torch.Tensor) -> None:
    """Give the subnodes of every product node the same RMS on ``x``, keeping each product.

    Only fully symbolic product subnodes are rescaled (their edges' ``c`` and ``d`` scale exactly);
    a group with a spline or an all-zero subnode is left alone. Training the affine parameters of
    ``(0.04 r)(0.04 F)(0.04 sin t)`` against an output edge of slope 1e4 is badly conditioned;
    after balancing, every factor has the same size and LBFGS converges in a few steps.
    """
    acts = model.layer_inputs(x)
    for l, layer in enumerate(model.layers):
        if not isinstance(layer, ProductLayer):
            continue
        sub = layer.subnode_values(acts[l])  # (B, S)
        rms = sub.pow(2).mean(0).sqrt()  # (S,)
        symbolic = ((layer.mask == 0) | (layer.sym_mask > 0)).all(0)  # (S,)
        for g in layer.groups:
            if len(g) < 2 or not bool(symbolic[list(g)].all()) or bool((rms[list(g)] <= 0).any()):
                continue
            target = float(torch.exp(torch.log(rms[list(g)]).mean()))
            for s in g:
                scale = target / float(rms[s])
                layer.sym_affine[:, s, 2] *= scale
                layer.sym_affine[:, s, 3] *= scale
