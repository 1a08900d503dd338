"""A pykan-style facade, so that code written for pykan 0.2.8 reads almost as written::

    model = KAN(width=[2, 5, 1], grid=5, k=3, seed=0)
    model.fit(dataset, opt="LBFGS", steps=20, lamb=0.01, lamb_entropy=10)
    model = model.prune()
    model.auto_symbolic(lib=["x", "x^2", "exp", "sin"])
    model.fit(dataset, opt="LBFGS", steps=50)
    formula = model.symbolic_formula()[0][0]
    fig = model.plot()

Every method is a thin wrapper over the engine (`kan_core.model.KAN`, `train.fit`, `prune.prune`,
`symbolic`, `formula.symbolic_formula`, `plot.plot_png`). Differences from pykan: nothing is written
to disk (pykan saves checkpoints under ./model and figures under ./figures); ``plot`` returns a
matplotlib Figure; steps that need samples (prune, auto_symbolic, plot) use the training inputs of
the last ``fit``, where pykan uses the activations cached by the last forward pass.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sympy
import torch

from kan_core.data import Dataset, make_dataset
from kan_core.formula import symbolic_formula
from kan_core.functions import SEED_LIBRARY_NAMES
from kan_core.model import KAN as KANModule
from kan_core.plot import plot_png
from kan_core.prune import prune
from kan_core.symbolic import Candidate, EdgeChoice, auto_symbolic, fix_symbolic, suggest_symbolic
from kan_core.train import fit

DATASET_KEYS = ("train_input", "train_label", "test_input", "test_label")
# pykan fit options with no counterpart here (figures, custom losses and metrics): refused by name
PYKAN_ONLY_FIT_OPTIONS = frozenset({
    "save_fig", "img_folder", "save_fig_freq", "in_vars", "out_vars", "beta", "loss_fn", "metrics",
    "display_metrics", "singularity_avoiding", "y_th", "reg_metric",
})  # fmt: skip


def create_dataset(
    f: Callable[[torch.Tensor], torch.Tensor],
    n_var: int = 2,
    ranges: Sequence[float] | Sequence[Sequence[float]] = (-1.0, 1.0),
    train_num: int = 1000,
    test_num: int = 1000,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> dict[str, torch.Tensor]:
    """pykan's ``create_dataset``: inputs uniform in ``ranges``, labels ``f(inputs)`` ``(N, 1)``, as
    the dict ``{train_input, train_label, test_input, test_label}`` (`kan_core.data.make_dataset`)."""
    data = make_dataset(f, n_var, ranges, n_train=train_num, n_test=test_num, seed=seed, dtype=dtype, device=device)
    return {key: getattr(data, key) for key in DATASET_KEYS}


def as_dataset(dataset: Dataset | Mapping[str, Any], dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Dataset:
    """A kan_core `Dataset` from one, or from pykan's dict of tensors (the four `DATASET_KEYS`)."""
    if isinstance(dataset, Dataset):
        return dataset.to(dtype=dtype, device=device)
    if not isinstance(dataset, Mapping):
        raise ValueError(f"dataset must be a kan_core Dataset or a dict with {list(DATASET_KEYS)}, "
                         f"got {type(dataset).__name__}")
    missing = [k for k in DATASET_KEYS if k not in dataset]
    if missing:
        raise ValueError(f"dataset is missing {missing}")
    return Dataset.from_arrays(*(dataset[k] for k in DATASET_KEYS), dtype=dtype or torch.float64, device=device)


