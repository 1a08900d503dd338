import torch

from kan_core.objective import mse

f64 = torch.float64


def test_mse_is_bit_for_bit_autograds():
    gen = torch.Generator().manual_seed(1)
    pred = torch.randn(50, 1, generator=gen, dtype=f64, requires_grad=True)
    y = torch.randn(50, 1, generator=gen, dtype=f64)
    got = mse(pred, y)
    want = (pred - y).pow(2).mean()
    assert torch.equal(got, want)
    assert torch.equal(torch.autograd.grad(3.7 * got, pred)[0], torch.autograd.grad(3.7 * want, pred)[0])
