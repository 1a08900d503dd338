"""Training: `fit` (LBFGS or Adam on MSE + lamb * regulariser), with grid updates, per-step history,
a progress callback and cooperative cancellation. Semantics follow pykan 0.2.8's ``KAN.fit``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch

from kan_core import fast_objective
from kan_core.data import Dataset
from kan_core.edge_reg import add_edge_term
from kan_core.errors import NonFiniteLossError, TrainingCancelled
from kan_core.lbfgs import LBFGS
from kan_core.model import KAN
from kan_core.objective import mse


@dataclass(frozen=True)
class StepInfo:
    """Progress after one training step. ``step`` is the 0-based index of the step just done."""

    stage: str
    step: int
    steps: int
    train_rmse: float
    test_rmse: float
    reg: float


@dataclass
class History:
    """Per-step metrics of one `fit` call: RMSE on the training batch (at the optimiser's last loss
    evaluation of the step, as pykan reports it), RMSE on the test set after the step, regulariser."""

    stage: str = ""
    train_rmse: list[float] = field(default_factory=list)
    test_rmse: list[float] = field(default_factory=list)
    reg: list[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.train_rmse)

    @property
    def last(self) -> StepInfo | None:
        """The last step's metrics, None before the first step."""
        if not self.train_rmse:
            return None
        n = len(self.train_rmse)
        return StepInfo(self.stage, n - 1, n, self.train_rmse[-1], self.test_rmse[-1], self.reg[-1])


def regularizer(
    model: KAN,
    x: torch.Tensor,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    precise: bool = True,
) -> torch.Tensor:
    """The sparsity regulariser of the model on the batch ``x (B, n_0)``, ``B >= 2`` (see `fit`;
    ``precise``: the edge stds' covariance in float64, see `fit`'s ``precise_reg``)."""
    return forward_with_reg(model, x, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff, precise)[1]


