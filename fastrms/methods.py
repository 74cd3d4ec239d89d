"""The methods: hyperparameters, state rows and per-step coefficients of the rules in ``rules.py``.

A method is a rule plus host-side bookkeeping.  ``Method.configure`` validates
the user's hyperparameters (aliases included) into a ``Config``; the
coefficient function of the method turns a config and the step number t into
the tuple h the rule reads.  Coefficient functions are plain Python and
Numba-jittable, so the compiled loop computes them without leaving nopython mode.

To add a method: write its rule in ``rules.py``, a coefficient function and a
``Method`` entry here; every backend and driver picks it up from ``METHODS``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numba.extending import register_jitable

from . import _checks as ck
from . import rules
from .schedules import as_schedule

# ----------------------------------------------------------------------------
# per-step coefficients (jittable; powers go through math.pow(x, float(t)) so
# Python and Numba round alike -- Numba expands x ** int into multiplications):
# p is the method's packed float64 parameter vector, t the 1-based step number,
# lr and gamma the scheduled values of this
# step, gfactor the clip-by-norm factor; results go to out (cast to x's dtype).
# p[0..3] are common: maximize sign, clip value, weight decay, decoupled flag.
# ----------------------------------------------------------------------------


@register_jitable
def _common(p, lr, gfactor, out):
    out[1] = p[0] * gfactor
    out[2] = p[1]
    if p[3] != 0.0:
        out[3] = 0.0
        out[4] = 1.0 - lr * p[2]
    else:
        out[3] = p[2]
        out[4] = 1.0


@register_jitable
def _momentum_terms(mu, nesterov, lr_inside, lr, out, k):
    """Fill out[k:k+4] = (μ, a, c_g, c_b) and out[0] for a momentum buffer."""
    a = lr if lr_inside != 0.0 else 1.0
    out[0] = 1.0 if lr_inside != 0.0 else lr
    out[k] = mu
    out[k + 1] = a
    out[k + 2] = a if nesterov != 0.0 else 0.0
    out[k + 3] = mu if nesterov != 0.0 else 1.0


@register_jitable
def gd_coefficients(p, t, lr, gamma, gfactor, out):
    _common(p, lr, gfactor, out)
    out[0] = lr


@register_jitable
def momentum_coefficients(p, t, lr, gamma, gfactor, out):
    _common(p, lr, gfactor, out)
    _momentum_terms(p[4], p[5], p[6], lr, out, 5)


@register_jitable
def rmsprop_coefficients(p, t, lr, gamma, gfactor, out):
    # p[4] adagrad, p[5] eps, p[6] eps_in_sqrt, p[7] bias_correction,
    # p[8] momentum, p[9] nesterov, p[10] lr_in_momentum, p[11] lr_decay
    lr = lr / (1.0 + (t - 1) * p[11])
    _common(p, lr, gfactor, out)
    if p[4] != 0.0:
        gamma = 1.0
        out[6] = 1.0
    else:
        out[6] = 1.0 - gamma
    out[5] = gamma
    out[7] = p[5] if p[6] != 0.0 else 0.0
    out[8] = 0.0 if p[6] != 0.0 else p[5]
    out[9] = 1.0 / (1.0 - math.pow(gamma, float(t))) if p[7] != 0.0 else 1.0
    # without a buffer (μ = 0) there is nothing for η to sit inside of
    _momentum_terms(p[8], p[9], p[10] if p[8] > 0.0 else 0.0, lr, out, 10)


@register_jitable
def adam_coefficients(p, t, lr, gamma, gfactor, out):
    # p[4] beta1, p[5] beta2, p[6] eps, p[7] epsilon_hat (Keras: ε not bias-corrected)
    _common(p, lr, gfactor, out)
    c2 = math.sqrt(1.0 - math.pow(p[5], float(t)))
    if p[7] != 0.0:
        out[0] = lr * c2 / (1.0 - math.pow(p[4], float(t)))
        c2 = 1.0
    else:
        out[0] = lr / (1.0 - math.pow(p[4], float(t)))
    out[5] = p[4]
    out[6] = 1.0 - p[4]
    out[7] = p[5]
    out[8] = 1.0 - p[5]
    out[9] = p[6]
    out[10] = c2


@register_jitable
def adadelta_coefficients(p, t, lr, gamma, gfactor, out):
    # p[4] eps
    _common(p, lr, gfactor, out)
    out[0] = lr
    out[5] = gamma
    out[6] = 1.0 - gamma
    out[7] = p[4]


# ----------------------------------------------------------------------------
# hyperparameters
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Hyper:
    default: Any
    check: Callable[[str, Any], Any]
    doc: str


def _lr_check(name, v):
    v = as_schedule(name, v)
    return v if callable(v) else ck.positive(name, v)


def _gamma_check(name, v):
    v = as_schedule(name, v)
    return v if callable(v) else ck.unit_closed(name, v)


def _clip_check(name, v):
    return ck.in_range(name, v, lo=0, lo_open=True)


COMMON = {
    "lr": Hyper(0.01, _lr_check, "learning rate η: a float, a schedule or a callable of t"),
    "weight_decay": Hyper(0.0, ck.nonneg, "weight decay λ"),
    "decoupled_weight_decay": Hyper(False, ck.boolean, "x ← (1 − ηλ)x (AdamW, Keras) instead of g ← g + λx"),
    "maximize": Hyper(False, ck.boolean, "ascend instead of descend"),
    "clip_value": Hyper(math.inf, _clip_check, "clip each g_i to [−c, c]"),
    "clip_norm": Hyper(math.inf, _clip_check, "rescale g so that ‖g‖₂ ≤ c"),
}

MOMENTUM = {
    "momentum": Hyper(0.0, ck.unit_open, "momentum μ"),
    "nesterov": Hyper(False, ck.boolean, "Nesterov look-ahead momentum"),
    "lr_in_momentum": Hyper(False, ck.boolean,
                            "keep η inside the buffer (TensorFlow) rather than outside (PyTorch)"),
}

ALIASES = {
    "learning_rate": "lr", "eta": "lr", "step_size": "lr",
    "rho": "gamma", "alpha": "gamma", "decay": "gamma",
    "mu": "momentum", "epsilon": "eps",
    "beta_1": "beta1", "beta_2": "beta2", "b1": "beta1", "b2": "beta2",
    "initial_accumulator_value": "initial_scale",
}


@dataclass(frozen=True)
class Method:
    """A rule plus what the host needs to drive it."""

    name: str
    rule: Callable
    coefficients: Callable
    nh: int
    hypers: dict
    pack_fn: Callable
    flags_fn: Callable = field(default=lambda c: ())
    rows_fn: Callable = field(default=lambda c: ())
    fixed: dict = field(default_factory=dict)
    varies_fn: Callable = field(default=lambda v: False)
    doc: str = ""

    def configure(self, options: dict, defaults: dict | None = None, aliases: dict | None = None) -> Config:
        """Validate hyperparameters (under their canonical names or aliases) into a Config."""
        aliases = {**ALIASES, **(aliases or {})}
        given: dict[str, tuple[str, Any]] = {}
        for key, value in options.items():
            if key == "betas" and "beta1" in self.hypers:
                try:
                    b1, b2 = value
                except (TypeError, ValueError):
                    raise ValueError(f"betas must be a pair (beta1, beta2), got {value!r}") from None
                pairs = [("beta1", b1), ("beta2", b2)]
            else:
                pairs = [(aliases.get(key, key), value)]
            for name, v in pairs:
                if name not in self.hypers:
                    raise ck.unknown(f"option for method {self.name!r}:", key, list(self.hypers) + list(
                        k for k, c in aliases.items() if c in self.hypers))
                if name in given:
                    raise ValueError(f"{name} given twice, as {given[name][0]!r} and {key!r}; pass one")
                given[name] = (key, v)
        values = {}
        for name, hp in self.hypers.items():
            key, v = given.get(name, (name, (defaults or {}).get(name, hp.default)))
            values[name] = hp.check(key, v)
        values.update(self.fixed)
        return Config(self, values)


@dataclass
class Config:
    """A method with validated hyperparameters."""

    method: Method
    values: dict

    def __getitem__(self, name):
        return self.values[name]

    # A config is never mutated (presets.configure hands out cached ones), so derived
    # values are computed once.
    @cached_property
    def flags(self) -> tuple:
        return tuple(bool(f) for f in self.method.flags_fn(self.values))

    @cached_property
    def rows(self) -> tuple:
        """(name, initial value) of each state row."""
        return tuple(self.method.rows_fn(self.values))

    def packed(self) -> np.ndarray:
        return self._packed.copy()

    @cached_property
    def _packed(self) -> np.ndarray:
        v = self.values
        common = [-1.0 if v["maximize"] else 1.0, v["clip_value"], v["weight_decay"],
                  float(v["decoupled_weight_decay"])]
        return np.array(common + [float(a) for a in self.method.pack_fn(v)], dtype=np.float64)

    @cached_property
    def varies(self) -> bool:
        """Whether h changes from step to step (schedules, bias correction, clip by norm)."""
        v = self.values
        return (callable(v["lr"]) or callable(v.get("gamma")) or v["clip_norm"] < math.inf
                or (v["decoupled_weight_decay"] and v["weight_decay"] > 0 and callable(v["lr"]))
                or bool(self.method.varies_fn(v)))

    @property
    def lr(self):
        return self.values["lr"]

    @property
    def gamma(self):
        return self.values.get("gamma", 0.0)


def _rms_hypers(**defaults):
    h = {**COMMON, **MOMENTUM,
         "gamma": Hyper(0.9, _gamma_check, "decay γ of the running mean s of g²"),
         "eps": Hyper(1e-6, ck.nonneg, "ε"),
         "eps_in_sqrt": Hyper(True, ck.boolean, "d = √(s + ε) if True, √s + ε if False"),
         "centered": Hyper(False, ck.boolean, "divide by the running variance s − m² (Graves 2013)"),
         "initial_scale": Hyper(0.0, ck.nonneg, "initial value s₀ (1 in TF1 and autograd)"),
         "bias_correction": Hyper(False, ck.boolean, "use s/(1 − γ^t) (Optax)")}
    for k, v in defaults.items():
        h[k] = Hyper(v, h[k].check, h[k].doc)
    return h


def _check_nesterov(v):
    if v["nesterov"] and v["momentum"] == 0:
        raise ValueError("nesterov=True needs momentum > 0")


def _rms_pack(v, adagrad=0.0, lr_decay=0.0):
    _check_nesterov(v)
    if v["bias_correction"] and not callable(v["gamma"]) and v["gamma"] >= 1.0:
        raise ValueError("bias_correction needs gamma < 1 (1 − γ^t would be 0)")
    return (adagrad, v["eps"], v["eps_in_sqrt"], v["bias_correction"], v["momentum"],
            v["nesterov"], v["lr_in_momentum"], lr_decay)


def _rms_rows(v):
    rows = [("s", v["initial_scale"])]
    if v["centered"]:
        rows.append(("m", 0.0))
    if v["momentum"] > 0:
        rows.append(("b", 0.0))
    return rows


GD = Method(
    "gd", rules.gd, gd_coefficients, 5, dict(COMMON), lambda v: (),
    doc="x ← x − η g")

HEAVY_BALL = Method(
    "momentum", rules.momentum, momentum_coefficients, 9,
    {**COMMON, **MOMENTUM, "momentum": Hyper(0.9, ck.unit_open, "momentum μ")},
    lambda v: _check_nesterov(v) or (v["momentum"], v["nesterov"], v["lr_in_momentum"]),
    rows_fn=lambda v: [("b", 0.0)],
    doc="b ← μ b + g;  x ← x − η b")

RMSPROP = Method(
    "rmsprop", rules.rmsprop, rmsprop_coefficients, 14, _rms_hypers(), _rms_pack,
    flags_fn=lambda v: (v["centered"], v["momentum"] > 0, v["eps"] == 0), rows_fn=_rms_rows,
    varies_fn=lambda v: v["bias_correction"],
    doc="s ← γ s + (1 − γ) g²;  x ← x − η g / √(s + ε)")

_adagrad_hypers = {k: h for k, h in _rms_hypers().items()
                   if k in COMMON or k in ("eps", "eps_in_sqrt", "initial_scale")}
_adagrad_hypers["lr_decay"] = Hyper(0.0, ck.nonneg, "η_t = η / (1 + (t − 1)·lr_decay) (PyTorch)")
ADAGRAD = Method(
    "adagrad", rules.rmsprop, rmsprop_coefficients, 14, _adagrad_hypers,
    lambda v: (1.0, v["eps"], v["eps_in_sqrt"], 0.0, 0.0, 0.0, 0.0, v["lr_decay"]),
    flags_fn=lambda v: (False, False, v["eps"] == 0), rows_fn=lambda v: [("s", v["initial_scale"])],
    varies_fn=lambda v: v["lr_decay"] > 0,
    doc="s ← s + g²;  x ← x − η g / √(s + ε)")

_adam_hypers = {
    **COMMON, "lr": Hyper(0.001, _lr_check, COMMON["lr"].doc),
    "beta1": Hyper(0.9, ck.unit_open, "decay β1 of the running mean m of g"),
    "beta2": Hyper(0.999, ck.unit_open, "decay β2 of the running mean v of g²"),
    "eps": Hyper(1e-8, ck.nonneg, "ε, outside the root"),
    "amsgrad": Hyper(False, ck.boolean, "use the running maximum of v (Reddi et al. 2018)"),
    "epsilon_hat": Hyper(False, ck.boolean, "x ← x − η√(1 − β2^t)/(1 − β1^t)·m/(√v + ε) (Keras, TF1)"),
}
ADAM = Method(
    "adam", rules.adam, adam_coefficients, 11, _adam_hypers,
    lambda v: (v["beta1"], v["beta2"], v["eps"], v["epsilon_hat"]),
    flags_fn=lambda v: (v["amsgrad"], v["eps"] == 0),
    rows_fn=lambda v: [("m", 0.0), ("v", 0.0)] + ([("vmax", 0.0)] if v["amsgrad"] else []),
    varies_fn=lambda v: True,
    doc="m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  x ← x − η m̂ / (√v̂ + ε)")

ADAMW = Method(
    "adamw", rules.adam, adam_coefficients, 11,
    {**{k: h for k, h in _adam_hypers.items() if k != "decoupled_weight_decay"},
     "weight_decay": Hyper(0.01, ck.nonneg, "decoupled weight decay λ")},
    ADAM.pack_fn, ADAM.flags_fn, ADAM.rows_fn, fixed={"decoupled_weight_decay": True},
    varies_fn=ADAM.varies_fn,
    doc="Adam with x ← (1 − ηλ) x before the step")

ADADELTA = Method(
    "adadelta", rules.adadelta, adadelta_coefficients, 8,
    {**COMMON, "lr": Hyper(1.0, _lr_check, COMMON["lr"].doc),
     "gamma": Hyper(0.9, _gamma_check, "decay ρ of both running means"),
     "eps": Hyper(1e-6, ck.nonneg, "ε")},
    lambda v: (v["eps"],), flags_fn=lambda v: (v["eps"] == 0,),
    rows_fn=lambda v: [("s", 0.0), ("delta", 0.0)],
    doc="s ← ρ s + (1 − ρ) g²;  Δ = √(δ + ε)/√(s + ε)·g;  δ ← ρ δ + (1 − ρ) Δ²;  x ← x − η Δ")

METHODS = {m.name: m for m in (GD, HEAVY_BALL, RMSPROP, ADAGRAD, ADAM, ADAMW, ADADELTA)}


def get(name: str) -> Method:
    if not isinstance(name, str):
        raise TypeError(f"method must be a string or a fastrms method function, got {name!r}")
    key = name.lower()
    if key not in METHODS:
        raise ck.unknown("method", name, METHODS)
    return METHODS[key]
