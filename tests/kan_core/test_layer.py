import math

import pytest
import torch

from kan_core import spline
from kan_core.functions import SymbolicFunction
from kan_core.layer import KANLayer

f64 = torch.float64


def make_layer(n_in=3, n_out=4, G=5, k=3, seed=0, **kw) -> KANLayer:
    return KANLayer(n_in, n_out, G, k, generator=torch.Generator().manual_seed(seed), **kw)


def randomise(layer: KANLayer, seed: int = 1) -> KANLayer:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in (layer.coef, layer.scale_base, layer.scale_sp):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return layer


def inputs(n=256, d=3, seed=0, lo=-1.0, hi=1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(n, d, generator=g, dtype=f64)


def test_state_shapes_and_init():
    layer = make_layer(3, 4, G=5, k=3)
    assert layer.grid.shape == (3, 5 + 7) and layer.coef.shape == (3, 4, 8)
    assert layer.scale_base.shape == layer.scale_sp.shape == layer.mask.shape == layer.sym_mask.shape == (3, 4)
    assert layer.sym_affine.shape == (3, 4, 4)
    assert layer.sym_names == [[""] * 4 for _ in range(3)]
    assert {n for n, _ in layer.named_buffers()} == {"grid", "mask", "sym_mask"}
    assert {n for n, _ in layer.named_parameters()} == {"coef", "scale_base", "scale_sp", "sym_affine"}
    assert torch.allclose(layer.scale_sp, torch.full((3, 4), 1 / math.sqrt(3), dtype=f64))
    assert layer.scale_base.abs().max() <= 1 / math.sqrt(3)
    # the initial spline is small noise (noise_scale / G)
    y = spline.coef_to_curve(inputs(), layer.grid, layer.coef, 3)
    assert y.abs().max() < 0.1 / 5


def test_same_generator_seed_same_layer():
    a, b = make_layer(seed=3), make_layer(seed=3)
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    assert not torch.equal(a.coef, make_layer(seed=4).coef)


def test_forward_equals_sum_of_edges_and_reference_formula():
    layer = randomise(make_layer())
    x = inputs()
    edges = layer.edge_outputs(x)  # (B, I, O)
    ref = layer.scale_base * torch.nn.functional.silu(x)[..., None] + layer.scale_sp * spline.coef_to_curve(
        x, layer.grid, layer.coef, layer.k
    )
    assert torch.allclose(edges, ref, atol=1e-12)
    assert torch.allclose(layer(x), edges.sum(1), atol=1e-12)


def test_mask_removes_edges():
    layer = randomise(make_layer())
    layer.mask[1, 2] = 0.0
    x = inputs()
    edges = layer.edge_outputs(x)
    assert edges[:, 1, 2].abs().max() == 0
    assert torch.allclose(layer(x), edges.sum(1), atol=1e-12)


def test_symbolic_edges():
    layer = randomise(make_layer())
    layer.set_symbolic(0, 1, "sin", (2.0, 0.1, 0.5, 0.3))
    layer.set_symbolic(2, 3, "x^2", (1.0, -0.5, 2.0, 0.0))
    layer.set_symbolic(1, 1, "sin")
    x = inputs()
    edges = layer.edge_outputs(x)
    assert torch.allclose(edges[:, 0, 1], 0.5 * torch.sin(2 * x[:, 0] + 0.1) + 0.3)
    assert torch.allclose(edges[:, 2, 3], 2 * (x[:, 2] - 0.5) ** 2)
    assert torch.allclose(edges[:, 1, 1], torch.sin(x[:, 1]))
    assert torch.allclose(layer(x), edges.sum(1), atol=1e-12)
    assert layer.sym_names[0][1] == "sin" and layer.sym_mask[0, 1] == 1
    layer.clear_symbolic(0, 1)
    assert layer.sym_names[0][1] == "" and layer.sym_mask[0, 1] == 0
    assert torch.allclose(layer.edge_outputs(x)[:, 0, 1], edges.new_tensor(0) + (
        layer.scale_base[0, 1] * torch.nn.functional.silu(x[:, 0])
        + layer.scale_sp[0, 1] * spline.coef_to_curve(x, layer.grid, layer.coef, 3)[:, 0, 1]
    ))


def test_symbolic_affine_gets_gradients():
    layer = make_layer()
    layer.set_symbolic(0, 0, "sin", (1.0, 0.0, 1.0, 0.0))
    layer(inputs()).sum().backward()
    assert layer.sym_affine.grad[0, 0].abs().sum() > 0
    assert layer.sym_affine.grad[1].abs().sum() == 0
    assert layer.coef.grad[0, 0].abs().sum() == 0  # the spline branch is off


def test_custom_symbolic_function():
    cube_root = SymbolicFunction("cbrt", lambda x: torch.sign(x) * x.abs() ** (1 / 3), lambda x: x ** (1 / 3), 3)
    layer = make_layer()
    layer.set_symbolic(1, 2, cube_root, (1.0, 0.0, 1.0, 0.0))
    x = inputs()
    assert torch.allclose(layer.edge_outputs(x)[:, 1, 2], torch.sign(x[:, 1]) * x[:, 1].abs() ** (1 / 3))
    assert layer.symbolic_function(1, 2) is cube_root
    assert layer.subset([1], [2]).symbolic_function(0, 0) is cube_root


def test_spline_edge_std_is_exact():
    layer = randomise(make_layer())
    layer.mask[0, 0] = 0.0
    layer.set_symbolic(2, 1, "exp", (1.0, 0.0, 1.0, 0.0))
    x = inputs(500)
    ref = layer.edge_outputs(x).std(0)
    ref[2, 1] = 0.0  # symbolic edges are not counted
    std = layer.spline_edge_std(x)
    assert torch.allclose(std, ref, atol=1e-12, rtol=1e-10)
    y, std2 = layer.forward_with_edge_std(x)
    assert torch.allclose(y, layer(x)) and torch.allclose(std2, std)


def test_layer_without_spline_edges():
    layer = randomise(make_layer(2, 2))
    for i in range(2):
        layer.set_symbolic(i, 0, "sin", (1.0, 0.5, 2.0, 0.1))
        layer.mask[i, 1] = 0.0
    x = inputs(50, 2)
    y, std = layer.forward_with_edge_std(x)
    assert torch.allclose(y, layer.edge_outputs(x).sum(1))
    assert y[:, 1].abs().max() == 0 and std.abs().max() == 0
    y.sum().backward()
    assert layer.sym_affine.grad[:, 0].abs().min() > 0


def test_spline_edge_std_gradient_finite_on_masked_and_constant():
    layer = randomise(make_layer(2, 2))
    layer.mask[0, 1] = 0.0
    x = inputs(64, 2)
    x[:, 1] = 0.3  # a constant input: zero variance edges
    layer.spline_edge_std(x).sum().backward()
    for p in layer.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_gradients_match_reference_autograd():
    """The fused forward and the analytic basis backward give the plain autograd gradients."""
    layer = randomise(make_layer())
    x = inputs(64).requires_grad_()
    layer(x).pow(2).sum().backward()
    got = [x.grad.clone()] + [p.grad.clone() for p in (layer.coef, layer.scale_base, layer.scale_sp)]
    x2 = x.detach().clone().requires_grad_()
    coef, sb, sp = (p.detach().clone().requires_grad_() for p in (layer.coef, layer.scale_base, layer.scale_sp))
    # reference: textbook Cox-de Boor through plain autograd, (B, I, O) materialised
    t, xe = layer.grid, x2.unsqueeze(-1)  # (I, M), (B, I, 1)
    b = ((xe >= t[:, :-1]) & (xe < t[:, 1:])).double()
    for p in range(1, layer.k + 1):
        b = (xe - t[:, : -(p + 1)]) / (t[:, p:-1] - t[:, : -(p + 1)]) * b[..., :-1] + (t[:, p + 1 :] - xe) / (
            t[:, p + 1 :] - t[:, 1:-p]
        ) * b[..., 1:]
    ref = (sb * torch.nn.functional.silu(x2)[..., None] + sp * torch.einsum("bik,iok->bio", b, coef)).sum(1)
    ref.pow(2).sum().backward()
    for g, r in zip(got, [x2.grad, coef.grad, sb.grad, sp.grad]):
        assert torch.allclose(g, r, atol=1e-10)


def test_update_grid_adapts_and_keeps_function():
    layer = make_layer(2, 2, G=8)
    x = inputs(1000, 2, lo=-3.0, hi=3.0) ** 3 / 9  # skewed samples, range about [-3, 3]
    layer.grid_eps = 1.0  # uniform over the samples' range
    layer.update_grid(x)
    inner = spline.interior(layer.grid, 3)
    assert torch.allclose(inner[:, 0], x.min(0).values) and torch.allclose(inner[:, -1], x.max(0).values)
    assert torch.allclose(inner.diff(dim=1), inner.diff(dim=1)[:, :1].expand(-1, 8))
    layer.grid_eps = 0.02  # now adaptive, on a smooth function: values on the samples are kept
    with torch.no_grad():
        layer.coef.copy_(spline.curve_to_coef(x, torch.sin(x)[..., None].expand(-1, -1, 2), layer.grid, 3))
    before = layer(x)
    layer.update_grid(x)
    assert (layer(x) - before).abs().max() < 2e-2  # the fit error of 8 cubic pieces on sin over [-3, 3]
    assert (layer(x) - before).pow(2).mean().sqrt() < 2e-3
    d = spline.interior(layer.grid, 3).diff(dim=1)
    assert (d > 0).all() and d[0, 4] < d[0, 0] / 5  # denser where the samples are


def test_update_grid_degenerate_input():
    layer = randomise(make_layer(2, 1))
    x = inputs(50, 2)
    x[:, 0] = 0.5
    before = layer.edge_outputs(x)[:, 0]
    layer.update_grid(x)
    assert torch.isfinite(layer.grid).all() and (layer.grid.diff(dim=1) > 0).all()
    assert torch.allclose(layer.edge_outputs(x)[:, 0], before, atol=1e-6)


@pytest.mark.parametrize("G_new", [10, 7])
def test_refine_keeps_function(G_new):
    layer = randomise(make_layer(2, 3, G=5))
    layer.set_symbolic(1, 0, "sin", (1.0, 0.2, 1.0, 0.0))
    layer.update_grid(inputs(300, 2) ** 3)  # non-uniform grid
    fine = layer.refine(G_new)
    assert fine.G == G_new and fine.coef.shape == (2, 3, G_new + 3)
    assert fine.sym_names == layer.sym_names and torch.equal(fine.sym_affine, layer.sym_affine)
    inner = spline.interior(layer.grid, 3)
    x = inner[:, :1].T + (inner[:, -1:] - inner[:, :1]).T * inputs(400, 2, lo=0, hi=1)
    tol = 1e-9 if G_new % 5 == 0 else 0.05
    assert (fine(x) - layer(x)).abs().max() < tol


def test_subset():
    layer = randomise(make_layer(4, 3))
    layer.set_symbolic(2, 1, "x^2", (1.0, 0.0, 3.0, 0.0))
    layer.mask[3, 0] = 0
    sub = layer.subset([3, 2], [1, 0])
    x = inputs(100, 4)
    ref = layer.edge_outputs(x)[:, [3, 2]][:, :, [1, 0]]
    assert torch.allclose(sub.edge_outputs(x[:, [3, 2]]), ref)
    assert sub.sym_names == [["", ""], ["x^2", ""]] and sub.mask[0, 1] == 0
    sub.coef.data.add_(1)  # a copy
    assert not torch.equal(sub.coef, layer.coef[[3, 2]][:, [1, 0]])


def test_float32():
    layer = randomise(make_layer(dtype=torch.float32))
    x = inputs().float()
    assert layer(x).dtype == torch.float32
    assert torch.allclose(layer.spline_edge_std(x), layer.edge_outputs(x).std(0), atol=1e-4, rtol=1e-4)


def _nearly_dead_layer(dtype: torch.dtype, c: float) -> KANLayer:
    """One input, two edges, float32 parameters (cast to ``dtype``): edge (0, 0) is nearly dead,
    its coefficients c + 1e-4 * noise (the B-splines sum to 1: output ~c, std ~4e-5) and
    scale_base 1e-5; edge (0, 1) is an ordinary edge."""
    layer = make_layer(1, 2, dtype=dtype)
    g = torch.Generator().manual_seed(1)
    coef = c + 1e-4 * torch.randn(layer.coef.shape, generator=g, dtype=f64)
    with torch.no_grad():
        layer.coef.copy_(coef.float())
        layer.scale_base.copy_(torch.tensor([[1e-5, 0.5]]))
        layer.scale_sp.fill_(1.0)
    return layer


@pytest.mark.parametrize("c", [1.0, 10.0])
def test_float32_edge_std_of_nearly_dead_edge_matches_float64(c):
    """``w^T Cov w`` of a nearly dead edge cancels ~8 digits; `SplineEdges` and `std_from_cov`
    accumulate it in float64 (in float32 the std came out ~10x (c = 1) to ~90x (c = 10) too large,
    its gradients 85-99% off, and LBFGS stalled on the float32 seed example)."""
    l32, l64 = _nearly_dead_layer(torch.float32, c), _nearly_dead_layer(f64, c)
    x = inputs(1000, 1).float()  # the same float32 points for both
    x32, x64 = x.clone().requires_grad_(), x.double().requires_grad_()
    std32, std64 = l32.spline_edge_std(x32, precise=True), l64.spline_edge_std(x64)
    assert std32.dtype == torch.float32
    assert std64[0, 0] < 1e-3 * std64[0, 1]  # the nearly dead edge really is
    assert torch.allclose(std32.double(), std64, rtol=1e-3, atol=0)
    std32.sum().backward()
    std64.sum().backward()
    for a, b in [(l32.coef.grad, l64.coef.grad), (l32.scale_base.grad, l64.scale_base.grad), (x32.grad, x64.grad)]:
        a = a.double()
        assert torch.isfinite(a).all()
        assert ((a * b >= 0) | (b.abs() < 1e-6 * b.abs().max())).all()  # signs agree (bar ~0 entries)
        assert (a - b).norm() <= 1e-2 * b.norm()


def test_float32_edge_std_not_precise_is_the_plain_float32_computation():
    """precise=False keeps the covariance in float32: on healthy edges it matches torch.std of the
    float32 edge outputs (value and gradients), and it differs from the float64-accumulated std
    only by float32 rounding."""
    layer = randomise(make_layer(dtype=torch.float32))
    x = inputs(500).float().requires_grad_()
    y, std = layer.forward_with_edge_std(x, precise=False)
    assert std.dtype == torch.float32 and torch.equal(y, layer(x))
    ref = layer.edge_outputs(x).std(0)  # plain float32 autograd
    assert torch.allclose(std, ref, rtol=1e-5, atol=0)
    g = torch.autograd.grad(std.sum(), [layer.coef, layer.scale_base, x])
    g_ref = torch.autograd.grad(ref.sum(), [layer.coef, layer.scale_base, x])
    for a, b in zip(g, g_ref):
        assert a.dtype == torch.float32 and torch.allclose(a, b, rtol=1e-4, atol=1e-5 * b.abs().max())
    precise = layer.spline_edge_std(x, precise=True)
    assert torch.allclose(std, precise, rtol=1e-5, atol=0)
    # and in float64 the switch changes nothing
    l64 = randomise(make_layer())
    x64 = inputs(500)
    assert torch.equal(l64.spline_edge_std(x64, precise=False), l64.spline_edge_std(x64, precise=True))


@pytest.mark.parametrize("precise", [True, False])
@pytest.mark.parametrize("dtype", [f64, torch.float32])
def test_fixed_input_cache_gives_the_uncached_values_and_gradients(precise, dtype):
    """With the cache on, a data input (no gradient) reuses its features: output, edge std and the
    weights' gradients are those of the uncached path (up to rounding: dWt is one GEMM on F instead
    of Fc plus the mean)."""
    layer = randomise(make_layer(dtype=dtype))
    layer.set_symbolic(0, 1, "sin", (1.0, 0.5, 2.0, 0.0))
    x = inputs(400).to(dtype)
    params = [layer.coef, layer.scale_base, layer.scale_sp, layer.sym_affine]

    def run():
        y, std = layer.forward_with_edge_std(x, precise)
        return y, std, torch.autograd.grad((y.sin().sum() + std.sum()), params)

    ref = run()
    layer.cache_fixed_inputs(True)
    first, again = run(), run()  # computed, then reused
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == f64 else dict(rtol=1e-4, atol=1e-5)
    for got in (first, again):
        for a, b in zip((got[0], got[1], *got[2]), (ref[0], ref[1], *ref[2])):
            assert torch.allclose(a, b, **tol)
    assert all(torch.equal(a, b) for a, b in zip((first[0], first[1], *first[2]), (again[0], again[1], *again[2])))
    layer.cache_fixed_inputs(False)


def test_fixed_input_cache_follows_changes_of_the_input_and_the_grid():
    layer = randomise(make_layer())
    layer.cache_fixed_inputs(True)
    x, other = inputs(300), inputs(300, seed=5)
    assert torch.equal(layer(x), _uncached(layer, x))
    assert torch.equal(layer(other), _uncached(layer, other))  # a second input (test data)
    assert torch.equal(layer(x), _uncached(layer, x))
    x.mul_(0.5)  # changed in place
    assert torch.equal(layer(x), _uncached(layer, x))
    layer.update_grid(inputs(300, seed=7) * 0.8)  # new grid
    assert torch.equal(layer(x), _uncached(layer, x))
    xg = x.clone().requires_grad_()  # an input that needs a gradient is never cached
    y = layer(xg)
    assert torch.allclose(torch.autograd.grad(y.sum(), xg)[0], torch.autograd.grad(_uncached(layer, xg).sum(), xg)[0])
    layer.cache_fixed_inputs(False)


def _uncached(layer: KANLayer, x: torch.Tensor) -> torch.Tensor:
    saved, layer._fixed = layer._fixed, None
    try:
        return layer(x)
    finally:
        layer._fixed = saved


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: KANLayer(0, 2), "in_dim"),
        (lambda: KANLayer(2, 2, grid=0), "grid"),
        (lambda: KANLayer(2, 2, k=0), "k"),
        (lambda: KANLayer(2, 2, grid_eps=2.0), "grid_eps"),
        (lambda: make_layer()(torch.zeros(5, 2, dtype=f64)), r"shape \(B, 3\)"),
        (lambda: make_layer().set_symbolic(3, 0, "sin"), "out of range"),
        (lambda: make_layer().set_symbolic(0, 0, "nope"), "unknown symbolic function"),
        (lambda: make_layer().set_symbolic(0, 0, "sin", (1, 2)), "affine"),
        (lambda: make_layer().subset([0, 0], [1]), "distinct"),
        (lambda: make_layer().refine(0), "G_new"),
        (lambda: make_layer().spline_edge_std(torch.zeros(1, 3, dtype=f64)), "at least 2"),
        (lambda: make_layer().update_grid(torch.full((4, 3), float("inf"), dtype=f64)), "NaN"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_spline_weights_node_matches_autograd_of_the_plain_formula():
    """`SplineWeights` (one autograd node) gives the plain formula's values bit for bit and its
    gradients (gradcheck against finite differences, a masked and a symbolic edge included)."""
    from kan_core.spline_edges import SplineWeights

    layer = randomise(make_layer(3, 4))
    layer.mask[1, 2] = 0
    layer.set_symbolic(0, 3, "sin")
    m = layer._spline_mask_t()
    plain = torch.cat([layer.scale_base.T.unsqueeze(-1), layer.coef.transpose(0, 1) * layer.scale_sp.T.unsqueeze(-1)], -1) * m
    assert torch.equal(SplineWeights.apply(layer.coef, layer.scale_base, layer.scale_sp, m), plain)
    args = tuple(p.detach().clone().requires_grad_() for p in (layer.coef, layer.scale_base, layer.scale_sp))
    assert torch.autograd.gradcheck(lambda c, b, s: SplineWeights.apply(c, b, s, m), args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_path_on_cuda_matches_cpu():
    """The hot path on a GPU (fixed-input cache, SplineWeights, SplineEdges) gives the CPU's output,
    edge std and gradients."""
    for a, b in zip(_training_path("cpu"), _training_path("cuda")):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def _training_path(device: str) -> list[torch.Tensor]:
    layer = randomise(make_layer()).to(device)
    layer.cache_fixed_inputs(True)
    x = inputs(300).to(device)
    h = layer(x)[:, :3].tanh()  # a next layer's kind of input: needs a gradient, not cached
    y, std = layer.forward_with_edge_std(h)
    y0, std0 = layer.forward_with_edge_std(x)  # cached
    params = [layer.coef, layer.scale_base, layer.scale_sp]
    grads = torch.autograd.grad(y.square().sum() + std.sum() + y0.sum() + std0.sum(), params)
    layer.cache_fixed_inputs(False)
    return [t.detach().cpu() for t in (y, std, y0, std0, *grads)]
