"""Fit ``c * f(a*x + b) + d`` to samples of KAN edges, every function of a library at once.

The core is `fit_affine`: for E edges (samples ``x, y`` of shape (E, N)) and F named functions it
finds, per edge and function, the affine parameters (a, b, c, d) minimising the squared error, and
the R² of that fit. It is vectorised over edges; the only Python loops are over functions and
over memory-bounded chunks of edges.

For fixed (a, b) the best (c, d) is ordinary least squares of y on f(a*x + b), and the R² of that
fit is the squared correlation corr(f(a*x + b), y)². So the search is over (a, b) only:

1. a coarse grid over ``a_range x b_range``, then a few zooms around each edge's best point, on
   a few points evenly spaced over sorted x (`n_grid`);
2. Levenberg-Marquardt on (a, b) with (c, d) eliminated (variable projection), on more points;
3. (c, d) by least squares and R² on *all* points;
4. an equivalent canonical form from f's symmetries (`kan_core.affine_canonical`), so
   0.001*(10x)^2 comes back as 0.1*x^2.

An (a, b) is admissible only when ``a*x + b`` stays inside the function's domain and f is finite
there for every sample; edges with no admissible (a, b) get the constant fit (c = 0, R² = 0).
A fit where f varies by less than `min_rel_std` (5%) of its RMS over the data counts as R² = 0:
it only mimics a polynomial through a Taylor expansion (cos(0.01 x) ~ 1 - 5e-5 x², log(x + 100)
~ x) and would otherwise tie with the simpler function on clean data.

Degenerate data: when y is constant (to ~1e-9 relative) the fit is c = 0, d = mean(y) for every
function, and by convention only *constant* functions (such as ``"0"``) get R² = 1; the others
get R² = 0, so the ranking picks the constant. A constant function never explains a varying y
(R² = 0).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from kan_core.affine_canonical import canonical
from kan_core.errors import TrainingCancelled
from kan_core.functions import DEFAULT_LIBRARY, FunctionLibrary, SymbolicFunction

Affine = tuple[float, float, float, float]


@dataclass(frozen=True)
class AffineFit:
    """Best ``c * f(a*x + b) + d`` per edge and function."""

    names: tuple[str, ...]  # F function names
    complexity: tuple[int, ...]  # F
    params: torch.Tensor  # (E, F, 4) float64: a, b, c, d
    r2: torch.Tensor  # (E, F) float64, in [0, 1]


def resolve_library(
    lib: Sequence[str] | Mapping[str, SymbolicFunction] | None = None,
    library: FunctionLibrary | None = None,
) -> FunctionLibrary:
    """The functions to try: `lib` names looked up in `library` (default: all of `library`).

    `lib` may also be a library itself. Unknown names raise ValueError naming them.
    """
    base = library if library is not None else DEFAULT_LIBRARY
    if lib is None:
        return base
    if isinstance(lib, FunctionLibrary):
        return lib
    if isinstance(lib, str):
        raise ValueError(f"lib must be a list of function names, got the string {lib!r}")
    names = list(lib)
    if not names:
        raise ValueError("lib must name at least one function")
    return base.subset(names)


# ----------------------------------------------------------------------------------------------
# fitting


def fit_affine(
    x: torch.Tensor,
    y: torch.Tensor,
    functions: Sequence[str] | Mapping[str, SymbolicFunction] | None = None,
    *,
    library: FunctionLibrary | None = None,
    a_range: tuple[float, float] = (-10.0, 10.0),
    b_range: tuple[float, float] = (-10.0, 10.0),
    grid: int = 25,
    zoom_grid: int = 9,
    zoom_iters: int = 2,
    n_grid: int = 64,
    n_polish: int = 512,
    polish_steps: int = 20,
    min_rel_std: float = 0.05,
    max_elements: int = 1 << 23,
    should_stop: Callable[[], bool] | None = None,
) -> AffineFit:
    """Best ``y ≈ c * f(a*x + b) + d`` for every edge (row) and every function.

    x, y: (E, N) samples of E edges (1-D inputs are one edge). `functions`: names looked up in
    `library` (default DEFAULT_LIBRARY), or a library; default: all of `library`.
    Search: a `grid` x `grid` grid over a_range x b_range, then `zoom_iters` zooms of
    `zoom_grid` x `zoom_grid` around the best point, all on `n_grid` points evenly spaced over
    sorted x; then `polish_steps` Levenberg-Marquardt steps on `n_polish` points. `min_rel_std`:
    see the module docstring. ``should_stop()`` is asked before each function's fit (True raises
    `TrainingCancelled`): a wide layer's fit takes long, and a cancel must not wait for all of it.
    `max_elements` bounds one (edges, a, b, points) block. Returns float64 params (E, F, 4) and
    R² (E, F) measured on all N points.
    """
    lib = resolve_library(functions, library)
    x, y = _check_xy(x, y)
    if grid < 2 or zoom_grid < 3 or zoom_iters < 0:
        raise ValueError(f"need grid >= 2, zoom_grid >= 3, zoom_iters >= 0; got {grid}, {zoom_grid}, {zoom_iters}")
    if not (a_range[0] < a_range[1] and b_range[0] < b_range[1]):
        raise ValueError(f"a_range and b_range must be increasing, got {a_range} and {b_range}")
    if n_grid < 2 or n_polish < 2 or polish_steps < 0 or max_elements < 1:
        raise ValueError("need n_grid >= 2, n_polish >= 2, polish_steps >= 0, max_elements >= 1")
    if not 0.0 <= min_rel_std < 1.0:
        raise ValueError(f"min_rel_std must be in [0, 1), got {min_rel_std}")
    rel_var = min_rel_std**2 + 1e-12
    names, complexity = tuple(lib), tuple(fn.complexity for fn in lib.values())
    E, F = x.shape[0], len(names)
    if E == 0:
        return AffineFit(names, complexity, x.new_zeros(0, F, 4), x.new_zeros(0, F))

    xp, yp = _even_subsample(x, y, n_polish)  # (E, np) sorted by x
    xg, yg = _even_subsample(xp, yp, n_grid)  # (E, ng)
    yg = yg - yg.mean(1, keepdim=True)  # the grid only needs centred y
    y_mean = y.mean(1)  # (E,)
    y_const = y.std(1, correction=0) <= 1e-9 * (1.0 + y.abs().amax(1))  # (E,)
    const_fit = _constant_params(y_mean)  # (E, 4): c = 0, d = mean(y)

    params, r2s = [], []
    for fn in lib.values():
        if should_stop is not None and should_stop():
            raise TrainingCancelled(f"symbolic fitting cancelled before {fn.name!r}")
        kind = _shape_kind(fn)
        if kind == "constant":
            p, r2 = const_fit, y_const.to(x.dtype)
        else:
            if kind == "affine":  # c*f(a*x + b) + d is any line: no search needed
                ab = x.new_tensor([1.0, 0.0]).expand(E, 2)
            else:
                ab = _grid_search(fn, xg, yg, a_range, b_range, grid, zoom_grid, zoom_iters, rel_var, max_elements)
                ab = _polish(fn, xp, yp, ab, polish_steps, rel_var)  # (E, 2)
            p, r2 = _final_fit(fn, x, y, ab, 1e-12 if kind == "affine" else rel_var)
            p = canonical(fn, p)
            p = torch.where(y_const[:, None], const_fit, p)
            r2 = torch.where(y_const, torch.zeros_like(r2), r2)
        params.append(p)
        r2s.append(r2)
    return AffineFit(names, complexity, params=torch.stack(params, 1), r2=torch.stack(r2s, 1))


def _check_xy(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(x).detach().to(torch.float64)
    y = torch.as_tensor(y).detach().to(torch.float64)
    x = x[None] if x.ndim == 1 else x
    y = y[None] if y.ndim == 1 else y
    if x.ndim != 2 or x.shape != y.shape:
        shapes = f"{tuple(x.shape)} and {tuple(y.shape)}"
        raise ValueError(f"x and y must both be (E, N) with equal shapes, got {shapes}")
    if x.shape[1] < 2:
        raise ValueError(f"need at least 2 samples per edge, got {x.shape[1]}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or infinite values")
    if not torch.isfinite(y).all():
        raise ValueError("y contains NaN or infinite values")
    return x, y


def _even_subsample(x: torch.Tensor, y: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(E, N) -> (E, min(n, N)) points evenly spaced over sorted x (first and last included)."""
    xs, order = x.sort(dim=1)
    ys = y.gather(1, order)
    N = x.shape[1]
    if N <= n:
        return xs, ys
    idx = torch.linspace(0, N - 1, n, dtype=torch.float64).round().long()
    return xs[:, idx], ys[:, idx]


