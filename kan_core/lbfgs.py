"""L-BFGS with a strong-Wolfe line search for small networks: `torch.optim.LBFGS`'s algorithm
(history, torch's own line search, tolerances and state carried across steps) with less work per
objective evaluation.

Why: on a network of a few hundred parameters each evaluation is a few hundred tiny operations,
and torch's optimiser adds its own per parameter tensor (a gradient gather, a parameter update and
a restore per tensor). Here the gradients accumulate into one flat buffer (each ``p.grad`` is a
view of it) and parameters move with one ``_foreach`` call. The scalars are the same 0-dim tensors
and floats as torch's where it matters (``1.0 / tensor`` is a reciprocal and a product in torch,
not a division; products, sums and tensor / tensor are the same IEEE operations on floats, which
the two-loop recursion uses as they are cheaper), so the iterates are bit-for-bit those of
``torch.optim.LBFGS(..., line_search_fn="strong_wolfe")`` (`tests/kan_core/test_lbfgs.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.optim.lbfgs import _strong_wolfe


class LBFGS:
    """``step(closure)`` runs up to ``max_iter`` L-BFGS iterations, as `torch.optim.LBFGS.step`
    with ``line_search_fn="strong_wolfe"`` (``max_eval = max_iter * 5 // 4``).

    ``closure()`` evaluates the objective at the current parameters and returns it as a float;
    the gradient must be accumulated into the parameters' ``.grad`` by ``backward`` (this class
    zeroes them before each call). While the optimiser is alive each ``p.grad`` is a view of one
    flat buffer; `release` gives every parameter its own gradient tensor back.

    A step starts by evaluating the objective where the previous step left the parameters, a
    point that step has already evaluated; ``step(closure, reuse=True)`` takes those values
    instead (the caller vouches that neither the parameters nor the objective changed since), so
    the iterates are the same with one evaluation fewer. ``evals``: closure calls of the last step.
    """

    def __init__(self, params: Sequence[torch.Tensor], lr: float = 1.0, max_iter: int = 20,
                 tolerance_grad: float = 1e-7, tolerance_change: float = 1e-9, history_size: int = 100) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("LBFGS needs at least one parameter")
        self.lr, self.max_iter, self.max_eval = float(lr), int(max_iter), int(max_iter) * 5 // 4
        self.tolerance_grad, self.tolerance_change = float(tolerance_grad), float(tolerance_change)
        self.history_size = int(history_size)
        p0 = self.params[0]
        self.n = sum(p.numel() for p in self.params)
        self._grad = torch.zeros(self.n, dtype=p0.dtype, device=p0.device)  # (n,): every p.grad views it
        self._x0 = torch.empty_like(self._grad)  # (n,): the line search's start point
        self._x0_views = self._views(self._x0)
        self._dbuf = torch.empty_like(self._grad)  # (n,): the search direction, always in this buffer
        self._d_views = self._views(self._dbuf)
        for p, g in zip(self.params, self._views(self._grad)):
            p.grad = g
        self.n_iter = 0  # iterations over all steps (torch keeps it in its state)
        self._d: torch.Tensor | None = None
        self._t: torch.Tensor | float = 0.0
        self._old_dirs: list[torch.Tensor] = []
        self._old_stps: list[torch.Tensor] = []
        self._ro: list[float] = []
        self._h_diag = 1.0
        self._prev_flat_grad: torch.Tensor | None = None
        self._end: tuple[float, torch.Tensor] | None = None  # loss and gradient where the last step ended
        self.evals = 0

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        out, offset = [], 0
        for p in self.params:
            out.append(flat[offset: offset + p.numel()].view_as(p))
            offset += p.numel()
        return out

    def release(self) -> None:
        """Detach the parameters' gradients from the shared buffer (each gets a copy)."""
        for p in self.params:
            if p.grad is not None:
                p.grad = p.grad.clone()

    def _evaluate(self, closure: Callable[[], Any]) -> tuple[float, torch.Tensor]:
        self.evals += 1
        self._grad.zero_()
        with torch.enable_grad():
            loss = closure()
        return float(loss.detach() if isinstance(loss, torch.Tensor) else loss), self._grad.clone()

    def _directional_evaluate(self, closure: Callable[[], Any], t: torch.Tensor | float) -> tuple[float, torch.Tensor]:
        """Objective and gradient at ``x0 + t d`` (the direction buffer); the parameters stay at ``x0``."""
        torch._foreach_add_(self.params, self._d_views, alpha=t)
        out = self._evaluate(closure)
        torch._foreach_copy_(self.params, self._x0_views)
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any], reuse: bool = False) -> float:
        """Up to ``max_iter`` iterations from the current parameters; returns the first loss."""
        self.evals = 0
        if reuse and self._end is not None:
            loss, flat_grad = self._end
        else:
            loss, flat_grad = self._evaluate(closure)
        self._end = None
        orig_loss = loss
        current_evals = 1  # the start point counts as torch's does, evaluated or reused
        if flat_grad.abs().max() <= self.tolerance_grad:
            self._end = (loss, flat_grad)
            return orig_loss
        d, t = self._d, self._t
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_iter += 1
            if self.n_iter == 1:
                d = torch.neg(flat_grad, out=self._dbuf)
                self._old_dirs, self._old_stps, self._ro, self._h_diag = [], [], [], 1.0
            else:
                d = self._direction(flat_grad, d, t)
            if self._prev_flat_grad is None:
                self._prev_flat_grad = flat_grad.clone()
            else:
                self._prev_flat_grad.copy_(flat_grad)
            prev_loss = loss
            t = min(1.0, 1.0 / flat_grad.abs().sum()) * self.lr if self.n_iter == 1 else self.lr
            gtd = flat_grad.dot(d)
            if gtd > -self.tolerance_change:
                break
            torch._foreach_copy_(self._x0_views, self.params)
            loss, flat_grad, t, ls_evals = _strong_wolfe(
                lambda _x, t, _d: self._directional_evaluate(closure, t), None, t, d, loss, flat_grad, gtd,
                max_ls=self.max_eval - current_evals)
            torch._foreach_add_(self.params, self._d_views, alpha=t)
            opt_cond = flat_grad.abs().max() <= self.tolerance_grad
            current_evals += ls_evals
            if n_iter == self.max_iter or current_evals >= self.max_eval or opt_cond:
                break
            if d.mul(t).abs().max() <= self.tolerance_change:
                break
            if abs(loss - prev_loss) < self.tolerance_change:
                break
        self._d, self._t = d, t
        self._end = (loss, flat_grad)  # the parameters are where these were evaluated
        return orig_loss

    def _direction(self, flat_grad: torch.Tensor, d: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
        """Update the curvature history with the last step ``t d``, return the two-loop direction
        (written into the direction buffer, which ``d`` is: it is read first)."""
        y = flat_grad.sub(self._prev_flat_grad)
        s = d.mul(t)
        ys = y.dot(s)
        if ys > 1e-10:
            if len(self._old_dirs) == self.history_size:
                self._old_dirs.pop(0)
                self._old_stps.pop(0)
                self._ro.pop(0)
            self._old_dirs.append(y)
            self._old_stps.append(s)
            self._ro.append(float(1.0 / ys))  # torch's reciprocal, then a float: products are exact IEEE either way
            self._h_diag = float(ys / y.dot(y))
        num_old = len(self._old_dirs)
        al = [0.0] * num_old
        q = flat_grad.neg()
        for i in range(num_old - 1, -1, -1):
            al[i] = self._old_stps[i].dot(q).item() * self._ro[i]
            q.add_(self._old_dirs[i], alpha=-al[i])
        r = torch.mul(q, self._h_diag, out=self._dbuf)
        for i in range(num_old):
            be_i = self._old_dirs[i].dot(r).item() * self._ro[i]
            r.add_(self._old_stps[i], alpha=al[i] - be_i)
        return r
