"""The spline edges of a KAN layer as one autograd node: the training hot path.

`SplineEdges` computes every spline edge's output of a layer as one matrix product of the per-input
features ``F = [silu, B-splines]`` with the edge weights, and optionally the feature covariance the
regulariser needs (``std_ij^2 = w_ij^T Cov_i w_ij``, `std_from_cov`), with a hand-written backward
that reuses one buffer. `kan_core.layer.KANLayer` is the only caller.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from kan_core import spline
from kan_core.uniform_basis import uniform_basis_compact


def fill_features(
    xt: torch.Tensor, grid: torch.Tensor, k: int, tables: list[tuple[torch.Tensor, torch.Tensor]], deriv: bool
) -> tuple[torch.Tensor, FeatureDeriv | None]:
    """``F = [silu(x_i), B_1(x_i), .., B_K(x_i)]`` ``(I, K+1, B)`` from ``xt (I, B)``, written in place,
    and, if ``deriv``, ``dF/dx`` (``silu' = s + silu (1 - s)``, ``s = sigmoid``). No autograd."""
    I, B = xt.shape
    uniform = getattr(tables, "uniform", None)
    alloc = torch.zeros if uniform is not None else torch.empty
    feats = alloc(I, grid.shape[1] - k, B, dtype=xt.dtype, device=xt.device)
    sig = torch.sigmoid(xt)
    silu = torch.mul(sig, xt, out=feats[:, 0])
    dsilu = torch.addcmul(silu, sig, 1 - silu) if deriv else None  # (I, B)
    if uniform is not None:  # k+1 nonzero values per sample: dB/dx stays compact
        basis = uniform_basis_compact(xt, uniform, deriv)
        feats[:, 1:].scatter_add_(1, basis.rows, basis.vals)  # feats was zeroed whole (contiguous: fast)
        return feats, (FeatureDeriv(dsilu, None, basis.rows, basis.dvals) if deriv else None)
    dbdx = torch.empty_like(feats[:, 1:]) if deriv else None
    spline.cox_de_boor_t(xt, grid, tables, feats[:, 1:], dbdx)
    return feats, (FeatureDeriv(dsilu, dbdx, None, None) if deriv else None)


class FeatureDeriv(NamedTuple):
    """``dF/dx`` of `fill_features`: ``dsilu (I, B)`` and ``dB/dx`` either dense, ``dense (I, K, B)``,
    or compact, ``vals (I, k+1, B)`` at basis rows ``rows (I, k+1, B)`` (uniform grids)."""

    dsilu: torch.Tensor
    dense: torch.Tensor | None
    rows: torch.Tensor | None
    vals: torch.Tensor | None

    def grad_x(self, gf: torch.Tensor) -> torch.Tensor:
        """``sum_k dF_k/dx * gf_k``: ``gf (I, K+1, B)`` (overwritten) -> ``(I, B)``."""
        if self.dense is not None:
            gb = gf[:, 1:].mul_(self.dense).sum(1)
        else:
            gb = gf[:, 1:].gather(1, self.rows).mul_(self.vals).sum(1)
        return gb.addcmul_(gf[:, 0], self.dsilu)


class SplineEdges(torch.autograd.Function):
    """All spline edges of a layer as one autograd node (the training hot path):

        forward:   F = features(x)  (I, K+1, B),   y^T = Wt F  (O, B),
                   Cov_i = Fc_i Fc_i^T / (B - 1)  (I, K+1, K+1), Fc = F - mean_b F   (if with_cov)
        backward:  dWt = dy^T F^T,   dF = Wt^T dy^T + (dCov + dCov^T) Fc / (B - 1),
                   dx = sum_k dF/dx_k * dF_k

    Saved: F, dF/dx (on a uniform grid only its k+1 nonzero values per sample, `FeatureDeriv`), Wt and, when the covariance is asked for, F's mean in the accumulation dtype
    (below). When that is the input dtype, F is centred in place after the product (centring first
    keeps the covariance accurate; ``dWt`` adds the mean back); when it is wider (float32 input,
    ``precise``), F is kept as is and the backward recentres a float64 copy (the same memory as
    float64 training, and no float32 rounding of Fc).

    Precision (``precise``, a per-call choice): True accumulates ``Cov`` (centring included) in
    float64 whatever the input dtype, returns it in float64, and computes the covariance term of
    ``dF`` in float64 before it is cast back (see `std_from_cov` for the variance); False does
    all of it in the input dtype. In float64 the two are the same computation. Why: for a nearly
    dead edge ``var = w^T Cov w`` cancels ~8 digits, which float32 does not have, so the
    regulariser is noise there and LBFGS's line search fails on the non-smooth objective; float64
    accumulation (centring included) keeps it smooth at about twice the cost of a float32 step
    (`fit`'s ``precise_reg`` chooses; measurements in bench/RESULTS.md). No ``(B, I, O)`` tensor
    either way.

    As one node, the backward builds ``dF`` in one buffer it owns (the covariance term added in
    place, the product with dF/dx taken in place) instead of autograd's separate, summed gradient
    buffers: on CPUs, fresh large tensors (page faults) cost as much as the arithmetic.
    Inputs: ``xt (I, B)``, ``wt (O, I, K+1)``.
    """

    @staticmethod
    def forward(ctx, xt, wt, grid, k, tables, with_cov, precise):
        ctx.set_materialize_grads(False)
        yt, cov, saved = edges_forward(xt, wt, grid, k, tables, with_cov, precise, deriv=ctx.needs_input_grad[0])
        if cov is None:
            cov = saved.feats.new_empty(0)
            ctx.mark_non_differentiable(cov)
        dfdx = saved.dfdx if saved.dfdx is not None else (None,) * 4
        ctx.save_for_backward(saved.feats, wt, saved.mean, *dfdx)
        return yt, cov

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_yt, grad_cov):  # (O, B), (I, K+1, K+1); None when unused
        feats, wt, mean, *deriv = ctx.saved_tensors
        saved = EdgesSaved(feats, wt, mean, FeatureDeriv(*deriv) if deriv[0] is not None else None)
        grad_xt, grad_wt = edges_backward(saved, grad_yt, grad_cov, *ctx.needs_input_grad[:2])
        return grad_xt, grad_wt, None, None, None, None, None


