"""Heavy-ball and Nesterov momentum:  b ← μ b + g;  x ← x − η b   (Nesterov: x ← x − η (g + μ b))."""

from __future__ import annotations

from numba.extending import register_jitable

from .. import _checks as ck
from .base import (
    COMMON,
    MOMENTUM,
    MOMENTUM_SLOTS,
    Hyper,
    Method,
    check_nesterov,
    common_coefficients,
    descend,
    gradient,
    momentum_direction,
    momentum_terms,
    params,
    rule,
    slots,
)

SLOTS = MOMENTUM_SLOTS
MU, A, C_G, C_B = slots(SLOTS)
PARAMS = ("momentum", "nesterov", "lr_in_momentum")
P_MU, P_NESTEROV, P_LR_INSIDE = params(PARAMS)


@rule
def momentum(x, g, S, i, h, flags):
    """b ← μ b + a g;  x ← x − η (c_g g + c_b b):  (c_g, c_b) = (0, 1) heavy ball, (a, μ) Nesterov;
    a = η when η lives inside the buffer (TensorFlow), else 1 (PyTorch)."""
    nesterov, lr_inside, general = flags
    g = gradient(x, g, h, general)
    return descend(x, momentum_direction(g, S, 0, i, h, MU, nesterov, lr_inside), h, general, lr_inside)


@register_jitable
def momentum_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    momentum_terms(p[P_MU], p[P_NESTEROV], p[P_LR_INSIDE], lr, out, MU)


def _pack(v):
    check_nesterov(v)
    return {"momentum": v["momentum"], "nesterov": v["nesterov"], "lr_in_momentum": v["lr_in_momentum"]}


METHOD = Method(
    "momentum", "Momentum", momentum, momentum_coefficients,
    {**COMMON, **MOMENTUM, "momentum": Hyper(0.9, ck.unit_open, "momentum μ")}, _pack, SLOTS, PARAMS,
    flags_fn=lambda v: (v["nesterov"], v["lr_in_momentum"]),
    rows_fn=lambda v: [("b", 0.0)],
    doc="b ← μ b + g;  x ← x − η b")
