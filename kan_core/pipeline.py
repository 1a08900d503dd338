"""The staged formula-discovery pipeline: train -> prune -> retrain -> auto_symbolic -> retrain.

A pipeline is a `ModelConfig` plus an ordered list of stages; every stage is configurable and any can
be left out. `PipelineConfig()` is the seed recipe (pykan's README example).

Configs are frozen dataclasses that validate themselves on construction (`ValueError` naming the
field), and convert to / from plain JSON-able dicts (`to_dict` / `from_dict`) so a service can store
them. `run_pipeline` executes a config on a `Dataset` and returns a `PipelineResult`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import time
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal

import numpy as np
import sympy
import torch

from kan_core.data import Dataset
from kan_core.errors import TrainingCancelled
from kan_core.formula import evaluate_formula, symbolic_formula, tidy_formula
from kan_core.functions import DEFAULT_LIBRARY, SEED_LIBRARY_NAMES, FunctionLibrary
from kan_core.model import KAN
from kan_core.polish import polish_symbolic
from kan_core.prune import prune as prune_model
from kan_core.symbolic import Candidate, auto_symbolic, fix_symbolic
from kan_core.train import StepInfo, fit
from kan_core.transform import FittedTransform, TransformConfig, fit_transform

_DEVICE_RE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_nonneg(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}")


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
    # spline coefficients start as a least-squares fit to noise of this amplitude; 0.3 is pykan's KAN
    # default, and the seed recipe sparsifies to one hidden node more often from it than from 0.1
    noise_scale: float = 0.3

    def __post_init__(self) -> None:
        if self.width is not None:
            object.__setattr__(self, "width", tuple(self.width))
            _require(
                len(self.width) >= 2 and all(isinstance(w, int) and w >= 1 for w in self.width),
                f"width must list >= 2 layer sizes, each >= 1, got {list(self.width)}",
            )
        _require(self.grid >= 1, f"grid must be >= 1, got {self.grid}")
        _require(self.k >= 1, f"k must be >= 1, got {self.k}")
        _require(self.dtype in ("float32", "float64"), f"dtype must be float32 or float64, got {self.dtype!r}")
        _require(bool(_DEVICE_RE.match(self.device)), f"device must be cpu, cuda, cuda:N or auto, got {self.device!r}")
        object.__setattr__(self, "grid_range", tuple(self.grid_range))
        lo, hi = self.grid_range
        _require(
            math.isfinite(lo) and math.isfinite(hi) and lo < hi,
            f"grid_range must be finite with lo < hi, got {list(self.grid_range)}",
        )
        _require(0.0 <= self.grid_eps <= 1.0, f"grid_eps must be in [0, 1], got {self.grid_eps}")
        _check_nonneg(self, "noise_scale")


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

    def __post_init__(self) -> None:
        _require(self.opt in ("LBFGS", "Adam"), f"opt must be LBFGS or Adam, got {self.opt!r}")
        _require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        _require(math.isfinite(self.lr) and self.lr > 0, f"lr must be finite and > 0, got {self.lr}")
        _require(self.batch == -1 or self.batch >= 1, f"batch must be -1 (full) or >= 1, got {self.batch}")
        _check_nonneg(self, "lamb", "lamb_l1", "lamb_entropy", "lamb_coef", "lamb_coefdiff")
        _require(self.grid_update_num >= 0, f"grid_update_num must be >= 0, got {self.grid_update_num}")
        _require(
            self.stop_grid_update_step >= 0,
            f"stop_grid_update_step must be >= 0, got {self.stop_grid_update_step}",
        )


@dataclass(frozen=True)
class PruneStage:
    kind: Literal["prune"] = "prune"
    name: str = "prune"
    node_th: float = 1e-2
    edge_th: float = 3e-2

    def __post_init__(self) -> None:
        _check_nonneg(self, "node_th", "edge_th")


@dataclass(frozen=True)
class EdgeFix:
    layer: int
    in_: int
    out: int
    function: str
    fit: bool = True  # fit the affine parameters (a, b, c, d) to the edge's current activation

    def __post_init__(self) -> None:
        for name in ("layer", "in_", "out"):
            _require(getattr(self, name) >= 0, f"{name.rstrip('_')} must be >= 0, got {getattr(self, name)}")
        _require(bool(self.function), "function must be a non-empty name")


@dataclass(frozen=True)
class SymbolicStage:
    kind: Literal["symbolic"] = "symbolic"
    name: str = "symbolic"
    fixes: tuple[EdgeFix, ...] = ()  # applied first
    auto: bool = True  # then auto_symbolic on the remaining spline edges
    lib: tuple[str, ...] = SEED_LIBRARY_NAMES
    weight_simple: float = 0.8
    r2_threshold: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fixes", tuple(self.fixes))
        object.__setattr__(self, "lib", tuple(self.lib))
        _require(len(self.lib) > 0, "lib must name at least one function")
        _require(0.0 <= self.weight_simple <= 1.0, f"weight_simple must be in [0, 1], got {self.weight_simple}")
        _require(math.isfinite(self.r2_threshold), f"r2_threshold must be finite, got {self.r2_threshold}")


@dataclass(frozen=True)
class RefineStage:
    kind: Literal["refine"] = "refine"
    name: str = "refine"
    grid: int = 10

    def __post_init__(self) -> None:
        _require(self.grid >= 1, f"grid must be >= 1, got {self.grid}")


@dataclass(frozen=True)
class PolishStage:
    """Levenberg-Marquardt on the symbolic edges' affine parameters (`kan_core.polish`); a no-op
    while spline edges remain. ``steps``: Jacobian evaluations at most; ``max_points``: rows used."""

    kind: Literal["polish"] = "polish"
    name: str = "polish"
    steps: int = 50
    max_points: int = 2000

    def __post_init__(self) -> None:
        _require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        _require(self.max_points >= 2, f"max_points must be >= 2, got {self.max_points}")


Stage = TrainStage | PruneStage | SymbolicStage | RefineStage | PolishStage
STAGE_KINDS: dict[str, type] = {
    "train": TrainStage, "prune": PruneStage, "symbolic": SymbolicStage, "refine": RefineStage, "polish": PolishStage,
}


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
    # input/target standardisation and log space (kan_core.transform); the default is the identity
    transform: TransformConfig = field(default_factory=TransformConfig)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        _require(isinstance(self.model, ModelConfig), f"model must be a ModelConfig, got {type(self.model).__name__}")
        _require(
            isinstance(self.transform, TransformConfig),
            f"transform must be a TransformConfig, got {type(self.transform).__name__}",
        )
        for i, stage in enumerate(self.stages):
            _require(
                isinstance(stage, tuple(STAGE_KINDS.values())),
                f"stages[{i}] must be one of {', '.join(STAGE_KINDS)} stages, got {type(stage).__name__}",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists, not tuples; EdgeFix's `in_` is written `in`)."""
        return _to_plain(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PipelineConfig:
        """Inverse of `to_dict`. Missing fields take their defaults (`{}` is the seed recipe);
        unknown fields, wrong types and bad values raise ValueError naming the field's path."""
        return _from_plain(cls, data, "config")


# ----------------------------------------------------------------------------------------------
# dict <-> dataclass conversion

_FIELD_ALIASES = {"in_": "in"}  # python name -> dict key


def _to_plain(value: Any) -> Any:
    if is_dataclass(value):
        return {_FIELD_ALIASES.get(f.name, f.name): _to_plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    keys = {_FIELD_ALIASES.get(f.name, f.name): f.name for f in fields(cls)}
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise ValueError(f"{path}: unknown field(s) {', '.join(unknown)}; expected some of {', '.join(keys)}")
    missing = [k for k, name in keys.items() if name in _required_fields(cls) and k not in data]
    if missing:
        raise ValueError(f"{path}: missing field(s) {', '.join(missing)}")
    kwargs = {keys[k]: _coerce(v, hints[keys[k]], f"{path}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def _required_fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}


def _coerce(value: Any, tp: Any, path: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if value not in args:
            raise ValueError(f"{path}: must be one of {', '.join(map(repr, args))}, got {value!r}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if all(is_dataclass(a) and "kind" in {f.name for f in fields(a)} for a in options):
            return _coerce_stage(value, options, path)
        if len(options) == 1:
            return _coerce(value, options[0], path)
        raise TypeError(f"unsupported config type {tp}")  # pragma: no cover - a programming error
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{path}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{path}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ValueError(f"{path}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if is_dataclass(tp):
        return _from_plain(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{path}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{path}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{path}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp}")  # pragma: no cover - a programming error


def _coerce_stage(value: Any, options: list[type], path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ValueError(f"{path}: expected an object, got {type(value).__name__}")
    kinds = {typing.get_args(typing.get_type_hints(c)["kind"])[0]: c for c in options}
    kind = value.get("kind")
    if kind not in kinds:
        raise ValueError(f"{path}.kind: must be one of {', '.join(map(repr, kinds))}, got {kind!r}")
    return _from_plain(kinds[kind], value, path)


# ----------------------------------------------------------------------------------------------
# running a pipeline


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

    The model is built from ``config.model`` (width None: ``[n_in, 5, n_out]``; device "auto":
    cuda when available), or is a copy of ``initial_model`` (then only ``config.model.device`` is
    used; ``initial_model`` itself is left untouched). The dataset is moved to the model's dtype
    and device. ``library`` resolves symbolic function names (default: ``kan_core.functions``).

    ``on_progress(ProgressEvent)``: at every stage start and end, after every training step.
    ``should_stop()``: asked before every training step and stage; True raises `TrainingCancelled`.
    """
    config = PipelineConfig() if config is None else config
    if not isinstance(config, PipelineConfig):
        raise ValueError(f"config must be a PipelineConfig, got {type(config).__name__}")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    device = _resolve_device(config.model.device)
    if initial_model is not None:
        if not isinstance(initial_model, KAN):
            raise ValueError(f"initial_model must be a kan_core KAN, got {type(initial_model).__name__}")
        model = copy.deepcopy(initial_model).to(device).requires_grad_(True)  # e.g. from a serving cache
    else:
        model = _build_model(config.model, dataset, device)
    if model.width[0] != dataset.n_var or model.width[-1] != dataset.n_out:
        raise ValueError(
            f"model width {model.width} does not fit the dataset ({dataset.n_var} inputs, {dataset.n_out} outputs)"
        )
    names = _var_names(var_names, dataset.n_var)
    _check_symbolic_names(config, library)
    fitted = None if config.transform.identity else fit_transform(dataset, config.transform)
    original = dataset.to(dtype=model.dtype, device=model.device)
    data = fitted.apply(original) if fitted is not None else original
    run = _Run(config, data, on_progress, should_stop, library)

    start = time.perf_counter()
    for index, stage in enumerate(config.stages):
        model = run.stage(index, stage, model)
    formulas, metrics = _formulas(model, original, names, fitted)
    return PipelineResult(model, run.results, run.history, formulas, metrics, names,
                          time.perf_counter() - start, fitted)


class _Run:
    """State of one pipeline run: runs stages, reports progress, collects results and history."""

    def __init__(
        self,
        config: PipelineConfig,
        data: Dataset,
        on_progress: Callable[[ProgressEvent], None] | None,
        should_stop: Callable[[], bool] | None,
        library: FunctionLibrary | None,
    ) -> None:
        self.config, self.data, self.library = config, data, library
        self.on_progress, self.should_stop = on_progress, should_stop
        self.results: list[StageResult] = []
        self.history: list[dict[str, Any]] = []

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

        fit(
            model, self.data, opt=stage.opt, steps=stage.steps, lr=stage.lr, batch=stage.batch,
            lamb=stage.lamb, lamb_l1=stage.lamb_l1, lamb_entropy=stage.lamb_entropy,
            lamb_coef=stage.lamb_coef, lamb_coefdiff=stage.lamb_coefdiff, update_grid=stage.update_grid,
            grid_update_num=stage.grid_update_num, stop_grid_update_step=stage.stop_grid_update_step,
            callback=callback, should_stop=self.should_stop, stage=stage.name, seed=self.config.model.seed,
        )

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
                                  r2_threshold=stage.r2_threshold, library=self.library)
            choices = [_choice_dict(c.l, c.i, c.j, c.candidate, c.fixed) for c in found]
        return {"fixes": fixes, "choices": choices}

    def _emit(self, index: int, stage: Stage, step: int, steps: int,
              metrics: tuple[float, float, float | None] | None, phase: str) -> None:
        if self.on_progress is None:
            return
        train_rmse, test_rmse, reg = metrics if metrics is not None else (None, None, None)
        self.on_progress(ProgressEvent(index, stage.name, stage.kind, len(self.config.stages), step, steps,
                                       train_rmse, test_rmse, reg, phase))


def _choice_dict(l: int, i: int, j: int, cand: Candidate, fixed: bool) -> dict[str, Any]:
    return {"layer": l, "in": i, "out": j, "function": cand.name, "r2": _finite_or_none(cand.r2),
            "affine": [float(v) for v in cand.affine], "fixed": bool(fixed)}


def _finite_or_none(v: float) -> float | None:
    return float(v) if math.isfinite(v) else None


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return torch.device(device)


def _build_model(mc: ModelConfig, dataset: Dataset, device: torch.device) -> KAN:
    width = list(mc.width) if mc.width is not None else [dataset.n_var, 5, dataset.n_out]
    dtype = torch.float64 if mc.dtype == "float64" else torch.float32
    return KAN(width, grid=mc.grid, k=mc.k, seed=mc.seed, dtype=dtype, device=device,
               grid_range=mc.grid_range, grid_eps=mc.grid_eps, noise_scale=mc.noise_scale)


def _var_names(var_names: Sequence[str] | None, n: int) -> list[str]:
    if var_names is None:
        return [f"x_{i + 1}" for i in range(n)]
    names = [str(v) for v in var_names]
    if len(names) != n or len(set(names)) != n or not all(names):
        raise ValueError(f"var_names must be {n} distinct non-empty names, got {names}")
    return names


def _check_symbolic_names(config: PipelineConfig, library: FunctionLibrary | None) -> None:
    """Fail before training when a symbolic stage names an unknown function."""
    lib = library if library is not None else DEFAULT_LIBRARY
    for stage in config.stages:
        if isinstance(stage, SymbolicStage):
            for name in (*stage.lib, *(f.function for f in stage.fixes)):
                if name not in lib:
                    raise ValueError(f"stage {stage.name!r}: unknown symbolic function {name!r}")


@torch.no_grad()
def _rmse(model: KAN, data: Dataset) -> tuple[float, float]:
    train = (model(data.train_input) - data.train_label).pow(2).mean().sqrt()
    test = (model(data.test_input) - data.test_label).pow(2).mean().sqrt()
    return float(train), float(test)


def _formulas(
    model: KAN, data: Dataset, names: list[str], fitted: FittedTransform | None = None
) -> tuple[list[sympy.Expr] | None, list[dict] | None]:
    """Formulas (and their test-split metrics) when every active edge is symbolic, else None.
    With a transform, the raw network formula is composed with the inverse maps, then cleaned;
    ``data`` is then the untransformed dataset."""
    if any(bool((layer.mask * (1 - layer.sym_mask)).any()) for layer in model.layers):
        return None, None
    if fitted is None:
        exprs = symbolic_formula(model, var_names=names)
    else:
        raw = symbolic_formula(model, var_names=names, simplify=False, digits=15, tol=0.0)
        exprs = [tidy_formula(fitted.compose(e, names)) for e in raw]
    x = data.test_input.detach().to("cpu", torch.float64).numpy()  # (M, n_in)
    y = data.test_label.detach().to("cpu", torch.float64).numpy()  # (M, n_out)
    return exprs, [_fit_metrics(evaluate_formula(e, names, x), y[:, j]) for j, e in enumerate(exprs)]


def _fit_metrics(y_hat: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """R² and RMSE of predictions ``y_hat (M,)`` against ``y (M,)``; None where not finite."""
    rmse = float(np.sqrt(np.mean((y_hat - y) ** 2)))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum((y_hat - y) ** 2)) / ss_tot if ss_tot > 0 else float("nan")
    return {"r2": _finite_or_none(r2), "rmse": _finite_or_none(rmse)}