class EdgesSaved(NamedTuple):
    """What `edges_backward` needs of `edges_forward`: ``feats (I, K+1, B)`` (F, or Fc when centred
    in place: then ``mean`` has its dtype), ``wt (O, I, K+1)``, F's ``mean (I, K+1, 1)`` when the
    covariance was computed, ``dfdx`` when the input gradient is wanted."""

    feats: torch.Tensor
    wt: torch.Tensor
    mean: torch.Tensor | None
    dfdx: FeatureDeriv | None


def edges_forward(
    xt: torch.Tensor, wt: torch.Tensor, grid: torch.Tensor, k: int, tables, with_cov: bool, precise: bool, deriv: bool
) -> tuple[torch.Tensor, torch.Tensor | None, EdgesSaved]:
    """`SplineEdges`'s forward without autograd: ``yt (O, B)``, ``Cov (I, K+1, K+1)`` (None unless
    ``with_cov``) and what `edges_backward` needs (``deriv``: keep dF/dx for the input gradient)."""
    feats, dfdx = fill_features(xt, grid, k, tables, deriv=deriv)
    I, K1, B = feats.shape
    yt = wt.reshape(wt.shape[0], -1) @ feats.view(I * K1, B)  # (O, B)
    mean = cov = None
    if with_cov:  # centred and accumulated in `acc`, see `SplineEdges`
        acc = torch.float64 if precise else feats.dtype
        fa = feats.to(acc)  # feats itself when acc is its dtype, else a float64 copy
        mean = fa.mean(-1, keepdim=True)  # (I, K+1, 1), acc
        fc = fa.sub_(mean)  # when fa is feats: centred in place, the backward uses Fc and the mean
        cov = torch.baddbmm(fc.new_empty(()), fc, fc.transpose(1, 2), beta=0, alpha=1 / (B - 1))
    return yt, cov, EdgesSaved(feats, wt, mean, dfdx)


