r"""Adamax (Kingma & Ba 2015, §7.1): Adam with the infinity norm of the gradients in place of their
root mean square.

    m ← β1 m + (1 − β1) g
    u ← max(β2 u, |g| + ε)
    x ← x − η/(1 − β1ᵗ) · m / u

as torch.optim.Adamax and Optax's ``adamax`` (ε inside the maximum); ``eps_in_max=False`` is
Keras's form, u ← max(β2 u, |g|) and x ← x − η/(1 − β1ᵗ) · m / (u + ε).
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

from .. import _checks as ck
from .base import (
    COMMON,
    LR,
    Hyper,
    Method,
    common_coefficients,
    gradient,
    keep,
    lr_check,
    params,
    ratio,
    rule,
    slots,
)

# LR holds η/(1 − β1ᵗ); one of EPS_IN (in the maximum) and EPS_OUT (added to u) is ε, the other 0
SLOTS = ("beta1", "w1", "beta2", "eps_in", "eps_out")
BETA1, W1, BETA2, EPS_IN, EPS_OUT = slots(SLOTS)
PARAMS = ("beta1", "beta2", "eps", "eps_in_max")
P_BETA1, P_BETA2, P_EPS, P_EPS_IN_MAX = params(PARAMS)


# flags: (eps_zero,); state rows: m, u
@rule
def adamax(x, g, S, i, h, flags):
    """One element of Adamax (see the module docstring)."""
    eps_zero, general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    m = h[BETA1] * S[0, i] + h[W1] * g
    decayed = h[BETA2] * S[1, i]
    a = abs(g) + h[EPS_IN]
    u = decayed if decayed > a else a  # (a NaN g makes u NaN: the run reports divergence)
    S[0, i] = m
    S[1, i] = u
    d = u + h[EPS_OUT]
    return keep(x, h, general) - h[LR] * (ratio(m, d) if eps_zero else m / d)


@register_jitable
def adamax_powers(p, t):
    """(1 − β1ᵗ,): the part of the coefficients that depends on p and t alone (Method.parts)."""
    return (1.0 - math.pow(p[P_BETA1], float(t)),)


@register_jitable
def adamax_finish(p, t, powers, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    out[LR] = lr / powers[0]
    out[BETA1] = p[P_BETA1]
    out[W1] = 1.0 - p[P_BETA1]
    out[BETA2] = p[P_BETA2]
    inside = p[P_EPS_IN_MAX] != 0.0
    out[EPS_IN] = p[P_EPS] if inside else 0.0
    out[EPS_OUT] = 0.0 if inside else p[P_EPS]


@register_jitable
def adamax_coefficients(p, t, lr, gamma, gfactor, out):
    adamax_finish(p, t, adamax_powers(p, t), lr, gamma, gfactor, out)


METHOD = Method(
    "adamax", "Adamax", adamax, adamax_coefficients,
    {**COMMON, "lr": Hyper(0.002, lr_check, COMMON["lr"].doc),
     "beta1": Hyper(0.9, ck.unit_open, "decay β1 of the running mean m of g"),
     "beta2": Hyper(0.999, ck.unit_open, "decay β2 of the running maximum u of |g|"),
     "eps": Hyper(1e-8, ck.nonneg, "ε"),
     "eps_in_max": Hyper(True, ck.boolean, "u ← max(β2 u, |g| + ε) (torch, Optax) rather than x ← x − "
                                           "η m̂/(u + ε) (Keras)")},
    lambda v: {"beta1": v["beta1"], "beta2": v["beta2"], "eps": v["eps"], "eps_in_max": v["eps_in_max"]},
    SLOTS, PARAMS, flags_fn=lambda v: (v["eps"] == 0,),
    rows_fn=lambda v: [("m", 0.0), ("u", 0.0)],
    varies_fn=lambda v: True, parts=(adamax_powers, adamax_finish),
    doc="m ← β1 m + (1 − β1) g;  u ← max(β2 u, |g| + ε);  x ← x − η/(1 − β1ᵗ) · m / u")
