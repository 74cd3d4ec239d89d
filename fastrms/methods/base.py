"""What every method shares: the common coefficient slots, hyperparameters, and Method/Config.

A method is one module in this package: its per-element rule (the math, in the
seeds' notation), a jittable coefficient function, and a ``METHOD`` entry; the
registry in ``__init__.py`` lists it once and every stepper class, scipy method
function, export, backend and driver picks it up from there.

Named slots.  The rule reads its per-step coefficients from a tuple h whose
first slots are common to all methods (``COMMON_SLOTS``, below) and whose
others a method names in its ``SLOTS``; ``slots(SLOTS)`` turns the names into
module-level integer constants, which Numba folds into the kernels (no cost).
Likewise the method's packed float64 parameter vector p: common entries first
(``COMMON_PARAMS``), then the method's ``PARAMS``, packed by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from numba.extending import overload, register_jitable

from .. import _checks as ck
from ..schedules import N_PARAMS, Schedule, as_schedule, kind_and_params

# h[0 … 4], common to every rule:
#   LR      step multiplier η_t (1 when η lives inside the momentum buffer)
#   GSCALE  g ← GSCALE·g   (−1 to maximize; the clip-by-norm factor)
#   CLIP    g ← clip(g, −CLIP, CLIP)    (inf: off)
#   WD      g ← g + WD·x   (coupled L2 weight decay, as in PyTorch)
#   KEEP    x ← KEEP·x     (decoupled weight decay 1 − η_t·λ, as in AdamW)
COMMON_SLOTS = ("lr", "gscale", "clip", "wd", "keep")
LR, GSCALE, CLIP, WD, KEEP = range(len(COMMON_SLOTS))
# state rows that hold running sums or means of squares (RMSProp's s, Adam's v and its max, Adadelta's
# δ): never negative, and their square roots are taken, so a loaded state must not make them negative
SQUARE_ROWS = frozenset({"s", "v", "vmax", "delta"})
# p[0 … 3], common to every method: maximize sign, clip value, weight decay, decoupled flag
COMMON_PARAMS = ("sign", "clip_value", "weight_decay", "decoupled")
P_SIGN, P_CLIP, P_WD, P_DECOUPLED = range(len(COMMON_PARAMS))


def slots(names: tuple) -> range:
    """Indices in h of a method's own coefficient slots (after the common ones)."""
    return range(len(COMMON_SLOTS), len(COMMON_SLOTS) + len(names))


def params(names: tuple) -> range:
    """Indices in p of a method's own packed parameters (after the common ones)."""
    return range(len(COMMON_PARAMS), len(COMMON_PARAMS) + len(names))


# ----------------------------------------------------------------------------
# helpers of the rules (compiled into every kernel)
# ----------------------------------------------------------------------------

def rule(fn):
    """Like ``register_jitable``, but typed with literal flags so that Numba prunes the
    branches they switch off; otherwise the dead branches block SIMD vectorization."""

    @overload(fn, prefer_literal=True, strict=False)
    def _typed(*args):
        return fn

    return fn


# The last two compile-time flags of every rule.  ``general``: False when the common slots are
# all off (no maximize, clip or weight decay: GSCALE = 1, CLIP = inf, WD = 0, KEEP = 1), so the
# common configurations pay nothing for them; True is the general form, which is also right for
# those values (a batch mixing both runs it).  ``decay_first``: coupled weight decay goes in
# before the clip (MXNet's RMSProp, Adam, Adamax, Nadam), compiled apart so that the usual order
# pays nothing.

@rule
def gradient(x, g, h, general, decay_first):
    """g ← clip(GSCALE·g, ±CLIP) + WD·x, or clip(GSCALE·g + WD·x, ±CLIP) if decay_first (NaN
    passes through the clip); g itself unless general."""
    if not general:
        return g
    g = h[GSCALE] * g + h[WD] * x if decay_first else h[GSCALE] * g
    if g > h[CLIP]:
        g = h[CLIP]
    elif g < -h[CLIP]:
        g = -h[CLIP]
    return g if decay_first else g + h[WD] * x


@rule
def keep(x, h, general):
    """KEEP·x (decoupled weight decay); x itself unless general."""
    return h[KEEP] * x if general else x


