"""Learning-rate (and decay) schedules: η_t as a function of the step index t = 0, 1, ...

A schedule is a small object holding a kind and a parameter vector; its value
is computed by ``schedule_value``, which is plain Python and Numba-jittable, so
the same schedule runs in the Python loop and inside the compiled loop.  Any
Python callable ``f(t) -> float`` also works as a schedule in the Python loop.

    constant(v)                                  η_t = v
    exponential(v, rate, steps, staircase)       η_t = v · rate^(t/steps)      (floor if staircase)
    step(v, factor, every)                       η_t = v · factor^⌊t/every⌋
    inverse_time(v, rate, steps, staircase)      η_t = v / (1 + rate · t/steps)
    cosine(v, steps, final=0)                    η_t = final + (v − final)·(1 + cos(π·min(t, steps)/steps))/2
    cosine(v, steps, final, periodic=True)       the same with t for min(t, steps): torch's CosineAnnealingLR,
                                                 back up to v by 2·steps, and so on

Each takes ``warmup=w``: a linear ramp η_t = v·(t+1)/w for t < w, then the schedule
runs from t − w.  With ``warmup_from=a`` the ramp is η_t = a + (v − a)·t/w instead, from a at
t = 0 to v at t = w, as Optax's ``warmup_cosine_decay_schedule`` / ``linear_schedule``, Keras's
``CosineDecay(warmup_target=...)`` and torch's ``LinearLR`` ramp.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import numpy as np
from numba.extending import register_jitable

from . import _checks as ck

CONSTANT, EXPONENTIAL, STEP, INVERSE_TIME, COSINE = range(5)
N_PARAMS = 6  # a schedule's parameter vector: (value, warmup, a, b, c, warmup_from)
_NAMES = {"constant": CONSTANT, "exponential": EXPONENTIAL, "step": STEP,
          "inverse_time": INVERSE_TIME, "cosine": COSINE}


@register_jitable
def schedule_value(kind, p, t):
    """p = (value, warmup, a, b, c, warmup_from): the value of schedule ``kind`` at step t
    (warmup_from NaN: the ramp v·(t+1)/w)."""
    v, warmup = p[0], p[1]
    if t < warmup:
        if p[5] != p[5]:
            return v * (t + 1) / warmup
        return p[5] + (v - p[5]) * (t / warmup)
    t = t - warmup
    if kind == EXPONENTIAL:
        e = t / p[3]
        if p[4] != 0.0:
            e = math.floor(e)
        return v * math.pow(p[2], float(e))
    if kind == STEP:
        return v * math.pow(p[2], float(math.floor(t / p[3])))
    if kind == INVERSE_TIME:
        e = t / p[3]
        if p[4] != 0.0:
            e = math.floor(e)
        return v / (1.0 + p[2] * e)
    if kind == COSINE:
        frac = (t if p[4] != 0.0 else min(t, p[3])) / p[3]
        return p[2] + (v - p[2]) * 0.5 * (1.0 + math.cos(math.pi * frac))
    return v


@dataclass(frozen=True)
class Schedule:
    """A named schedule; call it with the step index t to get its value."""

    kind: str
    params: tuple

    def __call__(self, t: int) -> float:
        # (params are Python floats: Python's float arithmetic, the same IEEE doubles as the compiled
        # loop's, is several times faster than NumPy scalars' and needs no array a call)
        return schedule_value(_NAMES[self.kind], self.params, t)

    @property
    def code(self) -> int:
        return _NAMES[self.kind]


def kind_and_params(value) -> tuple[int, np.ndarray]:
    """(kind, params) of a Schedule or a constant, as schedule_value reads them (a constant is a
    kind of its own that schedule_value returns unchanged)."""
    if isinstance(value, Schedule):
        return value.code, np.asarray(value.params, np.float64)
    return 0, np.array([float(value), 0.0, 0.0, 1.0, 0.0, math.nan])


def _make(kind, value, warmup, a=0.0, b=1.0, c=0.0, *, names=("a", "b", "c"), warmup_from=None) -> Schedule:
    """The Schedule, each parameter checked to be a real number; names say what a, b, c are."""
    def real(what, v):
        v = ck.real(f"{kind} schedule: {what}", v)
        if not math.isfinite(v):
            raise ValueError(f"{kind} schedule: {what} must be finite, got {v}")
        return v
    value, warmup = real("the initial value", value), real("warmup", warmup)
    a, b, c = (real(n, v) for n, v in zip(names, (a, b, c), strict=True))
    if not value > 0:
        raise ValueError(f"{kind} schedule: the initial value must be > 0, got {value}")
    if warmup < 0:
        raise ValueError(f"{kind} schedule: warmup must be >= 0, got {warmup}")
    if not b > 0:
        raise ValueError(f"{kind} schedule: {names[1]} must be > 0, got {b}")
    start = math.nan  # (the ramp v·(t+1)/w)
    if warmup_from is not None:
        start = real("warmup_from", warmup_from)
        if start < 0:
            raise ValueError(f"{kind} schedule: warmup_from must be >= 0, got {start}")
    return Schedule(kind, (value, warmup, a, b, c, start))


def constant(value: float, *, warmup: int = 0, warmup_from: float | None = None) -> Schedule:
    return _make("constant", value, warmup, warmup_from=warmup_from)


def exponential(value: float, rate: float, steps: float, *, staircase: bool = False,
                warmup: int = 0, warmup_from: float | None = None) -> Schedule:
    staircase = float(ck.boolean("exponential schedule: staircase", staircase))
    sched = _make("exponential", value, warmup, rate, steps, staircase, names=("rate", "steps", "staircase"),
                  warmup_from=warmup_from)
    if not sched.params[2] > 0:
        raise ValueError(f"exponential schedule: rate must be > 0, got {rate}")
    return sched


def step(value: float, factor: float, every: int, *, warmup: int = 0,
         warmup_from: float | None = None) -> Schedule:
    sched = _make("step", value, warmup, factor, every, names=("factor", "every", "c"),
                  warmup_from=warmup_from)
    if not sched.params[2] > 0:
        raise ValueError(f"step schedule: factor must be > 0, got {factor}")
    return sched


def inverse_time(value: float, rate: float, steps: float = 1.0, *, staircase: bool = False,
                 warmup: int = 0, warmup_from: float | None = None) -> Schedule:
    staircase = float(ck.boolean("inverse_time schedule: staircase", staircase))
    sched = _make("inverse_time", value, warmup, rate, steps, staircase, names=("rate", "steps", "staircase"),
                  warmup_from=warmup_from)
    if not sched.params[2] >= 0:
        raise ValueError(f"inverse_time schedule: rate must be >= 0, got {rate}")
    return sched


def cosine(value: float, steps: int, *, final: float = 0.0, periodic: bool = False,
           warmup: int = 0, warmup_from: float | None = None) -> Schedule:
    """final from ``steps`` on (Optax's cosine_decay_schedule, Keras's CosineDecay), or with
    ``periodic`` a cosine of period 2·steps (torch's CosineAnnealingLR, whose closed form goes on
    past T_max)."""
    periodic = float(ck.boolean("cosine schedule: periodic", periodic))
    sched = _make("cosine", value, warmup, final, steps, periodic, names=("final", "steps", "periodic"),
                  warmup_from=warmup_from)
    if not 0 <= sched.params[2] <= sched.params[0]:
        raise ValueError(f"cosine schedule: final must be in [0, value], got {final}")
    return sched


@dataclass(frozen=True)
class NoArgs:
    """A callable of no arguments as a schedule (Keras calls a plain ``learning_rate`` callable with
    none, e.g. one that reads a value the script changes); it is called once per step."""

    fn: object

    def __call__(self, t: int) -> float:
        return self.fn()


def _arguments(fn) -> int | None:
    """How a callable schedule is called: 1 (f(t)), 0 (f()), or None (neither binds)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # a builtin without a signature: assume f(t)
        return 1
    for n, args in ((1, (0,)), (0, ())):
        try:
            sig.bind(*args)
            return n
        except TypeError:
            pass
    return None


def as_schedule(name: str, value):
    """Validate a hyperparameter that may be scheduled: float, Schedule, f(t) or f()."""
    if isinstance(value, Schedule):
        return value
    if callable(value):
        n = _arguments(value)
        if n is None:
            raise TypeError(f"{name}: a callable schedule is called as f(t) with the step t, or as f(); "
                            f"{getattr(value, '__name__', type(value).__name__)} takes neither")
        return NoArgs(value) if n == 0 else value
    if isinstance(value, dict):
        spec = dict(value)
        kind = spec.pop("schedule", None)
        makers = {"constant": constant, "exponential": exponential, "step": step,
                  "inverse_time": inverse_time, "cosine": cosine}
        if kind not in makers:
            raise ValueError(f"{name}: a schedule dict needs 'schedule' in {sorted(makers)}, got {kind!r}")
        try:
            return makers[kind](**spec)
        except TypeError as e:
            raise TypeError(f"{name}: bad arguments for the {kind} schedule: {e}") from None
    return value