def _constant_params(y_mean: torch.Tensor) -> torch.Tensor:
    """(E,) -> (E, 4) rows (1, 0, 0, mean): the constant fit."""
    one, zero = torch.ones_like(y_mean), torch.zeros_like(y_mean)
    return torch.stack([one, zero, zero, y_mean], -1)


def _shape_kind(fn: SymbolicFunction) -> str:
    """'constant' or 'affine' when f is (probed on a few points), else 'general'."""
    v = fn.torch(torch.linspace(-2.0, 2.0, 9, dtype=torch.float64))  # step 0.5
    if bool((v == v[0]).all()):
        return "constant"
    second_diff = v[2:] - 2 * v[1:-1] + v[:-2]
    if bool((second_diff.abs() <= 1e-12 * (1 + v.abs().amax())).all()):
        return "affine"
    return "general"


def _corr2(fn: SymbolicFunction, z: torch.Tensor, yc: torch.Tensor, rel_var: float) -> torch.Tensor:
    """R² of the best c*f(z) + d: z (..., n), centred y (..., n) broadcastable -> (...).

    -1 where (a, b) is not admissible; 0 where var(f) < rel_var * mean(f²). Non-finite f values
    are caught through the sums (a NaN or inf anywhere makes them non-finite), much cheaper than
    an elementwise test.
    """
    fz = fn.torch(z)
    n = z.shape[-1]
    sf = fz.sum(-1)
    sff_raw = torch.linalg.vecdot(fz, fz)
    sff = (sff_raw - sf * sf / n).clamp(min=0.0)  # n * var(f)
    sfy = torch.linalg.vecdot(fz, yc)  # n * cov(f, y), as yc is centred
    syy = torch.linalg.vecdot(yc, yc)
    ok = torch.isfinite(sff_raw) & torch.isfinite(sfy)
    if fn.domain is not None:
        ok &= fn.domain(z).all(-1)
    varying = sff > rel_var * sff_raw + 1e-300  # f varies enough over the samples
    r2 = (sfy * sfy / (sff * syy).clamp(min=1e-300)).clamp(0.0, 1.0)
    r2 = torch.where(varying, r2, torch.zeros_like(r2))
    return torch.where(ok, r2, torch.full_like(r2, -1.0))


