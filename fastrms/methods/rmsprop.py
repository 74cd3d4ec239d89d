r"""RMSProp (Tieleman & Hinton 2012), in the seeds' notation: x parameters, g gradient, s running
mean of g², η learning rate, γ decay, ε eps.

    s ← γ s + (1 − γ) g²
    d = √(s + ε)            (ε outside the root: √s + ε)
    x ← x − η g / d

centered (Graves 2013):  m ← γ m + (1 − γ) g,  d uses max(s − m², 0) in place of s.
momentum μ > 0:          b ← μ b + g/d,  x ← x − η b   (Nesterov: x ← x − η (g/d + μ b)).
bias correction (Optax): s and m divided by 1 − γᵗ.
Adagrad (adagrad.py) is this rule with γ = 1 and weight 1: s ← s + g².
"""

from __future__ import annotations

import math

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
    gamma_check,
    gradient,
    momentum_direction,
    momentum_terms,
    overflow_check,
    params,
    ratio,
    rule,
    slots,
)

# w is g²'s weight (1 − γ, or 1 for Adagrad); bc the bias correction 1 − γᵗ (a divisor, as in Optax);
# then momentum on u = g/d with (μ, a, c_u, c_b) as in momentum.py
SLOTS = ("gamma", "w", "eps_in", "eps_out", "bc", *MOMENTUM_SLOTS)
GAMMA, W, EPS_IN, EPS_OUT, BC, MU, A, C_U, C_B = slots(SLOTS)
PARAMS = ("adagrad", "eps", "eps_in_sqrt", "bias_correction", "momentum", "nesterov", "lr_in_momentum",
          "lr_decay")
P_ADAGRAD, P_EPS, P_EPS_IN_SQRT, P_BIAS, P_MU, P_NESTEROV, P_LR_INSIDE, P_LR_DECAY = params(PARAMS)


# flags: (centered, momentum, eps_zero, bias_correction, eps_outside, nesterov, lr_inside);
# state rows: s, then m if centered, then b if momentum
@rule
def rmsprop(x, g, S, i, h, flags):
    """One element of RMSProp (see the module docstring)."""
    (centered, with_momentum, eps_zero, bias_correction, eps_outside, nesterov, lr_inside,
     general, decay_first) = flags
    g = gradient(x, g, h, general, decay_first)
    s = h[GAMMA] * S[0, i] + h[W] * (g * g)
    S[0, i] = s
    v = s / h[BC] if bias_correction else s
    if centered:
        m = h[GAMMA] * S[1, i] + h[W] * g
        S[1, i] = m
        if bias_correction:
            m = m / h[BC]
        # s − m² ≥ 0 in exact arithmetic, but rounding can dip below: clamp it at z = s − s, which is
        # 0, or NaN where s overflowed (overflow_check's guard, here folded into one max)
        z = s - s
        v = v - m * m
        v = v if v > z else z
    d = math.sqrt(v) + h[EPS_OUT] if eps_outside else math.sqrt(v + h[EPS_IN])
    u = ratio(g, d) if eps_zero else g / d
    if not centered:
        u = overflow_check(u, s)
    if with_momentum:
        u = momentum_direction(u, S, 2 if centered else 1, i, h, MU, nesterov, lr_inside)
    return descend(x, u, h, general, lr_inside)


@register_jitable
def rmsprop_coefficients(p, t, lr, gamma, gfactor, out):
    lr = lr / (1.0 + (t - 1) * p[P_LR_DECAY])
    common_coefficients(p, lr, gfactor, out)
    if p[P_ADAGRAD] != 0.0:
        gamma = 1.0
        out[W] = 1.0
    else:
        out[W] = 1.0 - gamma
    out[GAMMA] = gamma
    out[EPS_IN] = p[P_EPS] if p[P_EPS_IN_SQRT] != 0.0 else 0.0
    out[EPS_OUT] = 0.0 if p[P_EPS_IN_SQRT] != 0.0 else p[P_EPS]
    out[BC] = 1.0 - math.pow(gamma, float(t)) if p[P_BIAS] != 0.0 else 1.0
    momentum_terms(p[P_MU], p[P_NESTEROV], p[P_LR_INSIDE], lr, out, MU)


def rms_hypers(**defaults):
    h = {**COMMON, **MOMENTUM,
         "gamma": Hyper(0.9, gamma_check, "decay γ of the running mean s of g²"),
         "eps": Hyper(1e-6, ck.nonneg, "ε"),
         "eps_in_sqrt": Hyper(True, ck.boolean, "d = √(s + ε) if True, √s + ε if False"),
         "centered": Hyper(False, ck.boolean, "divide by the running variance s − m² (Graves 2013)"),
         "initial_scale": Hyper(0.0, ck.nonneg, "initial value s₀ (1 in TF1 and autograd)"),
         "bias_correction": Hyper(False, ck.boolean, "use s/(1 − γ^t) (Optax)")}
    for k, v in defaults.items():
        h[k] = Hyper(v, h[k].check, h[k].doc)
    return h


def _pack(v):
    check_nesterov(v)
    if v["bias_correction"] and not callable(v["gamma"]) and v["gamma"] >= 1.0:
        raise ValueError("bias_correction needs gamma < 1 (1 − γ^t would be 0)")
    if not callable(v["gamma"]) and v["gamma"] == 1.0 and v["eps"] == 0 and v["initial_scale"] == 0:
        raise ValueError("gamma=1 keeps s at initial_scale=0, and with eps=0 every step would divide "
                         "by √s = 0; give gamma < 1, eps > 0 or initial_scale > 0")
    return {"adagrad": 0.0, "eps": v["eps"], "eps_in_sqrt": v["eps_in_sqrt"],
            "bias_correction": v["bias_correction"], "momentum": v["momentum"], "nesterov": v["nesterov"],
            "lr_in_momentum": _lr_inside(v), "lr_decay": 0.0}


def _lr_inside(v):
    """Whether η sits in the momentum buffer: only where there is one (μ > 0, or scheduled)."""
    return bool(v["lr_in_momentum"] and v["momentum"] > 0)


def _rows(v):
    rows = [("s", v["initial_scale"])]
    if v["centered"]:
        rows.append(("m", 0.0))
    if v["momentum"] > 0:
        rows.append(("b", 0.0))
    return rows


METHOD = Method(
    "rmsprop", "RMSProp", rmsprop, rmsprop_coefficients, rms_hypers(), _pack, SLOTS, PARAMS,
    flags_fn=lambda v: (v["centered"], v["momentum"] > 0, v["eps"] == 0, v["bias_correction"],
                        not v["eps_in_sqrt"], v["momentum"] > 0 and v["nesterov"], _lr_inside(v)),
    rows_fn=_rows,
    varies_fn=lambda v: v["bias_correction"],
    doc="s ← γ s + (1 − γ) g²;  x ← x − η g / √(s + ε)")
