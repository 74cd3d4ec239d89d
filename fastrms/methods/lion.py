r"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), as in Optax and Keras:
a step of the same size η for every element, in the direction of an interpolated momentum's sign.

    c = β1 m + (1 − β1) g
    m ← β2 m + (1 − β2) g
    x ← (1 − ηλ) x − η sign(c)          (decoupled weight decay λ, as in AdamW)

Its steps are larger than Adam's, so η is typically 3 to 10 times smaller (default 1e-4).
"""

from __future__ import annotations

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
    rule,
    slots,
)

SLOTS = ("beta1", "w1", "beta2", "w2")
BETA1, W1, BETA2, W2 = slots(SLOTS)
PARAMS = ("beta1", "beta2")
P_BETA1, P_BETA2 = params(PARAMS)


# state rows: m
@rule
def lion(x, g, S, i, h, flags):
    """One element of Lion (see the module docstring)."""
    general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    m = S[0, i]
    c = h[W1] * g + h[BETA1] * m
    S[0, i] = h[W2] * g + h[BETA2] * m
    step = h[LR]
    # sign(c)·η in x's dtype; sign(0) = 0, and a NaN c stays NaN (c − c)
    return keep(x, h, general) - (step if c > 0 else (-step if c < 0 else c - c))


@register_jitable
def lion_coefficients(p, t, lr, gamma, gfactor, out):
    common_coefficients(p, lr, gfactor, out)
    out[LR] = lr
    out[BETA1] = p[P_BETA1]
    out[W1] = 1.0 - p[P_BETA1]
    out[BETA2] = p[P_BETA2]
    out[W2] = 1.0 - p[P_BETA2]


METHOD = Method(
    "lion", "Lion", lion, lion_coefficients,
    {**{k: h for k, h in COMMON.items() if k != "decoupled_weight_decay"},
     "lr": Hyper(1e-4, lr_check, COMMON["lr"].doc),
     "beta1": Hyper(0.9, ck.unit_closed, "interpolation β1 between m and g for the sign"),
     "beta2": Hyper(0.99, ck.unit_closed, "decay β2 of the momentum m"),
     "weight_decay": Hyper(0.0, ck.nonneg, "decoupled weight decay λ")},
    lambda v: {"beta1": v["beta1"], "beta2": v["beta2"]}, SLOTS, PARAMS,
    rows_fn=lambda v: [("m", 0.0)], fixed={"decoupled_weight_decay": True},
    doc="c = β1 m + (1 − β1) g;  m ← β2 m + (1 − β2) g;  x ← x − η sign(c)")
