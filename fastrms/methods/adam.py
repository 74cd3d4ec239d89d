r"""Adam (Kingma & Ba 2015): RMSProp plus momentum, both bias-corrected.

    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    x ← x − η/(1 − β1ᵗ) · m / (√v / √(1 − β2ᵗ) + ε)        (PyTorch's order of operations)

amsgrad (Reddi et al. 2018): v̂ ← max(v̂, v) is used in place of v.
epsilon_hat (Keras, TF1): x ← x − η√(1 − β2ᵗ)/(1 − β1ᵗ) · m / (√v + ε).
v_hat (Optax): the rule works with v̂ = v/(1 − β2ᵗ) itself: d = √(v̂ + ε_root) + ε, and AMSGrad's
    maximum is taken over v̂ (v̂_max ← max(v̂_max, v̂)) rather than over v.
nesterov (Optax's NAdam, Dozat 2016): m is replaced by β1 m/(1 − β1ᵗ⁺¹) + (1 − β1) g/(1 − β1ᵗ),
    with η no longer divided by 1 − β1ᵗ.
momentum_decay ψ (NAdam as torch and Keras, nadam.py): the momentum follows μ_t = β1 (1 − ½·0.96^(tψ)),
    and m is replaced by μ_{t+1} m/(1 − Π_{t+1}) + (1 − μ_t) g/(1 − Π_t), Π_t = μ_1 ⋯ μ_t (with μ_t = β1
    this is the line above).
bias_correction_mu / bias_correction_nu = False: 1 − β1ᵗ / 1 − β2ᵗ replaced by 1 (the AMSGrad paper).
rectify (RAdam, Liu et al. 2019): with ρ∞ = 2/(1 − β2) − 1 and ρ_t = ρ∞ − 2t β2ᵗ/(1 − β2ᵗ), the
    step is η m̂ (no denominator: d = 1) while ρ_t ≤ threshold, and is multiplied by
    r_t = √((ρ_t − 4)(ρ_t − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρ_t)) after.  Only the coefficients change:
    d = √v / C2 + ε becomes 1 with C2 = ∞ and ε = 1 (and √(v/BC2 + ε_root) + ε with BC2 = ∞).
belief (AdaBelief, Zhuang et al. 2020): v is the running variance of g around m,
    v ← β2 v + (1 − β2)(g − m)² + ε_s, with ε_s (``eps_root``) added to the state every step.
AdamW (adamw.py) is this rule with decoupled weight decay, RAdam (radam.py) with rectify, NAdam
(nadam.py) with momentum_decay, AdaBelief (adabelief.py) with belief.
"""

from __future__ import annotations

import math
from dataclasses import replace

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
    overflow_check,
    params,
    ratio,
    rule,
    slots,
)

# LR holds η/(1 − β1ᵗ), PyTorch's step size; c2 = √(1 − β2ᵗ), bc2 = 1 − β2ᵗ; n1, n2 Nesterov's weights;
# eps_s AdaBelief's ε added to its state
SLOTS = ("beta1", "w1", "beta2", "w2", "eps", "c2", "bc2", "eps_root", "n1", "n2", "eps_s")
BETA1, W1, BETA2, W2, EPS, C2, BC2, EPS_ROOT, N1, N2, EPS_S = slots(SLOTS)
PARAMS = ("beta1", "beta2", "eps", "epsilon_hat", "eps_root", "nesterov", "bias_correction_mu",
          "bias_correction_nu", "rectify", "threshold", "momentum_decay", "belief")
(P_BETA1, P_BETA2, P_EPS, P_EPSILON_HAT, P_EPS_ROOT, P_NESTEROV, P_BC_MU, P_BC_NU, P_RECTIFY,
 P_THRESHOLD, P_MOMENTUM_DECAY, P_BELIEF) = params(PARAMS)


