"""Heavy-ball and Nesterov momentum:  b ← μ b + g;  x ← x − η b   (Nesterov: x ← x − η (g + μ b)).

dampening τ (torch.optim.SGD): b ← μ b + (1 − τ) g from the second step on; the first step
sets b = g, as torch does (b₀ = 0 and a weight of 1 at t = 1), and with μ = 0 τ does nothing,
as there (torch's SGD without momentum keeps no buffer).  With ``dampen_first_step`` the
first step is damped too, b₁ = (1 − τ) g, so that b is an exponential moving average of g
(autograd's sgd, τ = μ = its ``mass``).
"""

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
PARAMS = ("momentum", "nesterov", "lr_in_momentum", "dampening", "dampen_first_step")
P_MU, P_NESTEROV, P_LR_INSIDE, P_DAMPENING, P_DAMPEN_FIRST = params(PARAMS)


@rule
def momentum(x, g, S, i, h, flags):
    """b ← μ b + a g;  x ← x − η (c_g g + c_b b):  (c_g, c_b) = (0, 1) heavy ball, (a, μ) Nesterov;
    a = η when η lives inside the buffer (TensorFlow), else 1 (PyTorch), times 1 − τ after the
    first step when dampened (from the first step with dampen_first_step)."""
    nesterov, lr_inside, dampened, general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    b = momentum_direction(g, S, 0, i, h, MU, nesterov, lr_inside or dampened)
    return descend(x, b, h, general, lr_inside)


@register_jitable
def momentum_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    momentum_terms(p[P_MU], p[P_NESTEROV], p[P_LR_INSIDE], lr, out, MU)
    if p[P_MU] != 0.0 and (t > 1 or p[P_DAMPEN_FIRST] != 0.0):  # (torch damps nothing when μ = 0)
        out[A] *= 1.0 - p[P_DAMPENING]


def _pack(v):
    check_nesterov(v)
    if v["nesterov"] and v["dampening"] != 0:
        raise ValueError("nesterov=True needs dampening=0 (as in torch.optim.SGD)")
    return {"momentum": v["momentum"], "nesterov": v["nesterov"], "lr_in_momentum": v["lr_in_momentum"],
            "dampening": v["dampening"], "dampen_first_step": v["dampen_first_step"]}


METHOD = Method(
    "momentum", "Momentum", momentum, momentum_coefficients,
    {**COMMON, **MOMENTUM, "momentum": Hyper(0.9, ck.unit_open, "momentum μ"),
     "dampening": Hyper(0.0, ck.unit_closed, "dampening τ: b ← μ b + (1 − τ) g after the first step "
                                             "(torch.optim.SGD)"),
     "dampen_first_step": Hyper(False, ck.boolean, "damp the first step too: b₁ = (1 − τ) g, a moving "
                                                   "average of g (autograd's sgd)")},
    _pack, SLOTS, PARAMS,
    flags_fn=lambda v: (v["nesterov"], v["lr_in_momentum"], v["dampening"] != 0),
    rows_fn=lambda v: [("b", 0.0)],
    # its weight is 1 at t = 1, 1 − τ after (1 − τ throughout with dampen_first_step)
    varies_fn=lambda v: v["dampening"] != 0 and not v["dampen_first_step"],
    doc="b ← μ b + g;  x ← x − η b")