def forward_with_reg(
    model: KAN,
    x: torch.Tensor,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    precise: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Model output ``(B, n_L)`` and regulariser (scalar) in one pass, one basis evaluation per
    layer: the training step's forward (see `fit` for the formula and ``precise_reg``). ``B >= 2``."""
    model._check_input(x)
    return _forward_with_reg(model, x, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff, precise)


def _forward_with_reg(
    model: KAN,
    x: torch.Tensor,
    lamb_l1: float,
    lamb_entropy: float,
    lamb_coef: float,
    lamb_coefdiff: float,
    precise: bool = True,
    u0: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``u0 (n_0,)``: ``x.std(0) + 0.1`` when the caller has it (fixed data: once per batch)."""
    reg = x.new_zeros(())
    for index, layer in enumerate(model.layers):
        y, edge_std = layer.forward_with_edge_std(x, precise)  # (B, O), (I, O)
        u = u0 if index == 0 and u0 is not None else x.std(0) + 0.1  # (I,)
        reg = add_edge_term(reg, edge_std, u, lamb_l1, lamb_entropy).reg
        if lamb_coef > 0 or lamb_coefdiff > 0:
            m = layer.mask * (1 - layer.sym_mask)  # (I, O): spline edges
            reg = reg + lamb_coef * (m * layer.coef.abs().mean(-1)).sum()
            reg = reg + lamb_coefdiff * (m * layer.coef.diff(dim=-1).abs().mean(-1)).sum()
        x = y
    return x, reg


def _forward(model: KAN, x: torch.Tensor) -> torch.Tensor:
    for layer in model.layers:
        x = layer(x)
    return x


def fit(
    model: KAN,
    dataset: Dataset,
    *,
    opt: Literal["LBFGS", "Adam"] = "LBFGS",
    steps: int = 100,
    lr: float = 1.0,
    batch: int = -1,
    lamb: float = 0.0,
    lamb_l1: float = 1.0,
    lamb_entropy: float = 2.0,
    lamb_coef: float = 0.0,
    lamb_coefdiff: float = 0.0,
    update_grid: bool = True,
    grid_update_num: int = 10,
    stop_grid_update_step: int = 50,
    start_grid_update_step: int = -1,
    lbfgs_max_iter: int = 20,
    precise_reg: bool | None = None,
    callback: Callable[[StepInfo], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    stage: str = "",
    seed: int = 0,
) -> History:
    """Train ``model`` in place on ``dataset`` for ``steps`` steps and return the per-step `History`.

    Objective: ``mean((model(x) - y)^2) + lamb * reg`` on the training batch. With
    ``A_ij = std_b(phi_ij(x_bi)) / (std_b(x_bi) + 0.1)`` per layer over the spline edges (0 on
    symbolic and masked edges; unbiased batch std, from `KANLayer.spline_edge_std`),
    ``p_row = A / (A.sum(1, keepdim) + 1)``, ``p_col = A / (A.sum(0, keepdim) + 1)`` and
    ``H(p, dim) = -mean(sum_dim(p * log2(p + 1e-4)))``::

        reg = sum_layers [ lamb_l1 * sum_ij A_ij + lamb_entropy * (H(p_row, 1) + H(p_col, 0))
                           + lamb_coef * sum_ij m_ij mean_k |coef_ijk|
                           + lamb_coefdiff * sum_ij m_ij mean_k |coef_ij(k+1) - coef_ijk| ]

    with ``m = mask * (1 - sym_mask)``. The regulariser is computed only when ``lamb > 0``.

    ``precise_reg``: compute the edge stds' feature covariance (``A``) in float64 whatever the
    model's dtype (True) or in the model's dtype (False); None (default) means True for LBFGS and
    False for Adam. For a nearly dead edge ``std^2 = w^T Cov w`` cancels ~8 digits, so in float32
    it is noise; LBFGS's line search compares objective values over tiny steps and needs them,
    Adam does not, and float64 accumulation about doubles the cost of a float32 step (see
    `kan_core.spline_edges.SplineEdges`; measurements in bench/RESULTS.md). A no-op for float64 models.

    Steps: ``opt="LBFGS"``: one ``torch.optim.LBFGS.step`` (strong-Wolfe line search, history 10,
    up to ``lbfgs_max_iter`` iterations); ``"Adam"``: one Adam update. ``batch=-1``: full batch;
    otherwise each step draws ``batch`` training (and as many test) samples without replacement
    from a generator seeded with ``seed``. Before step ``s``, when ``update_grid`` and
    ``start_grid_update_step <= s < stop_grid_update_step`` and ``s`` is a multiple of
    ``stop_grid_update_step // grid_update_num``, the grids are fit to the training batch.

    ``should_stop()`` is asked before every step: True raises `TrainingCancelled` (the model keeps
    the state of the last finished step). ``callback(StepInfo)`` runs after every step. A NaN or
    infinite loss restores the parameters and grids from before that step and raises
    `NonFiniteLossError`. Bad arguments raise ValueError.

    A network of plain layers whose symbolic functions have derivatives (``dtorch``), without the
    coefficient terms, takes `kan_core.fast_objective`'s objective: the same formula, its gradient
    by hand instead of autograd (a quarter to a third less time per evaluation of a small network;
    sums may round differently).
    """
    _check_fit_args(model, dataset, opt, steps, lr, batch, lamb, grid_update_num, lbfgs_max_iter,
                    (lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff))
    if precise_reg is None:
        precise_reg = opt == "LBFGS"  # the line search needs a smooth objective; see the docstring
    elif not isinstance(precise_reg, bool):
        raise ValueError(f"precise_reg must be a bool or None, got {precise_reg!r}")
    to_model = dict(dtype=model.dtype, device=model.device)
    train_x, train_y = dataset.train_input.to(**to_model), dataset.train_label.to(**to_model)
    test_x, test_y = dataset.test_input.to(**to_model), dataset.test_label.to(**to_model)
    n_train, n_test = train_x.shape[0], test_x.shape[0]
    full = batch == -1 or batch >= n_train
    gen = torch.Generator().manual_seed(int(seed))
    grid_every = max(1, stop_grid_update_step // grid_update_num)
    params = [p for p in model.parameters() if p.requires_grad]
    state = params + [layer.grid for layer in model.layers]  # what a failed step restores
    lbfgs = adam = None
    if opt == "LBFGS":  # torch.optim.LBFGS's algorithm, less work per evaluation (kan_core.lbfgs)
        lbfgs = LBFGS(params, lr=lr, max_iter=lbfgs_max_iter, history_size=10,
                      tolerance_grad=1e-32, tolerance_change=1e-32)
    else:
        adam = torch.optim.Adam(params, lr=lr)
    history = History(stage=stage)
    zero = train_x.new_zeros(())

    ended: tuple[int, ...] | None = None  # _versions(model) after the last LBFGS step
    first = model.layers[0]  # its input is the data: features computed once per batch, not per evaluation
    first.cache_fixed_inputs(True)
    try:
        for step in range(steps):
            if should_stop is not None and should_stop():
                raise TrainingCancelled(f"training cancelled before step {step}" + (f" of stage {stage!r}" if stage else ""))
            if full:
                x, y, tx, ty = train_x, train_y, test_x, test_y
            else:
                ids = torch.randperm(n_train, generator=gen)[:batch].to(train_x.device)
                tids = torch.randperm(n_test, generator=gen)[:batch].to(test_x.device)
                x, y, tx, ty = train_x[ids], train_y[ids], test_x[tids], test_y[tids]
            u0 = x.detach().std(0) + 0.1 if lamb > 0 else None  # (n_0,): the first layer's input scales
            saved = [t.detach().clone() for t in state]
            regrid = update_grid and step % grid_every == 0 and start_grid_update_step <= step < stop_grid_update_step
            if regrid:
                model.update_grid(x)

            last: dict[str, torch.Tensor] = {}
            fast = fast_objective.supports(model, lamb, lamb_coef, lamb_coefdiff)  # gradient by hand, no autograd

            def closure() -> torch.Tensor:
                if lbfgs is None:  # (LBFGS zeroes its flat gradient buffer itself)
                    for p in params:  # (not optimizer.zero_grad: its torch._dynamo guard costs more per call)
                        p.grad = None
                if fast:
                    objective, last["mse"], last["reg"] = fast_objective.objective(
                        model, x, y, lamb, lamb_l1, lamb_entropy, precise_reg, u0)
                    return objective
                if lamb > 0:
                    pred, reg = _forward_with_reg(model, x, lamb_l1, lamb_entropy, lamb_coef, lamb_coefdiff,
                                                  precise_reg, u0)
                else:
                    pred, reg = _forward(model, x), zero
                loss = mse(pred, y)
                objective = loss + lamb * reg if lamb > 0 else loss
                if objective.requires_grad:  # a model whose edges are all masked has nothing to train
                    objective.backward()
                last["mse"], last["reg"] = loss.detach(), reg.detach()
                return objective

            if lbfgs is not None:
                # the step starts where the last one ended: its last evaluation is reused when
                # nothing changed since (full batch, no grid update, no tensor of the model written)
                lbfgs.step(closure, reuse=full and not regrid and ended == _versions(model))
                if lbfgs.evals == 0:  # the history reports the objective at this point
                    closure()
                ended = _versions(model)
            else:
                adam.step(closure)
            with torch.no_grad():
                test_mse = (_forward(model, tx) - ty).pow(2).mean()
            train_mse, test_mse, reg = torch.stack([last["mse"], test_mse, last["reg"]]).tolist()
            if not (math.isfinite(train_mse) and math.isfinite(test_mse)):
                with torch.no_grad():
                    for t, s in zip(state, saved):
                        t.copy_(s)
                raise NonFiniteLossError(step, stage, train_mse if not math.isfinite(train_mse) else test_mse)
            history.train_rmse.append(math.sqrt(train_mse))
            history.test_rmse.append(math.sqrt(test_mse))
            history.reg.append(reg)
            if callback is not None:
                callback(StepInfo(stage, step, steps, history.train_rmse[-1], history.test_rmse[-1], reg))
    finally:
        first.cache_fixed_inputs(False)
        if lbfgs is not None:
            lbfgs.release()
    return history


def _versions(model: KAN) -> tuple[int, ...]:
    """Version counters of the model's parameters and buffers: any in-place write changes one."""
    return tuple(t._version for t in (*model.parameters(), *model.buffers()))


def _check_fit_args(
    model: KAN,
    dataset: Dataset,
    opt: str,
    steps: int,
    lr: float,
    batch: int,
    lamb: float,
    grid_update_num: int,
    lbfgs_max_iter: int,
    lambs: tuple[float, ...],
) -> None:
    if not isinstance(model, KAN):
        raise ValueError(f"model must be a KAN, got {type(model).__name__}")
    if not isinstance(dataset, Dataset):
        raise ValueError(f"dataset must be a kan_core Dataset, got {type(dataset).__name__}")
    if dataset.n_var != model.width[0] or dataset.n_out != model.width[-1]:
        raise ValueError(
            f"dataset has {dataset.n_var} inputs and {dataset.n_out} outputs, "
            f"the model {model.width[0]} and {model.width[-1]}"
        )
    if opt not in ("LBFGS", "Adam"):
        raise ValueError(f"opt must be 'LBFGS' or 'Adam', got {opt!r}")
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if not isinstance(batch, int) or not (batch == -1 or batch >= 1):
        raise ValueError(f"batch must be -1 (full batch) or an integer >= 1, got {batch!r}")
    if lamb > 0 and (batch == 1 or dataset.train_input.shape[0] < 2):
        raise ValueError("the regulariser (lamb > 0) needs batches of at least 2 samples")
    for name, v in zip(("lamb", "lamb_l1", "lamb_entropy", "lamb_coef", "lamb_coefdiff"), (lamb, *lambs)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if not isinstance(grid_update_num, int) or grid_update_num < 1:
        raise ValueError(f"grid_update_num must be an integer >= 1, got {grid_update_num!r}")
    if not isinstance(lbfgs_max_iter, int) or lbfgs_max_iter < 1:
        raise ValueError(f"lbfgs_max_iter must be an integer >= 1, got {lbfgs_max_iter!r}")
