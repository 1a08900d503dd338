"""FrozenKAN: the numpy copy of the forward pass gives the network's outputs, for every kind of edge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from kan_core import io as kan_io
from kan_core.frozen import FrozenKAN
from kan_core.layer import KANLayer
from kan_core.model import KAN
from kan_core.product import separable_product_kan
from kan_core.prune import prune

RNG = np.random.default_rng(0)
# inside the grid, on its edges, and far outside it (where only the silu branch is left)
X = np.concatenate([RNG.uniform(-1, 1, (200, 2)),
                    [[-1.0, 1.0], [1.0, -1.0], [0.0, 0.0], [-50.0, 7.5], [800.0, -800.0]]])


def reference(model: KAN, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.as_tensor(x, dtype=model.dtype)).numpy()


def mixed_kan(dtype: torch.dtype = torch.float64) -> KAN:
    """[2, 4, 1]: splines, three symbolic functions (two edges share one), a masked edge."""
    model = KAN([2, 4, 1], grid=5, k=3, seed=2, dtype=dtype)
    model.layers[0].set_symbolic(0, 1, "sin", (math.pi, 0.1, 1.2, 0.3))
    model.layers[0].set_symbolic(1, 1, "x^2", (1.0, -0.2, 0.7, 0.0))
    model.layers[0].set_symbolic(1, 2, "x^2", (0.5, 0.0, 1.0, -0.1))
    model.layers[1].set_symbolic(3, 0, "exp", (0.5, 0.0, 1.0, 0.0))
    with torch.no_grad():
        model.layers[0].mask[0, 3] = 0.0
    return model


@pytest.mark.parametrize("make", [
    lambda: KAN([2, 5, 1], grid=5, k=3, seed=0),
    lambda: KAN([2, 3, 2, 3], grid=7, k=2, seed=1),
    mixed_kan,
], ids=["splines", "deeper-k2", "mixed"])
def test_matches_the_network_in_float64(make) -> None:
    model = make()
    frozen = FrozenKAN.of(model)
    assert frozen is not None
    out = frozen(X)
    assert out.dtype == np.float64 and out.shape == (len(X), model.width[-1])
    np.testing.assert_allclose(out, reference(model, X), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(frozen(X[:1]), reference(model, X[:1]), rtol=1e-12, atol=1e-12)  # one row


def test_matches_the_network_in_float32() -> None:
    model = mixed_kan(torch.float32)
    out = FrozenKAN.of(model)(X)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference(model, X), rtol=1e-5, atol=1e-6)


def test_fully_symbolic_layer_and_product_layer() -> None:
    model = separable_product_kan(2, additive=True, rank=2, seed=3)
    for i in range(2):
        model.layers[1].set_symbolic(i, 0, "x", (1.0, 0.0, 2.0, 0.5))  # layer 1 has a spline edge left
    for i in range(3):
        model.layers[1].set_symbolic(i, 0, "sin", (1.0, 0.0, 2.0, 0.5))  # now none
    np.testing.assert_allclose(FrozenKAN.of(model)(X), reference(model, X), rtol=1e-12, atol=1e-12)


def test_pruned_and_reloaded_networks() -> None:
    model = mixed_kan()
    x = torch.as_tensor(X[:200])
    small = prune(model, x, node_th=0.2, edge_th=0.2)
    reloaded = kan_io.loads(*kan_io.dumps(small))
    np.testing.assert_allclose(FrozenKAN.of(reloaded)(X), reference(small, X), rtol=1e-12, atol=1e-12)


def test_is_a_snapshot() -> None:
    model = KAN([2, 3, 1], seed=0)
    frozen = FrozenKAN.of(model)
    before = reference(model, X)
    with torch.no_grad():
        model.layers[0].coef.mul_(2.0)
    np.testing.assert_allclose(frozen(X), before, rtol=1e-12, atol=1e-12)


def test_unknown_layer_types_and_bad_shapes() -> None:
    class OtherLayer(KANLayer):
        pass

    model = KAN([2, 3, 1], seed=0)
    model.layers[1].__class__ = OtherLayer
    assert FrozenKAN.of(model) is None
    with pytest.raises(ValueError, match=r"\(B, 2\)"):
        FrozenKAN.of(KAN([2, 3, 1], seed=0))(np.zeros((4, 3)))