def edges_backward(
    saved: EdgesSaved, grad_yt: torch.Tensor | None, grad_cov: torch.Tensor | None, need_x: bool, need_w: bool
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`SplineEdges`'s backward without autograd: ``grad_yt (O, B)``, ``grad_cov (I, K+1, K+1)`` (either
    None) -> ``(grad_xt (I, B), grad_wt (O, I, K+1))``, None where not wanted. Overwrites nothing saved."""
    feats, wt, mean, dfdx = saved
    centred = mean is not None and mean.dtype == feats.dtype  # accumulated in place: feats holds Fc
    I, K1, B = feats.shape
    grad_xt = grad_wt = None
    if need_w and grad_yt is not None:
        grad_wt = grad_yt @ feats.view(I * K1, B).T  # (O, I*(K+1))
        if centred:  # F = Fc + mean
            grad_wt += grad_yt.sum(1, keepdim=True) * mean.view(1, -1)
        grad_wt = grad_wt.view(wt.shape)
    if need_x:
        if grad_yt is not None:
            gf = (wt.reshape(wt.shape[0], -1).T @ grad_yt).view(I, K1, B)
        else:
            gf = torch.zeros_like(feats)
        if grad_cov is not None:  # in cov's dtype: dCov Fc cancels as w^T Cov w does
            gcov = (grad_cov + grad_cov.transpose(1, 2)).div_(B - 1)
            if centred:
                gf.baddbmm_(gcov, feats)
            else:  # float32, precise: Fc recentred in float64, the product cast back
                gf += torch.bmm(gcov, feats.to(mean.dtype).sub_(mean)).to(gf.dtype)
        grad_xt = dfdx.grad_x(gf)  # (I, B)
    return grad_xt, grad_wt


class SplineWeights(torch.autograd.Function):
    """``W_ij = m_ij * [scale_base_ij, scale_sp_ij * coef_ij]`` output-major, ``(O, I, K+1)``, as one
    autograd node (the transposes, product, concatenation and mask would be eight, each with its own
    bookkeeping on every objective evaluation of a small network).

    Inputs: ``coef (I, O, K)``, ``scale_base (I, O)``, ``scale_sp (I, O)``, ``m (O, I, 1)`` (no grad).
    """

    @staticmethod
    def forward(ctx, coef, scale_base, scale_sp, m):
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(coef, scale_sp, m)
        return spline_weights(coef, scale_base, scale_sp, m)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_w):  # (O, I, K+1)
        if grad_w is None:
            return None, None, None, None
        coef, scale_sp, m = ctx.saved_tensors
        return (*spline_weights_backward(grad_w, coef, scale_sp, m, ctx.needs_input_grad[:3]), None)


def spline_weights(coef: torch.Tensor, scale_base: torch.Tensor, scale_sp: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """`SplineWeights`'s forward without autograd: ``W (O, I, K+1)``."""
    O, I = m.shape[:2]
    w = coef.new_empty(O, I, coef.shape[2] + 1)
    torch.mul(scale_base.T, m[..., 0], out=w[..., 0])
    torch.mul(coef.transpose(0, 1), scale_sp.T.unsqueeze(-1), out=w[..., 1:]).mul_(m)
    return w


