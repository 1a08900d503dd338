"""L-BFGS with a strong-Wolfe line search for small networks: `torch.optim.LBFGS`'s algorithm
(history, line search, tolerances and state carried across steps) with less work per evaluation.

Why: on a network of a few hundred parameters each objective evaluation is a few hundred tiny
operations, and torch's optimiser adds its own per parameter tensor and per iteration (a gradient
gather, a parameter update and a restore per tensor, 0-dim tensor arithmetic in the line search).
Here the gradients accumulate into one flat buffer (each ``p.grad`` is a view of it), parameters
move with one ``_foreach`` call, and the line-search scalars are Python floats. In float64 the
iterates are bit-for-bit those of ``torch.optim.LBFGS(..., line_search_fn="strong_wolfe")``
(`tests/kan_core/test_lbfgs.py`); in float32 the scalars are computed in double.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch


def _cubic_interpolate(x1: float, f1: float, g1: float, x2: float, f2: float, g2: float,
                       bounds: tuple[float, float] | None = None) -> float:
    """Minimiser of the cubic through two points with their derivatives, clipped to ``bounds``."""
    lo, hi = bounds if bounds is not None else ((x1, x2) if x1 <= x2 else (x2, x1))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, lo), hi)
    return (lo + hi) / 2.0


class LBFGS:
    """``step(closure)`` runs up to ``max_iter`` L-BFGS iterations, as `torch.optim.LBFGS.step`
    with ``line_search_fn="strong_wolfe"`` (``max_eval = max_iter * 5 // 4``).

    ``closure()`` evaluates the objective at the current parameters and returns it as a float;
    the gradient must be accumulated into the parameters' ``.grad`` by ``backward`` (this class
    zeroes them before each call). While the optimiser is alive each ``p.grad`` is a view of one
    flat buffer; `release` gives every parameter its own gradient tensor back.
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
        for p, g in zip(self.params, self._views(self._grad)):
            p.grad = g
        self.n_iter = 0  # iterations over all steps (torch keeps it in its state)
        self._d: torch.Tensor | None = None
        self._t = 0.0
        self._old_dirs: list[torch.Tensor] = []
        self._old_stps: list[torch.Tensor] = []
        self._ro: list[float] = []
        self._h_diag = 1.0
        self._prev_flat_grad: torch.Tensor | None = None

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
        self._grad.zero_()
        with torch.enable_grad():
            loss = closure()
        return float(loss.detach() if isinstance(loss, torch.Tensor) else loss), self._grad.clone()

    def _directional_evaluate(self, closure: Callable[[], Any], t: float, d: torch.Tensor,
                              d_views: list[torch.Tensor]) -> tuple[float, torch.Tensor]:
        torch._foreach_add_(self.params, d_views, alpha=t)
        out = self._evaluate(closure)
        torch._foreach_copy_(self.params, self._x0_views)
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any]) -> float:
        """Up to ``max_iter`` iterations from the current parameters; returns the first loss."""
        loss, flat_grad = self._evaluate(closure)
        orig_loss = loss
        current_evals = 1
        if float(flat_grad.abs().max()) <= self.tolerance_grad:
            return orig_loss
        d, t = self._d, self._t
        n_iter = 0
        while n_iter < self.max_iter:
            n_iter += 1
            self.n_iter += 1
            if self.n_iter == 1:
                d = flat_grad.neg()
                self._old_dirs, self._old_stps, self._ro, self._h_diag = [], [], [], 1.0
            else:
                d = self._direction(flat_grad, d, t)
            if self._prev_flat_grad is None:
                self._prev_flat_grad = flat_grad.clone()
            else:
                self._prev_flat_grad.copy_(flat_grad)
            prev_loss = loss
            if self.n_iter == 1:
                g1 = float(flat_grad.abs().sum())
                t = min(1.0, 1.0 / g1 if g1 else math.inf) * self.lr
            else:
                t = self.lr
            gtd = float(flat_grad.dot(d))
            if gtd > -self.tolerance_change:
                break
            torch._foreach_copy_(self._x0_views, self.params)
            d_views = self._views(d)
            loss, flat_grad, t, ls_evals = self._strong_wolfe(
                closure, t, d, d_views, loss, flat_grad, gtd, max_ls=self.max_eval - current_evals)
            torch._foreach_add_(self.params, d_views, alpha=t)
            opt_cond = float(flat_grad.abs().max()) <= self.tolerance_grad
            current_evals += ls_evals
            if n_iter == self.max_iter or current_evals >= self.max_eval or opt_cond:
                break
            if float(d.abs().max()) * abs(t) <= self.tolerance_change:  # max|d * t|
                break
            if abs(loss - prev_loss) < self.tolerance_change:
                break
        self._d, self._t = d, t
        return orig_loss

    def _direction(self, flat_grad: torch.Tensor, d: torch.Tensor, t: float) -> torch.Tensor:
        """Update the curvature history with the last step, return the two-loop direction."""
        y = flat_grad.sub(self._prev_flat_grad)
        s = d.mul(t)
        ys = float(y.dot(s))
        if ys > 1e-10:
            if len(self._old_dirs) == self.history_size:
                self._old_dirs.pop(0)
                self._old_stps.pop(0)
                self._ro.pop(0)
            self._old_dirs.append(y)
            self._old_stps.append(s)
            self._ro.append(1.0 / ys)
            self._h_diag = ys / float(y.dot(y))
        num_old = len(self._old_dirs)
        al = [0.0] * num_old
        q = flat_grad.neg()
        for i in range(num_old - 1, -1, -1):
            al[i] = float(self._old_stps[i].dot(q)) * self._ro[i]
            q.add_(self._old_dirs[i], alpha=-al[i])
        r = torch.mul(q, self._h_diag)
        for i in range(num_old):
            be_i = float(self._old_dirs[i].dot(r)) * self._ro[i]
            r.add_(self._old_stps[i], alpha=al[i] - be_i)
        return r

    def _strong_wolfe(self, closure: Callable[[], Any], t: float, d: torch.Tensor, d_views: list[torch.Tensor],
                      f: float, g: torch.Tensor, gtd: float, c1: float = 1e-4, c2: float = 0.9,
                      max_ls: int = 25) -> tuple[float, torch.Tensor, float, int]:
        """torch's ``_strong_wolfe`` (bracketing, then zoom by cubic interpolation)."""
        tolerance_change = 1e-9  # torch's line search default (the optimiser's own is not passed)
        d_norm = float(d.abs().max())
        f_new, g_new = self._directional_evaluate(closure, t, d, d_views)
        ls_evals = 1
        gtd_new = float(g_new.dot(d))
        t_prev, f_prev, g_prev, gtd_prev = 0.0, f, g, gtd
        done = False
        ls_iter = 0
        bracket_gtd: list[float] = []
        while ls_iter < max_ls:
            if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
                bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
                bracket_gtd = [gtd_prev, gtd_new]
                break
            if abs(gtd_new) <= -c2 * gtd:
                bracket, bracket_f, bracket_g = [t], [f_new], [g_new]
                done = True
                break
            if gtd_new >= 0:
                bracket, bracket_f, bracket_g = [t_prev, t], [f_prev, f_new], [g_prev, g_new]
                bracket_gtd = [gtd_prev, gtd_new]
                break
            min_step = t + 0.01 * (t - t_prev)
            max_step = t * 10
            tmp = t
            t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
            t_prev, f_prev, g_prev, gtd_prev = tmp, f_new, g_new, gtd_new
            f_new, g_new = self._directional_evaluate(closure, t, d, d_views)
            ls_evals += 1
            gtd_new = float(g_new.dot(d))
            ls_iter += 1
        if ls_iter == max_ls:
            bracket, bracket_f, bracket_g = [0.0, t], [f, f_new], [g, g_new]
        insuf_progress = False
        low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
        while not done and ls_iter < max_ls:
            if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
                break
            t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
            hi_b, lo_b = max(bracket), min(bracket)
            eps = 0.1 * (hi_b - lo_b)
            if min(hi_b - t, t - lo_b) < eps:
                if insuf_progress or t >= hi_b or t <= lo_b:
                    t = hi_b - eps if abs(t - hi_b) < abs(t - lo_b) else lo_b + eps
                    insuf_progress = False
                else:
                    insuf_progress = True
            else:
                insuf_progress = False
            f_new, g_new = self._directional_evaluate(closure, t, d, d_views)
            ls_evals += 1
            gtd_new = float(g_new.dot(d))
            ls_iter += 1
            if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
                bracket[high_pos], bracket_f[high_pos], bracket_g[high_pos] = t, f_new, g_new
                bracket_gtd[high_pos] = gtd_new
                low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
            else:
                if abs(gtd_new) <= -c2 * gtd:
                    done = True
                elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                    bracket[high_pos], bracket_f[high_pos] = bracket[low_pos], bracket_f[low_pos]
                    bracket_g[high_pos], bracket_gtd[high_pos] = bracket_g[low_pos], bracket_gtd[low_pos]
                bracket[low_pos], bracket_f[low_pos], bracket_g[low_pos] = t, f_new, g_new
                bracket_gtd[low_pos] = gtd_new
        return bracket_f[low_pos], bracket_g[low_pos], bracket[low_pos], ls_evals