class KAN:
    """pykan's ``KAN`` over the engine's `kan_core.model.KAN` (``module``): same constructor
    arguments (``width``, ``grid``, ``k``, ``seed``; ``dtype``/``device`` and the engine's keyword
    arguments pass through), same method names. ``var_names``: names of the inputs in formulas and
    plots (default ``x_1 .. x_n``, as pykan). ``module``: wrap an existing engine network instead
    (``width`` and the rest are then ignored)."""

    def __init__(self, width: Sequence[int], grid: int = 5, k: int = 3, seed: int = 0, *,
                 var_names: Sequence[str] | None = None, module: KANModule | None = None, **kwargs: Any):
        if module is not None and not isinstance(module, KANModule):
            raise ValueError(f"module must be a kan_core.model.KAN, got {type(module).__name__}")
        self.module = module if module is not None else KANModule(width, grid, k, seed, **kwargs)
        self.var_names = None if var_names is None else list(var_names)
        self._x: torch.Tensor | None = None  # (B, n_0): the training inputs of the last fit

    # ------------------------------------------------------------------------------------------
    # the network

    @property
    def width(self) -> list[int]:
        return self.module.width

    def __call__(self, x: Any) -> torch.Tensor:
        """``x (B, n_0) -> (B, n_L)`` (converted to the model's dtype and device)."""
        return self.module(torch.as_tensor(x).to(dtype=self.module.dtype, device=self.module.device))

    forward = __call__

    def refine(self, new_grid: int) -> KAN:
        """A copy on a finer grid (pykan's ``refine``), computing the same function."""
        return self._wrap(self.module.refine(new_grid))

    def _wrap(self, module: KANModule) -> KAN:
        out = KAN(module.width, var_names=self.var_names, module=module)
        out._x = self._x
        return out

    def _samples(self, x: Any | None, what: str) -> torch.Tensor:
        if x is not None:
            return torch.as_tensor(x).to(dtype=self.module.dtype, device=self.module.device)
        if self._x is None:
            raise ValueError(f"{what} needs samples: call fit(dataset) first, or pass x")
        return self._x

    # ------------------------------------------------------------------------------------------
    # training, pruning, symbolic regression

    def fit(self, dataset: Dataset | Mapping[str, Any], opt: str = "LBFGS", steps: int = 100, log: int = 1,
            **kwargs: Any) -> dict[str, list[float]]:
        """Train in place (`kan_core.train.fit`; its keyword arguments: ``lamb``, ``lamb_entropy``,
        ``update_grid``, ``lr``, ``batch``...). Returns pykan's results dict of per-step RMSEs:
        ``train_loss``, ``test_loss``, ``reg``. ``log`` is accepted and ignored (nothing is printed); pykan's figure, loss and metric
        options (`PYKAN_ONLY_FIT_OPTIONS`) raise ValueError."""
        unsupported = sorted(PYKAN_ONLY_FIT_OPTIONS & set(kwargs))
        if unsupported:
            raise ValueError(f"pykan's fit options {unsupported} are not supported here (nothing is drawn or "
                             "written while training; the loss is the mean squared error)")
        data = as_dataset(dataset, self.module.dtype, self.module.device)
        history = fit(self.module, data, opt=opt, steps=steps, **kwargs)
        self._x = data.train_input
        return {"train_loss": list(history.train_rmse), "test_loss": list(history.test_rmse),
                "reg": list(history.reg)}

    def prune(self, node_th: float = 1e-2, edge_th: float = 3e-2, x: Any | None = None) -> KAN:
        """A smaller model (`kan_core.prune.prune` judged on the last fit's training inputs)."""
        return self._wrap(prune(self.module, self._samples(x, "prune"), node_th=node_th, edge_th=edge_th))

    def auto_symbolic(self, lib: Sequence[str] | None = None, weight_simple: float = 0.8, r2_threshold: float = 0.0,
                      verbose: int = 1, x: Any | None = None) -> list[EdgeChoice]:
        """Fix every spline edge to its best library function (`kan_core.symbolic.auto_symbolic`;
        ``lib`` default: the seed library). ``verbose`` is accepted and ignored: the choices are
        returned instead of printed."""
        return auto_symbolic(self.module, self._samples(x, "auto_symbolic"),
                             lib=list(SEED_LIBRARY_NAMES if lib is None else lib),
                             weight_simple=weight_simple, r2_threshold=r2_threshold)

    def suggest_symbolic(self, l: int, i: int, j: int, lib: Sequence[str] | None = None, topk: int = 5,
                         weight_simple: float = 0.8, x: Any | None = None) -> list[Candidate]:
        """The ``topk`` best functions for edge (l, i, j), best first."""
        return suggest_symbolic(self.module, self._samples(x, "suggest_symbolic"), l, i, j, lib=lib, topk=topk,
                                weight_simple=weight_simple)

    def fix_symbolic(self, l: int, i: int, j: int, fun_name: str, fit_params_bool: bool = True,
                     x: Any | None = None) -> Candidate:
        """Make edge (l, i, j) the function ``fun_name`` (affine parameters fitted unless
        ``fit_params_bool`` is False, as pykan)."""
        samples = self._samples(x, "fix_symbolic") if fit_params_bool else None
        return fix_symbolic(self.module, samples, l, i, j, fun_name, fit=fit_params_bool)

    def symbolic_formula(self, var: Sequence[str] | None = None, simplify: bool = True
                         ) -> tuple[list[sympy.Expr], list[sympy.Symbol]]:
        """pykan's pair ``(formulas, variables)``: one cleaned sympy expression per output
        (`kan_core.formula.symbolic_formula`) and the input symbols. Every active edge must be
        symbolic (ValueError naming a spline edge otherwise)."""
        names = list(var) if var is not None else self.var_names
        formulas = symbolic_formula(self.module, names, simplify=simplify)
        names = names if names is not None else [f"x_{i + 1}" for i in range(self.width[0])]
        return formulas, [sympy.Symbol(n) for n in names]

    def plot(self, beta: float = 3.0, title: str | None = None, in_vars: Sequence[str] | None = None,
             out_vars: Sequence[str] | None = None, x: Any | None = None) -> Any:
        """The network as a matplotlib ``Figure`` (`kan_core.plot.plot_png`: curves over the ranges
        the last fit's training inputs reach). No file is written and no pyplot state is touched."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.image import imread

        png = plot_png(self.module, self._samples(x, "plot"), in_vars or self.var_names, out_names=out_vars,
                       beta=beta, title=title)
        image = imread(io.BytesIO(png), format="png")  # (H, W, 4)
        height, width = image.shape[:2]
        fig = Figure(figsize=(width / 100, height / 100), dpi=100)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
        ax.imshow(image)
        ax.set_axis_off()
        return fig


__all__ = ["DATASET_KEYS", "KAN", "PYKAN_ONLY_FIT_OPTIONS", "as_dataset", "create_dataset"]