def _grid_search(
    fn: SymbolicFunction,
    x: torch.Tensor,
    yc: torch.Tensor,
    a_range: tuple[float, float],
    b_range: tuple[float, float],
    grid: int,
    zoom_grid: int,
    zoom_iters: int,
    rel_var: float,
    max_elements: int,
) -> torch.Tensor:
    """Best (a, b) per edge: coarse grid, then zooms to +-1 step around the best point.

    x, yc (centred y): (E, n) -> (E, 2).
    """
    E = x.shape[0]
    lo = x.new_tensor([a_range[0], b_range[0]]).expand(E, 2)  # (E, 2): (a, b) lower corner
    hi = x.new_tensor([a_range[1], b_range[1]]).expand(E, 2)
    G = grid
    for _ in range(zoom_iters + 1):
        t = torch.linspace(0.0, 1.0, G, dtype=x.dtype)  # (G,)
        axes = lo[:, :, None] + (hi - lo)[:, :, None] * t  # (E, 2, G): a values, b values
        r2 = _grid_r2(fn, x, yc, axes[:, 0], axes[:, 1], rel_var, max_elements)  # (E, G, G)
        best = r2.flatten(1).argmax(1)  # (E,)
        idx = torch.stack([best // G, best % G], 1)  # (E, 2)
        center = axes.gather(2, idx[:, :, None])[:, :, 0]  # (E, 2)
        step = (hi - lo) / (G - 1)
        lo, hi = center - step, center + step
        G = zoom_grid
    return center


def _grid_r2(
    fn: SymbolicFunction,
    x: torch.Tensor,
    yc: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    rel_var: float,
    max_elements: int,
) -> torch.Tensor:
    """R² on a grid: x, yc (E, n); a (E, Ga); b (E, Gb) -> (E, Ga, Gb), in chunks of edges."""
    E, n = x.shape
    chunk = max(1, max_elements // (a.shape[1] * b.shape[1] * n))
    out = []
    for s in range(0, E, chunk):
        sl = slice(s, s + chunk)
        z = a[sl, :, None, None] * x[sl, None, None, :] + b[sl, None, :, None]  # (e, Ga, Gb, n)
        out.append(_corr2(fn, z, yc[sl, None, None, :], rel_var))
    return torch.cat(out)


def _project_out(v: torch.Tensor, fc: torch.Tensor, sff: torch.Tensor) -> torch.Tensor:
    """Remove from v (E, n) its least-squares fit on span{1, f}; fc = centred f, sff = |fc|²."""
    v = v - v.mean(1, keepdim=True)
    return v - (torch.linalg.vecdot(v, fc) / sff)[:, None] * fc


def _sse(
    fn: SymbolicFunction, x: torch.Tensor, yc: torch.Tensor, ab: torch.Tensor, rel_var: float
) -> torch.Tensor:
    """Residual sum of squares of the best (c, d) at (a, b), +inf where not admissible: -> (E,)."""
    syy = torch.linalg.vecdot(yc, yc)
    r2 = _corr2(fn, ab[:, :1] * x + ab[:, 1:], yc, rel_var)
    return torch.where(r2 >= 0, syy * (1 - r2), torch.full_like(r2, float("inf")))


def _polish(
    fn: SymbolicFunction, x: torch.Tensor, y: torch.Tensor, ab: torch.Tensor, steps: int, rel_var: float
) -> torch.Tensor:
    """Levenberg-Marquardt on (a, b) with (c, d) eliminated (variable projection), all edges at once.

    x, y: (E, n); ab: (E, 2) -> (E, 2). The residual of the inner least squares is
    r = P y, P projecting out span{1, f(a*x + b)}; Kaufman's Jacobian is J = -c P [f' x, f'].
    """
    yc = y - y.mean(1, keepdim=True)
    syy = torch.linalg.vecdot(yc, yc)
    sse = _sse(fn, x, yc, ab, rel_var)  # (E,)
    lam = torch.full_like(sse, 1e-3)
    for _ in range(steps):
        with torch.enable_grad():
            z = (ab[:, :1] * x + ab[:, 1:]).requires_grad_(True)  # (E, n)
            fz = fn.torch(z)
            (df,) = torch.autograd.grad(fz.sum(), z)  # f'(z), elementwise
        fz = fz.detach()
        fc = fz - fz.mean(1, keepdim=True)
        sff = torch.linalg.vecdot(fc, fc).clamp(min=1e-300)
        c = torch.linalg.vecdot(fc, yc) / sff  # (E,)
        r = _project_out(yc, fc, sff)  # (E, n)
        ja = -c[:, None] * _project_out(df * x, fc, sff)  # (E, n)
        jb = -c[:, None] * _project_out(df, fc, sff)
        # normal equations (J^T J + lam * diag) step = -J^T r, 2 x 2, solved in closed form
        haa, hab, hbb = (torch.linalg.vecdot(u, v) for u, v in ((ja, ja), (ja, jb), (jb, jb)))
        ga, gb = torch.linalg.vecdot(ja, r), torch.linalg.vecdot(jb, r)
        tiny = 1e-12 * torch.maximum(haa, hbb) + 1e-300
        daa, dbb = haa + lam * (haa + tiny), hbb + lam * (hbb + tiny)
        det = daa * dbb - hab * hab
        step = torch.stack([-(dbb * ga - hab * gb), -(daa * gb - hab * ga)], 1) / det[:, None]
        trial = ab + torch.nan_to_num(step, nan=0.0, posinf=0.0, neginf=0.0)
        sse_trial = _sse(fn, x, yc, trial, rel_var)
        accept = sse_trial < sse
        # converged: an accepted step gained < 1e-6 (relative), an exact fit, or no step is accepted
        done = (accept & (sse - sse_trial <= 1e-6 * sse)) | (sse <= 1e-15 * syy) | (lam >= 1e10)
        ab = torch.where(accept[:, None], trial, ab)
        sse = torch.where(accept, sse_trial, sse)
        lam = torch.where(accept, lam * 0.3, lam * 10.0).clamp(1e-12, 1e12)
        if bool(done.all()):
            break
    return ab


def _final_fit(
    fn: SymbolicFunction, x: torch.Tensor, y: torch.Tensor, ab: torch.Tensor, rel_var: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(c, d) by least squares and R² on all points: x, y (E, N), ab (E, 2) -> (E, 4), (E,).

    Edges whose (a, b) is not admissible on every point get the constant fit and R² = 0.
    """
    z = ab[:, :1] * x + ab[:, 1:]  # (E, N)
    r2 = _corr2(fn, z, y - y.mean(1, keepdim=True), rel_var)  # (E,)
    fz = torch.nan_to_num(fn.torch(z), nan=0.0, posinf=0.0, neginf=0.0)
    fc = fz - fz.mean(1, keepdim=True)
    c = torch.linalg.vecdot(fc, y) / torch.linalg.vecdot(fc, fc).clamp(min=1e-300)
    c = torch.where(r2 > 0, c, torch.zeros_like(c))  # f constant on the data: c = 0
    d = y.mean(1) - c * fz.mean(1)
    p = torch.cat([ab, c[:, None], d[:, None]], 1)
    ok = r2 >= 0
    return torch.where(ok[:, None], p, _constant_params(y.mean(1))), r2.clamp(min=0.0)
