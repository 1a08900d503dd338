"""The staged formula-discovery pipeline: train -> prune -> retrain -> auto_symbolic -> polish.

`config` holds what to run (the network, the stages, the data transform; JSON-able), `run` runs it.
Every public name is re-exported here: ``from kan_core.pipeline import run_pipeline``.
"""

from kan_core.pipeline.config import (
    FAMILIES,
    STAGE_KINDS,
    BalanceStage,
    EdgeFix,
    ModelConfig,
    PipelineConfig,
    PolishStage,
    PruneStage,
    RefineStage,
    Stage,
    SymbolicStage,
    TrainStage,
    seed_stages,
)
from kan_core.pipeline.run import PipelineResult, ProgressEvent, StageResult, continue_pipeline, run_pipeline

__all__ = [
    "FAMILIES", "STAGE_KINDS", "BalanceStage", "EdgeFix", "ModelConfig", "PipelineConfig", "PipelineResult",
    "PolishStage", "ProgressEvent", "PruneStage", "RefineStage", "Stage", "StageResult", "SymbolicStage",
    "TrainStage", "continue_pipeline", "run_pipeline", "seed_stages",
]
