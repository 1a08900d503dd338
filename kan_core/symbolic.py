"""Choose a symbolic function for KAN edges: rank the fits of `kan_core.affine_fit`, set the edges.

`suggest_symbolic` ranks every library function's best ``c * f(a*x + b) + d`` fit to one edge,
`fix_symbolic` sets one edge, `auto_symbolic` sets every remaining spline edge of a model (all edges
of a layer fitted in one vectorised call).

Ranking follows pykan's ``suggest_symbolic``: lower score is better,
``score = weight_simple * complexity + (1 - weight_simple) * log2(1 + 1e-5 - R²)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from kan_core.affine_fit import Affine, AffineFit, fit_affine, resolve_library
from kan_core.functions import FunctionLibrary

__all__ = ["Affine", "AffineFit", "Candidate", "EdgeChoice", "auto_symbolic", "fit_affine", "fix_symbolic", "rank",
           "resolve_library", "score", "suggest_symbolic"]


@dataclass(frozen=True)
class Candidate:
    """One function's fit to one edge. `score`: lower is better (see module docstring)."""

    name: str
    r2: float
    complexity: int
    affine: Affine  # (a, b, c, d)
    score: float


@dataclass(frozen=True)
class EdgeChoice:
    """What `auto_symbolic` chose for edge (l, i, j); `fixed` is False when R² < threshold."""

    l: int
    i: int
    j: int
    candidate: Candidate
    fixed: bool


# ----------------------------------------------------------------------------------------------
# scoring


def score(r2: torch.Tensor, complexity: torch.Tensor, weight_simple: float = 0.8) -> torch.Tensor:
    """pykan's suggest_symbolic loss (lower is better); broadcasts r2 (..., F) with complexity (F,)."""
    r2_loss = torch.log2(1 + 1e-5 - r2.clamp(0.0, 1.0))
    return weight_simple * complexity + (1 - weight_simple) * r2_loss


def rank(fit: AffineFit, weight_simple: float = 0.8, topk: int | None = None) -> list[list[Candidate]]:
    """Per edge, the candidates sorted by score (best first), at most `topk` of them."""
    _check_weight(weight_simple)
    comp = torch.tensor(fit.complexity, dtype=torch.float64)
    scores = score(fit.r2, comp, weight_simple)  # (E, F)
    # Equal fits (sin vs cos on a sine, both R² = 1 - 1e-16) differ only by rounding noise:
    # sort on scores rounded to 1e-9, stably, so such ties keep library order.
    order = torch.sort(torch.round(scores, decimals=9), dim=1, stable=True).indices[:, :topk]  # (E, k)
    return [
        [
            Candidate(
                name=fit.names[f],
                r2=float(fit.r2[e, f]),
                complexity=fit.complexity[f],
                affine=tuple(float(v) for v in fit.params[e, f]),  # type: ignore[arg-type]
                score=float(scores[e, f]),
            )
            for f in row
        ]
        for e, row in enumerate(order.tolist())  # building Python objects, not computing
    ]


def _check_weight(weight_simple: float) -> None:
    if not 0.0 <= weight_simple <= 1.0:
        raise ValueError(f"weight_simple must be in [0, 1], got {weight_simple}")


# ----------------------------------------------------------------------------------------------
# on a model


def _check_edge(model: torch.nn.Module, l: int, i: int, j: int) -> None:
    n_layers = len(model.layers)
    if not 0 <= l < n_layers:
        raise ValueError(f"layer index l={l} out of range for a KAN with {n_layers} layers")
    I, O = model.layers[l].mask.shape
    if not 0 <= i < I:
        raise ValueError(f"input index i={i} out of range for layer {l} with {I} inputs")
    if not 0 <= j < O:
        raise ValueError(f"output index j={j} out of range for layer {l} with {O} outputs")