@rule
def momentum_direction(u, S, j, i, h, k, nesterov, lr_inside):
    """b ← μ b + a·u in row j of S, with h[k:k+4] = (μ, a, c_u, c_b) from momentum_terms; the step
    direction is b (heavy ball) or c_u·u + c_b·b (Nesterov).  a = η when η lives inside the buffer
    (lr_inside, TensorFlow), else 1, and then it is not multiplied."""
    b = h[k] * S[j, i] + (h[k + 1] * u if lr_inside else u)
    S[j, i] = b
    return h[k + 2] * u + h[k + 3] * b if nesterov else b


@rule
def descend(x, d, h, general, lr_inside):
    """KEEP·x − η·d, or KEEP·x − d when η already sits in d (lr_inside)."""
    return keep(x, h, general) - (d if lr_inside else h[LR] * d)


@register_jitable
def ratio(g, d):
    """g / d, and 0 for 0/0: with ε = 0, an element whose gradients were all 0 has d = 0, and it
    stays put rather than becoming NaN.  (Written as g − g to stay in x's dtype.)  A nonzero g over
    d = 0 (γ = 1 with s₀ = 0, or g² underflowing) stays ±inf, as in the frameworks, and is
    reported as divergence rather than frozen at 0.  Only rules compiled for ε = 0 use it (flag
    eps_zero): with ε > 0, d ≥ √ε or ε is never 0."""
    return g / d if d != 0 or g != 0 else g - g


@register_jitable
def overflow_check(u, s):
    """u, or NaN where the running mean s is inf.  g/√s would silently freeze that element at 0
    once g² overflowed s (|g| > ~1e154 in float64, ~1e19 in float32); NaN instead makes the run
    report divergence (minimize: status 3; steppers: NaN in x).  Centered RMSProp folds it into
    its clamp of s − m² (one max where this and the clamp were five operations)."""
    return u + (s - s)


# ----------------------------------------------------------------------------
# helpers of the coefficient functions (jittable; powers go through math.pow(x, float(t))
# so Python and Numba round alike -- Numba expands x ** int into multiplications).
# A coefficient function is f(p, t, lr, gamma, gfactor, out): p the packed parameters,
# t the 1-based step, lr and gamma this step's (possibly scheduled) values, gfactor the
# clip-by-norm factor; it writes h into out (cast to x's dtype).
# ----------------------------------------------------------------------------

@register_jitable
def common_coefficients(p, lr, gfactor, out):
    """GSCALE, CLIP, WD and KEEP (LR is the method's)."""
    out[GSCALE] = p[P_SIGN] * gfactor
    out[CLIP] = p[P_CLIP]
    if p[P_DECOUPLED] != 0.0:
        out[WD] = 0.0
        out[KEEP] = 1.0 - lr * p[P_WD]
    else:
        out[WD] = p[P_WD]
        out[KEEP] = 1.0


MOMENTUM_SLOTS = ("mu", "a", "c_g", "c_b")  # four consecutive slots; see momentum_terms


@register_jitable
def momentum_terms(mu, nesterov, lr_inside, lr, out, k):
    """Fill out[k:k+4] = (μ, a, c_g, c_b) and out[LR] for a momentum buffer b ← μ b + a·u,
    stepping by c_g·u + c_b·b: (0, 1) heavy ball, (a, μ) Nesterov; a is η if η is inside."""
    a = lr if lr_inside != 0.0 else 1.0
    out[LR] = 1.0 if lr_inside != 0.0 else lr
    out[k] = mu
    out[k + 1] = a
    out[k + 2] = a if nesterov != 0.0 else 0.0
    out[k + 3] = mu if nesterov != 0.0 else 1.0


# ----------------------------------------------------------------------------
# hyperparameters
# ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Hyper:
    default: Any
    check: Callable[[str, Any], Any]
    doc: str


def lr_check(name, v):
    v = as_schedule(name, v)
    return v if callable(v) else ck.positive(name, v)


# the interval a float must lie in to pass (a batch tests its per-problem values at once)
lr_check.interval = ck.positive


def gamma_check(name, v):
    v = as_schedule(name, v)
    return v if callable(v) else ck.unit_closed(name, v)


gamma_check.interval = ck.unit_closed


def clip_check(name, v):
    return ck.in_range(name, v, lo=0, lo_open=True)


