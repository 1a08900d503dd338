"""Support search for `kan_core.sparse`: which few dictionary columns fit a target.

A beam search of forward selection with orthogonal projections (exact subsets of up to
``max_terms`` columns), swap moves on each support it finds, and sequentially thresholded least
squares (SINDy) for the case where the whole dictionary fits but a greedy first step was wrong.
All work on centred columns scaled to unit norm, on at most SELECT_ROWS evenly spaced rows.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import scipy.linalg

from kan_core.sparse_terms import Dictionary

SELECT_ROWS = 400  # rows used by the support search (evenly spaced); refits use every row
STLSQ_MAX_COLUMNS = 250  # thresholded least squares only on dictionaries up to this wide
MIN_PROJECTED_NORM = 1e-7  # a column this close to the span of the chosen ones is skipped



def _prepare(A: np.ndarray, t: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``rows`` of A and t, centred (the constant is always in the model), columns scaled to
    unit norm; ``ok``: the columns that are not constant."""
    A = A[rows] - A[rows].mean(axis=0)
    t = t[rows] - t[rows].mean()
    norms = np.linalg.norm(A, axis=0)
    ok = norms > 1e-12 * (1.0 + norms.max(initial=0.0))
    return np.where(ok, A / np.where(ok, norms, 1.0), 0.0), t, ok


def beam_search(
    A: np.ndarray, t: np.ndarray, max_terms: int, beam: int, stop: Callable[[], bool]
) -> list[tuple[int, ...]]:
    """Supports (sorted column indices) of sizes 1..max_terms with small least-squares residual
    for ``t ~ c_0 + A[:, S] c`` on at most SELECT_ROWS rows: the best of each size along a beam of
    forward-selection paths (each path keeps A projected off its chosen columns); stops after the
    first size that fits t to rounding error."""
    n = A.shape[0]
    rows = np.linspace(0, n - 1, min(n, SELECT_ROWS)).round().astype(int)
    A, t, ok = _prepare(A, t, rows)
    tss = float(t @ t)
    if tss <= 1e-300 or A.shape[1] == 0:
        return []
    # a state: (support, A projected off the support's span, the squared norms of those columns, residual)
    states: list[tuple[tuple[int, ...], np.ndarray, np.ndarray, np.ndarray]] = [((), A, ok.astype(float), t)]
    found: list[tuple[int, ...]] = []
    for _ in range(max_terms):
        if stop() or not states:
            break
        pool: dict[tuple[int, ...], tuple[float, int, int]] = {}
        for s, (support, P, pn2, r) in enumerate(states):
            valid = ok & (pn2 > MIN_PROJECTED_NORM**2)
            valid[list(support)] = False
            score = np.where(valid, (r @ P) ** 2 / np.where(valid, pn2, 1.0), -1.0)
            k = min(beam, int(valid.sum()))
            for j in np.argpartition(-score, k - 1)[:k] if k else []:
                key = tuple(sorted((*support, int(j))))
                rss = float(r @ r) - float(score[j])
                if key not in pool or rss < pool[key][0]:
                    pool[key] = (rss, s, int(j))
        new = []
        for key, (_, s, j) in sorted(pool.items(), key=lambda kv: kv[1][0])[:beam]:
            _, P, pn2, r = states[s]
            q = P[:, j] / np.linalg.norm(P[:, j])  # (R,) the new direction
            qP = q @ P  # (D,)
            new.append((key, P - np.outer(q, qP), pn2 - qP**2, r - q * (q @ r)))
        states = new
        if not states:
            break
        found.append(states[0][0])
        if float(states[0][3] @ states[0][3]) <= 1e-20 * tss:
            return found
    # no exact path: swap moves on each support (a wrong early pick stays on every forward path)
    refined = [s for s in (_swap(A, t, ok, s, stop) for s in found if len(s) >= 2) if s not in found]
    return found + refined