# flags: (amsgrad, eps_zero, v_hat, nesterov, belief); state rows: m, v, then vmax if amsgrad
@rule
def adam(x, g, S, i, h, flags):
    """One element of Adam (see the module docstring)."""
    amsgrad, eps_zero, v_hat, nesterov, belief, general, decay_first = flags
    g = gradient(x, g, h, general, decay_first)
    m = h[BETA1] * S[0, i] + h[W1] * g
    if belief:
        r = g - m
        v = h[BETA2] * S[1, i] + h[W2] * (r * r) + h[EPS_S]
    else:
        v = h[BETA2] * S[1, i] + h[W2] * (g * g)
    S[0, i] = m
    S[1, i] = v
    if v_hat:
        v = v / h[BC2]
    if amsgrad:
        if S[2, i] > v:
            v = S[2, i]
        S[2, i] = v
    if v_hat:
        d = math.sqrt(v + h[EPS_ROOT]) + h[EPS]
    else:
        d = math.sqrt(v) / h[C2] + h[EPS]
    if nesterov:
        m = h[N1] * m + h[N2] * g
    return keep(x, h, general) - h[LR] * overflow_check(ratio(m, d) if eps_zero else m / d, v)


@register_jitable
def adam_powers(p, t):
    """The part of Adam's coefficients that depends on p and t alone, not on η (the powers of β1
    and β2, RAdam's rectification, NAdam's weights): (1 − β1ᵗ, 1 − β2ᵗ, √(1 − β2ᵗ), whether the
    variance is tractable, √r_t, N1, N2).  A batch whose problems share p computes it once a step,
    not B times (Method.parts)."""
    b1 = p[P_BETA1]
    bc1 = 1.0 - math.pow(b1, float(t)) if p[P_BC_MU] != 0.0 else 1.0
    bc2 = 1.0 - math.pow(p[P_BETA2], float(t)) if p[P_BC_NU] != 0.0 else 1.0
    tractable, root_r = True, 1.0
    if p[P_RECTIFY] != 0.0:
        rho_inf = 2.0 / (1.0 - p[P_BETA2]) - 1.0
        b2t = math.pow(p[P_BETA2], float(t))
        rho = rho_inf - 2.0 * t * b2t / (1.0 - b2t)
        tractable = rho > p[P_THRESHOLD]
        if tractable:
            r2 = (rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)
            root_r = math.sqrt(r2)
    psi = p[P_MOMENTUM_DECAY]
    n1, n2 = 0.0, 0.0  # (the rule reads N1, N2 only with nesterov: no pow a step for them)
    if p[P_NESTEROV] != 0.0:
        if psi >= 0.0:  # NAdam's momentum schedule (torch, Keras)
            mu, mu_next = nadam_mu(b1, psi, t), nadam_mu(b1, psi, t + 1)
            product = nadam_mu_product(b1, psi, t)
            n1 = mu_next / (1.0 - product * mu_next)
            n2 = (1.0 - mu) / (1.0 - product)
        else:
            n1 = b1 / (1.0 - math.pow(b1, float(t + 1)) if p[P_BC_MU] != 0.0 else 1.0)
            n2 = (1.0 - b1) / bc1
    return bc1, bc2, math.sqrt(bc2), tractable, root_r, n1, n2


@register_jitable
def adam_finish(p, t, powers, lr, gamma, gfactor, out):
    """Adam's coefficients from adam_powers(p, t) and η."""
    bc1, bc2, c2, tractable, root_r, n1, n2 = powers
    common_coefficients(p, lr, gfactor, out)
    b1 = p[P_BETA1]
    step = lr if p[P_NESTEROV] != 0.0 else lr / bc1
    lr_t = step
    if p[P_EPSILON_HAT] != 0.0:
        lr_t = step * c2
        c2 = 1.0
    out[BETA1] = b1
    out[W1] = 1.0 - b1
    out[BETA2] = p[P_BETA2]
    out[W2] = 1.0 - p[P_BETA2]
    out[EPS] = p[P_EPS]
    out[C2] = c2
    out[BC2] = bc2
    out[EPS_ROOT] = p[P_EPS_ROOT]
    out[EPS_S] = 0.0
    if p[P_BELIEF] != 0.0:  # AdaBelief's ε_root goes into its state, not under the root
        out[EPS_S] = p[P_EPS_ROOT]
        out[EPS_ROOT] = 0.0
    if p[P_RECTIFY] != 0.0:
        if tractable:
            lr_t *= root_r
        else:  # the variance is not tractable yet: x ← x − η m̂, d = 1
            lr_t = step
            out[C2] = math.inf
            out[BC2] = math.inf
            out[EPS_ROOT] = 0.0
            out[EPS] = 1.0
    out[LR] = lr_t  # (written once, from float64: out may be float32)
    out[N1] = n1
    out[N2] = n2