COMMON = {
    "lr": Hyper(0.01, lr_check, "learning rate η: a float, a schedule or a callable of t"),
    "weight_decay": Hyper(0.0, ck.nonneg, "weight decay λ"),
    "decoupled_weight_decay": Hyper(False, ck.boolean, "x ← (1 − ηλ)x (AdamW, Keras) instead of g ← g + λx"),
    "decay_before_clip": Hyper(False, ck.boolean,
                               "g ← clip(g + λx) (MXNet 1.x's RMSProp, Adam, Adamax, Nadam) instead of "
                               "clip(g) + λx"),
    "maximize": Hyper(False, ck.boolean, "ascend instead of descend"),
    "clip_value": Hyper(math.inf, clip_check, "clip each g_i to [−c, c]"),
    "clip_norm": Hyper(math.inf, clip_check, "rescale g so that ‖g‖₂ ≤ c"),
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
    """A rule plus what the host needs to drive it.

    ``slots`` names the rule's own coefficient slots in h and ``params`` the method's
    own packed parameters in p (each after the common ones); ``pack_fn(values)`` returns
    the params by name; ``flags_fn`` the compile-time flags of the rule; ``rows_fn`` the
    state rows as (name, initial value); ``varies_fn`` whether h changes every step.
    ``parts``, where the coefficients cost powers of t, is ``(powers, finish)`` with
    ``coefficients(p, t, lr, gamma, gfactor, out)`` = ``finish(p, t, powers(p, t), lr, ...)``:
    a batch computes the powers once a step for each group of problems with the same p (a sweep
    of η is one group, a grid of η × β1 a group a β1), and on a GPU finishes its rows there:
    ``finish`` must compile for every backend, and ``powers`` return floats and bools (a grid's
    cross to the device as a row of float64 a group).
    """

    name: str
    class_name: str
    rule: Callable
    coefficients: Callable
    hypers: dict
    pack_fn: Callable
    slots: tuple = ()
    params: tuple = ()
    flags_fn: Callable = field(default=lambda c: ())
    rows_fn: Callable = field(default=lambda c: ())
    fixed: dict = field(default_factory=dict)
    varies_fn: Callable = field(default=lambda v: False)
    parts: tuple = ()
    doc: str = ""

    @property
    def nh(self) -> int:
        """Length of h: the common slots and the method's own."""
        return len(COMMON_SLOTS) + len(self.slots)

    @cached_property
    def schedulable(self) -> dict:
        """name -> index in p of each hyperparameter that may follow a schedule (β1, β2, μ,
        weight decay, ε ...: every packed parameter with an interval check), besides η and γ."""
        slots = {"weight_decay": P_WD, **{n: len(COMMON_PARAMS) + j for j, n in enumerate(self.params)}}
        return {n: i for n, i in slots.items()
                if n in self.hypers and isinstance(self.hypers[n].check, ck.Range)}

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
                if name in self.fixed:  # (torch's AdamW.defaults carry decoupled_weight_decay=True)
                    if not (v is self.fixed[name] or v == self.fixed[name]):
                        raise ValueError(f"{self.class_name} is defined with {name}={self.fixed[name]!r}, "
                                         f"got {key}={v!r}")
                    continue
                if name not in self.hypers:
                    raise ck.unknown(f"option for method {self.name!r}:", key, list(self.hypers) + list(
                        k for k, c in aliases.items() if c in self.hypers))
                if name in given:
                    raise ValueError(f"{name} given twice, as {given[name][0]!r} and {key!r}; pass one")
                given[name] = (key, v)
        values = {}
        for name, hp in self.hypers.items():
            key, v = given.get(name, (name, (defaults or {}).get(name, hp.default)))
            if name in self.schedulable and (callable(v) or isinstance(v, dict)):
                values[name] = as_schedule(key, v)  # checked against hp.check's interval at every step
            else:
                values[name] = hp.check(key, v)
        values.update(self.fixed)
        check_decay_order(values)
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
    def scheduled(self) -> tuple:
        """(index in p, name, schedule, interval) of each scheduled packed hyperparameter; the
        drivers write its value into p before computing each step's coefficients."""
        return tuple((i, n, self.values[n], self.method.hypers[n].check)
                     for n, i in self.method.schedulable.items() if callable(self.values[n]))

    @cached_property
    def schedule_rows(self) -> np.ndarray:
        """``scheduled`` as the compiled loops read it (and never write), a row each: [index in p,
        schedule kind, lo, hi, lo open, hi open, the schedule's N_PARAMS parameters]."""
        return np.array([[i, s.code, *interval.as_row(), *s.params] for i, _, s, interval in self.scheduled],
                        dtype=np.float64).reshape(-1, 6 + N_PARAMS)

    @cached_property
    def python_callables(self) -> tuple:
        """The hyperparameters given as plain Python callables (not fastrms.schedules schedules):
        compiled code cannot call them."""
        return tuple(n for n, v in self.values.items() if callable(v) and not isinstance(v, Schedule))

    @cached_property
    def lr_gamma_schedules(self) -> tuple:
        """(lr kind, lr params, γ kind, γ params) as the compiled loop reads them (kind_and_params);
        γ is 0 for a method without one."""
        return (*kind_and_params(self.values["lr"]), *kind_and_params(self.values.get("gamma", 0.0)))

    @cached_property
    def _structure(self) -> dict:
        """The values that decide the state rows, flags and packing: a scheduled one counts as
        present (inf), so a scheduled μ has its buffer even where the schedule passes 0."""
        return {**self.values, **{n: math.inf for _, n, _, _ in self.scheduled}}

    @cached_property
    def flags(self) -> tuple:
        """The rule's compile-time flags: the method's own, then ``general`` and ``decay_first`` (see
        gradient())."""
        v = self._structure
        general = (v["maximize"] or v["clip_value"] < math.inf or v["clip_norm"] < math.inf
                   or v["weight_decay"] != 0)
        # (only where the order shows: a decay to add and a clip to pass through)
        decay_first = v["decay_before_clip"] and v["weight_decay"] != 0 and v["clip_value"] < math.inf
        own = self.method.flags_fn(v)
        if self.scheduled:
            # a schedule may also pass 0 (a cosine to 0, a callable): the rule serves both ends, as
            # a batch's serves every problem's values (presets.configure_batch), so a scheduled ε
            # reaching 0 takes ε = 0's guarded division, not 0/0 = NaN
            at_zero = self.method.flags_fn({**v, **{n: 0.0 for _, n, _, _ in self.scheduled}})
            own = tuple(a or b for a, b in zip(own, at_zero, strict=True))
        return tuple(bool(f) for f in own) + (bool(general), bool(decay_first))

    @cached_property
    def rows(self) -> tuple:
        """(name, initial value) of each state row."""
        return tuple(self.method.rows_fn(self._structure))

    @cached_property
    def row_names(self) -> tuple:
        return tuple(name for name, _ in self.rows)

    @cached_property
    def row_inits(self) -> tuple:
        """The initial value of each state row."""
        return tuple(float(init) for _, init in self.rows)

    def packed(self) -> np.ndarray:
        return self._packed.copy()

    @cached_property
    def _packed(self) -> np.ndarray:
        v = self._structure
        common = {"sign": -1.0 if v["maximize"] else 1.0, "clip_value": v["clip_value"],
                  "weight_decay": v["weight_decay"], "decoupled": float(v["decoupled_weight_decay"])}
        own = self.method.pack_fn(v)
        if set(own) != set(self.method.params):
            raise RuntimeError(f"{self.method.name}: pack_fn gives {sorted(own)}, params are "
                               f"{sorted(self.method.params)}")
        return np.array([common[k] for k in COMMON_PARAMS] + [float(own[k]) for k in self.method.params],
                        dtype=np.float64)

    @cached_property
    def varies(self) -> bool:
        """Whether h changes from step to step (schedules, bias correction, clip by norm)."""
        v = self._structure
        return (callable(v["lr"]) or callable(v.get("gamma")) or v["clip_norm"] < math.inf
                or bool(self.scheduled)
                or (v["decoupled_weight_decay"] and v["weight_decay"] > 0 and callable(v["lr"]))
                or bool(self.method.varies_fn(v)))


def check_decay_order(v):
    """decay_before_clip orders coupled weight decay with the element clip; refused where it would
    mean something else or nothing the user could want."""
    if not v["decay_before_clip"]:
        return
    if v["decoupled_weight_decay"]:
        raise ValueError("decay_before_clip=True orders coupled weight decay (g + λx) with the clip; "
                         "it cannot combine with decoupled_weight_decay=True")
    if v["clip_norm"] < math.inf and (callable(v["weight_decay"]) or v["weight_decay"] != 0):
        raise ValueError("decay_before_clip=True clips g + λx element by element (clip_value); with "
                         "clip_norm the norm would be that of g + λx, which fastrms does not compute: "
                         "use clip_value, or decay_before_clip=False")


def check_nesterov(v):
    if v["nesterov"] and v["momentum"] == 0:
        raise ValueError("nesterov=True needs momentum > 0")
