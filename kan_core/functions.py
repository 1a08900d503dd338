"""Named 1-D functions a KAN edge can be fixed to.

Each `SymbolicFunction` carries three forms of the same function:

- ``torch``: used in the forward pass of a symbolic edge. It is *safe*: finite values and gradients
  for every finite input (poles and domain edges are clamped), so training never turns NaN.
- ``sympy``: the exact function, used to write formulas.
- ``domain``: optional predicate, True where the exact function is defined and finite; the fitter
  (symbolic.py) rejects an affine map that sends samples outside it.
- ``dtorch``: optional derivative of ``torch`` (autograd's gradient of it, clamps included): with
  it, training computes a symbolic edge's gradient by hand (`kan_core.fast_objective`), without autograd.

`complexity` is a small integer: how much a formula pays for using the function.

There is no mutable global registry. `DEFAULT_LIBRARY` is a read-only mapping; callers extend it
with `FunctionLibrary.extend`, which returns a new library.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

import sympy
import torch

_EPS = 1e-6


@dataclass(frozen=True)
class SymbolicFunction:
    name: str
    torch: Callable[[torch.Tensor], torch.Tensor]
    sympy: Callable[[sympy.Expr], sympy.Expr]
    complexity: int
    domain: Callable[[torch.Tensor], torch.Tensor] | None = None
    dtorch: Callable[[torch.Tensor], torch.Tensor] | None = None


def _away_from_zero(x: torch.Tensor, eps: float = _EPS) -> torch.Tensor:
    """x with |x| >= eps, sign kept (0 maps to +eps)."""
    sign = torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))
    return torch.where(x.abs() < eps, sign * eps, x)


def _inv(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / _away_from_zero(x)


def _inv2(x: torch.Tensor) -> torch.Tensor:
    return 1.0 / _away_from_zero(x) ** 2


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x.clamp(min=_EPS))


def _rsqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.rsqrt(x.clamp(min=_EPS))


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.clamp(min=_EPS))


def _tan(x: torch.Tensor) -> torch.Tensor:
    # fold into (-pi/2, pi/2) periodically, then keep away from the poles
    folded = torch.remainder(x + math.pi / 2, math.pi) - math.pi / 2
    lim = math.pi / 2 - 1e-3
    return torch.tan(folded.clamp(-lim, lim))


def _clamp_unit(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-1 + _EPS, 1 - _EPS)


def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp(max=50.0))


def _sinh(x: torch.Tensor) -> torch.Tensor:
    return torch.sinh(x.clamp(-50.0, 50.0))


def _cosh(x: torch.Tensor) -> torch.Tensor:
    return torch.cosh(x.clamp(-50.0, 50.0))


def _dsqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _EPS, 0.5 * torch.rsqrt(x.clamp(min=_EPS)), 0.0)


def _dlog(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= _EPS, 1.0 / x.clamp(min=_EPS), 0.0)


def _dexp(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x <= 50.0, torch.exp(x.clamp(max=50.0)), 0.0)


def _dinv(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x.abs() < _EPS, 0.0, -1.0 / _away_from_zero(x) ** 2)


def _hyperbolic_domain(x: torch.Tensor) -> torch.Tensor:
    return x.abs() < 50.0


def _nonzero(x: torch.Tensor) -> torch.Tensor:
    return x.abs() > 1e-8


def _positive(x: torch.Tensor) -> torch.Tensor:
    return x > 1e-8


def _nonnegative(x: torch.Tensor) -> torch.Tensor:
    return x >= 0


def _open_unit(x: torch.Tensor) -> torch.Tensor:
    return x.abs() < 1


def _closed_unit(x: torch.Tensor) -> torch.Tensor:
    return x.abs() <= 1


def _tan_domain(x: torch.Tensor) -> torch.Tensor:
    return x.abs() < math.pi / 2 - 1e-2


def _exp_domain(x: torch.Tensor) -> torch.Tensor:
    return x < 50.0


_BUILTIN: tuple[SymbolicFunction, ...] = (
    # 0*x: a zero gradient, not none
    SymbolicFunction("0", lambda x: 0.0 * x, lambda x: sympy.Integer(0), 0, dtorch=torch.zeros_like),
    SymbolicFunction("x", lambda x: x, lambda x: x, 1, dtorch=torch.ones_like),
    SymbolicFunction("x^2", lambda x: x**2, lambda x: x**2, 2, dtorch=lambda x: 2 * x),
    SymbolicFunction("x^3", lambda x: x**3, lambda x: x**3, 3, dtorch=lambda x: 3 * x**2),
    SymbolicFunction("x^4", lambda x: x**4, lambda x: x**4, 3, dtorch=lambda x: 4 * x**3),
    SymbolicFunction("x^5", lambda x: x**5, lambda x: x**5, 3, dtorch=lambda x: 5 * x**4),
    SymbolicFunction("1/x", _inv, lambda x: 1 / x, 2, _nonzero, dtorch=_dinv),
    SymbolicFunction("1/x^2", _inv2, lambda x: 1 / x**2, 2, _nonzero),
    SymbolicFunction("sqrt", _sqrt, sympy.sqrt, 2, _nonnegative, dtorch=_dsqrt),
    SymbolicFunction("1/sqrt", _rsqrt, lambda x: 1 / sympy.sqrt(x), 2, _positive),
    SymbolicFunction("exp", _exp, sympy.exp, 2, _exp_domain, dtorch=_dexp),
    SymbolicFunction("log", _log, sympy.log, 2, _positive, dtorch=_dlog),
    SymbolicFunction("abs", torch.abs, sympy.Abs, 3, dtorch=torch.sign),
    SymbolicFunction("sin", torch.sin, sympy.sin, 2, dtorch=torch.cos),
    SymbolicFunction("cos", torch.cos, sympy.cos, 2, dtorch=lambda x: -torch.sin(x)),
    SymbolicFunction("tan", _tan, sympy.tan, 3, _tan_domain),
    SymbolicFunction("tanh", torch.tanh, sympy.tanh, 3, dtorch=lambda x: 1 - torch.tanh(x) ** 2),
    SymbolicFunction("sinh", _sinh, sympy.sinh, 3, _hyperbolic_domain),
    SymbolicFunction("cosh", _cosh, sympy.cosh, 3, _hyperbolic_domain),
    SymbolicFunction("sgn", torch.sign, sympy.sign, 3),
    SymbolicFunction("arcsin", lambda x: torch.arcsin(_clamp_unit(x)), sympy.asin, 4, _closed_unit),
    SymbolicFunction("arccos", lambda x: torch.arccos(_clamp_unit(x)), sympy.acos, 4, _closed_unit),
    SymbolicFunction("arctan", torch.arctan, sympy.atan, 4, dtorch=lambda x: 1 / (1 + x**2)),
    SymbolicFunction("arctanh", lambda x: torch.arctanh(_clamp_unit(x)), sympy.atanh, 4, _open_unit),
    SymbolicFunction("gaussian", lambda x: torch.exp(-(x**2)), lambda x: sympy.exp(-(x**2)), 3,
                     dtorch=lambda x: -2 * x * torch.exp(-(x**2))),
)


class FunctionLibrary(Mapping[str, SymbolicFunction]):
    """A read-only name -> SymbolicFunction mapping. `extend` returns a new library."""

    def __init__(self, functions: Iterable[SymbolicFunction] = ()):
        self._fns: dict[str, SymbolicFunction] = {}
        for fn in functions:
            if not isinstance(fn, SymbolicFunction):
                raise ValueError(f"library entries must be SymbolicFunction, got {type(fn).__name__}")
            if not fn.name:
                raise ValueError("a symbolic function needs a non-empty name")
            if fn.complexity < 0:
                raise ValueError(f"complexity of {fn.name!r} must be >= 0, got {fn.complexity}")
            self._fns[fn.name] = fn

    def __getitem__(self, name: str) -> SymbolicFunction:
        try:
            return self._fns[name]
        except KeyError:
            raise ValueError(
                f"unknown symbolic function {name!r}; known: {', '.join(sorted(self._fns))}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._fns)

    def __len__(self) -> int:
        return len(self._fns)

    def __contains__(self, name: object) -> bool:
        return name in self._fns

    def extend(self, *functions: SymbolicFunction) -> FunctionLibrary:
        """A new library with `functions` added (replacing same-named ones)."""
        return FunctionLibrary([*self._fns.values(), *functions])

    def subset(self, names: Iterable[str]) -> FunctionLibrary:
        """A new library with only `names` (each must exist: ValueError naming the unknown one)."""
        return FunctionLibrary([self[n] for n in names])


DEFAULT_LIBRARY = FunctionLibrary(_BUILTIN)

# The function library of the seed pipeline (pykan's README example).
SEED_LIBRARY_NAMES: tuple[str, ...] = ("x", "x^2", "x^3", "x^4", "exp", "log", "sqrt", "sin", "abs")


def get(name: str, library: Mapping[str, SymbolicFunction] | None = None) -> SymbolicFunction:
    """Look a function up by name (ValueError naming it when unknown)."""
    return (library if library is not None else DEFAULT_LIBRARY)[name]


def names(library: Mapping[str, SymbolicFunction] | None = None) -> list[str]:
    return list(library if library is not None else DEFAULT_LIBRARY)