def _check_x(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    n_in = model.layers[0].mask.shape[0]
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(x)
    if x.ndim != 2 or x.shape[1] != n_in:
        raise ValueError(f"x must be (batch, {n_in}), got {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    ref = model.layers[0].coef
    return x.to(dtype=ref.dtype, device=ref.device)


@torch.no_grad()
def _edge_samples(
    model: torch.nn.Module, x: torch.Tensor, l: int, ii: torch.Tensor, jj: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and outputs of edges (l, ii[e], jj[e]) on batch x: -> (E, B), (E, B)."""
    h = model.layer_inputs(x)[l]  # (B, I)
    out = model.layers[l].edge_outputs(h)  # (B, I, O)
    return h[:, ii].T, out[:, ii, jj].T


def suggest_symbolic(
    model: torch.nn.Module,
    x: torch.Tensor,
    l: int,
    i: int,
    j: int,
    lib: Sequence[str] | None = None,
    topk: int = 5,
    weight_simple: float = 0.8,
    library: FunctionLibrary | None = None,
) -> list[Candidate]:
    """The `topk` best functions for edge (l, i, j) on model input batch x (B, n_in), best first."""
    _check_edge(model, l, i, j)
    _check_weight(weight_simple)
    if topk < 1:
        raise ValueError(f"topk must be >= 1, got {topk}")
    fns = resolve_library(lib, library)
    x = _check_x(model, x)
    xe, ye = _edge_samples(model, x, l, torch.tensor([i]), torch.tensor([j]))
    return rank(fit_affine(xe, ye, fns), weight_simple, topk)[0]


def fix_symbolic(
    model: torch.nn.Module,
    x: torch.Tensor | None,
    l: int,
    i: int,
    j: int,
    name: str,
    fit: bool = True,
    library: FunctionLibrary | None = None,
) -> Candidate:
    """Make edge (l, i, j) symbolic with function `name`.

    fit=True: (a, b, c, d) fitted to the edge's current curve on batch x. fit=False: (1, 0, 1, 0)
    and x may be None (the returned r2 and score are then NaN).
    """
    _check_edge(model, l, i, j)
    fns = resolve_library([name], library)
    fn = fns[name]
    if fit:
        if x is None:
            raise ValueError("fix_symbolic with fit=True needs the input batch x")
        x = _check_x(model, x)
        xe, ye = _edge_samples(model, x, l, torch.tensor([i]), torch.tensor([j]))
        cand = rank(fit_affine(xe, ye, fns))[0][0]
    else:
        nan = float("nan")
        cand = Candidate(name, nan, fn.complexity, (1.0, 0.0, 1.0, 0.0), nan)
    model.layers[l].set_symbolic(i, j, fn, cand.affine)
    return cand


def auto_symbolic(
    model: torch.nn.Module,
    x: torch.Tensor,
    lib: Sequence[str] | None = None,
    weight_simple: float = 0.8,
    r2_threshold: float = 0.0,
    library: FunctionLibrary | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[EdgeChoice]:
    """Fix every active, still-spline edge to its best-scoring function (when R² >= r2_threshold).

    One vectorised `fit_affine` call per layer. Layers go in order and each layer's inputs are
    recomputed after the previous layer was fixed, so an edge is fitted on the inputs it will
    actually see in the symbolic network. pykan instead fits every layer on the activations of
    one forward pass; on small trained KANs (seed formula, hypot, x1*x2) recomputing gave an
    equal or lower error before the final retraining and never a worse formula.
    Returns one EdgeChoice per considered edge, in (l, i, j) order. ``should_stop()`` is asked
    before each layer and each function's fit (True raises `TrainingCancelled`; the layers done
    stay fixed).
    """
    _check_weight(weight_simple)
    fns = resolve_library(lib, library)
    x = _check_x(model, x)
    choices: list[EdgeChoice] = []
    for l, layer in enumerate(model.layers):
        todo = ((layer.mask > 0) & (layer.sym_mask == 0)).nonzero()  # (E, 2): (i, j) pairs
        if len(todo) == 0:
            continue
        xe, ye = _edge_samples(model, x, l, todo[:, 0], todo[:, 1])  # (E, B)
        best = rank(fit_affine(xe, ye, fns, should_stop=should_stop), weight_simple, topk=1)
        for (i, j), (cand,) in zip(todo.tolist(), best):
            fixed = cand.r2 >= r2_threshold
            if fixed:
                layer.set_symbolic(i, j, fns[cand.name], cand.affine)
            choices.append(EdgeChoice(l, i, j, cand, fixed))
    return choices
