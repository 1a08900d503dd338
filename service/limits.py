"""Memory: a job's estimated peak from its config, checked at submission, and each worker process's cap.

A job within every per-field limit (width 256 x 6 layers, grid 200) still needed gigabytes: memory
grows with edges x basis functions (the parameters, held many times over by LBFGS's history) and with
rows x layer inputs x basis functions (the features every training step keeps for its backward). So
`check_job_memory` refuses a job whose estimate passes `Settings.max_job_memory_mb` (422 naming the
field that drives it), and `cap_process_memory` bounds each worker process's address space, so that
a job the estimate misjudged fails with an allocation error instead of starving the machine.

The estimate follows kan_core's storage (per edge: G + k coefficients, the base weight, the spline
scale, 4 affine parameters, 2 masks; `kan_core.spline_edges` saves (I, K+1, B) features and their
derivative per layer) and errs high; it is not a measurement.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.config import Settings
from service.errors import InvalidInput

log = logging.getLogger(__name__)

MB = 2**20
PER_EDGE_EXTRA = 8  # numbers per edge besides its spline coefficients
LBFGS_COPIES = 26   # parameters + gradient + 2 x history 10 + the optimiser's flat buffers
ADAM_COPIES = 6     # parameters + gradient + 2 moments + slack
# per training step, features of every row: kept for the backward with their derivative, the
# backward's buffer, and with LBFGS the line search's extra evaluations (measured: [2, 64, 64, 1],
# grid 50, 800 rows, 4 LBFGS steps grew the process by 377 MB, estimated 408; [2, 128, 128, 1],
# grid 100, Adam: 493 MB, estimated 618)
FEATURE_COPIES = {"LBFGS": 8, "Adam": 3}


@dataclass(frozen=True)
class MemoryEstimate:
    mb: float
    field: str   # the request field that drives the peak
    what: str    # the stage, in words


def estimate_job_memory(config: Mapping[str, Any], n_train: int, n_test: int,
                        stage_field: Callable[[int], str] = lambda i: f"stages[{i}]") -> MemoryEstimate:
    """Peak memory of a pipeline job (`{"model": ..., "stages": [...]}`, as stored in Job.config) on a
    dataset with these row counts; `stage_field(i)` names stage i in the request."""
    model = config["model"]
    width: Sequence[int] = model["width"]
    k = int(model.get("k", 3))
    grid, grid_field = int(model["grid"]), "model.grid"
    nbytes = 4 if model.get("dtype") == "float32" else 8
    edges = sum(a * b for a, b in zip(width[:-1], width[1:]))
    inputs = sum(width[:-1])  # layer inputs: what the features scale with
    best = MemoryEstimate(0.0, "model.width", "")
    for i, stage in enumerate(config["stages"]):
        kind = stage.get("kind")
        if kind == "refine":
            grid, grid_field = int(stage["grid"]), f"{stage_field(i)}.grid"
        basis = grid + k + 1
        params = edges * (basis + PER_EDGE_EXTRA) * nbytes
        features = inputs * basis * nbytes  # per row
        if kind == "train":
            rows = n_train if stage.get("batch", -1) == -1 else min(int(stage["batch"]), n_train)
            opt = "LBFGS" if stage.get("opt", "LBFGS") == "LBFGS" else "Adam"
            copies = LBFGS_COPIES if opt == "LBFGS" else ADAM_COPIES
            weights, activations = params * copies, FEATURE_COPIES[opt] * rows * features + n_test * features
            field = f"{stage_field(i)}.batch" if activations > weights else _param_field(width, basis, grid_field)
            mb, what = (weights + activations) / MB, f"training stage {stage.get('name', i)!r}"
        elif kind == "symbolic":  # edge samples (E, N) and the fit's temporaries
            mb, what = (2 * params + 4 * edges * n_train * nbytes) / MB, "symbolic fitting"
            field = _param_field(width, basis, grid_field)
        else:  # prune, refine, polish: a copy of the network and one forward pass
            mb, what = (3 * params + 2 * (n_train + n_test) * features) / MB, f"stage {stage.get('name', i)!r}"
            field = _param_field(width, basis, grid_field)
        if mb > best.mb:
            best = MemoryEstimate(mb, field, what)
    return best


def _param_field(width: Sequence[int], basis: int, grid_field: str) -> str:
    # edges x basis functions: name the factor that is the larger one
    return "model.width" if max(width) >= basis else grid_field


def check_job_memory(settings: Settings, config: Mapping[str, Any], n_train: int, n_test: int,
                     stage_field: Callable[[int], str] = lambda i: f"stages[{i}]", model_field: str | None = None,
                     ) -> None:
    """InvalidInput (422) when the job's estimated peak passes `settings.max_job_memory_mb` (0: no check).
    `model_field` names the network in a request that has no `model` (a symbolic job's)."""
    if not settings.max_job_memory_mb:
        return
    estimate = estimate_job_memory(config, n_train, n_test, stage_field)
    field = model_field if model_field and estimate.field.startswith("model.") else estimate.field
    if estimate.mb > settings.max_job_memory_mb:
        raise InvalidInput(
            f"this job would need about {estimate.mb:,.0f} MB in {estimate.what}, over the limit of "
            f"{settings.max_job_memory_mb:,} MB (KAN_MAX_JOB_MEMORY_MB): use fewer or narrower layers, a smaller "
            "grid, a training batch, or Adam instead of LBFGS",
            field=field, estimated_mb=round(estimate.mb), max_job_memory_mb=settings.max_job_memory_mb,
        )


def cap_process_memory(settings: Settings) -> None:
    """Cap this (worker) process's address space at `settings.worker_memory_limit_mb` (RLIMIT_AS): past
    it an allocation fails (torch: RuntimeError "can't allocate memory", numpy: MemoryError), the job
    fails with that error and the worker lives on. Not on GPU workers, where CUDA reserves far more
    address space than it uses; nor where the setting is 0."""
    if not settings.worker_memory_limit_mb or settings.gpu_worker:
        return
    limit = settings.worker_memory_limit_mb * MB
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    log.info("worker address space capped at %d MB", limit // MB)
