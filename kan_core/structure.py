"""A formula's structure read from a surrogate network (AI Feynman 1/2, KAN 2.0).

A small smooth network (`fit_surrogate`: a tanh MLP trained by LBFGS in a few seconds) stands in for
the unknown function f, so that f can be evaluated at points the data does not hold. On it:

- additive separability of variables i, j: the double difference
  ``g(f(x)) - g(f(x with x_i -> x_i')) - g(f(x with x_j -> x_j')) + g(f(x with both))`` vanishes
  for every pair of points (the integral of the mixed partial d2 g(f) / dx_i dx_j over the rectangle:
  zero exactly when the Hessian block is). ``g`` is a target transform: identity for ``f = a + b``,
  ``log|f|`` for ``f = a * b``, ``f**2`` for ``sqrt(a + b)``...; `separable_groups` joins the
  variables of every non-separable pair into groups;
- symmetries of a pair: f unchanged when ``x_i, x_j`` move along the level lines of ``x_i - x_j``
  (both shifted), ``x_i / x_j`` (both scaled), ``x_i * x_j`` (one scaled up, the other down) or
  ``x_i + x_j``; a variable that enters only through ``x_i**2``: ``f(-x_i) = f(x_i)`` where the
  range holds both signs. These are the finite forms of AI Feynman's gradient-direction tests.

Every test is measured in units of the surrogate's own error: ``statistic = rms(residual) /
rms(expected residual)``, the expected residual propagating the surrogate's test RMSE through ``g``
(``|g'(f)| * rmse`` per evaluated point). A property holds when the statistic is below ``threshold``
and the test had power: moving the variables without respecting the property changes f by more than
``threshold`` times its error. The tests take any `Oracle` (values anywhere in the data's box and
their error): a `Surrogate`, or the true function in tests. Pure computation: no I/O, no global state.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from kan_core.errors import TrainingCancelled

THRESHOLD = 3.0  # a test passes when its residual is below this many times the expected error
N_PAIRS = 400  # point pairs per test


# ----------------------------------------------------------------------------------------------
# the surrogate


class Oracle(Protocol):
    """What the tests need of f: values at any point of the box ``lo``..``hi`` and their error."""

    rmse: float
    lo: np.ndarray
    hi: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class Surrogate:
    """A smooth fit of ``x (B, n) -> y (B,)``: tanh MLP on standardised inputs and target.
    ``rmse``: its test RMSE in the target's units; ``lo``/``hi``: the data's box (n,)."""

    net: torch.nn.Module
    x_mean: np.ndarray
    x_std: np.ndarray
    y_mean: float
    y_std: float
    rmse: float
    lo: np.ndarray
    hi: np.ndarray

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Values at ``x (B, n)`` -> ``(B,)``."""
        z = torch.as_tensor((np.asarray(x, dtype=np.float64) - self.x_mean) / self.x_std)
        with torch.no_grad():
            return self.net(z)[:, 0].numpy() * self.y_std + self.y_mean

    @property
    def n_var(self) -> int:
        return int(self.x_mean.shape[0])