@register_jitable
def adam_coefficients(p, t, lr, gamma, gfactor, out):
    adam_finish(p, t, adam_powers(p, t), lr, gamma, gfactor, out)


@register_jitable
def nadam_mu(b1, psi, t):
    """NAdam's momentum at step t, μ_t = β1 (1 − ½·0.96^(tψ)) (Dozat 2016; torch, Keras)."""
    return b1 * (1.0 - 0.5 * math.pow(0.96, float(t) * psi))


@register_jitable
def nadam_mu_product(b1, psi, t):
    """Π_t = μ_1 ⋯ μ_t, from t alone (torch and Keras carry it from step to step; fastrms's
    coefficients are functions of t, so that a run can resume, change its hyperparameters or run
    on any backend without more state).  Multiplied out, in torch's order, for t ≤ 64; after, as
    exp(t ln β1 − Σ_k (½)ᵏ/k · qᵏ (1 − q^{kt})/(1 − qᵏ)) with q = 0.96^ψ, the series of
    Σ_i ln(1 − ½qⁱ).  0 once below 1e-20, where 1 − Π rounds to 1: every μ_i ≤ μ_t bounds it.
    (A β1 changed mid-run therefore acts as if it had held from the start.)"""
    mu = nadam_mu(b1, psi, t)
    if mu <= 0.0 or t * math.log(mu) < -46.0:
        return 0.0
    if t <= 64 or psi == 0.0:
        product = 1.0
        for i in range(1, t + 1):
            product *= nadam_mu(b1, psi, i)
        return product
    lq = psi * math.log(0.96)
    total = 0.0
    for k in range(1, 100):
        term = math.pow(0.5, k) / k * math.exp(k * lq) * math.expm1(k * t * lq) / math.expm1(k * lq)
        total += term
        if term < 1e-17 * total:
            break
    return math.exp(t * math.log(b1) - total)


HYPERS = {
    **COMMON, "lr": Hyper(0.001, lr_check, COMMON["lr"].doc),
    "beta1": Hyper(0.9, ck.unit_open, "decay β1 of the running mean m of g"),
    "beta2": Hyper(0.999, ck.unit_open, "decay β2 of the running mean v of g²"),
    "eps": Hyper(1e-8, ck.nonneg, "ε, outside the root"),
    "amsgrad": Hyper(False, ck.boolean, "use the running maximum of v (Reddi et al. 2018)"),
    "epsilon_hat": Hyper(False, ck.boolean, "x ← x − η√(1 − β2^t)/(1 − β1^t)·m/(√v + ε) (Keras, TF1)"),
    "v_hat": Hyper(False, ck.boolean, "work with v̂ = v/(1 − β2^t): d = √(v̂ + ε_root) + ε, the AMSGrad "
                                      "maximum over v̂ (Optax)"),
    "eps_root": Hyper(0.0, ck.nonneg, "ε_root, inside the root (Optax; needs v_hat)"),
    "nesterov": Hyper(False, ck.boolean, "Nesterov momentum in Adam: NAdam as in Optax (Dozat 2016)"),
    "bias_correction_mu": Hyper(True, ck.boolean, "divide m by 1 − β1^t"),
    "bias_correction_nu": Hyper(True, ck.boolean, "divide v by 1 − β2^t"),
    "rectify": Hyper(False, ck.boolean, "RAdam: η m̂ while ρ_t ≤ threshold, then the step times r_t "
                                        "(Liu et al. 2019)"),
    "threshold": Hyper(5.0, ck.Range(4.0), "RAdam's threshold on ρ_t (torch: ρ_t > 5; Optax: ρ_t ≥ 5), at "
                                           "least 4, where r_t is defined"),
    "momentum_decay": Hyper(None, lambda name, v: None if v is None else ck.nonneg(name, v),
                            "NAdam's ψ: μ_t = β1(1 − ½·0.96^(tψ)) (torch 0.004, Keras 1); None: μ_t = β1 "
                            "(Optax); needs nesterov"),
    "belief": Hyper(False, ck.boolean,
                    "AdaBelief: v ← β2 v + (1 − β2)(g − m)² + ε_root (Zhuang et al. 2020)"),
}


