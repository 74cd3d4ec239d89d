r"""Adam (Kingma & Ba 2015): RMSProp plus momentum, both bias-corrected.

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    x ← x − η/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)        (PyTorch's order of operations)

amsgrad (Reddi et al. 2018): v̂ ← max(v̂, v) is used in place of v.
epsilon_hat (Keras, TF1): x ← x − η√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε).
AdamW (adamw.py) is this rule with decoupled weight decay.
"""

from __future__ import annotations

import math

from numba.extending import register_jitable

from .. import _checks as ck
from .base import (
    COMMON,
    KEEP,
    LR,
    Hyper,
    Method,
    common_coefficients,
    gradient,
    lr_check,
    overflow_check,
    params,
    ratio,
    rule,
    slots,
)

# LR holds η/(1 − β1ᵗ), PyTorch's step size; c2 = √(1 − β2ᵗ)
SLOTS = ("beta1", "w1", "beta2", "w2", "eps", "c2")
BETA1, W1, BETA2, W2, EPS, C2 = slots(SLOTS)
PARAMS = ("beta1", "beta2", "eps", "epsilon_hat")
P_BETA1, P_BETA2, P_EPS, P_EPSILON_HAT = params(PARAMS)


# flags: (amsgrad, eps_zero); state rows: m, v, then vmax if amsgrad
@rule
def adam(x, g, S, i, h, flags):
    """One element of Adam (see the module docstring)."""
    amsgrad, eps_zero = flags
    g = gradient(x, g, h)
    m = h[BETA1] * S[0, i] + h[W1] * g
    v = h[BETA2] * S[1, i] + h[W2] * (g * g)
    S[0, i] = m
    S[1, i] = v
    if amsgrad:
        if S[2, i] > v:
            v = S[2, i]
        S[2, i] = v
    d = math.sqrt(v) / h[C2] + h[EPS]
    return h[KEEP] * x - h[LR] * overflow_check(ratio(m, d) if eps_zero else m / d, v)


@register_jitable
def adam_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    c2 = math.sqrt(1.0 - math.pow(p[P_BETA2], float(t)))
    if p[P_EPSILON_HAT] != 0.0:
        out[LR] = lr * c2 / (1.0 - math.pow(p[P_BETA1], float(t)))
        c2 = 1.0
    else:
        out[LR] = lr / (1.0 - math.pow(p[P_BETA1], float(t)))
    out[BETA1] = p[P_BETA1]
    out[W1] = 1.0 - p[P_BETA1]
    out[BETA2] = p[P_BETA2]
    out[W2] = 1.0 - p[P_BETA2]
    out[EPS] = p[P_EPS]
    out[C2] = c2


HYPERS = {
    **COMMON, "lr": Hyper(0.001, lr_check, COMMON["lr"].doc),
    "beta1": Hyper(0.9, ck.unit_open, "decay β1 of the running mean m of g"),
    "beta2": Hyper(0.999, ck.unit_open, "decay β2 of the running mean v of g²"),
    "eps": Hyper(1e-8, ck.nonneg, "ε, outside the root"),
    "amsgrad": Hyper(False, ck.boolean, "use the running maximum of v (Reddi et al. 2018)"),
    "epsilon_hat": Hyper(False, ck.boolean, "x ← x − η√(1 − β2^t)/(1 − β1^t)·m/(√v + ε) (Keras, TF1)"),
}


def pack(v):
    return {"beta1": v["beta1"], "beta2": v["beta2"], "eps": v["eps"], "epsilon_hat": v["epsilon_hat"]}


def flags(v):
    return (v["amsgrad"], v["eps"] == 0)


def rows(v):
    return [("m", 0.0), ("v", 0.0)] + ([("vmax", 0.0)] if v["amsgrad"] else [])


METHOD = Method(
    "adam", "Adam", adam, adam_coefficients, HYPERS, pack, SLOTS, PARAMS, flags_fn=flags, rows_fn=rows,
    varies_fn=lambda v: True,
    doc="m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  x ← x − η m̂ / (√v̂ + ε)")
