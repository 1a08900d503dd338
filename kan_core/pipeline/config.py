"""Pipeline configuration: the network to build, the stages to run, the data transform.

A pipeline is a `ModelConfig` plus an ordered list of stages; every stage is configurable and any can
be left out. `PipelineConfig()` is the seed recipe (pykan's README example). Configs are frozen
dataclasses that validate themselves on construction (`ValueError` naming the field) and convert to /
from plain JSON-able dicts (`to_dict` / `from_dict`) so a service can store them.
"""

from __future__ import annotations

import math
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from typing import Any, Literal

from kan_core.functions import SEED_LIBRARY_NAMES
from kan_core.transform import TransformConfig

_DEVICE_RE = re.compile(r"^(cpu|auto|cuda(:\d+)?)$")


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _check_nonneg(obj: Any, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        _require(math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}")


FAMILIES: tuple[str, ...] = ("kan", "product", "product_additive", "sparse", "structure")


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
    # the network: "kan" is a plain KAN of `width`; "product" the separable product network
    # sum_{r < product_rank} c_r prod_i f_ri(x_i) + d, "product_additive" that plus sum_i g_i(x_i)
    # (kan_core.product; width is then ignored), initialised by ALS from `als_restarts` starts;
    # "sparse" trains no network (kan_core.sparse, run by kan_core.discovery.run_candidate);
    # "structure" splits the problem by the structure of a surrogate and recurses (kan_core.recurse)
    family: Literal["kan", "product", "product_additive", "sparse", "structure"] = "kan"
    product_rank: int = 1
    als_restarts: int = 6

    def __post_init__(self) -> None:
        _require(self.family in FAMILIES, f"family must be one of {', '.join(FAMILIES)}, got {self.family!r}")
        _require(isinstance(self.product_rank, int) and self.product_rank >= 1,
                 f"product_rank must be an integer >= 1, got {self.product_rank!r}")
        _require(isinstance(self.als_restarts, int) and self.als_restarts >= 1,
                 f"als_restarts must be an integer >= 1, got {self.als_restarts!r}")
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

    def fit_options(self) -> dict[str, Any]:
        """`kan_core.train.fit`'s keyword arguments: every field but ``kind`` and ``name``."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("kind", "name")}


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


@dataclass(frozen=True)
class BalanceStage:
    """Rescale the factors of every fully symbolic product node to one size, each product unchanged
    (`kan_core.product.balance_products`), so that the fit after it is well conditioned; a no-op
    on networks without multiplication nodes."""

    kind: Literal["balance"] = "balance"
    name: str = "balance"


Stage = TrainStage | PruneStage | SymbolicStage | RefineStage | PolishStage | BalanceStage
STAGE_KINDS: dict[str, type] = {
    "train": TrainStage, "prune": PruneStage, "symbolic": SymbolicStage, "refine": RefineStage, "polish": PolishStage,
    "balance": BalanceStage,
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

