"""Validation helpers shared by the front end and the methods: clear messages, no tracebacks from Numba."""

from __future__ import annotations

import difflib
import math
import numbers

import numpy as np


def suggest(name: str, known) -> str:
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(what: str, name: str, known) -> ValueError:
    return ValueError(f"unknown {what} {name!r}{suggest(name, known)} "
                      f"(known: {', '.join(sorted(known))})")


def real(name: str, value) -> float:
    """A real number (bools and complex numbers are refused)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, np.floating, np.integer)):
        if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
            return float(value)
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if np.isnan(value):
        raise ValueError(f"{name} must not be NaN")
    return value


def in_range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> float:
    v = real(name, value)
    bad = (lo is not None and (v <= lo if lo_open else v < lo)) or \
          (hi is not None and (v >= hi if hi_open else v > hi))
    if bad:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        lo_s = "-inf" if lo is None else f"{lo:g}"
        hi_s = "inf" if hi is None else f"{hi:g}"
        raise ValueError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {v:g}")
    return v


def positive(name, value):
    return in_range(name, value, lo=0, lo_open=True)


def nonneg(name, value):
    return in_range(name, value, lo=0)


def unit_closed(name, value):
    return in_range(name, value, lo=0, hi=1)


def unit_open(name, value):
    return in_range(name, value, lo=0, hi=1, hi_open=True)


def boolean(name, value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name} must be True or False, got {value!r}")


def count(name, value, lo=0, hi=None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi} (the platform's integer), got {value}")
    return int(value)


def seed(name, value):
    """A seed for numpy.random.default_rng: None, an integer >= 0, a SeedSequence or a Generator."""
    if value is None or isinstance(value, (np.random.SeedSequence, np.random.Generator)):
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be None, an integer >= 0, a numpy SeedSequence or Generator, "
                        f"got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return int(value)


# what a scheduled hyperparameter may take at any step (constants are checked when configured)
SCHEDULE_RANGES = {
    "lr": (lambda v: 0.0 <= v < math.inf, "must be >= 0 and finite"),
    "gamma": (lambda v: 0.0 <= v <= 1.0, "must be in [0, 1]"),
}


def scheduled(name: str, value, t: int) -> float:
    """The value of a schedule at step t, or a ValueError naming the option and the step."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"the {name} schedule must return a real number, "
                        f"got {value!r} at step t={t}") from None
    ok, rule = SCHEDULE_RANGES.get(name, (lambda v: math.isfinite(v), "must be finite"))
    if not ok(v):
        raise ValueError(f"the {name} schedule gives {v!r} at step t={t}; {name} {rule}")
    return v
