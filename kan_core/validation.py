"""Honest model selection: a validation split carved from the training rows, and the noise floor.

Discovery chooses among candidates (and stops early) on validation rows taken from the training
split, so the test split only measures the formula it reports. On noisy data no formula fits to
numerical precision; the noise floor says when one is as good as the data allows: the formula's
residual on the training rows is white noise (its nearest-neighbour differences are as large as
the residual itself: a formula that misses part of the function leaves a smooth residual, whose
neighbours agree) and no larger than the target's own nearest-neighbour differences (an upper
bound on the noise: a wild formula's residual can look white too), and the noise level is that
residual's RMS. Constants are then rounded to the
digits the noise allows (a change within the constants' statistical uncertainty).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import sympy
import torch
from scipy.spatial import cKDTree

from kan_core.constants import refit_constants, round_constants
from kan_core.data import Dataset
from kan_core.formula import clean_constants, evaluate_formula

VALIDATION_FRACTION = 0.2  # of the training rows, held out for choosing among candidates
MIN_SPLIT_ROWS = 10  # below this many training rows no split is made (every row both fits and validates)
SPLIT_SEED = 0  # the split is a fixed permutation: the same dataset always splits the same way
WHITE_SPREAD = 4.0  # residual is noise when its neighbour-difference variance is at least 1 - 4/sqrt(N) of its
# variance (for white noise that ratio is 1 with a spread of about 1.4/sqrt(N): about 3 spreads below)
NEIGHBOUR_MARGIN = 1.3  # residual variance at most this times the target's neighbour-difference variance
MIN_NOISE = 1e-6  # noise below this share of std(y) is numerical: the exact-fit rules apply instead
MAX_NOISE_ROWS = 2000  # rows used by the whiteness test (evenly spaced when there are more)
SNAP_TOLS = (1e-2, 3e-3, 1e-3, 1e-4, 1e-6)  # loosest first: constants snapped to simple numbers if the noise allows


@dataclass(frozen=True)
class ValidationSplit:
    """``search``: a Dataset whose training split is the fitting rows and whose test split is the
    validation rows, both taken from the original *training* rows (``fit_rows`` and ``val_rows``
    index them); the original test rows are in neither."""

    search: Dataset
    fit_rows: np.ndarray  # (N_fit,) indices into the original training rows
    val_rows: np.ndarray  # (N_val,) indices into the original training rows


def validation_split(dataset: Dataset, fraction: float = VALIDATION_FRACTION) -> ValidationSplit:
    """Carve validation rows from ``dataset``'s training rows, deterministically (a fixed
    permutation). With fewer than MIN_SPLIT_ROWS training rows every row is used for both (too
    few to hold any out), and the test rows are still never touched."""
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if not 0 < fraction < 1:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    n = dataset.train_input.shape[0]
    if n < MIN_SPLIT_ROWS:
        rows = np.arange(n)
        return ValidationSplit(Dataset(dataset.train_input, dataset.train_label, dataset.train_input,
                                       dataset.train_label), rows, rows)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(1, int(round(fraction * n)))
    val_rows, fit_rows = np.sort(order[:n_val]), np.sort(order[n_val:])
    fit_t = torch.as_tensor(fit_rows, device=dataset.train_input.device)
    val_t = torch.as_tensor(val_rows, device=dataset.train_input.device)
    search = Dataset(dataset.train_input[fit_t], dataset.train_label[fit_t],
                     dataset.train_input[val_t], dataset.train_label[val_t])
    return ValidationSplit(search, fit_rows, val_rows)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def train_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """The training rows as float64 numpy: ``x (N, d)``, ``y (N,)`` (first target)."""
    return _numpy(dataset.train_input), _numpy(dataset.train_label)[:, 0]


def neighbour_noise(x: np.ndarray, r: np.ndarray) -> float:
    """Half the mean squared difference of ``r (N,)`` between each row of ``x (N, d)`` and its
    nearest neighbour (inputs scaled to unit spread): the variance of the part of ``r`` that
    neighbours do not share, i.e. of its noise."""
    x = np.asarray(x, dtype=np.float64)
    r = np.asarray(r, dtype=np.float64).reshape(-1)
    if x.shape[0] > MAX_NOISE_ROWS:
        rows = np.linspace(0, x.shape[0] - 1, MAX_NOISE_ROWS).round().astype(int)
        x, r = x[rows], r[rows]
    spread = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(spread > 0, spread, 1.0)
    _, idx = cKDTree(z).query(z, k=2)
    return float(0.5 * np.mean((r - r[idx[:, 1]]) ** 2))


def noise_floor(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray) -> float | None:
    """The noise level (RMS of the residual) when ``expr``'s residual on ``(x (N, d), y (N,))`` is
    white noise of at least MIN_NOISE * std(y), no larger than ``y``'s own nearest-neighbour
    differences allow; None when the residual still has structure (the formula misses part of the
    function), is too large, is numerical, or there are too few rows to tell."""
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if y.shape[0] < MIN_SPLIT_ROWS:
        return None
    with np.errstate(all="ignore"):
        r = y - evaluate_formula(expr, list(var_names), x)
    if not np.all(np.isfinite(r)):
        return None
    r = r - r.mean()
    var = float(np.mean(r ** 2))
    if var <= (MIN_NOISE * float(np.std(y))) ** 2:
        return None
    if var > NEIGHBOUR_MARGIN * neighbour_noise(x, y):
        return None
    white = max(0.5, 1 - WHITE_SPREAD / np.sqrt(min(y.shape[0], MAX_NOISE_ROWS)))
    return float(np.sqrt(var)) if neighbour_noise(x, r) >= white * var else None


def round_to_noise(expr: sympy.Expr, var_names: Sequence[str], x: np.ndarray, y: np.ndarray,
                   sigma: float) -> sympy.Expr:
    """``expr`` with constants that keep only the digits noise of std ``sigma`` allows: snapped to
    simple numbers (`clean_constants`, loosest tolerance first, the others refitted) or rounded (`round_constants`)
    while the RMSE on ``(x, y)`` grows by at most two standard errors of the fitted constants
    (RMSE² within ``4 sigma² p / N`` of the unrounded one, ``p`` constants)."""
    floats = expr.atoms(sympy.Float)
    if not floats or sigma <= 0:
        return expr
    y = np.asarray(y, dtype=np.float64).reshape(-1)

    def err(e: sympy.Expr) -> float:
        with np.errstate(all="ignore"):
            v = float(np.sqrt(np.mean((evaluate_formula(e, list(var_names), x) - y) ** 2)))
        return v if np.isfinite(v) else np.inf

    reference = err(expr)
    limit = float(np.sqrt(reference ** 2 + 4 * sigma ** 2 * len(floats) / max(y.shape[0], 1)))
    for tol in SNAP_TOLS:
        try:
            snapped = clean_constants(expr, digits=17, tol=tol)
            if snapped.atoms(sympy.Float):  # the constants left take up what the snapped ones gave
                snapped = refit_constants(snapped, var_names, x, y).expr
        except (ValueError, TypeError, ArithmeticError, RecursionError, np.linalg.LinAlgError):
            continue
        if snapped != expr and err(snapped) <= limit:
            expr = snapped
            break
    return round_constants(expr, var_names, x, y, abs_tol=limit)