def _best_addition(A: np.ndarray, t: np.ndarray, ok: np.ndarray, base: list[int]) -> tuple[float, int]:
    """(residual sum of squares, column) of the best column to add to ``base``; (inf, -1) if none."""
    if base:
        Q = np.linalg.qr(A[:, base])[0]  # (R, k)
        P, r = A - Q @ (Q.T @ A), t - Q @ (Q.T @ t)
    else:
        P, r = A, t
    pn2 = np.einsum("ij,ij->j", P, P)
    valid = ok & (pn2 > MIN_PROJECTED_NORM**2)
    valid[base] = False
    if not valid.any():
        return math.inf, -1
    score = np.where(valid, (r @ P) ** 2 / np.where(valid, pn2, 1.0), -1.0)
    j = int(np.argmax(score))
    return float(r @ r) - float(score[j]), j


def _swap(A: np.ndarray, t: np.ndarray, ok: np.ndarray, support: tuple[int, ...],
          stop: Callable[[], bool], rounds: int = 3) -> tuple[int, ...]:
    """``support`` after swap moves (drop one column, add the best other one) while they lower the
    residual, at most ``rounds`` passes."""
    best = list(support)
    best_rss = _best_addition(A, t, ok, best[:-1])[0] if len(best) > 1 else math.inf
    for _ in range(rounds):
        improved = False
        for i in range(len(best)):
            if stop():
                return tuple(sorted(best))
            base = best[:i] + best[i + 1:]
            rss, j = _best_addition(A, t, ok, base)
            if j >= 0 and j != best[i] and rss < best_rss * (1 - 1e-9):
                best, best_rss, improved = base + [j], rss, True
                break
        if not improved:
            break
    return tuple(sorted(best))


def _stlsq(A: np.ndarray, t: np.ndarray, max_terms: int, stop: Callable[[], bool]) -> list[tuple[int, ...]]:
    """Sequentially thresholded least squares (SINDy), for the case where the whole dictionary
    fits t exactly but forward selection took a wrong first step: from the full least-squares fit,
    drop the columns with small scaled coefficients while the fit stays exact. [] unless an exact
    support of at most ``max_terms`` columns comes out (or when the dictionary is too wide, or
    ``stop()`` turns True: it is asked before each least-squares solve)."""
    n, d = A.shape
    if d == 0 or d > STLSQ_MAX_COLUMNS or 1.5 * d > n:
        return []
    rows = np.linspace(0, n - 1, min(n, max(SELECT_ROWS, int(1.5 * d)))).round().astype(int)
    A, t, ok = _prepare(A, t, rows)
    limit = 1e-20 * float(t @ t)
    keep = np.flatnonzero(ok)
    coef = _lstsq(A[:, keep], t)
    r = t - A[:, keep] @ coef
    if float(r @ r) > limit:
        return []
    for thr in (1e-10, 1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        small = np.abs(coef) < thr * np.abs(coef).max()
        if not small.any():
            continue
        if stop():
            return []
        trial = keep[~small]
        c = _lstsq(A[:, trial], t)
        r = t - A[:, trial] @ c
        if float(r @ r) > limit:
            break
        keep, coef = trial, c
    return [tuple(int(j) for j in keep)] if 0 < len(keep) <= max_terms else []


def stlsq_mixed(cols: Dictionary, supports: list[tuple[int, ...]], t: np.ndarray,
                max_terms: int, stop: Callable[[], bool]) -> list[tuple[int, ...]]:
    """`_stlsq` on the whole dictionary where it is narrow enough; otherwise on its simplest terms
    plus every column the forward search picked: ``I1 + I2 + 2*sqrt(I1*I2)*cos(d)``, where the
    search finds the cosine term but approximates ``I1 + I2`` by other products."""
    if cols.values.shape[1] <= STLSQ_MAX_COLUMNS:
        return _stlsq(cols.values, t, max_terms, stop)
    picked = sorted({j for s in supports for j in s})
    low = np.flatnonzero(cols.tiers <= 1)
    if len(low) + len(picked) > STLSQ_MAX_COLUMNS:
        low = np.flatnonzero(cols.tiers == 0)
    sub = np.union1d(low, np.array(picked, dtype=int))
    if len(sub) > STLSQ_MAX_COLUMNS:
        return []
    return [tuple(int(sub[k]) for k in s) for s in _stlsq(cols.values[:, sub], t, max_terms, stop)]


def _lstsq(A: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Least squares by pivoted QR (LAPACK gelsy: several times faster than numpy's SVD here)."""
    return scipy.linalg.lstsq(A, t, lapack_driver="gelsy", check_finite=False)[0]
