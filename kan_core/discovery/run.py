"""Running one candidate: run its pipeline, then evaluate the formula it wrote.

The network is trained once (the stages before the first symbolic stage); the symbolic stage and
the ones after it run on copies of it (`continue_pipeline`), once as configured and once more per
``retry_weight_simple`` value while the formula is not exact. Each formula is simplified, its
constants refitted on the data, and measured in the original units.

Everything is fitted on the training rows less a validation share (`kan_core.validation`); every
choice (variants, early stops) reads the validation rows, and the test split only measures the
result. A formula whose residual is white noise is at the noise floor: no further variant is tried
and its constants keep only the digits the noise allows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from typing import Any

import numpy as np
import sympy
import torch

from kan_core.constants import refit_constants, round_constants, sharpen_constants
from kan_core.data import Dataset
from kan_core.discovery.records import (
    CandidateResult,
    CandidateSpec,
    DiscoveryEvent,
    Status,
    _require,
    check_var_names,
)
from kan_core.discovery.select import at_noise_floor, choose, is_exact, pareto_front
from kan_core.discovery.simplify import polish_formula
from kan_core.discovery.structured import solve_dataset
from kan_core.errors import KANError, TrainingCancelled
from kan_core.formula import evaluate_formula, formula_complexity, formula_latex
from kan_core.forms import judge_forms
from kan_core.metrics import fit_metrics, rmse
from kan_core.pipeline import PipelineResult, ProgressEvent, SymbolicStage, continue_pipeline, run_pipeline
from kan_core.sparse import fit_sparse
from kan_core.validation import ValidationSplit, noise_floor, round_to_noise, train_arrays, validation_split


def run_candidate(
    dataset: Dataset,
    spec: CandidateSpec,
    on_progress: Callable[[DiscoveryEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    var_names: Sequence[str] | None = None,
    max_seconds: float | None = None,
) -> CandidateResult:
    """Run ``spec`` on ``dataset`` and return its formula with the formula's test metrics.

    The stages before the first symbolic stage train the network once; the symbolic stage and
    the ones after it run on a copy, first as configured and then, while the formula does not fit
    the test split exactly (R² < `EXACT_R2`), once more per ``spec.retry_weight_simple`` value
    (an accuracy-leaning auto_symbolic finds ``arctanh`` where the default prefers ``x``); the
    variant `choose` prefers is returned.

    Never raises for a failing run: a crash gives ``status="failed"`` (``error`` says why), a run
    without a fully symbolic network ``"no_formula"``, ``should_stop()`` returning True
    ``"cancelled"``, and running past ``max_seconds`` ``"timeout"`` (both checked before every
    training step, so the overshoot is one step plus the non-interruptible symbolic fit and
    formula cleaning). Bad arguments (not a Dataset / CandidateSpec, wrong names) raise ValueError.
    """
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if not isinstance(spec, CandidateSpec):
        raise ValueError(f"spec must be a CandidateSpec, got {type(spec).__name__}")
    if dataset.n_out != 1:
        raise ValueError(f"discovery needs a single target, the dataset has {dataset.n_out}")
    names = check_var_names(var_names, dataset.n_var)
    _require(max_seconds is None or max_seconds > 0, f"max_seconds must be None or > 0, got {max_seconds!r}")
    start = time.monotonic()
    deadline = None if max_seconds is None else start + max_seconds
    timed_out = [False]

    def stop() -> bool:
        if should_stop is not None and should_stop():
            return True
        if deadline is not None and time.monotonic() >= deadline:
            timed_out[0] = True
            return True
        return False

    def progress(event: ProgressEvent) -> None:
        if on_progress is not None:
            on_progress(DiscoveryEvent("step", 0, 1, spec.id, time.monotonic() - start, None, asdict(event)))

    def result(status: Status, **kw: Any) -> CandidateResult:
        return CandidateResult(spec.id, spec.family, status, time.monotonic() - start, names, label=spec.label, **kw)

    held = validation_split(dataset)
    full, dataset = dataset, held.search  # from here on "test" is the validation rows

    def finish(res: CandidateResult) -> CandidateResult:
        return _finish(res, full, held, names)

    if spec.family == "sparse":
        return _run_sparse(dataset, names, stop, timed_out, result, start, deadline, finish)
    if spec.family == "structure":
        return finish(_run_structure(dataset, spec, names, stop, timed_out, result, start, deadline, on_progress))
    pipe = spec.pipeline
    split = next((i for i, s in enumerate(pipe.stages) if isinstance(s, SymbolicStage)), len(pipe.stages))
    head_config, tail = replace(pipe, stages=pipe.stages[:split]), pipe.stages[split:]
    variants: list[CandidateResult] = []
    try:
        head = run_pipeline(dataset, head_config, on_progress=progress, should_stop=stop, var_names=names)
        for weight in (None, *spec.retry_weight_simple):
            if variants and (variants[0].status != "ok" or any(is_exact(v) or at_noise_floor(v) for v in variants)):
                break
            run = continue_pipeline(dataset, head, _retuned(tail, weight), on_progress=progress,
                                    should_stop=stop) if tail else head
            variants.append(finish(_evaluate(run, dataset, names, result, stop)))
            if not tail:
                break
    except TrainingCancelled:
        if not variants:
            return result("timeout" if timed_out[0] else "cancelled")
    except (KANError, ValueError, RuntimeError, ArithmeticError, np.linalg.LinAlgError) as exc:
        if not variants:
            return result("failed", error=f"{type(exc).__name__}: {exc}"[:500])
    best = choose(pareto_front(variants))
    return replace(best if best is not None else variants[0], seconds=time.monotonic() - start)


SPARSE_SECONDS = 20.0  # the sparse family's own time limit (it usually needs a few seconds)...
SPARSE_SHARE = 0.2  # ...and at most this share of the time left
SPARSE_EVALUATED = 3  # of its exact candidates, this many are polished and measured


def _run_sparse(dataset: Dataset, names: tuple[str, ...], stop: Callable[[], bool], timed_out: list[bool],
                result: Callable[..., CandidateResult], start: float, deadline: float | None,
                finish: Callable[[CandidateResult], CandidateResult]) -> CandidateResult:
    """The "sparse" family: `kan_core.sparse.fit_sparse` on the training split (no network). Its
    exact candidates are polished, refitted and measured like any formula and `choose` picks one;
    without an exact one, only the closest fit is measured, its constants rounded (an approximation:
    polishing it would cost more than it is worth). When that closest fit is at the noise floor,
    the fewest terms that reach the floor are searched for (`_fewest_terms`, in time of its own):
    that fit is measured instead; without one the closest fit is no early stop (its terms may be
    fitting the noise), so ``noise_rmse`` is cleared."""
    x = dataset.train_input.detach().to("cpu", torch.float64).numpy()
    y = dataset.train_label.detach().to("cpu", torch.float64).numpy()[:, 0]
    seconds = SPARSE_SECONDS if deadline is None else min(SPARSE_SECONDS, SPARSE_SHARE * (deadline - start))
    fewest = None
    try:
        fits = fit_sparse(x, y, names, should_stop=stop, max_seconds=max(seconds, 0.01))
        noisy = bool(fits) and not fits[0].exact and noise_floor(fits[0].expr, names, x, y) is not None
        if noisy:
            now = time.monotonic()
            extra = SPARSE_SECONDS if deadline is None else min(SPARSE_SECONDS, SPARSE_SHARE * (deadline - now))
            fewest = _fewest_terms(x, y, names, max(f.n_terms for f in fits), stop, now + extra)
            fits = fits if fewest is None else [fewest, *fits]
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return result("failed", error=f"{type(exc).__name__}: {exc}"[:500])
    if not fits:
        if stop():
            return result("timeout" if timed_out[0] else "cancelled")
        return result("no_formula")
    variants = []
    for fit in fits[:SPARSE_EVALUATED] if fits[0].exact else fits[:1]:
        if variants and stop():
            break
        try:
            expr = (_final_formula(fit.expr, names, dataset, x, y, stop)
                    if fit.exact else round_constants(fit.expr, names, x, y))
            metrics = formula_metrics(expr, names, dataset)
        except (ValueError, TypeError, ArithmeticError, RecursionError):
            continue
        if metrics["test_rmse"] is not None:
            variants.append(finish(result("ok", formula=str(expr), latex=formula_latex(expr),
                                          complexity=formula_complexity(expr), **metrics)))
        if variants and (is_exact(variants[-1]) or at_noise_floor(variants[-1])):
            break
    best = choose(pareto_front(variants))
    if best is None:
        return result("no_formula")
    if noisy and fewest is None:
        best = replace(best, noise_rmse=None)
    return replace(best, seconds=time.monotonic() - start)


FEWEST_CANDIDATES = 24  # fits of each size `_fewest_terms` looks at (ranked by error, the simple ones come late)


def _fewest_terms(x, y, names: tuple[str, ...], max_terms: int, stop: Callable[[], bool], until: float):
    """On noisy data: `fit_sparse` again with at most 1, 2, ... terms (fewer than ``max_terms``)
    until a fit's residual (constants refitted on y) is white noise (`kan_core.validation.noise_floor`);
    of those, the one with the fewest constants once rounded to the noise (`round_to_noise`: a
    coefficient 0.998 that the noise cannot tell from 1 is no constant), then the fewest nodes;
    None by ``until``. More terms than that would fit the noise."""
    for k in range(1, max_terms):
        left = until - time.monotonic()
        if stop() or left <= 0:
            break
        floor = []
        for fit in fit_sparse(x, y, names, max_terms=k, should_stop=stop, max_seconds=left,
                              max_results=FEWEST_CANDIDATES):
            try:  # a fit through a target transform is biased by the noise: refitted on y itself first
                expr = refit_constants(fit.expr, names, x, y).expr
                sigma = noise_floor(expr, names, x, y)
                if sigma is not None:
                    expr = round_to_noise(expr, names, x, y, sigma)
            except (ValueError, TypeError, ArithmeticError, RecursionError, np.linalg.LinAlgError):
                continue
            if sigma is not None:
                floor.append(replace(fit, expr=expr, complexity=formula_complexity(expr)))
            if time.monotonic() >= until:
                break
        if floor:
            return min(floor, key=lambda f: (len(f.expr.atoms(sympy.Float)), f.complexity))
    return None


STRUCTURE_SECONDS = 60.0  # the structure family's own time limit, so later candidates still run


def _run_structure(dataset: Dataset, spec: CandidateSpec, names: tuple[str, ...], stop: Callable[[], bool],
                   timed_out: list[bool], result: Callable[..., CandidateResult], start: float,
                   deadline: float | None, on_progress: Callable[[DiscoveryEvent], None] | None) -> CandidateResult:
    """The "structure" family (`kan_core.discovery.structured`): split the problem by the structure
    of a surrogate, solve the parts (leaves: this module's candidates), compose; the formula is
    polished, refitted and measured like any other and carries its tree in ``structure``."""
    seconds = STRUCTURE_SECONDS if deadline is None else min(STRUCTURE_SECONDS, deadline - time.monotonic())
    x = dataset.train_input.detach().to("cpu", torch.float64).numpy()
    y = dataset.train_label.detach().to("cpu", torch.float64).numpy()[:, 0]
    try:
        out = solve_dataset(dataset, names, max_seconds=max(seconds, 1e-3), should_stop=stop, run_one=run_candidate,
                            seed=spec.pipeline.model.seed, on_progress=on_progress)
        if out.expr is None:
            return result("no_formula", structure=out.tree)
        expr = _final_formula(out.expr, names, dataset, x, y, stop)
        metrics = formula_metrics(expr, names, dataset)
    except TrainingCancelled:  # cancelled only when the caller asked; the family's own limit is a timeout
        return result("cancelled" if stop() and not timed_out[0] else "timeout")
    except (KANError, ValueError, TypeError, RuntimeError, ArithmeticError, RecursionError,
            np.linalg.LinAlgError) as exc:
        return result("failed", error=f"{type(exc).__name__}: {exc}"[:500])
    if metrics["test_rmse"] is None:
        return result("failed", error="the formula is not finite on the test split", formula=str(expr),
                      structure=out.tree)
    tree = {**out.tree, "formula": str(expr)}
    return result("ok", formula=str(expr), latex=formula_latex(expr), complexity=formula_complexity(expr),
                  structure=tree, **metrics)


def _retuned(tail: tuple, weight: float | None) -> tuple:
    """``tail`` with its first (symbolic) stage's ``weight_simple`` set to ``weight`` (None: as is)."""
    if weight is None:
        return tail
    first = replace(tail[0], weight_simple=weight, name=f"{tail[0].name}_w{weight:g}")
    return (first, *tail[1:])


def _evaluate(run: PipelineResult, dataset: Dataset, names: tuple[str, ...], result,
              stop: Callable[[], bool]) -> CandidateResult:
    net_rmse = _network_rmse(run, dataset)
    if not run.formulas:
        return result("no_formula", network_test_rmse=net_rmse)
    try:
        x = dataset.train_input.detach().to("cpu", torch.float64).numpy()
        y = dataset.train_label.detach().to("cpu", torch.float64).numpy()[:, 0]
        expr = _final_formula(run.formulas[0], names, dataset, x, y, stop)
        metrics = formula_metrics(expr, names, dataset)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return result("failed", error=f"formula: {type(exc).__name__}: {exc}"[:500], network_test_rmse=net_rmse)
    if metrics["test_rmse"] is None:
        return result("failed", error="the formula is not finite on the test split", formula=str(expr),
                      network_test_rmse=net_rmse)
    return result("ok", formula=str(expr), latex=formula_latex(expr), complexity=formula_complexity(expr),
                  network_test_rmse=net_rmse, **metrics)


def _final_formula(expr: sympy.Expr, names: Sequence[str], dataset: Dataset, x: np.ndarray, y: np.ndarray,
                   stop: Callable[[], bool]) -> sympy.Expr:
    """A fitted formula made final: `polish_formula`, `sharpen_constants` on the training rows ``(x, y)``,
    then the judge's forms once more (`kan_core.forms.judge_forms`: the constant passes distribute
    products, ``a*n/(1 - a*n/3) -> -3*a*n/(a*n - 3)``)."""
    out = sharpen_constants(polish_formula(expr, names, dataset, should_stop=stop), names, x, y)
    return out if stop() else judge_forms(out, list(names), dataset.test_input.detach().to("cpu", torch.float64).numpy())


def _finish(res: CandidateResult, full: Dataset, split: ValidationSplit, names: tuple[str, ...]) -> CandidateResult:
    """``res`` (measured on ``split.search``: its "test" metrics are the validation rows') with the
    validation metrics moved to ``val_*``, the test and training metrics measured on ``full``, and
    the noise floor: when the formula's residual on the training rows is white noise, its level goes
    to ``noise_rmse`` and the constants are rounded to the digits it allows (`round_to_noise`), the
    result written in the judge's forms again."""
    if not res.has_formula:
        return res
    expr = res.expr
    x_fit, y_fit = train_arrays(split.search)
    x_all, y_all = train_arrays(full)
    try:
        sigma = noise_floor(expr, names, x_all, y_all)
        if sigma is not None:
            rounded = judge_forms(round_to_noise(expr, names, x_fit, y_fit, sigma), list(names), x_all)  # as _final_formula
            if rounded != expr and formula_metrics(rounded, names, split.search)["test_rmse"] is not None:
                expr = rounded
        val = formula_metrics(expr, names, split.search)
        metrics = formula_metrics(expr, names, full)
    except (ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        return replace(res, status="failed", error=f"formula: {type(exc).__name__}: {exc}"[:500], test_rmse=None)
    if val["test_rmse"] is None:
        return replace(res, status="failed", error="the formula is not finite on the validation rows", test_rmse=None)
    if metrics["test_rmse"] is None:
        return replace(res, status="failed", error="the formula is not finite on the test split", test_rmse=None)
    return replace(res, formula=str(expr), latex=formula_latex(expr), complexity=formula_complexity(expr),
                   val_rmse=val["test_rmse"], val_r2=val["test_r2"], noise_rmse=sigma, **metrics)


def measure_formula(res: CandidateResult, dataset: Dataset, names: Sequence[str]) -> CandidateResult:
    """``res``'s formula (over ``names``, not yet measured) measured on ``dataset`` as `run_candidate`
    measures its own (validation rows of `validation_split`, test and training metrics, noise floor)."""
    split = validation_split(dataset)
    expr = res.expr
    first = formula_metrics(expr, names, split.search)
    if first["test_rmse"] is None:
        return replace(res, status="failed", error="the formula is not finite on the validation rows")
    return _finish(replace(res, complexity=formula_complexity(expr), **first), dataset, split, tuple(names))


def _network_rmse(run: PipelineResult, dataset: Dataset) -> float | None:
    with torch.no_grad():
        x = dataset.test_input.to(dtype=run.model.dtype, device=run.model.device)
        pred = run.transform.predict(run.model, x) if run.transform is not None else run.model(x)
    e = rmse(pred, dataset.test_label)
    return e if np.isfinite(e) else None


def formula_metrics(expr: sympy.Expr, var_names: Sequence[str], dataset: Dataset) -> dict[str, float | None]:
    """RMSE and R² (`kan_core.metrics`) of ``expr`` on both splits of ``dataset`` (single target);
    None where the formula is not finite on some row."""
    out: dict[str, float | None] = {}
    for split, x, y in (("test", dataset.test_input, dataset.test_label),
                        ("train", dataset.train_input, dataset.train_label)):
        m = fit_metrics(evaluate_formula(expr, list(var_names), x), y[:, 0])
        out[f"{split}_rmse"], out[f"{split}_r2"] = m["rmse"], m["r2"]
    return out
