"""A picture of a KAN as PNG bytes, in the spirit of pykan's ``plot()``.

Nodes are drawn layer by layer, inputs at the bottom. Every active edge gets a small boxed plot of
its activation curve, placed in a row between its two layers, with a line from its input node to
the box and from the box to its output node. Lines and curves fade with the edge's importance;
symbolic edges are red and labelled with their function name. Input names go below the inputs,
output names above the outputs.

Pure object-oriented matplotlib (a `Figure` on an Agg canvas): no pyplot state, no files.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from kan_core.inspect import edges as edge_data
from kan_core.model import KAN

LAYER_GAP = 2.0  # vertical distance between two node rows (data units)
BOX_W, BOX_H = 0.7, 0.7  # size of an edge's curve box (data units; one node slot is 1 wide)
SPLINE_COLOR, SYMBOLIC_COLOR = "black", "tab:red"


def plot_png(
    model: KAN,
    x: torch.Tensor,
    var_names: Sequence[str] | None = None,
    *,
    out_names: Sequence[str] | None = None,
    dpi: int = 100,
    beta: float = 3.0,
    n_points: int = 50,
    title: str | None = None,
) -> bytes:
    """Draw ``model`` (curves sampled over the ranges its layers see on ``x (B, n_in)``) -> PNG.

    ``var_names``/``out_names``: labels of the inputs/outputs (default x_1.., y_1..). ``beta``: how
    fast opacity saturates with importance, alpha = tanh(beta * importance / max importance).
    """
    width = model.width if isinstance(model, KAN) else None
    if width is None:
        raise ValueError(f"expected a kan_core KAN, got {type(model).__name__}")
    var_names = _names(var_names, width[0], "x", "var_names")
    out_names = _names(out_names, width[-1], "y", "out_names")
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 600:
        raise ValueError(f"dpi must be an integer in [10, 600], got {dpi!r}")
    if not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be finite and > 0, got {beta}")
    data = edge_data(model, x, n_points=n_points)

    per_layer = [[e for e in data if e["layer"] == l] for l in range(model.depth)]
    span = max([*width, *(len(es) for es in per_layer), 1])  # widest row, in slots
    node_x = [[(n + 0.5) * span / w for n in range(w)] for w in width]  # per layer, per node
    top_score = max((e["importance"] for e in data), default=0.0)

    fig = Figure(figsize=(min(1.0 + 0.9 * span, 24.0), min(1.2 + 1.4 * LAYER_GAP * model.depth, 24.0)), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    ax.set_xlim(-0.2, span + 0.2)
    ax.set_ylim(-0.9, LAYER_GAP * model.depth + 0.9)
    if title:
        fig.suptitle(title)

    for l, layer_edges in enumerate(per_layer):
        y0, y1 = l * LAYER_GAP, (l + 1) * LAYER_GAP
        # boxes ordered by the midpoint of their two nodes: few crossings
        layer_edges = sorted(layer_edges, key=lambda e: node_x[l][e["in"]] + node_x[l + 1][e["out"]])
        for slot, e in enumerate(layer_edges):
            cx, cy = (slot + 0.5) * span / len(layer_edges), (y0 + y1) / 2
            alpha = math.tanh(beta * e["importance"] / top_score) if top_score > 0 else 1.0
            _draw_edge(ax, e, (node_x[l][e["in"]], y0), (cx, cy), (node_x[l + 1][e["out"]], y1), max(alpha, 0.03))

    for l, xs in enumerate(node_x):
        ax.scatter(xs, [l * LAYER_GAP] * len(xs), s=60, c="black", zorder=3)
    for name, nx in zip(var_names, node_x[0]):
        ax.text(nx, -0.35, name, ha="center", va="top", fontsize=12)
    for name, nx in zip(out_names, node_x[-1]):
        ax.text(nx, model.depth * LAYER_GAP + 0.35, name, ha="center", va="bottom", fontsize=12)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _draw_edge(ax: Any, e: dict[str, Any], src: tuple[float, float], box: tuple[float, float],
               dst: tuple[float, float], alpha: float) -> None:
    """Lines node -> box -> node, and the curve in its box."""
    color = SYMBOLIC_COLOR if e["kind"] == "symbolic" else SPLINE_COLOR
    cx, cy = box
    x0, y0 = cx - BOX_W / 2, cy - BOX_H / 2
    ax.plot([src[0], cx], [src[1], y0], color=color, alpha=alpha, lw=1.0, zorder=1)
    ax.plot([cx, dst[0]], [y0 + BOX_H, dst[1]], color=color, alpha=alpha, lw=1.0, zorder=1)
    ax.add_patch(Rectangle((x0, y0), BOX_W, BOX_H, facecolor="white", edgecolor=color, alpha=alpha, lw=0.8, zorder=2))
    px, py = _fit_in_box(e["curve"]["x"], e["curve"]["y"], x0, y0)
    ax.plot(px, py, color=color, alpha=alpha, lw=1.5, zorder=2.5)
    if e["symbolic"] is not None:
        ax.text(x0 + BOX_W + 0.04, cy, e["symbolic"]["function"], ha="left", va="center",
                fontsize=8, color=color, alpha=max(alpha, 0.5), zorder=2.5)


def _fit_in_box(xs: list[float], ys: list[float], x0: float, y0: float) -> tuple[list[float], list[float]]:
    """Scale a curve into the box with lower-left corner (x0, y0), a 10% margin each side."""
    def scale(vs: list[float], lo_out: float, size: float) -> list[float]:
        lo, hi = min(vs), max(vs)
        if not hi - lo > 1e-12 * (1.0 + abs(lo) + abs(hi)):  # flat: a line through the middle
            return [lo_out + size / 2] * len(vs)
        return [lo_out + size * (0.1 + 0.8 * (v - lo) / (hi - lo)) for v in vs]

    return scale(xs, x0, BOX_W), scale(ys, y0, BOX_H)


def _names(names: Sequence[str] | None, n: int, prefix: str, what: str) -> list[str]:
    if names is None:
        return [f"${prefix}_{{{i + 1}}}$" for i in range(n)]
    names = [str(v).replace("$", r"\$") for v in names]  # a literal $, not mathtext
    if len(names) != n:
        raise ValueError(f"{what} must have {n} entries, got {len(names)}")
    return names
