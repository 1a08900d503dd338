"""One layer's term of the sparsity regulariser (the KAN paper's L1 + entropy of the edges' scales,
pykan's "edge_forward_spline_n"): the one home of its formula. `kan_core.train` differentiates it
with autograd; `kan_core.fast_objective` also reads its intermediates for the gradient by hand.

    a = std / u  (I, O),   p_row = a / (row sums + 1),   p_col = a / (column sums + 1)
    term = lamb_l1 * sum(a) - lamb_entropy * (sum(p_row log2(p_row + 1e-4)) / I + sum(p_col log2(p_col + 1e-4)) / O)
"""

from __future__ import annotations

from typing import NamedTuple

import torch

ENTROPY_EPS = 1e-4


class EdgeTerm(NamedTuple):
    """``reg`` with the layer's term added, and the intermediates ``(I, O)`` / ``(I, 1)`` / ``(1, O)``."""

    reg: torch.Tensor
    a: torch.Tensor
    s_row: torch.Tensor
    s_col: torch.Tensor
    p_row: torch.Tensor
    p_col: torch.Tensor
    log_row: torch.Tensor
    log_col: torch.Tensor


def add_edge_term(reg: torch.Tensor, std: torch.Tensor, u: torch.Tensor, lamb_l1: float, lamb_entropy: float) -> EdgeTerm:
    """``reg`` plus the term of a layer with edge stds ``std (I, O)`` and input scales ``u (I,)``
    (added in this order, so that a fit's losses are the same bits on either path)."""
    I, O = std.shape
    a = std / u.unsqueeze(1)  # (I, O)
    s_row, s_col = a.sum(1, keepdim=True) + 1, a.sum(0, keepdim=True) + 1
    p_row, p_col = a / s_row, a / s_col
    log_row, log_col = torch.log2(p_row + ENTROPY_EPS), torch.log2(p_col + ENTROPY_EPS)
    ent = (p_row * log_row).sum() / I + (p_col * log_col).sum() / O
    return EdgeTerm(reg + lamb_l1 * a.sum() - lamb_entropy * ent, a, s_row, s_col, p_row, p_col, log_row, log_col)
