"""Input and target transforms around a KAN: standardisation and log space, undone in the formula.

A KAN is fit to transformed data ``u = T_in(x)``, ``v = T_out(y)`` and its formula ``v = F(u)`` is
mapped back exactly: ``y = T_out^-1(F(T_in(x)))``, composed symbolically, then cleaned.

Per input (in this order, each optional):
- log: ``x -> log(x)`` (every value of that input must be > 0);
- standardise: an affine map of the training range onto ``[-1, 1]`` (the KAN's initial grid range).
Target:
- log: ``y -> log(y)`` (every target > 0): products and ratios of positive factors become sums;
- standardise: zero mean and unit standard deviation on the training split.

`TransformConfig` says which maps to use (frozen, JSON-able through the pipeline config);
`fit_transform` measures them on a dataset's training split and returns a `FittedTransform`:
plain numbers (JSON via to_dict/from_dict) that map datasets, predictions and formulas.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy
import torch

from kan_core.data import Dataset


@dataclass(frozen=True)
class TransformConfig:
    """Which transforms to apply; all False (the default) is the identity."""

    standardize_inputs: bool = False
    standardize_target: bool = False
    log_inputs: bool = False
    log_target: bool = False

    @property
    def identity(self) -> bool:
        return not (self.standardize_inputs or self.standardize_target or self.log_inputs or self.log_target)


@dataclass(frozen=True)
class AffineMap:
    """``t = (g(z) - offset) / scale`` with ``g`` = log when ``log`` else the identity."""

    log: bool = False
    offset: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.offset) and math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"an affine map needs a finite offset and a finite scale > 0, got {self}")

    @property
    def identity(self) -> bool:
        return not self.log and self.offset == 0.0 and self.scale == 1.0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return ((torch.log(z) if self.log else z) - self.offset) / self.scale

    def inverse(self, t: torch.Tensor) -> torch.Tensor:
        g = t * self.scale + self.offset
        return torch.exp(g) if self.log else g

    def forward_expr(self, z: sympy.Expr) -> sympy.Expr:
        g = sympy.log(z) if self.log else z
        return (g - _num(self.offset)) / _num(self.scale) if not self._plain_affine() else g

    def inverse_expr(self, t: sympy.Expr) -> sympy.Expr:
        g = t * _num(self.scale) + _num(self.offset) if not self._plain_affine() else t
        return sympy.exp(g) if self.log else g

    def _plain_affine(self) -> bool:
        return self.offset == 0.0 and self.scale == 1.0


def _num(v: float) -> sympy.Expr:
    return sympy.Integer(int(v)) if float(v).is_integer() and abs(v) < 2**53 else sympy.Float(v)


@dataclass(frozen=True)
class FittedTransform:
    """The maps measured on a training split: one per input, one for the (single) target."""

    inputs: tuple[AffineMap, ...]
    target: AffineMap

    @property
    def identity(self) -> bool:
        return self.target.identity and all(m.identity for m in self.inputs)

    # -- data ------------------------------------------------------------------------------------

    def apply(self, dataset: Dataset) -> Dataset:
        """The dataset in transformed space (same dtype and device). ValueError when a log map
        meets a value <= 0 (in any split)."""
        self._check_dataset(dataset)
        return Dataset(
            self.transform_inputs(dataset.train_input), self.transform_target(dataset.train_label),
            self.transform_inputs(dataset.test_input), self.transform_target(dataset.test_label),
        )

    def transform_inputs(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != len(self.inputs):
            raise ValueError(f"inputs must have shape (B, {len(self.inputs)}), got {tuple(x.shape)}")
        for i, m in enumerate(self.inputs):
            if m.log and not bool((x[:, i] > 0).all()):
                raise ValueError(f"log transform of input {i} needs values > 0")
        return torch.stack([m.forward(x[:, i]) for i, m in enumerate(self.inputs)], 1)

    def transform_target(self, y: torch.Tensor) -> torch.Tensor:
        if self.target.log and not bool((y > 0).all()):
            raise ValueError("log transform of the target needs values > 0")
        return self.target.forward(y)

    def inverse_target(self, v: torch.Tensor) -> torch.Tensor:
        return self.target.inverse(v)

    def predict(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Predictions of a model trained in transformed space, in the original units."""
        return self.inverse_target(model(self.transform_inputs(x)))

    def _check_dataset(self, dataset: Dataset) -> None:
        if dataset.n_var != len(self.inputs) or dataset.n_out != 1 and not self.target.identity:
            raise ValueError(
                f"transform fitted for {len(self.inputs)} inputs and 1 target, "
                f"dataset has {dataset.n_var} and {dataset.n_out}"
            )

    # -- formulas --------------------------------------------------------------------------------

    def compose(self, expr: sympy.Expr, var_names: Sequence[str]) -> sympy.Expr:
        """``expr`` (a formula in the transformed inputs, named ``var_names``) as a formula of the
        original inputs (same names) for the original target. Exact: no rounding here."""
        if len(var_names) != len(self.inputs):
            raise ValueError(f"need {len(self.inputs)} variable names, got {len(var_names)}")
        symbols = [sympy.Symbol(n) for n in var_names]
        subs = {s: m.forward_expr(s) for s, m in zip(symbols, self.inputs) if not m.identity}
        inner = expr.xreplace(subs) if subs else expr
        return self.target.inverse_expr(inner)

    # -- JSON ------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [_map_dict(m) for m in self.inputs], "target": _map_dict(self.target)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FittedTransform:
        try:
            return cls(tuple(_map_from(m) for m in data["inputs"]), _map_from(data["target"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"invalid transform: {exc}") from None


def _map_dict(m: AffineMap) -> dict[str, Any]:
    return {"log": m.log, "offset": m.offset, "scale": m.scale}


def _map_from(d: Mapping[str, Any]) -> AffineMap:
    return AffineMap(bool(d["log"]), float(d["offset"]), float(d["scale"]))


def identity_transform(n_inputs: int) -> FittedTransform:
    return FittedTransform(tuple(AffineMap() for _ in range(n_inputs)), AffineMap())


def fit_transform(dataset: Dataset, config: TransformConfig) -> FittedTransform:
    """Measure ``config``'s maps on ``dataset``'s training split.

    Input standardisation maps ``[min, max]`` of each (log-)input to ``[-1, 1]``; a constant input
    keeps scale 1. Target standardisation uses the mean and the (population) standard deviation;
    a constant target keeps scale 1. ValueError when a log map meets a value <= 0 in any split, or
    when a transformed target is asked of a dataset with several outputs.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if not isinstance(config, TransformConfig):
        raise ValueError(f"config must be a TransformConfig, got {type(config).__name__}")
    n = dataset.n_var
    if config.identity:
        return identity_transform(n)
    if dataset.n_out != 1 and (config.log_target or config.standardize_target):
        raise ValueError(f"target transforms need a single output, the dataset has {dataset.n_out}")
    x = torch.cat([dataset.train_input, dataset.test_input]).detach().to("cpu", torch.float64).numpy()
    y = torch.cat([dataset.train_label, dataset.test_label]).detach().to("cpu", torch.float64).numpy()
    if config.log_inputs and not (x > 0).all():
        bad = sorted({int(i) for i in np.nonzero((x <= 0).any(0))[0]})
        raise ValueError(f"log_inputs needs every input > 0; inputs {bad} have values <= 0")
    if config.log_target and not (y > 0).all():
        raise ValueError("log_target needs every target > 0")
    xtr = dataset.train_input.detach().to("cpu", torch.float64).numpy()
    ytr = dataset.train_label.detach().to("cpu", torch.float64).numpy()
    if config.log_inputs:
        xtr = np.log(xtr)
    if config.log_target:
        ytr = np.log(ytr)
    inputs = []
    for i in range(n):
        offset, scale = 0.0, 1.0
        if config.standardize_inputs:
            lo, hi = float(xtr[:, i].min()), float(xtr[:, i].max())
            offset = (lo + hi) / 2
            scale = (hi - lo) / 2 if hi - lo > 1e-12 * (1 + abs(lo) + abs(hi)) else 1.0
        inputs.append(AffineMap(config.log_inputs, _tidy(offset), _tidy(scale)))
    t_offset, t_scale = 0.0, 1.0
    if config.standardize_target:
        t_offset = float(ytr.mean())
        std = float(ytr.std())
        t_scale = std if std > 1e-12 * (1 + abs(t_offset)) else 1.0
    return FittedTransform(tuple(inputs), AffineMap(config.log_target, _tidy(t_offset), _tidy(t_scale)))


def _tidy(v: float) -> float:
    """Round a measured offset/scale to 6 significant digits: the map stays exact (it is applied
    as stored), and composed formulas carry shorter constants."""
    if v == 0 or not math.isfinite(v):
        return v
    return float(f"{v:.6g}")
