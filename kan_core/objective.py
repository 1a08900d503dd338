"""The training objective's terms as single autograd nodes: `fit`'s mean squared error.

Why: on a small network each objective evaluation is a few hundred tiny operations and autograd
records one node per operation (the squared error was three, with three backward nodes); here it
is one node with a hand-written backward, computing the same bits.
"""

from __future__ import annotations

import torch


class MeanSquaredError(torch.autograd.Function):
    """``mean((pred - y)^2)`` for ``pred, y`` of one shape; the gradient flows to ``pred`` only.
    Same operations (and bits) as autograd through ``(pred - y).pow(2).mean()``."""

    @staticmethod
    def forward(ctx, pred, y):
        diff = pred - y
        ctx.save_for_backward(diff)
        return diff.pow(2).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (diff,) = ctx.saved_tensors
        return diff * (grad / diff.numel() * 2), None


def mse(pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean((pred - y)^2)``, one autograd node (see `MeanSquaredError`)."""
    return MeanSquaredError.apply(pred, y)