def spline_weights_backward(
    grad_w: torch.Tensor, coef: torch.Tensor, scale_sp: torch.Tensor, m: torch.Tensor, needs: tuple[bool, ...]
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """`SplineWeights`'s backward without autograd: ``grad_w (O, I, K+1)`` -> the gradients of
    ``coef``, ``scale_base``, ``scale_sp`` (None where ``needs``, three flags, is False)."""
    gm = grad_w * m  # (O, I, K+1)
    gs = gm[..., 1:].transpose(0, 1)  # (I, O, K)
    grad_coef = gs * scale_sp.unsqueeze(-1) if needs[0] else None
    grad_sb = gm[..., 0].T if needs[1] else None
    grad_sp = (gs * coef).sum(-1) if needs[2] else None
    return grad_coef, grad_sb, grad_sp


class FixedFeatures:
    """The features ``F (I, K+1, B)`` of one input that needs no gradient (a first layer's training
    data), computed once and reused while neither the input tensor nor the grid changes: LBFGS
    evaluates the objective ~20 times per step on the same data, so the basis (and, for the
    regulariser, the feature covariance, which is then a constant) need not be recomputed. With
    them a layer's output is one GEMM whose backward is one GEMM (``dWt = dy^T F^T``).

    ``x (B, I)``; ``grid_key`` identifies the grid the features were computed on.
    """

    def __init__(self, x: torch.Tensor, grid: torch.Tensor, k: int, tables, grid_key: tuple) -> None:
        self.x, self.version, self.grid_key = x, x._version, grid_key
        self.feats = fill_features(x.T.contiguous(), grid, k, tables, deriv=False)[0]  # (I, K+1, B)
        self._cov: dict[torch.dtype, torch.Tensor] = {}

    def matches(self, x: torch.Tensor, grid_key: tuple) -> bool:
        return x is self.x and x._version == self.version and grid_key == self.grid_key

    def output_t(self, wt: torch.Tensor) -> torch.Tensor:
        """``y^T = Wt F``: ``wt (O, I, K+1)`` -> ``(O, B)`` (autograd to ``wt`` only)."""
        I, K1, B = self.feats.shape
        return wt.reshape(wt.shape[0], -1) @ self.feats.view(I * K1, B)

    def saved(self, wt: torch.Tensor) -> EdgesSaved:
        """What `edges_backward` needs for ``dWt`` of `output_t` (no input gradient)."""
        return EdgesSaved(self.feats, wt, None, None)

    def cov(self, precise: bool) -> torch.Tensor:
        """``Cov_i = Fc_i Fc_i^T / (B - 1)`` ``(I, K+1, K+1)``, accumulated as `SplineEdges` does."""
        acc = torch.float64 if precise else self.feats.dtype
        if acc not in self._cov:
            fc = self.feats.to(acc, copy=True)
            fc.sub_(fc.mean(-1, keepdim=True))
            B = fc.shape[-1]
            self._cov[acc] = torch.baddbmm(fc.new_empty(()), fc, fc.transpose(1, 2), beta=0, alpha=1 / (B - 1))
        return self._cov[acc]


def std_from_cov(cov: torch.Tensor, wt: torch.Tensor) -> torch.Tensor:
    """Std of the edge outputs ``F_i . w_ij`` from ``cov (I, K+1, K+1)``, ``wt (O, I, K+1)``: ``(I, O)``.

    ``var_ij = w_ij^T Cov_i w_ij``, floored at the smallest normal number of ``wt``'s dtype before
    the square root: an edge of constant output (masked, symbolic, or a constant input) gets std
    ~1e-154 (float64) or ~1e-19 (float32) and a zero, not infinite, gradient.

    The quadratic form is evaluated in ``cov``'s dtype (float64 from `SplineEdges` when
    ``precise``, else the input dtype) and only the std is cast back to ``wt``'s dtype: for a
    nearly dead edge the sum cancels most of its digits (see `SplineEdges`), which float32 does
    not have. ``(I, O, K+1)``-sized, cheap.
    """
    return std_from_cov_parts(cov, wt)[0]


class StdParts(NamedTuple):
    """`std_from_cov`'s result and what its backward needs: ``std (I, O)`` in ``wt``'s dtype, in
    ``cov``'s dtype ``w (I, O, K+1)``, ``wc = w Cov (I, O, K+1)``, ``var`` and ``root`` (its
    floored square root), ``(I, O)``."""

    std: torch.Tensor
    w: torch.Tensor
    wc: torch.Tensor
    var: torch.Tensor
    root: torch.Tensor


def std_from_cov_parts(cov: torch.Tensor, wt: torch.Tensor) -> StdParts:
    """`std_from_cov` with its intermediates (for `std_from_cov_backward`)."""
    w = wt.transpose(0, 1).to(cov.dtype)  # (I, O, K+1)
    wc = w @ cov
    var = (wc * w).sum(-1)  # (I, O)
    root = var.clamp_min(torch.finfo(wt.dtype).tiny).sqrt()
    return StdParts(root.to(wt.dtype), w, wc, var, root)


def std_from_cov_backward(
    grad_std: torch.Tensor, parts: StdParts, need_cov: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The gradient of `std_from_cov` without autograd: ``grad_std (I, O)`` -> ``grad_wt (O, I, K+1)``
    (``grad_std``'s dtype) and, if ``need_cov``, ``grad_cov (I, K+1, K+1)`` (``cov``'s dtype).
    Below the variance's floor (the std dtype's tiny) the gradient is 0. Uses ``Cov``'s symmetry:
    ``d(w^T Cov w)/dw = 2 Cov w``."""
    w, wc, var, root = parts.w, parts.wc, parts.var, parts.root
    gvar = torch.where(var >= torch.finfo(parts.std.dtype).tiny, grad_std.to(root.dtype) / (2 * root), 0.0)  # (I, O)
    grad_wt = (wc * (2 * gvar).unsqueeze(-1)).to(grad_std.dtype).transpose(0, 1)  # (O, I, K+1)
    grad_cov = (w * gvar.unsqueeze(-1)).transpose(1, 2) @ w if need_cov else None  # (I, K+1, K+1)
    return grad_wt, grad_cov
