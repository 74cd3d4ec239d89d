"""Heavy-ball and Nesterov momentum:  b ← μ b + g;  x ← x − η b   (Nesterov: x ← x − η (g + μ b))."""

from __future__ import annotations

from numba.extending import register_jitable

from .. import _checks as ck
from .base import (
    COMMON,
    LR,
    MOMENTUM,
    MOMENTUM_SLOTS,
    Hyper,
    Method,
    check_nesterov,
    common_coefficients,
    gradient,
    keep,
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
    (general,) = flags
    g = gradient(x, g, h, general)
    b = h[MU] * S[0, i] + h[A] * g
    S[0, i] = b
    return keep(x, h, general) - h[LR] * (h[C_G] * g + h[C_B] * b)


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
    rows_fn=lambda v: [("b", 0.0)],
    doc="b ← μ b + g;  x ← x − η b")
