"""Node and edge importance (attribution) and pruning to a smaller KAN."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kan_core.layer import KANLayer
from kan_core.model import KAN


@dataclass(frozen=True)
class Attribution:
    """``node_scores[l]``: ``(n_l,)`` for every layer of nodes, inputs first, outputs last (all 1).
    ``edge_scores[l]``: ``(n_l, n_{l+1})`` for the edges of layer ``l``."""

    node_scores: list[torch.Tensor]
    edge_scores: list[torch.Tensor]


@torch.no_grad()
def attribute(model: KAN, x: torch.Tensor) -> Attribution:
    """Backward attribution of importance on the samples ``x (B, n_0)``, ``B >= 2``.

    Output nodes score 1. Going backwards through layer ``l`` with next-layer node scores ``s``:

        E[i, j] = std_b(phi_ij(h_bi)) / (std_b(h'_bj) + 1e-4) * s[j]      edge i -> j
        node_score[i] = sum_j E[i, j]

    where ``h`` are the layer's inputs, ``h'_j = sum_i phi_ij(h_i)`` node ``j``'s total (pre-sum
    edges summed) output, and std the unbiased batch std. Symbolic edges count like spline edges;
    masked edges score 0. (pykan averages the per-output attributions, so with several outputs
    its scores are these divided by ``n_L``.)
    """
    model._check_input(x)
    if x.shape[0] < 2:
        raise ValueError(f"attribution needs at least 2 samples, got {x.shape[0]}")
    acts = model.layer_inputs(x)
    score = torch.ones(model.width[-1], dtype=x.dtype, device=x.device)
    node_scores, edge_scores = [score], []
    for l in reversed(range(model.depth)):
        layer = model.layers[l]
        edges = layer.edge_outputs(acts[l])  # (B, I, O)
        edge_std = edges.std(0)  # (I, O)
        owner = getattr(layer, "subnode_owner", None)  # product layer: O subnodes feed fewer nodes
        if owner is None:
            node_std = acts[l + 1].std(0)  # (O,)
        else:  # an edge is judged against its subnode (the sum it feeds), which has its node's score
            node_std, score = edges.sum(1).std(0), score[owner]
        e = edge_std / (node_std + 1e-4) * score  # (I, O)
        score = e.sum(1)  # (I,)
        edge_scores.append(e)
        node_scores.append(score)
    return Attribution(node_scores[::-1], edge_scores[::-1])


@torch.no_grad()
def prune(model: KAN, x: torch.Tensor, node_th: float = 1e-2, edge_th: float = 3e-2) -> KAN:
    """A smaller copy of ``model`` (the original is left untouched), judged on ``x (B, n_0)``:

    1. hidden nodes whose `attribute` score is below ``node_th`` are removed with all their edges
       (inputs and outputs are never removed; a hidden layer keeps at least its best node);
    2. attribution is recomputed on the smaller model, and edges scoring below ``edge_th`` are
       masked off (``mask = 0``).

    A low score means a small *variation*; the mean of a removed edge's output on ``x`` is kept by
    adding it to another active edge into the same node (to ``d`` of a symbolic edge, else to the
    spline of the edge with the largest ``|scale_sp|``, exact inside its grid), so the smaller
    model computes nearly the same function. Removing nodes whose outgoing edges are all masked
    leaves the function unchanged (up to the summation order of the matrix products).

    Product layers (`kan_core.product`): an edge is judged against its subnode, whose score is its
    node's; removing a node removes all its subnodes; a subnode keeps at least one edge.
    """
    if not (node_th >= 0 and edge_th >= 0):
        raise ValueError(f"thresholds must be >= 0, got node_th={node_th}, edge_th={edge_th}")
    attr = attribute(model, x)
    keep = [list(range(model.width[0]))]
    for s in attr.node_scores[1:-1]:
        ids = (s >= node_th).nonzero().flatten().tolist()
        keep.append(ids or [int(s.argmax())])
    keep.append(list(range(model.width[-1])))

    layers = []
    for l, (layer, h) in enumerate(zip(model.layers, model.layer_inputs(x))):
        small = layer.subset(keep[l], keep[l + 1])
        dropped = sorted(set(range(layer.in_dim)) - set(keep[l]))
        if dropped:
            mean = layer.edge_outputs(h).mean(0)  # (I, O)
            cols = layer.subnodes_of(keep[l + 1]) if hasattr(layer, "subnodes_of") else keep[l + 1]
            _add_constants(small, mean[dropped][:, cols].sum(0))
        layers.append(small)
    pruned = KAN._with_layers(model, layers)

    attr = attribute(pruned, x)
    for layer, h, e in zip(pruned.layers, pruned.layer_inputs(x), attr.edge_scores):
        cut = (e < edge_th) & (layer.mask > 0)  # (I, O)
        if hasattr(layer, "subnode_owner"):  # a product subnode keeps its strongest edge: 0 would zero the node
            emptied = ((layer.mask > 0) & ~cut).sum(0) == 0  # (O,)
            for j in emptied.nonzero().flatten().tolist():
                active = (layer.mask[:, j] > 0).nonzero().flatten()
                if len(active):
                    cut[active[e[active, j].argmax()], j] = False
        if bool(cut.any()):
            mean = layer.edge_outputs(h).mean(0)  # (I, O)
            layer.mask[cut] = 0.0
            _add_constants(layer, (mean * cut).sum(0))
    return pruned


def _add_constants(layer: KANLayer, offset: torch.Tensor) -> None:
    """Add ``offset[j]`` to output ``j`` of ``layer`` through one of its active edges (if any)."""
    for j, c in enumerate(offset.tolist()):
        if c == 0.0:
            continue
        active = layer.mask[:, j] > 0  # (I,)
        sym = (active & (layer.sym_mask[:, j] > 0)).nonzero().flatten()
        spl = (active & (layer.sym_mask[:, j] == 0) & (layer.scale_sp[:, j] != 0)).nonzero().flatten()
        if len(sym):
            layer.sym_affine[sym[0], j, 3] += c
        elif len(spl):
            i = spl[layer.scale_sp[spl, j].abs().argmax()]
            layer.coef[i, j] += c / layer.scale_sp[i, j]  # B-splines sum to 1 inside the grid
