"""Per-edge data of a KAN as plain Python (JSON-ready): what the API shows about a trained network.

`edges(model, x)` returns one dict per edge ``(layer, in, out)``:

    layer, in, out      indices of the edge
    active              False where pruning removed it (listed only with include_inactive=True)
    kind                "spline" or "symbolic"
    knots               the edge's (extended) knot row, G + 2k + 1 floats
    coefficients        its K = G + k B-spline coefficients
    scale_base          weight of silu(x);  scale_sp: weight of the spline
    curve               {"x": [...], "y": [...]}: the edge's activation sampled at n_points over
                        the range its input takes on ``x``
    symbolic            None, or {"function", "affine": [a, b, c, d], "r2"} for c * f(a*x + b) + d;
                        r2 compares it with the spline it replaced (the spline branch is kept under
                        a symbolic edge) on the layer's inputs, None when that spline is constant
    importance          the edge's attribution score on ``x`` (kan_core.prune.attribute)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from kan_core import spline
from kan_core.model import KAN
from kan_core.prune import attribute


def edges(model: KAN, x: torch.Tensor, n_points: int = 101, *, include_inactive: bool = False) -> list[dict[str, Any]]:
    """Per-edge data (see the module docstring), ordered by layer, then input, then output."""
    if not isinstance(model, KAN):
        raise ValueError(f"expected a kan_core KAN, got {type(model).__name__}")
    if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
        raise ValueError(f"n_points must be an integer >= 2, got {n_points!r}")
    x = check_sample(model, x)
    with torch.no_grad():
        acts = model.layer_inputs(x)  # [(B, n_0), ..., (B, n_L)]
        scores = attribute(model, x).edge_scores  # per layer (I, O)
        out: list[dict[str, Any]] = []
        for l, layer in enumerate(model.layers):
            xs = sample_points(acts[l], n_points)  # (P, I)
            ys = layer.edge_outputs(xs)  # (P, I, O)
            r2 = _symbolic_r2(layer, acts[l])  # (I, O), NaN where unknown
            for i in range(layer.in_dim):
                for j in range(layer.out_dim):
                    active = bool(layer.mask[i, j] > 0)
                    if active or include_inactive:
                        out.append(_edge_dict(layer, l, i, j, active, xs[:, i], ys[:, i, j], r2[i, j], scores[l][i, j]))
    return out


def check_sample(model: KAN, x: Any) -> torch.Tensor:
    """``x`` as a ``(B, n_0)`` tensor in the model's dtype and device, B >= 2, finite (ValueError)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a tensor, got {type(x).__name__}")
    if x.dim() != 2 or x.shape[1] != model.width[0] or x.shape[0] < 2:
        raise ValueError(f"x must have shape (B >= 2, {model.width[0]}), got {tuple(x.shape)}")
    x = x.to(dtype=model.dtype, device=model.device)
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or infinite values")
    return x


def sample_points(x: torch.Tensor, n_points: int) -> torch.Tensor:
    """``n_points`` evenly spaced values over the range of every column of ``x (B, I)`` -> ``(P, I)``.
    A constant column gets a small interval around its value."""
    lo, hi = x.min(0).values, x.max(0).values  # (I,)
    pad = torch.where(hi - lo > 0, torch.zeros_like(lo), 1e-3 * (1 + lo.abs()))
    t = torch.linspace(0, 1, n_points, dtype=x.dtype, device=x.device).unsqueeze(1)  # (P, 1)
    return (lo - pad) + (hi - lo + 2 * pad) * t


def _symbolic_r2(layer: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """R² of every symbolic edge against the spline branch kept under it, on ``x (B, I)``: ``(I, O)``,
    NaN on spline edges and where the spline is constant on ``x``."""
    r2 = torch.full((layer.in_dim, layer.out_dim), float("nan"), dtype=torch.float64)
    if not bool(layer.sym_mask.any()):
        return r2
    curve = spline.coef_to_curve(x, layer.grid, layer.coef, layer.k)  # (B, I, O)
    ref = layer.scale_base * F.silu(x).unsqueeze(-1) + layer.scale_sp * curve  # (B, I, O)
    for i, j in layer.sym_mask.nonzero().tolist():
        fn = layer.symbolic_function(i, j)
        a, b, c, d = layer.sym_affine[i, j].tolist()
        sym = c * fn.torch(a * x[:, i] + b) + d  # (B,)
        y = ref[:, i, j].double()
        ss_tot = float(((y - y.mean()) ** 2).sum())
        if ss_tot > 1e-12 * (1.0 + float((y**2).sum())):
            r2[i, j] = 1.0 - float(((y - sym.double()) ** 2).sum()) / ss_tot
    return r2


def _edge_dict(
    layer: torch.nn.Module,
    l: int,
    i: int,
    j: int,
    active: bool,
    xs: torch.Tensor,
    ys: torch.Tensor,
    r2: torch.Tensor,
    importance: torch.Tensor,
) -> dict[str, Any]:
    name = layer.sym_names[i][j]
    symbolic = None
    if name:
        r2_value = float(r2)
        symbolic = {
            "function": name,
            "affine": [float(v) for v in layer.sym_affine[i, j].tolist()],
            "r2": r2_value if r2_value == r2_value else None,  # NaN -> None
        }
    return {
        "layer": l,
        "in": i,
        "out": j,
        "active": active,
        "kind": "symbolic" if name else "spline",
        "knots": [float(v) for v in layer.grid[i].tolist()],
        "coefficients": [float(v) for v in layer.coef[i, j].tolist()],
        "scale_base": float(layer.scale_base[i, j]),
        "scale_sp": float(layer.scale_sp[i, j]),
        "curve": {"x": [float(v) for v in xs.tolist()], "y": [float(v) for v in ys.tolist()]},
        "symbolic": symbolic,
        "importance": float(importance),
    }
