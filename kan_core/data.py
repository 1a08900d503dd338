"""Training data: validated train/test tensors, and a generator of synthetic datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Dataset:
    """``train_input (N, d)``, ``train_label (N, o)``, ``test_input (M, d)``, ``test_label (M, o)``:
    finite floating-point tensors of one dtype on one device. Build with `Dataset.from_arrays`."""

    train_input: torch.Tensor
    train_label: torch.Tensor
    test_input: torch.Tensor
    test_label: torch.Tensor

    def __post_init__(self) -> None:
        _validate(self.train_input, self.train_label, self.test_input, self.test_label)

    @classmethod
    def from_arrays(
        cls,
        train_input: Any,
        train_label: Any,
        test_input: Any,
        test_label: Any,
        *,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Dataset:
        """Convert array-likes (numpy arrays, tensors, nested lists) to ``dtype`` on ``device``.

        Inputs may be 1-D (one variable), labels 1-D (one output): they become ``(N, 1)``.
        ValueError on ragged or non-numeric data, mismatched shapes, empty sets, NaN or inf.
        """
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        arrays = []
        for name, a in (("train_input", train_input), ("train_label", train_label),
                        ("test_input", test_input), ("test_label", test_label)):
            try:
                t = torch.as_tensor(a).to(dtype=dtype, device=device)
            except (TypeError, ValueError, RuntimeError) as e:
                raise ValueError(f"{name} is not a numeric array: {e}") from None
            if t.dim() == 1:
                t = t.unsqueeze(1)
            arrays.append(t)
        return cls(*arrays)

    @property
    def n_var(self) -> int:
        return self.train_input.shape[1]

    @property
    def n_out(self) -> int:
        return self.train_label.shape[1]

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Dataset:
        """A copy in another dtype and/or on another device."""
        tensors = (self.train_input, self.train_label, self.test_input, self.test_label)
        return Dataset(*(t.to(dtype=dtype or t.dtype, device=device or t.device) for t in tensors))


def make_dataset(
    f: Callable[[torch.Tensor], torch.Tensor],
    n_var: int,
    ranges: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    n_train: int = 1000,
    n_test: int = 1000,
    seed: int = 0,
    *,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Dataset:
    """Inputs uniform in ``ranges`` (one ``(lo, hi)`` for all variables or one per variable), labels
    ``f(inputs)``; ``f`` maps ``(N, n_var)`` to ``(N,)`` or ``(N, o)``. Train and test points come
    from one local generator seeded with ``seed``: the same arguments give the same data."""
    if not isinstance(n_var, int) or n_var < 1:
        raise ValueError(f"n_var must be an integer >= 1, got {n_var!r}")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {n!r}")
    bounds = torch.as_tensor(ranges, dtype=torch.float64)
    if bounds.shape == (2,):
        bounds = bounds.expand(n_var, 2)
    if bounds.shape != (n_var, 2):
        raise ValueError(f"ranges must be (lo, hi) or {n_var} such pairs, got {ranges!r}")
    if not bool(torch.isfinite(bounds).all()) or not bool((bounds[:, 0] < bounds[:, 1]).all()):
        raise ValueError(f"every range must be finite with lo < hi, got {ranges!r}")
    gen = torch.Generator().manual_seed(int(seed))
    lo, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = (lo + span * torch.rand(n, n_var, generator=gen, dtype=torch.float64)).to(dtype=dtype, device=device)
        y = torch.as_tensor(f(x))
        if y.dim() == 1:
            y = y.unsqueeze(1)
        if y.dim() != 2 or y.shape[0] != n:
            raise ValueError(f"f must map ({n}, {n_var}) inputs to ({n},) or ({n}, o), got {tuple(y.shape)}")
        return x, y

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    return Dataset.from_arrays(x_train, y_train, x_test, y_test, dtype=dtype, device=device)


def _validate(x: torch.Tensor, y: torch.Tensor, xt: torch.Tensor, yt: torch.Tensor) -> None:
    named = {"train_input": x, "train_label": y, "test_input": xt, "test_label": yt}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must be 2-D (samples, features), got shape {tuple(t.shape)}")
        if t.shape[0] == 0 or t.shape[1] == 0:
            raise ValueError(f"{name} is empty (shape {tuple(t.shape)})")
        if not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    if len({t.dtype for t in named.values()}) != 1 or len({t.device for t in named.values()}) != 1:
        raise ValueError("all tensors of a dataset must share one dtype and one device")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"train_input has {x.shape[0]} samples but train_label has {y.shape[0]}")
    if xt.shape[0] != yt.shape[0]:
        raise ValueError(f"test_input has {xt.shape[0]} samples but test_label has {yt.shape[0]}")
    if x.shape[1] != xt.shape[1]:
        raise ValueError(f"train_input has {x.shape[1]} variables but test_input has {xt.shape[1]}")
    if y.shape[1] != yt.shape[1]:
        raise ValueError(f"train_label has {y.shape[1]} outputs but test_label has {yt.shape[1]}")
