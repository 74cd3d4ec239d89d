"""Validation helpers shared by the front end and the methods: clear messages, no tracebacks from Numba."""

from __future__ import annotations

import difflib
import math
import numbers

import numpy as np


def suggest(name: str, known) -> str:
    by_lower = {k.lower(): k for k in known}  # ('SGD' finds 'gd' as 'sgd' does)
    close = difflib.get_close_matches(str(name).lower(), list(by_lower), n=1, cutoff=0.6)
    return f"; did you mean {by_lower[close[0]]!r}?" if close else ""


def unknown(what: str, name: str, known) -> ValueError:
    return ValueError(f"unknown {what} {name!r}{suggest(name, known)} "
                      f"(known: {', '.join(sorted(known))})")


def typed_items(options: dict) -> tuple:
    """options as (name, types, value) items, a cache key for validated options that tells equal
    values of different types apart (True == 1, and (False, 0.9) == (0, 0.9) inside a tuple): a
    remembered valid call must not let an equal invalid value through.  A 0-d tensor (torch, JAX)
    makes the key unhashable, so that its value is read afresh: torch hashes a tensor by identity,
    and its value can change in place."""
    return tuple((k, _types(v), _keyed(v)) for k, v in options.items())


def _keyed(v):
    if isinstance(v, tuple):
        return tuple(map(_keyed, v))
    return [v] if hasattr(v, "ndim") and not isinstance(v, np.generic) else v


def _types(v):
    return (type(v), tuple(_types(e) for e in v)) if isinstance(v, tuple) else type(v)


def _short(value) -> str:
    """repr(value), cut to a readable length (an integer of 400 digits, a large array)."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:28]}...{text[-28:]} ({len(text)} characters)"


def choice(name: str, value, known) -> str:
    """One of the known names (a string; any other type is a TypeError, not an unknown name)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, known))}; "
                        f"got {type(value).__name__} {_short(value)}")
    if value not in known:
        raise unknown(name, value, known)
    return value


def real(name: str, value) -> float:
    """A real number, or a 0-d array or tensor of one (NumPy, torch, JAX: torch.optim takes
    ``lr=torch.tensor(0.01)``); bools and complex numbers are refused."""
    given = value
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)):
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        hint = ("; one value per problem of a batch (x of shape (B, ...)) goes in a 1-D array, "
                "np.asarray(...)" if isinstance(given, (list, tuple)) else "")
        raise TypeError(f"{name} must be a real number, got {type(given).__name__} {_short(given)}{hint}")
    try:
        value = float(value)
    except OverflowError:  # a Python int beyond float64
        raise ValueError(f"{name} is too large to be a float, got {_short(value)}") from None
    if np.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


class Range:
    """A check ``(name, value) -> float`` for an interval, which also says what the interval is
    (the drivers test scheduled values against it at every step)."""

    def __init__(self, lo=-math.inf, hi=math.inf, lo_open=False, hi_open=False):
        self.lo, self.hi, self.lo_open, self.hi_open = float(lo), float(hi), lo_open, hi_open

    def contains(self, v: float) -> bool:
        return ((v > self.lo) if self.lo_open else (v >= self.lo)) and \
               ((v < self.hi) if self.hi_open else (v <= self.hi))

    def outside(self, values: np.ndarray) -> np.ndarray:
        """Which of the float values are not in the interval (NaN included): ``contains`` on many
        at once."""
        with np.errstate(invalid="ignore"):
            inside = ((values > self.lo) if self.lo_open else (values >= self.lo)) & \
                     ((values < self.hi) if self.hi_open else (values <= self.hi))
        return ~inside

    def describe(self) -> str:
        return f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"

    def as_row(self) -> list:
        """[lo, hi, lo_open, hi_open] as floats, for the compiled loop."""
        return [self.lo, self.hi, float(self.lo_open), float(self.hi_open)]

    def __call__(self, name: str, value) -> float:
        v = real(name, value)
        if not self.contains(v):
            raise ValueError(f"{name} must be in {self.describe()}, got {v:g}")
        return v


def in_range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    interval = Range(-math.inf if lo is None else lo, math.inf if hi is None else hi, lo_open, hi_open)
    return interval(name, value)


positive = Range(0, lo_open=True)
nonneg = Range(0)
unit_closed = Range(0, 1)
unit_open = Range(0, 1, hi_open=True)
# what a scheduled η and γ may take at a step (η may be 0 there: a cosine schedule ends at 0);
# the other hyperparameters are checked against their own Range (Method.schedulable)
SCHEDULED = {"lr": Range(0, math.inf, hi_open=True), "gamma": unit_closed}


def boolean(name, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def count(name, value, lo=0, hi=None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {_short(value)}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {_short(value)}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi} (the platform's integer), got {_short(value)}")
    return int(value)


def seed(name, value):
    """A seed for numpy.random.default_rng: None, an integer >= 0, a SeedSequence or a Generator."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.Generator)):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be None, an integer >= 0, a numpy SeedSequence or Generator, "
                        f"got {type(value).__name__} {_short(value)}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {_short(value)}")
    return int(value)


def scheduled(name: str, value, t: int, rng: Range) -> float:
    """The value of a schedule at step t, or an error naming the option and the step."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the {name} schedule must return a real number, "
                        f"got {_short(value)} at step t={t}") from None
    except OverflowError:
        raise ValueError(f"the {name} schedule gives {_short(value)} at step t={t}, "
                         "too large to be a float") from None
    if not rng.contains(v):
        raise ValueError(f"the {name} schedule gives {v!r} at step t={t}; {name} must be in {rng.describe()}")
    return v


class NotCompilable(TypeError):
    """A jitted user function cannot be compiled for the arguments fastrms calls it with: no driver
    can run it, so the front raises this rather than trying another loop."""


def not_compilable(what: str, argtypes, error: Exception) -> NotCompilable:
    """A TypeError for a jitted user function that Numba cannot compile for these argument types,
    with the reason from Numba's long message (its first line is always "Failed in nopython mode
    pipeline") and where in the user's code it arose."""
    lines = [ln.strip() for ln in str(error).splitlines()]
    reason = next((ln.split(":", 1)[1].strip() for ln in reversed(lines)
                   if ln.startswith("TypingError:") and ln.split(":", 1)[1].strip()), None)
    if reason is None:
        noise = ("Failed in", "During:", "File ", "<source", "^")
        useful = [ln for ln in lines if ln and not ln.startswith(noise)]
        reason = useful[0] if useful else type(error).__name__
        if reason.startswith("No implementation of function") and len(useful) > 1:
            reason += " " + useful[1].lstrip("> ")
    where = [ln for ln in lines if ln.startswith("File ") and "site-packages" not in ln]
    at = f" ({where[-1].rstrip(':')})" if where else ""
    if argtypes is None:  # what failed is jitted code that a Python function calls
        return NotCompilable(f"{what} calls jitted code that cannot be compiled: {reason}{at}")
    types = ", ".join(str(t) for t in argtypes)
    return NotCompilable(f"{what} cannot be compiled for arguments of types ({types}): {reason}{at}")