def fit_surrogate(
    x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray, *,
    hidden: Sequence[int] = (24, 24), steps: int = 40, seed: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> Surrogate:
    """Fit ``x (N, n) -> y (N,)`` by a tanh MLP (float64, full-batch LBFGS, ``steps`` outer steps of
    up to 25 iterations each, stopping early when the training loss stalls). TrainingCancelled when
    ``should_stop()`` turns True (checked every step)."""
    x, y = _as_xy(x, y)
    x_test, y_test = _as_xy(x_test, y_test)
    if x.shape[1] != x_test.shape[1]:
        raise ValueError(f"x and x_test must have the same columns, got {x.shape} and {x_test.shape}")
    x_mean, x_std = x.mean(0), x.std(0) + 1e-12
    y_mean, y_std = float(y.mean()), float(y.std()) + 1e-300
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width = x.shape[1]
    for h in hidden:
        lin = torch.nn.Linear(width, h, dtype=torch.float64)
        _init(lin, gen)
        layers += [lin, torch.nn.Tanh()]
        width = h
    out = torch.nn.Linear(width, 1, dtype=torch.float64)
    _init(out, gen)
    net = torch.nn.Sequential(*layers, out)
    zx = torch.as_tensor((x - x_mean) / x_std)
    zy = torch.as_tensor((y - y_mean) / y_std)[:, None]
    opt = torch.optim.LBFGS(net.parameters(), lr=1.0, max_iter=25, history_size=50, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-12, tolerance_change=1e-15)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.mean((net(zx) - zy) ** 2)
        loss.backward()
        return loss

    last = math.inf
    for _ in range(steps):
        if should_stop is not None and should_stop():
            raise TrainingCancelled("surrogate fit cancelled")
        loss = float(opt.step(closure).detach())
        if not math.isfinite(loss) or loss > last * (1 - 1e-4) or loss < 1e-16:
            break
        last = loss
    sur = Surrogate(net.eval(), x_mean, x_std, y_mean, y_std, math.inf, np.minimum(x.min(0), x_test.min(0)),
                    np.maximum(x.max(0), x_test.max(0)))
    rmse = float(np.sqrt(np.mean((sur(x_test) - y_test) ** 2)))
    return Surrogate(sur.net, x_mean, x_std, y_mean, y_std, rmse if math.isfinite(rmse) else math.inf,
                     sur.lo, sur.hi)


def _init(lin: torch.nn.Linear, gen: torch.Generator) -> None:
    with torch.no_grad():
        bound = 1.0 / math.sqrt(lin.in_features)
        lin.weight.copy_((torch.rand(lin.weight.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound * 1.7)
        lin.bias.copy_((torch.rand(lin.bias.shape, generator=gen, dtype=torch.float64) * 2 - 1) * bound)


def _as_xy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0] or x.shape[0] < 2:
        raise ValueError(f"x must be (N, n) and y (N,) with N >= 2, got {x.shape} and {y.shape}")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("x and y must be finite")
    return x, y


# ----------------------------------------------------------------------------------------------
# target transforms: g(f) with its derivative, for the tests (inverses live with the recursion)


@dataclass(frozen=True)
class TargetTransform:
    """``g``, applied to target values; ``dg`` its derivative; ``valid(y)``: whether g is finite and
    invertible on all of ``y``."""

    name: str
    g: Callable[[np.ndarray], np.ndarray]
    dg: Callable[[np.ndarray], np.ndarray]
    valid: Callable[[np.ndarray], bool]


def _one_sign(y: np.ndarray, margin: float = 1e-6) -> bool:
    scale = float(np.max(np.abs(y))) + 1e-300
    return bool((y > margin * scale).all() or (y < -margin * scale).all())


TRANSFORMS: dict[str, TargetTransform] = {
    t.name: t for t in (
        TargetTransform("identity", lambda y: y, np.ones_like, lambda y: True),
        TargetTransform("log", lambda y: np.log(np.abs(y)), lambda y: 1.0 / y, _one_sign),
        TargetTransform("square", lambda y: y**2, lambda y: 2 * y, _one_sign),
        TargetTransform("inverse", lambda y: 1.0 / y, lambda y: -1.0 / y**2, _one_sign),
        TargetTransform("inverse_square", lambda y: 1.0 / y**2, lambda y: -2.0 / y**3, _one_sign),
        TargetTransform("sqrt", lambda y: np.sqrt(np.abs(y)), lambda y: 0.5 / np.sqrt(np.abs(y)) * np.sign(y),
                        _one_sign),
    )
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# tests


@dataclass(frozen=True)
class StructureTest:
    """One test's outcome. ``kind``: additive (on g(f), ``transform`` names g), difference, sum,
    ratio, product, even; ``variables``: the tested column indices; ``statistic``: residual /
    expected error (small when the property holds); ``power``: the same for a move that ignores the
    property (large when the test can see anything); ``passed``: statistic < threshold <= power."""

    kind: str
    variables: tuple[int, ...]
    statistic: float
    power: float
    threshold: float
    transform: str = "identity"

    @property
    def passed(self) -> bool:
        return self.statistic < self.threshold <= self.power

    def to_dict(self, names: Sequence[str] | None = None) -> dict:
        var = [names[i] for i in self.variables] if names is not None else list(self.variables)
        return {"test": self.kind, "variables": var, "transform": self.transform,
                "statistic": _finite(self.statistic), "power": _finite(self.power), "threshold": self.threshold,
                "passed": self.passed}


def _finite(v: float) -> float | None:
    return round(float(v), 4) if math.isfinite(v) else None


def _ratio(residual: np.ndarray, expected: np.ndarray) -> float:
    ok = np.isfinite(residual) & np.isfinite(expected)
    if ok.sum() < 10:
        return math.inf
    return float(np.sqrt(np.mean(residual[ok] ** 2)) / (np.sqrt(np.mean(expected[ok] ** 2)) + 1e-300))


def _points(x: np.ndarray, rng: np.random.Generator, n: int = N_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """Two sets of ``n`` rows of ``x`` drawn at random: base points and partners."""
    return x[rng.integers(0, len(x), n)].copy(), x[rng.integers(0, len(x), n)].copy()


def additive_test(sur: Oracle, x: np.ndarray, i: int, j: int, *, transform: str = "identity",
                  threshold: float = THRESHOLD, seed: int = 0) -> StructureTest:
    """Whether ``g(f)`` is additively separable in ``x_i`` and ``x_j`` (all else held anywhere)."""
    t = TRANSFORMS[transform]
    rng = np.random.default_rng(seed)
    a, b = _points(x, rng)
    p2, p3, p4 = a.copy(), a.copy(), a.copy()
    p2[:, i] = b[:, i]
    p3[:, j] = b[:, j]
    p4[:, i], p4[:, j] = b[:, i], b[:, j]
    f = [sur(p) for p in (a, p2, p3, p4)]
    if transform not in ("identity", "square"):  # g is singular at 0: only points well away from it
        keep = np.all([np.abs(v) > 3 * sur.rmse for v in f], axis=0)
        f = [v[keep] for v in f]
    with np.errstate(all="ignore"):
        gv = [t.g(v) for v in f]
        err = [np.abs(t.dg(v)) * sur.rmse for v in f]
    # residuals in units of their own expected error, point by point: where g magnifies the
    # surrogate's error (log near 0) a point weighs no more than elsewhere
    stat = _pointwise(gv[0] - gv[1] - gv[2] + gv[3], np.sqrt(sum(e**2 for e in err)))
    power = min(_pointwise(gv[0] - gv[1], np.sqrt(err[0] ** 2 + err[1] ** 2)),
                _pointwise(gv[0] - gv[2], np.sqrt(err[0] ** 2 + err[2] ** 2)))
    return StructureTest("additive", (i, j), stat, power, threshold, transform)


def _pointwise(residual: np.ndarray, expected: np.ndarray) -> float:
    """rms of residual / expected, point by point (inf with fewer than 10 finite points)."""
    with np.errstate(all="ignore"):
        z = residual / (expected + 1e-300)
    z = z[np.isfinite(z)]
    return float(np.sqrt(np.mean(z**2))) if len(z) >= 10 else math.inf


def separable_groups(sur: Oracle, x: np.ndarray, *, transform: str = "identity",
                     threshold: float = THRESHOLD, seed: int = 0) -> tuple[list[list[int]], list[StructureTest]]:
    """The finest partition of the variables into groups such that ``g(f) = sum_k h_k(x_group_k)``:
    the connected components of the pairs that fail `additive_test` (a pair whose test has no power,
    a variable f hardly depends on, stays joined). Returns (groups sorted by first index, tests)."""
    n = x.shape[1]
    parent = list(range(n))

    def root(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    tests = []
    for i in range(n):
        for j in range(i + 1, n):
            if root(i) == root(j):
                continue
            tst = additive_test(sur, x, i, j, transform=transform, threshold=threshold, seed=seed + 31 * i + j)
            tests.append(tst)
            if not tst.passed:
                parent[root(j)] = root(i)
    groups: dict[int, list[int]] = {}
    for k in range(n):
        groups.setdefault(root(k), []).append(k)
    return sorted(groups.values()), tests


def _in_box(p: np.ndarray, sur: Oracle) -> np.ndarray:
    return ((p >= sur.lo) & (p <= sur.hi)).all(axis=1)


SYMMETRIES = ("difference", "sum", "ratio", "product")


def symmetry_test(sur: Oracle, x: np.ndarray, i: int, j: int, kind: str, *,
                  threshold: float = THRESHOLD, seed: int = 0) -> StructureTest:
    """Whether f depends on ``x_i, x_j`` only through ``kind``: difference ``x_i - x_j``, sum
    ``x_i + x_j``, ratio ``x_i / x_j``, product ``x_i * x_j``. Moves each base point along the level
    line of that combination (staying in the data's box) and compares f; the power move changes
    ``x_i`` alone by the same amount."""
    if kind not in SYMMETRIES:
        raise ValueError(f"kind must be one of {SYMMETRIES}, got {kind!r}")
    rng = np.random.default_rng(seed)
    a, _ = _points(x, rng, 4 * N_PAIRS)
    span = sur.hi - sur.lo
    if kind in ("ratio", "product") and not (((a[:, i] > 0).all() or (a[:, i] < 0).all())
                                             and ((a[:, j] > 0).all() or (a[:, j] < 0).all())):
        return StructureTest(kind, (i, j), math.inf, 0.0, threshold)
    b, c = a.copy(), a.copy()
    if kind in ("difference", "sum"):
        d = rng.uniform(-0.25, 0.25, len(a)) * min(span[i], span[j])
        b[:, i] += d
        b[:, j] += d if kind == "difference" else -d
        c[:, i] += d
    else:
        s = np.exp(rng.uniform(-0.25, 0.25, len(a)))
        b[:, i] *= s
        b[:, j] = b[:, j] * s if kind == "ratio" else b[:, j] / s
        c[:, i] *= s
    keep = _in_box(b, sur) & _in_box(c, sur)
    if keep.sum() < 20:
        return StructureTest(kind, (i, j), math.inf, 0.0, threshold)
    fa, fb, fc = sur(a[keep]), sur(b[keep]), sur(c[keep])
    expected = np.full(int(keep.sum()), math.sqrt(2) * sur.rmse)
    return StructureTest(kind, (i, j), _ratio(fb - fa, expected), _ratio(fc - fa, expected), threshold)


def even_test(sur: Oracle, x: np.ndarray, i: int, *, threshold: float = THRESHOLD, seed: int = 0) -> StructureTest:
    """Whether f depends on ``x_i`` only through ``x_i**2``: ``f(-x_i) = f(x_i)`` on the rows whose
    mirror image is in the box (at least a fifth of the range must mirror, else the test fails)."""
    rng = np.random.default_rng(seed)
    a, _ = _points(x, rng, 4 * N_PAIRS)
    b = a.copy()
    b[:, i] = -b[:, i]
    keep = _in_box(b, sur) & (np.abs(a[:, i]) > 0.05 * (sur.hi[i] - sur.lo[i]))
    if keep.sum() < 0.2 * len(a):
        return StructureTest("even", (i,), math.inf, 0.0, threshold)
    c = a[keep].copy()
    c[:, i] = rng.permutation(c[:, i])  # the power move: x_i to another value of the same spread
    fa, fb, fc = sur(a[keep]), sur(b[keep]), sur(c)
    expected = np.full(int(keep.sum()), math.sqrt(2) * sur.rmse)
    return StructureTest("even", (i,), _ratio(fb - fa, expected), _ratio(fc - fa, expected), threshold)


def find_symmetries(sur: Oracle, x: np.ndarray, *, threshold: float = THRESHOLD, seed: int = 0,
                    deadline: float | None = None) -> list[StructureTest]:
    """`symmetry_test` for every pair and kind, passed ones first (lowest statistic first), stopping
    at ``deadline`` (time.monotonic())."""
    out = []
    n = x.shape[1]
    for i in range(n):
        for j in range(i + 1, n):
            for kind in SYMMETRIES:
                if deadline is not None and time.monotonic() > deadline:
                    break
                out.append(symmetry_test(sur, x, i, j, kind, threshold=threshold, seed=seed + 7 * i + 13 * j))
    return sorted(out, key=lambda t: (not t.passed, t.statistic))
