"""kan_core.plot.plot_png: a PNG of the network for spline, pruned and symbolic models."""

from __future__ import annotations

import struct

import pytest
import torch

from kan_core import plot
from kan_core.model import KAN
from kan_core.prune import prune

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _x(n: int = 200) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 2, generator=g, dtype=torch.float64) * 2 - 1


def _png_size(png: bytes) -> tuple[int, int]:
    assert png[:8] == PNG_SIGNATURE and png[12:16] == b"IHDR"
    return struct.unpack(">II", png[16:24])


def _spline() -> KAN:
    return KAN([2, 5, 1], seed=0)


def _symbolic() -> KAN:
    model = _spline()
    model.layers[0].set_symbolic(0, 0, "sin", (3.14, 0.0, 1.0, 0.0))
    model.layers[0].set_symbolic(1, 1, "x^2", (1.0, 0.0, 1.0, 0.0))
    model.layers[1].set_symbolic(0, 0, "exp", (1.0, 0.0, 1.0, 0.0))
    return model


def _pruned() -> KAN:
    model = _symbolic()
    with torch.no_grad():
        for j in (2, 3, 4):
            model.layers[0].scale_base[:, j] = 0.0
            model.layers[0].scale_sp[:, j] = 0.0
    pruned = prune(model, _x())
    assert pruned.width[1] < 5
    return pruned


@pytest.mark.parametrize("build", [_spline, _symbolic, _pruned], ids=["spline", "symbolic", "pruned"])
def test_plot_is_a_png_of_reasonable_size(build):
    png = plot.plot_png(build(), _x(), var_names=["x1", "x2"], dpi=50)
    w, h = _png_size(png)
    assert 100 <= w <= 1500 and 100 <= h <= 1500
    assert 2_000 < len(png) < 2_000_000


def test_dpi_scales_the_image_and_names_may_hold_dollars():
    model, x = KAN([2, 3, 2], seed=2), _x()
    small = _png_size(plot.plot_png(model, x, dpi=40))
    big = _png_size(plot.plot_png(model, x, ["price $", "a_b"], out_names=["y", "z"], dpi=80, title="t"))
    assert big[0] == pytest.approx(2 * small[0], abs=2) and big[1] == pytest.approx(2 * small[1], abs=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"var_names": ["a"]}, "var_names"), ({"out_names": ["a", "b"]}, "out_names"), ({"dpi": 0}, "dpi"),
     ({"beta": 0.0}, "beta")],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot.plot_png(_spline(), _x(), **kwargs)
    with pytest.raises(ValueError, match="KAN"):
        plot.plot_png(torch.nn.Linear(2, 1), _x())
