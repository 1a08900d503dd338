"""`fit`'s objective on a KAN with a hand-written gradient: the small-network hot path.

Why: on a network of a few hundred edges and a few thousand rows an objective evaluation is about
a hundred small kernels, and autograd (recording the graph, the engine's walk over it, its nodes'
saved tensors and gradient buffers) takes a quarter to a third of the time; LBFGS evaluates the
objective ~25 times per step. Here the forward and the backward are the same kernels, called in
order (`kan_core.spline_edges`' and `kan_core.symbolic_edges`' forward / backward pairs, the
regulariser's gradient written out), with no graph. Measured on the seed recipe (1000 rows,
float64, one thread): 0.62 -> 0.40 ms per evaluation of a [2, 1, 1] network, 1.8 -> 1.4 ms for
[2, 5, 1] with the regulariser.

`objective` computes ``mse + lamb * reg`` exactly as `kan_core.train.fit` defines it (the same
formula; sums may round differently) and accumulates its gradient into the parameters' ``.grad``.
`supports` says when it applies: plain `KANLayer`s whose symbolic edges' functions come with their
derivatives (``SymbolicFunction.dtorch``), the regulariser without its coefficient terms. Anything
else takes autograd.
"""

from __future__ import annotations

import math

import torch

from kan_core.edge_reg import ENTROPY_EPS, add_edge_term
from kan_core.layer import KANLayer
from kan_core.model import KAN
from kan_core.spline_edges import (
    edges_backward,
    edges_forward,
    spline_weights,
    spline_weights_backward,
    std_from_cov_backward,
    std_from_cov_parts,
)
from kan_core.symbolic_edges import has_derivatives, symbolic_backward_t, symbolic_forward_t

_LN2 = math.log(2.0)


def supports(model: KAN, lamb: float, lamb_coef: float, lamb_coefdiff: float) -> bool:
    """Whether `objective` computes ``model``'s training objective: every layer a plain `KANLayer`
    with some edge unmasked, every symbolic edge's function with its derivative (``dtorch``), and
    no coefficient regulariser."""
    if lamb > 0 and (lamb_coef > 0 or lamb_coefdiff > 0):
        return False
    for layer in model.layers:
        edges = layer._symbolic_edges(layer.grid.device) if type(layer) is KANLayer else None
        if type(layer) is not KANLayer or (edges is not None and not has_derivatives(edges)):
            return False
        if not layer._has_spline() and edges is None:
            return False
    return True


