"""KAN: a stack of KANLayers, ``width = [n_0, n_1, ..., n_L]`` nodes per layer (inputs first)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from kan_core.functions import SymbolicFunction
from kan_core.functions import get as get_function
from kan_core.layer import KANLayer, _check_grid_eps

FORMAT_VERSION = 1
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class KAN(nn.Module):
    """A Kolmogorov-Arnold network.

    ``width``: nodes per layer, inputs first, at least two entries. ``grid``: intervals per spline
    grid (``G``); ``k``: spline order. All layers are initialised from one local generator seeded
    with ``seed`` (the global RNG is never touched): the same arguments give the same parameters,
    on any device. See `KANLayer` for the initialisation and the other arguments.
    """

    def __init__(
        self,
        width: Sequence[int],
        grid: int = 5,
        k: int = 3,
        seed: int = 0,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
        grid_range: tuple[float, float] = (-1.0, 1.0),
        grid_eps: float = 0.02,
        noise_scale: float = 0.1,
        scale_base_mu: float = 0.0,
        scale_base_sigma: float = 1.0,
    ):
        super().__init__()
        width = list(width)
        if len(width) < 2:
            raise ValueError(f"width needs at least two layer widths (inputs, outputs), got {width}")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in width):
            raise ValueError(f"every width must be an integer >= 1, got {width}")
        _check_grid_eps(grid_eps)
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        gen = torch.Generator().manual_seed(int(seed))
        self.seed = int(seed)
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        self.noise_scale = float(noise_scale)
        self.scale_base_mu = float(scale_base_mu)
        self.scale_base_sigma = float(scale_base_sigma)
        self.layers = nn.ModuleList(
            KANLayer(
                n_in, n_out, grid, k, grid_range, grid_eps, noise_scale,
                scale_base_mu=scale_base_mu, scale_base_sigma=scale_base_sigma,
                dtype=dtype, device=device, generator=gen,
            )
            for n_in, n_out in zip(width[:-1], width[1:])
        )

    @classmethod
    def _with_layers(cls, template: KAN, layers: Sequence[KANLayer]) -> KAN:
        """A model with ``template``'s settings around the given layers (for refine and prune)."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        for name in ("seed", "grid_range", "noise_scale", "scale_base_mu", "scale_base_sigma"):
            setattr(model, name, getattr(template, name))
        model.layers = nn.ModuleList(layers)
        return model

    # ------------------------------------------------------------------------------------------
    # properties

    @property
    def width(self) -> list[int]:
        """Current nodes per layer (after pruning), inputs first. A layer with multiplication nodes
        (`kan_core.product.ProductLayer`) counts its nodes, not its subnodes."""
        return [self.layers[0].in_dim] + [getattr(layer, "n_nodes", layer.out_dim) for layer in self.layers]

    @property
    def depth(self) -> int:
        return len(self.layers)

    @property
    def grid(self) -> int:
        """Grid intervals ``G`` (the same in every layer)."""
        return self.layers[0].G

    @property
    def k(self) -> int:
        return self.layers[0].k

    @property
    def grid_eps(self) -> float:
        return self.layers[0].grid_eps

    @property
    def dtype(self) -> torch.dtype:
        return self.layers[0].coef.dtype

    @property
    def device(self) -> torch.device:
        return self.layers[0].coef.device

    def is_symbolic(self) -> bool:
        """Whether every active edge is a symbolic function: the network is then one closed-form
        formula (`kan_core.formula.symbolic_formula`)."""
        return not any(bool((layer.mask * (1 - layer.sym_mask)).any()) for layer in self.layers)

    # ------------------------------------------------------------------------------------------
    # forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, n_0) -> (B, n_L)``."""
        self._check_input(x)
        for layer in self.layers:
            x = layer(x)
        return x

    def layer_inputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input of every layer, then the final output: ``[(B, n_0), (B, n_1), ..., (B, n_L)]``."""
        self._check_input(x)
        acts = [x]
        for layer in self.layers:
            acts.append(layer(acts[-1]))
        return acts

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.shape[1] != self.width[0]:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"input must have shape (B, {self.width[0]}), got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("input contains NaN or infinite values")

    # ------------------------------------------------------------------------------------------
    # grids

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor) -> None:
        """Fit every layer's grid to its inputs on ``x (B, n_0)``, layer by layer (see
        `KANLayer.update_grid`): layer ``l`` sees the outputs of the already updated layers."""
        self._check_input(x)
        for layer in self.layers:
            layer.update_grid(x)
            x = layer(x)

    def refine(self, G_new: int) -> KAN:
        """A copy with ``G_new`` grid intervals in every layer, computing the same function on the
        current grid domains (see `KANLayer.refine`)."""
        return KAN._with_layers(self, [layer.refine(G_new) for layer in self.layers])

    # ------------------------------------------------------------------------------------------
    # architecture as JSON

    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild this architecture (weights excluded), JSON-able and flat:

        - ``format_version``: 1
        - ``width``: list[int], nodes per layer (current, after pruning)
        - ``grid``: int, intervals per grid; ``k``: int, spline order
        - ``dtype``: "float32" | "float64"
        - ``seed``, ``grid_range`` [lo, hi], ``grid_eps``, ``noise_scale``, ``scale_base_mu``,
          ``scale_base_sigma``: the construction arguments (they affect initial values only)
        - ``sym_names``: list over layers of ``n_in x n_out`` lists of function names, "" for
          spline edges (symbolic functions are referred to by name)

        `KAN.from_config` rebuilds the model; then ``load_state_dict`` restores the weights, grids,
        masks and affine parameters.
        """
        return {
            "format_version": FORMAT_VERSION,
            "width": self.width,
            "grid": self.grid,
            "k": self.k,
            "dtype": str(self.dtype).removeprefix("torch."),
            "seed": self.seed,
            "grid_range": list(self.grid_range),
            "grid_eps": self.grid_eps,
            "noise_scale": self.noise_scale,
            "scale_base_mu": self.scale_base_mu,
            "scale_base_sigma": self.scale_base_sigma,
            "sym_names": [[list(row) for row in layer.sym_names] for layer in self.layers],
        }

    @classmethod
    def from_config(
        cls,
        config: Mapping[str, Any],
        *,
        device: torch.device | str | None = None,
        library: Mapping[str, SymbolicFunction] | None = None,
    ) -> KAN:
        """The architecture described by `config` (its symbolic edges set, with identity affine
        parameters): load the weights with ``load_state_dict`` next. Symbolic function names are
        resolved in ``library`` (default: ``kan_core.functions``); ValueError for unknown ones."""
        version = config.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"unsupported KAN config format_version {version!r} (expected {FORMAT_VERSION})")
        try:
            dtype = _DTYPES[config["dtype"]]
            model = cls(
                config["width"], config["grid"], config["k"], config["seed"],
                dtype=dtype, device=device, grid_range=tuple(config["grid_range"]),
                grid_eps=config["grid_eps"], noise_scale=config["noise_scale"],
                scale_base_mu=config["scale_base_mu"], scale_base_sigma=config["scale_base_sigma"],
            )
            sym_names = config["sym_names"]
        except KeyError as e:
            raise ValueError(f"KAN config is missing {e.args[0]!r}") from None
        if [len(rows) for rows in sym_names] != model.width[:-1] or any(
            len(row) != layer.out_dim for layer, rows in zip(model.layers, sym_names) for row in rows
        ):
            raise ValueError("config sym_names does not match the widths")
        for layer, rows in zip(model.layers, sym_names):
            for i, row in enumerate(rows):
                for j, name in enumerate(row):
                    if name:
                        layer.set_symbolic(i, j, get_function(name, library))
        return model
