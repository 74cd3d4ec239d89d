r"""Adadelta (Zeiler 2012).

    s ← ρ s + (1 − ρ) g²
    Δ = √(δ + ε) / √(s + ε) · g
    δ ← ρ δ + (1 − ρ) Δ²
    x ← x − η Δ
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
    gamma_check,
    gradient,
    keep,
    lr_check,
    overflow_check,
    params,
    ratio,
    rule,
    slots,
)

SLOTS = ("rho", "w", "eps")
RHO, W, EPS = slots(SLOTS)
PARAMS = ("eps",)
(P_EPS,) = params(PARAMS)


# flags: (eps_zero,): only a scheduled ε reaches 0 (a constant ε = 0 is refused, see _pack);
# state rows: s, delta
@rule
def adadelta(x, g, S, i, h, flags):
    """One element of Adadelta (see the module docstring)."""
    eps_zero, general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    s = h[RHO] * S[0, i] + h[W] * (g * g)
    S[0, i] = s
    a, d = math.sqrt(S[1, i] + h[EPS]), math.sqrt(s + h[EPS])
    delta = overflow_check((ratio(a, d) if eps_zero else a / d) * g, s)
    S[1, i] = h[RHO] * S[1, i] + h[W] * (delta * delta)
    return keep(x, h, general) - h[LR] * delta


@register_jitable
def adadelta_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    out[LR] = lr
    out[RHO] = gamma
    out[W] = 1.0 - gamma
    out[EPS] = p[P_EPS]


def _pack(v):
    if v["eps"] == 0:  # (every framework accepts it and then does nothing, or 0/0 = NaN)
        raise ValueError("Adadelta with eps=0 never moves: its step √(δ + ε)/√(s + ε)·g starts from "
                         "δ = 0, and δ stays 0; give eps > 0")
    return {"eps": v["eps"]}


METHOD = Method(
    "adadelta", "Adadelta", adadelta, adadelta_coefficients,
    {**COMMON, "lr": Hyper(1.0, lr_check, COMMON["lr"].doc),
     "gamma": Hyper(0.9, gamma_check, "decay ρ of both running means"),
     "eps": Hyper(1e-6, ck.nonneg, "ε")},
    _pack, SLOTS, PARAMS,
    flags_fn=lambda v: (v["eps"] == 0,),
    rows_fn=lambda v: [("s", 0.0), ("delta", 0.0)],
    doc="s ← ρ s + (1 − ρ) g²;  Δ = √(δ + ε)/√(s + ε)·g;  δ ← ρ δ + (1 − ρ) Δ²;  x ← x − η Δ")
