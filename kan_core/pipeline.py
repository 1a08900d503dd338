"""The staged formula-discovery pipeline: train -> prune -> retrain -> auto_symbolic -> retrain.

A pipeline is a `ModelConfig` plus an ordered list of stages; every stage is configurable and any can
be left out. `PipelineConfig()` is the seed recipe (pykan's README example).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from kan_core.functions import SEED_LIBRARY_NAMES


@dataclass(frozen=True)
class ModelConfig:
    width: tuple[int, ...] | None = None  # None: [n_inputs, 5, n_outputs]
    grid: int = 5
    k: int = 3
    seed: int = 0
    dtype: Literal["float32", "float64"] = "float64"
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", or "auto" (cuda when present)
    grid_range: tuple[float, float] = (-1.0, 1.0)
    grid_eps: float = 0.02


@dataclass(frozen=True)
class TrainStage:
    kind: Literal["train"] = "train"
    name: str = "train"
    opt: Literal["LBFGS", "Adam"] = "LBFGS"
    steps: int = 50
    lr: float = 1.0
    batch: int = -1  # -1: full batch
    lamb: float = 0.0
    lamb_l1: float = 1.0
    lamb_entropy: float = 2.0
    lamb_coef: float = 0.0
    lamb_coefdiff: float = 0.0
    update_grid: bool = True
    grid_update_num: int = 10
    stop_grid_update_step: int = 50


@dataclass(frozen=True)
class PruneStage:
    kind: Literal["prune"] = "prune"
    name: str = "prune"
    node_th: float = 1e-2
    edge_th: float = 3e-2


@dataclass(frozen=True)
class EdgeFix:
    layer: int
    in_: int
    out: int
    function: str
    fit: bool = True  # fit the affine parameters (a, b, c, d) to the edge's current activation


@dataclass(frozen=True)
class SymbolicStage:
    kind: Literal["symbolic"] = "symbolic"
    name: str = "symbolic"
    fixes: tuple[EdgeFix, ...] = ()  # applied first
    auto: bool = True  # then auto_symbolic on the remaining spline edges
    lib: tuple[str, ...] = SEED_LIBRARY_NAMES
    weight_simple: float = 0.8
    r2_threshold: float = 0.0


@dataclass(frozen=True)
class RefineStage:
    kind: Literal["refine"] = "refine"
    name: str = "refine"
    grid: int = 10


Stage = TrainStage | PruneStage | SymbolicStage | RefineStage


def seed_stages() -> tuple[Stage, ...]:
    return (
        TrainStage(name="train", steps=20, lamb=0.01, lamb_entropy=10.0),
        PruneStage(name="prune"),
        TrainStage(name="retrain", steps=50),
        SymbolicStage(name="auto_symbolic"),
        TrainStage(name="symbolic_fit", steps=50),
    )


@dataclass(frozen=True)
class PipelineConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stages: tuple[Stage, ...] = field(default_factory=seed_stages)