def pack(v):
    if v["momentum_decay"] is not None:
        if v["beta1"] == math.inf:  # (a scheduled value: Config._structure)
            raise ValueError("a scheduled beta1 with momentum_decay: NAdam's product of momenta is computed "
                             "from t, as for a constant β1; give beta1 a number")
        for name, bad in (("nesterov", not v["nesterov"]), ("rectify", v["rectify"]),
                          ("bias_correction_mu", not v["bias_correction_mu"])):
            if bad:
                raise ValueError(f"momentum_decay schedules NAdam's momentum (nesterov=True, with its own "
                                 f"corrections); {name}={v[name]!r} does not go with it")
    if v["eps_root"] > 0 and not v["v_hat"] and not v["belief"]:
        raise ValueError("eps_root is added to v̂ = v/(1 − β2^t) under the root, Optax's form: it needs "
                         "v_hat=True (preset='optax' sets it)")
    if v["epsilon_hat"] and v["v_hat"]:
        raise ValueError("epsilon_hat (Keras, TF1: ε not bias-corrected) and v_hat (Optax: ε added to "
                         "v̂'s root) are two forms of the denominator; choose one")
    if v["rectify"]:
        for name, off in (("amsgrad", v["amsgrad"]), ("bias_correction_mu", not v["bias_correction_mu"]),
                          ("bias_correction_nu", not v["bias_correction_nu"])):
            if off:
                raise ValueError(f"rectify=True (RAdam) is defined with both bias corrections and without "
                                 f"AMSGrad; {name}={v[name]!r} does not go with it")
    return {**{k: v[k] for k in PARAMS},
            "momentum_decay": -1.0 if v["momentum_decay"] is None else v["momentum_decay"]}


def flags(v):
    return (v["amsgrad"], v["eps"] == 0 and v["eps_root"] == 0, v["v_hat"], v["nesterov"], v["belief"])


def rows(v):
    return [("m", 0.0), ("v", 0.0)] + ([("vmax", 0.0)] if v["amsgrad"] else [])

METHOD = Method(
    "adam", "Adam", adam, adam_coefficients, HYPERS, pack, SLOTS, PARAMS, flags_fn=flags, rows_fn=rows,
    varies_fn=lambda v: True, parts=(adam_powers, adam_finish),
    doc="m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  x ← x − η m̂ / (√v̂ + ε)")


def variant(name: str, class_name: str, doc: str, fixed: dict, docs: dict | None = None,
            **defaults) -> Method:
    """A method that is this rule with some options fixed and other defaults (AdamW, NAdam, RAdam,
    AdaBelief): the fixed options are taken only at their value, and are not the method's own."""
    hypers = {k: h for k, h in HYPERS.items() if k not in fixed}
    hypers.update({k: replace(hypers[k], default=v) for k, v in defaults.items()})
    hypers.update({k: replace(hypers[k], doc=v) for k, v in (docs or {}).items()})
    return Method(name, class_name, adam, adam_coefficients, hypers, pack, SLOTS, PARAMS, flags_fn=flags,
                  rows_fn=rows, fixed=fixed, varies_fn=lambda v: True,
                  parts=(adam_powers, adam_finish), doc=doc)