@torch.no_grad()
def objective(
    model: KAN,
    x: torch.Tensor,
    y: torch.Tensor,
    lamb: float,
    lamb_l1: float,
    lamb_entropy: float,
    precise: bool,
    u0: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(objective, mse, reg)`` (0-dim) of ``model`` (`supports` it) on ``x (B, n_0)``, ``y (B, n_L)``,
    ``B >= 2`` when ``lamb > 0``; adds the objective's gradient to every parameter's ``.grad`` that
    needs one (sets it when None). ``u0 (n_0,)``: ``x.std(0) + 0.1`` when the caller has it.

    The first layer takes its cached features (`KANLayer.cache_fixed_inputs`) when it has them.
    """
    with_reg = lamb > 0
    tapes = []  # per layer: what its backward needs
    reg = x.new_zeros(())
    xt = x.T  # (I, B): the layer's input, transposed
    for index, layer in enumerate(model.layers):
        tape = {"xt": xt}
        yt = None
        m = layer._spline_mask_t()  # (O, I, 1); sets _any_spline
        if layer._any_spline:
            wt = spline_weights(layer.coef, layer.scale_base, layer.scale_sp, m)  # (O, I, K+1)
            fixed = layer._fixed_features(x) if index == 0 else None
            if fixed is not None:
                yt, cov = fixed.output_t(wt), (fixed.cov(precise) if with_reg else None)
                saved = fixed.saved(wt)
            else:
                xt = tape["xt"] = xt.contiguous()
                yt, cov, saved = edges_forward(xt, wt, layer.grid, layer.k, layer._knot_tables(), with_reg,
                                               precise, deriv=index > 0)
            tape.update(m=m, saved=saved)
            if with_reg:  # (a layer without spline edges adds 0)
                tape["parts"] = parts = std_from_cov_parts(cov, wt)
                if index == 0 and u0 is not None:
                    u = u0
                else:
                    tape["sd"] = sd = xt.std(1)  # (I,)
                    u = sd + 0.1
                reg, tape["g_std"], tape["g_u"] = _edge_reg(reg, parts.std, u, lamb_l1, lamb_entropy, lamb)
        edges = layer._symbolic_edges(x.device)
        if edges is not None:
            sym, tape["sym"] = symbolic_forward_t(layer.sym_affine, layer.mask, xt, edges)
            yt = sym if yt is None else yt + sym
        tapes.append((layer, edges, tape))
        xt = yt  # (O, B): the next layer's input, transposed
    diff = xt - y.T  # (n_L, B)
    loss = diff.pow(2).mean()
    total = loss + lamb * reg if with_reg else loss
    grad_yt = diff * (2 / diff.numel())  # d mse / d pred, transposed
    for index in range(len(tapes) - 1, -1, -1):
        layer, edges, tape = tapes[index]
        need_x = index > 0
        grad_xt = None
        if "saved" in tape:
            grad_xt = _spline_backward(layer, tape, grad_yt, with_reg, need_x)
        if edges is not None:
            grad_affine, grad_sym = symbolic_backward_t(tape["sym"], grad_yt, edges, layer.in_dim, need_x)
            if layer.sym_affine.requires_grad:
                if layer.sym_affine.grad is None:
                    layer.sym_affine.grad = torch.zeros_like(layer.sym_affine)
                layer.sym_affine.grad.index_put_((edges.ii, edges.jj), grad_affine, accumulate=True)
            grad_xt = grad_sym if grad_xt is None else grad_xt + grad_sym
        grad_yt = grad_xt
    return total, loss, reg


def _spline_backward(layer: KANLayer, tape: dict, grad_yt: torch.Tensor, with_reg: bool, need_x: bool):
    """The spline edges' part of a layer's backward: adds the gradients of ``coef``, ``scale_base``,
    ``scale_sp``; returns the input's ``(I, B)`` if ``need_x``."""
    saved, grad_cov = tape["saved"], None
    if with_reg:
        g_wt_std, grad_cov = std_from_cov_backward(tape["g_std"], tape["parts"], need_x)
    grad_xt, grad_wt = edges_backward(saved, grad_yt, grad_cov, need_x, need_w=True)
    if with_reg:
        grad_wt += g_wt_std
        if need_x:  # u = std_b(x) + 0.1: d std / d x_b = (x_b - mean) / ((B - 1) std)
            xt = tape["xt"]
            grad_xt += (xt - xt.mean(1, keepdim=True)) * (tape["g_u"] / ((xt.shape[1] - 1) * tape["sd"])).unsqueeze(1)
    params = (layer.coef, layer.scale_base, layer.scale_sp)
    needs = tuple(p.requires_grad for p in params)
    grads = spline_weights_backward(grad_wt, layer.coef, layer.scale_sp, tape["m"], needs)
    for p, g in zip(params, grads):
        if g is not None:
            if p.grad is None:
                p.grad = g.contiguous()
            else:
                p.grad.add_(g)
    return grad_xt


def _edge_reg(
    reg: torch.Tensor, std: torch.Tensor, u: torch.Tensor, lamb_l1: float, lamb_entropy: float, lamb: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reg`` plus one layer's regulariser term (`kan_core.edge_reg`) from the edge stds ``std (I, O)``
    and input scales ``u (I,)``, and the gradients of ``lamb *`` the term: ``(reg, d/dstd (I, O), d/du (I,))``.

    With ``A = std / u``, ``p = A / (s + 1)`` for the row (column) sums ``s`` and ``h(p) = p log2(p + eps)``:
    ``d sum_j h(p_j) / dA_j = (h'(p_j) - sum_l h'(p_l) p_l) / (s + 1)``.
    """
    I, O = std.shape
    t = add_edge_term(reg, std, u, lamb_l1, lamb_entropy)
    dh_row = t.log_row + t.p_row / ((t.p_row + ENTROPY_EPS) * _LN2)  # h'(p)
    dh_col = t.log_col + t.p_col / ((t.p_col + ENTROPY_EPS) * _LN2)
    d_ent = (dh_row - (dh_row * t.p_row).sum(1, keepdim=True)) / (t.s_row * I)
    d_ent += (dh_col - (dh_col * t.p_col).sum(0, keepdim=True)) / (t.s_col * O)
    g_a = (lamb_l1 - lamb_entropy * d_ent) * lamb  # (I, O)
    g_std = g_a / u.unsqueeze(1)
    g_u = -(g_a * t.a).sum(1) / u  # (I,)
    return t.reg, g_std, g_u
