"""Running a pipeline: build the network, fit the data transform, run the stages, read the formulas.

`run_pipeline` executes a `PipelineConfig` on a `Dataset`; `continue_pipeline` runs further stages
on a copy of a finished run's network with that run's transform (discovery trains a network once,
then tries several symbolic stages on it). Each run builds its network (a plain KAN or a separable
product network, `ModelConfig.family`) and fits its transform exactly once.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sympy
import torch

from kan_core.data import Dataset
from kan_core.errors import TrainingCancelled
from kan_core.formula import evaluate_formula, symbolic_formula, tidy_formula
from kan_core.functions import DEFAULT_LIBRARY, FunctionLibrary
from kan_core.metrics import fit_metrics, rmse
from kan_core.model import KAN
from kan_core.pipeline.config import (
    BalanceStage,
    ModelConfig,
    PipelineConfig,
    PolishStage,
    PruneStage,
    Stage,
    SymbolicStage,
    TrainStage,
)
from kan_core.polish import polish_symbolic
from kan_core.product import als_init, balance_products, separable_product_kan
from kan_core.prune import prune as prune_model
from kan_core.symbolic import Candidate, auto_symbolic, fix_symbolic
from kan_core.train import StepInfo, fit
from kan_core.transform import FittedTransform, fit_transform


@dataclass(frozen=True)
class ProgressEvent:
    """Sent at the start and end of every stage (``phase`` "start" / "end") and after every
    training step ("step"). ``step`` counts the steps done in the stage (``steps`` in all, 0 for
    stages that do not train); the RMSEs and regulariser are None at a stage start."""

    stage_index: int
    stage_name: str
    stage_kind: str
    n_stages: int
    step: int
    steps: int
    train_rmse: float | None
    test_rmse: float | None
    reg: float | None
    phase: Literal["start", "step", "end"] = "step"


@dataclass(frozen=True)
class StageResult:
    name: str
    kind: str
    seconds: float
    train_rmse: float  # full train split, after the stage
    test_rmse: float  # full test split, after the stage
    width_after: list[int]
    details: dict[str, Any] = field(default_factory=dict)  # e.g. symbolic choices, pruned widths


@dataclass
class PipelineResult:
    model: KAN
    stages: list[StageResult]
    history: list[dict[str, Any]]  # one dict per training step: stage_index, stage, step, rmses, reg
    formulas: list[sympy.Expr] | None  # one per output; None while some active edge is a spline
    formula_metrics: list[dict[str, float | None]] | None  # per output {"r2", "rmse"} on the test split
    var_names: list[str]
    seconds: float = 0.0
    # the fitted input/target maps when config.transform is not the identity (else None): the model
    # then works in transformed space (predict with transform.predict(model, x)), the stage RMSEs
    # and history are in transformed units, and formulas / formula_metrics are in the original ones
    transform: FittedTransform | None = None
    seed: int = 0  # the model seed the run trained with (a continued run keeps it)


def run_pipeline(
    dataset: Dataset,
    config: PipelineConfig | None = None,
    *,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    initial_model: KAN | None = None,
    var_names: Sequence[str] | None = None,
    library: FunctionLibrary | None = None,
) -> PipelineResult:
    """Run ``config``'s stages in order on ``dataset`` and return the final model, per-stage
    results, the step history and, when every active edge ended symbolic, the formulas.

    The network is built from ``config.model`` (`ModelConfig.family`; width None: ``[n_in, 5,
    n_out]``; device "auto": cuda when available; product families are initialised by ALS on the
    transformed training split), or is a copy of ``initial_model`` (then only
    ``config.model.device`` is used; ``initial_model`` itself is left untouched). The dataset is
    moved to the model's dtype and device. ``library`` resolves symbolic function names (default:
    ``kan_core.functions``).

    ``on_progress(ProgressEvent)``: at every stage start and end, after every training step.
    ``should_stop()``: asked before every training step and stage; True raises `TrainingCancelled`.
    """
    config = PipelineConfig() if config is None else config
    if not isinstance(config, PipelineConfig):
        raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}")
    _check_dataset(dataset)
    device = _resolve_device(config.model.device)
    if initial_model is not None and not isinstance(initial_model, KAN):
        raise ValueError(f"initial_model must be a kan_core KAN, got {type(initial_model).__name__}")
    if config.model.family != "kan" and initial_model is None and dataset.n_out != 1:
        raise ValueError(f"the {config.model.family} family needs a single target, the dataset has {dataset.n_out}")
    names = _var_names(var_names, dataset.n_var)
    _check_symbolic_names(config.stages, library)
    dtype = initial_model.dtype if initial_model is not None else _DTYPES[config.model.dtype]
    fitted = None if config.transform.identity else fit_transform(dataset, config.transform)
    original = dataset.to(dtype=dtype, device=device)
    data = fitted.apply(original) if fitted is not None else original
    start = time.perf_counter()
    if initial_model is not None:
        model = copy.deepcopy(initial_model).to(device).requires_grad_(True)  # e.g. from a serving cache
    else:
        model = _build_model(config.model, data, device, should_stop)
    if model.width[0] != dataset.n_var or model.width[-1] != dataset.n_out:
        raise ValueError(
            f"model width {model.width} does not fit the dataset ({dataset.n_var} inputs, {dataset.n_out} outputs)"
        )
    run = _Run(config.stages, data, on_progress, should_stop, library, seed=config.model.seed)
    model = run.all(model)
    formulas, metrics = _formulas(model, original, names, fitted)
    return PipelineResult(model, run.results, run.history, formulas, metrics, names,
                          time.perf_counter() - start, fitted, seed=config.model.seed)


def continue_pipeline(
    dataset: Dataset,
    head: PipelineResult,
    stages: Sequence[Stage],
    *,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    library: FunctionLibrary | None = None,
) -> PipelineResult:
    """Run ``stages`` on a copy of ``head.model`` (``head`` is left untouched), in the space of
    ``head.transform``, and return the whole run: ``head``'s stage results and history followed by
    the new ones (stage indices go on from ``head``'s). ``dataset`` is the one ``head`` ran on."""
    if not isinstance(head, PipelineResult):
        raise ValueError(f"head must be a PipelineResult, got {type(head).__name__}")
    _check_dataset(dataset)
    stages = tuple(stages)
    PipelineConfig(stages=stages)  # validates the stage types
    _check_symbolic_names(stages, library)
    if head.model.width[0] != dataset.n_var or head.model.width[-1] != dataset.n_out:
        raise ValueError(f"head's model {head.model.width} does not fit the dataset")
    model = copy.deepcopy(head.model).requires_grad_(True)
    original = dataset.to(dtype=model.dtype, device=model.device)
    data = head.transform.apply(original) if head.transform is not None else original
    start = time.perf_counter()
    run = _Run(stages, data, on_progress, should_stop, library, seed=head.seed,
               offset=len(head.stages), n_before=len(head.stages))
    model = run.all(model)
    formulas, metrics = _formulas(model, original, head.var_names, head.transform)
    return PipelineResult(model, [*head.stages, *run.results], [*head.history, *run.history], formulas, metrics,
                          list(head.var_names), head.seconds + time.perf_counter() - start, head.transform,
                          seed=head.seed)


class _Run:
    """State of one pipeline run: runs stages, reports progress, collects results and history.
    ``offset``: index of the first stage (a continued run goes on from its head's)."""

    def __init__(
        self,
        stages: tuple[Stage, ...],
        data: Dataset,
        on_progress: Callable[[ProgressEvent], None] | None,
        should_stop: Callable[[], bool] | None,
        library: FunctionLibrary | None,
        *,
        seed: int,
        offset: int = 0,
        n_before: int = 0,
    ) -> None:
        self.stages, self.data, self.library, self.seed = stages, data, library, seed
        self.on_progress, self.should_stop = on_progress, should_stop
        self.offset, self.n_stages = offset, n_before + len(stages)
        self.results: list[StageResult] = []
        self.history: list[dict[str, Any]] = []

    def all(self, model: KAN) -> KAN:
        for index, stage in enumerate(self.stages):
            model = self.stage(self.offset + index, stage, model)
        return model

    def stage(self, index: int, stage: Stage, model: KAN) -> KAN:
        if self.should_stop is not None and self.should_stop():
            raise TrainingCancelled(f"pipeline cancelled before stage {stage.name!r}")
        steps = stage.steps if isinstance(stage, TrainStage) else 0
        self._emit(index, stage, 0, steps, None, "start")
        start = time.perf_counter()
        details: dict[str, Any] = {}
        if isinstance(stage, TrainStage):
            self._train(index, stage, model)
        elif isinstance(stage, PruneStage):
            details["width_before"] = model.width
            model = prune_model(model, self.data.train_input, node_th=stage.node_th, edge_th=stage.edge_th)
        elif isinstance(stage, SymbolicStage):
            details = self._symbolic(stage, model)
        elif isinstance(stage, PolishStage):
            report = polish_symbolic(model, self.data.train_input, self.data.train_label, steps=stage.steps,
                                     max_points=stage.max_points, should_stop=self.should_stop)
            details = dataclasses.asdict(report)
        elif isinstance(stage, BalanceStage):
            balance_products(model, self.data.train_input)
        else:  # RefineStage
            details["grid_before"] = model.grid
            model = model.refine(stage.grid)
        seconds = time.perf_counter() - start
        train_rmse, test_rmse = _rmse(model, self.data)
        self.results.append(StageResult(stage.name, stage.kind, seconds, train_rmse, test_rmse, model.width, details))
        self._emit(index, stage, steps, steps, (train_rmse, test_rmse, None), "end")
        return model

    def _train(self, index: int, stage: TrainStage, model: KAN) -> None:
        def callback(info: StepInfo) -> None:
            self.history.append({
                "stage_index": index, "stage": stage.name, "step": info.step + 1,
                "train_rmse": info.train_rmse, "test_rmse": info.test_rmse, "reg": info.reg,
            })
            self._emit(index, stage, info.step + 1, info.steps, (info.train_rmse, info.test_rmse, info.reg), "step")

        fit(model, self.data, **stage.fit_options(), callback=callback, should_stop=self.should_stop,
            stage=stage.name, seed=self.seed)

    def _symbolic(self, stage: SymbolicStage, model: KAN) -> dict[str, Any]:
        x = self.data.train_input
        fixes = []
        for fix in stage.fixes:
            if not fix.layer < model.depth:
                raise ValueError(f"symbolic fix on layer {fix.layer}, but the model has {model.depth} layers")
            cand = fix_symbolic(model, x, fix.layer, fix.in_, fix.out, fix.function, fit=fix.fit, library=self.library)
            fixes.append(_choice_dict(fix.layer, fix.in_, fix.out, cand, True))
        choices = []
        if stage.auto:
            found = auto_symbolic(model, x, lib=stage.lib, weight_simple=stage.weight_simple,
                                  r2_threshold=stage.r2_threshold, library=self.library, should_stop=self.should_stop)
            choices = [_choice_dict(c.l, c.i, c.j, c.candidate, c.fixed) for c in found]
        return {"fixes": fixes, "choices": choices}

    def _emit(self, index: int, stage: Stage, step: int, steps: int,
              metrics: tuple[float, float, float | None] | None, phase: str) -> None:
        if self.on_progress is None:
            return
        train_rmse, test_rmse, reg = metrics if metrics is not None else (None, None, None)
        self.on_progress(ProgressEvent(index, stage.name, stage.kind, self.n_stages, step, steps,
                                       train_rmse, test_rmse, reg, phase))


def _choice_dict(l: int, i: int, j: int, cand: Candidate, fixed: bool) -> dict[str, Any]:
    return {"layer": l, "in": i, "out": j, "function": cand.name, "r2": _finite_or_none(cand.r2),
            "affine": [float(v) for v in cand.affine], "fixed": bool(fixed)}


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _check_dataset(dataset: Dataset) -> None:
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _build_model(mc: ModelConfig, data: Dataset, device: torch.device,
                 should_stop: Callable[[], bool] | None) -> KAN:
    """The network of ``mc`` for ``data`` (already transformed, on ``device``): a plain KAN, or a
    separable product network fitted to the training split by alternating least squares."""
    dtype = _DTYPES[mc.dtype]
    if mc.family == "sparse":
        raise ValueError("the sparse family has no network: kan_core.discovery.run_candidate runs it")
    if mc.family == "kan":
        width = list(mc.width) if mc.width is not None else [data.n_var, 5, data.n_out]
        return KAN(width, grid=mc.grid, k=mc.k, seed=mc.seed, dtype=dtype, device=device,
                   grid_range=mc.grid_range, grid_eps=mc.grid_eps, noise_scale=mc.noise_scale)
    model = separable_product_kan(data.n_var, additive=mc.family == "product_additive", rank=mc.product_rank,
                                  grid=mc.grid, k=mc.k, seed=mc.seed, dtype=dtype, device=device,
                                  grid_range=mc.grid_range, noise_scale=mc.noise_scale)
    als_init(model, data.train_input, data.train_label, restarts=mc.als_restarts, seed=mc.seed,
             should_stop=should_stop)
    return model


def _var_names(var_names: Sequence[str] | None, n: int) -> list[str]:
    if var_names is None:
        return [f"x_{i + 1}" for i in range(n)]
    names = [str(v) for v in var_names]
    if len(names) != n or len(set(names)) != n or not all(names):
        raise ValueError(f"var_names must be {n} distinct non-empty names, got {names}")
    return names


def _check_symbolic_names(stages: Sequence[Stage], library: FunctionLibrary | None) -> None:
    """Fail before training when a symbolic stage names an unknown function."""
    lib = library if library is not None else DEFAULT_LIBRARY
    for stage in stages:
        if isinstance(stage, SymbolicStage):
            for name in (*stage.lib, *(f.function for f in stage.fixes)):
                if name not in lib:
                    raise ValueError(f"stage {stage.name!r}: unknown symbolic function {name!r}")


@torch.no_grad()
def _rmse(model: KAN, data: Dataset) -> tuple[float, float]:
    return rmse(model(data.train_input), data.train_label), rmse(model(data.test_input), data.test_label)


def _formulas(
    model: KAN, data: Dataset, names: list[str], fitted: FittedTransform | None = None
) -> tuple[list[sympy.Expr] | None, list[dict] | None]:
    """Formulas (and their test-split metrics) when every active edge is symbolic, else None.
    With a transform, the raw network formula is composed with the inverse maps, then cleaned;
    ``data`` is then the untransformed dataset."""
    if not model.is_symbolic():
        return None, None
    if fitted is None:
        exprs = symbolic_formula(model, var_names=names)
    else:
        raw = symbolic_formula(model, var_names=names, simplify=False, digits=15, tol=0.0)
        exprs = [tidy_formula(fitted.compose(e, names)) for e in raw]
    x = data.test_input.detach().to("cpu", torch.float64).numpy()  # (M, n_in)
    y = data.test_label.detach().to("cpu", torch.float64).numpy()  # (M, n_out)
    return exprs, [fit_metrics(evaluate_formula(e, names, x), y[:, j]) for j, e in enumerate(exprs)]
