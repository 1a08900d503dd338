import math

import numpy as np
import pytest
import sympy
import torch

from kan_core import functions
from kan_core.functions import DEFAULT_LIBRARY, SEED_LIBRARY_NAMES, FunctionLibrary, SymbolicFunction

NAMES = list(DEFAULT_LIBRARY)
# finite inputs that hit poles, domain edges and overflow territory
WILD = torch.tensor(
    [-1e6, -60.0, -math.pi / 2, -1.0, -1e-9, 0.0, 1e-9, 1.0 - 1e-12, 1.0, math.pi / 2, 2.0, 60.0, 1e6],
    dtype=torch.float64,
)


@pytest.mark.parametrize("name", NAMES)
def test_torch_form_is_finite_with_finite_gradient(name):
    x = WILD.clone().requires_grad_(True)
    y = DEFAULT_LIBRARY[name].torch(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (g,) = torch.autograd.grad(y.sum(), x, allow_unused=True, materialize_grads=True)
    assert torch.isfinite(g).all()


@pytest.mark.parametrize("name", NAMES)
def test_sympy_form_matches_torch_form_on_the_domain(name):
    fn = DEFAULT_LIBRARY[name]
    x = torch.linspace(-3, 3, 241, dtype=torch.float64)
    x = x[(x - x.round()).abs() > 1e-3]  # avoid sampling exactly at 0 (sign, 1/x)
    inside = fn.domain(x) if fn.domain is not None else torch.ones_like(x, dtype=torch.bool)
    inside &= x.abs() < 1.5  # away from tan's poles' clamping
    t = sympy.Symbol("t")
    exact = sympy.lambdify(t, fn.sympy(t), modules="numpy")
    with np.errstate(all="ignore"):
        want = np.broadcast_to(np.asarray(exact(x[inside].numpy()), dtype=float), (int(inside.sum()),))
    got = fn.torch(x[inside]).numpy()
    # safe forms clamp within 1e-6 of poles and domain edges only
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in NAMES if DEFAULT_LIBRARY[n].domain is not None])
def test_domain_excludes_where_the_exact_function_is_undefined(name):
    fn = DEFAULT_LIBRARY[name]
    t = sympy.Symbol("t")
    for v in (-2.0, -0.5, 0.0, 0.5, 2.0):
        value = fn.sympy(sympy.Float(v)).evalf()
        defined = value.is_real and value.is_finite
        if bool(fn.domain(torch.tensor([v], dtype=torch.float64))):
            assert defined, (name, v, value)
    assert fn.sympy(t).free_symbols == {t}


def test_complexities_and_names():
    assert DEFAULT_LIBRARY["0"].complexity == 0
    assert DEFAULT_LIBRARY["x"].complexity == 1
    assert all(f.complexity >= 1 for n, f in DEFAULT_LIBRARY.items() if n != "0")
    assert all(n in DEFAULT_LIBRARY for n in SEED_LIBRARY_NAMES)
    assert functions.names() == NAMES and "sin" in functions.names()


def test_lookup_errors_name_the_function():
    with pytest.raises(ValueError, match="unknown symbolic function 'sinc'"):
        functions.get("sinc")
    with pytest.raises(ValueError, match="'sinc'"):
        DEFAULT_LIBRARY.subset(["sin", "sinc"])


def test_extend_and_subset_return_new_libraries():
    cube = SymbolicFunction("cube", lambda x: x**3, lambda x: x**3, 3)
    ext = DEFAULT_LIBRARY.extend(cube)
    assert "cube" in ext and "cube" not in DEFAULT_LIBRARY
    assert functions.get("cube", ext) is cube
    sub = ext.subset(["sin", "cube"])
    assert list(sub) == ["sin", "cube"] and len(sub) == 2
    replaced = ext.extend(SymbolicFunction("sin", torch.sin, sympy.sin, 7))
    assert replaced["sin"].complexity == 7 and DEFAULT_LIBRARY["sin"].complexity == 2


def test_library_validates_entries():
    with pytest.raises(ValueError, match="SymbolicFunction"):
        FunctionLibrary(["sin"])
    with pytest.raises(ValueError, match="non-empty name"):
        FunctionLibrary([SymbolicFunction("", torch.sin, sympy.sin, 1)])
    with pytest.raises(ValueError, match="complexity"):
        FunctionLibrary([SymbolicFunction("s", torch.sin, sympy.sin, -1)])


def test_library_is_read_only():
    with pytest.raises(TypeError):
        DEFAULT_LIBRARY["new"] = DEFAULT_LIBRARY["sin"]  # type: ignore[index]


def test_hyperbolic_sine_and_cosine_are_fitted_and_cost_like_tanh():
    from kan_core.affine_fit import fit_affine

    x = torch.linspace(-2, 2, 200, dtype=torch.float64)
    y = torch.stack([1.5 * torch.sinh(0.8 * x + 0.3) - 0.5, 2.0 * torch.cosh(1.2 * x) + 1.0])  # (2, N)
    fit = fit_affine(torch.stack([x, x]), y)
    assert fit.r2[0, fit.names.index("sinh")] > 1 - 1e-9 and fit.r2[1, fit.names.index("cosh")] > 1 - 1e-9
    assert fit.r2[1, fit.names.index("sinh")] < 0.99  # an even curve is no sinh
    costs = {n: DEFAULT_LIBRARY[n].complexity for n in ("sin", "tanh", "sinh", "cosh", "arcsin")}
    assert costs["sin"] < costs["sinh"] == costs["cosh"] == costs["tanh"] < costs["arcsin"]
    assert "sinh" not in SEED_LIBRARY_NAMES  # the default pipeline's library is unchanged


@pytest.mark.parametrize("name", [n for n, f in DEFAULT_LIBRARY.items() if f.dtorch is not None])
def test_dtorch_is_autograds_derivative(name):
    """``dtorch`` is the gradient autograd gives for ``torch`` (clamped regions included), away from
    the clamps' edges."""
    fn = DEFAULT_LIBRARY[name]
    x = torch.cat([torch.linspace(-60, 60, 2401, dtype=torch.float64), torch.linspace(-2, 2, 4001, dtype=torch.float64)])
    x = x[(x.abs() - 1e-6).abs() > 1e-9]  # not at the +-eps clamp edges
    x = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(fn.torch(x).sum(), x)
    torch.testing.assert_close(fn.dtorch(x.detach()), grad, rtol=1e-12, atol=1e-15)


def test_the_seed_library_has_derivatives():
    assert all(DEFAULT_LIBRARY[n].dtorch is not None for n in SEED_LIBRARY_NAMES)
