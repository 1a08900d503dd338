"""Readable, equivalent forms of a fitted edge ``c * f(a*x + b) + d``, from f's own symmetries.

The fit (`kan_core.affine_fit`) finds some (a, b, c, d) on the curve; many give the same curve.
`canonical` picks one by rules f's symmetries allow: a >= 0 for even/odd f, |a| = 1 for powers and
log, b = 0 for exp, b reduced modulo the period. The symmetries are probed numerically
(`symmetries`), so a registered function gets them without declaring any.
"""

from __future__ import annotations

import math

import torch

from kan_core.functions import SymbolicFunction


def canonical(fn: SymbolicFunction, p: torch.Tensor) -> torch.Tensor:
    """Rewrite (E, 4) params into an equivalent, readable form, using symmetries of f found by
    probing it: parity (even/odd: a >= 0), scaling (f(s*u) = s^k f(u) or f(u) + k*log2(s):
    |a| = 1), shift (f(u + t) = q^t f(u): b = 0) and period (2π or π: b reduced). E.g.
    0.001*(10x)^2 -> 0.1*x^2, log(3x + 6) -> log(x + 2) + log(3), 2*exp(x + 1) -> 2e*exp(x),
    -sin(-x + 7) -> sin(x + 7 - 2π). The curve is unchanged.
    """
    sym = symmetries(fn)
    a, b, c, d = p.unbind(-1)
    if sym["parity"]:
        flip = a < 0
        a, b = torch.where(flip, -a, a), torch.where(flip, -b, b)
        if sym["parity"] == "odd":
            c = torch.where(flip, -c, c)
    scale = a.abs()
    if sym["power"] is not None or sym["log_step"] is not None:
        s = torch.where(scale > 0, scale, torch.ones_like(scale))
        a, b = a / s, b / s
        if sym["power"] is not None:
            c = c * s ** sym["power"]
        else:
            d = d + c * sym["log_step"] * torch.log2(s)
    elif sym["exp_base"] is not None:
        c, b = c * sym["exp_base"] ** b, torch.zeros_like(b)
    elif sym["period"] is not None:  # b into (-P/2, P/2], or (-P/4, P/4] when f(u + P/2) = -f(u)
        P = sym["period"]
        b = torch.remainder(b + P / 2, P) - P / 2
        if sym["antiperiodic"]:
            shift = b.abs() > P / 4
            b, c = torch.where(shift, b - torch.sign(b) * P / 2, b), torch.where(shift, -c, c)
    return torch.stack([a, b, c, d], -1)


def symmetries(fn: SymbolicFunction) -> dict[str, float | str | None]:
    """Probe f for the symmetries `canonical` uses; all None for a generic function."""
    z = torch.tensor([0.3, 0.7, 1.1, 1.9], dtype=torch.float64)  # inside every built-in domain
    f = fn.torch

    def const(v: torch.Tensor) -> bool:
        return bool(torch.isfinite(v).all()) and bool(torch.allclose(v, v[0].expand_as(v), rtol=1e-9, atol=1e-12))

    out: dict[str, float | str | None] = dict.fromkeys(("parity", "power", "log_step", "exp_base", "period"))
    fz = f(z)
    if fn.domain is None or bool(fn.domain(-z).all()):
        if const(f(-z) - fz):
            out["parity"] = "even"
        elif const(f(-z) + fz):
            out["parity"] = "odd"
    if bool((fz != 0).all()) and const(f(2 * z) / fz):
        out["power"] = float(torch.log2(f(2 * z[0]) / fz[0]))
    elif const(f(2 * z) - fz):
        out["log_step"] = float(f(2 * z[0]) - fz[0])
    elif bool((fz != 0).all()) and const(f(z + 1) / fz):
        out["exp_base"] = float(f(z[0] + 1) / fz[0])
    else:
        for P in (math.pi, 2 * math.pi):
            if bool(torch.allclose(f(z + P), fz, rtol=1e-9, atol=1e-12)):
                out["period"] = P
                out["antiperiodic"] = bool(torch.allclose(f(z + P / 2), -fz, rtol=1e-9, atol=1e-12))
                break
    return out
