"""MethodState: a configured method's state and per-step coefficients over n elements.

Shared by the stepper objects (which update the user's array in place) and the
minimize drivers (which step flat buffers); holds no parameter array itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import cache, cached_property

import numpy as np
from numba import prange

from . import _checks as ck
from .kernels import _threads
from .kernels._jit import bind, jit
from .kernels.cpu import CPU, Chosen, entry_point, parallel_ready
from .methods import Config
from .methods.base import SQUARE_ROWS


class MethodState:
    """State rows S (k × n), step counter t and the coefficient vector h of one method."""

    def __init__(self, config: Config, n: int, dtype, backend=CPU):
        self.config = config
        self.dtype = np.dtype(dtype)
        self.n = n
        self.names, inits = config.row_names, config.row_inits
        self.backend = backend
        if any(inits):
            host = np.empty((len(inits), n), dtype=self.dtype)
            host[...] = np.array(inits)[:, None]
        else:  # (the common case, and the cheapest: every call of minimize makes one)
            host = np.zeros((len(inits), n), dtype=self.dtype)
        self.S = backend.state(host)
        self.t = 0
        self.p = config.packed()
        self.h = np.zeros(config.method.nh, dtype=self.dtype)
        self._varies = config.varies
        self._clip_norm = config["clip_norm"]
        self._ready = False  # (BatchedState's H)
        # h, once computed, where it cannot change from step to step: a stepper's step reads it
        # without a call (None until then, and while h varies)
        self.constant_h = None
        self._coefficients = None  # the function that computes h (see coefficients)
        # h varies with t alone (Adam's bias corrections): η and γ are read once, here
        v = config.values
        self._lr_gamma = None
        if (self._varies and not config.scheduled and self._clip_norm == math.inf
                and not callable(v["lr"]) and not callable(v.get("gamma"))):
            self._lr_gamma = (v["lr"], v.get("gamma", 0.0))

    @cached_property
    def kernels(self):
        """The method's kernels on this backend, looked up when first asked (a minimize call whose
        compiled loop is built never asks)."""
        return self.backend.kernels(self.config)

    def value(self, name: str) -> float:
        """The value of a possibly scheduled hyperparameter at the coming step."""
        v = self.config.values.get(name, 0.0)
        if not callable(v):
            return v
        return ck.scheduled(name, v(self.t), self.t, ck.SCHEDULED[name])

    def coefficients(self, g: np.ndarray | None = None,
                     norm: Callable[[], float] | None = None) -> np.ndarray:
        """h for step t + 1 (cast into self.h, in x's dtype); clip_norm reads ‖g‖₂, or calls norm()
        for it (several arrays: their global norm, computed only when clipping needs it)."""
        if self.constant_h is not None:
            return self.constant_h
        if self._lr_gamma is not None and self._coefficients is not None:  # (a small Adam step's path)
            self._coefficients(self.p, self.t + 1, *self._lr_gamma, 1.0, self.h)
            return self.h
        gfactor = 1.0
        if self._clip_norm < math.inf and (g is not None or norm is not None):
            value = norm() if norm is not None else self.backend.norms(g)[1]
            gfactor = self._clip_norm / max(value, self._clip_norm)
        for i, name, schedule, interval in self.config.scheduled:
            self.p[i] = ck.scheduled(name, schedule(self.t), self.t, interval)
        coefficients = self._coefficients
        if coefficients is None:
            coefficients = self._coefficients = self._coefficient_function()
        coefficients(self.p, self.t + 1, self.value("lr"), self.value("gamma"), gfactor, self.h)
        if not self._varies:
            self.constant_h = self.h
        return self.h

    def _coefficient_function(self):
        """The method's coefficient function as Python runs it where h is computed once; compiled,
        and called at its entry point, where h is computed every step (Adam's bias corrections, a
        schedule): ~0.3 µs a step rather than ~3 µs of Python over NumPy scalars, the bulk of a
        small Adam step.  The same function either way (one source of the math, bit for bit)."""
        python = self.config.method.coefficients
        if not self._varies:
            return python
        return entry_point(_with_coefficients(_coefficients, python), self.p, 1, 0.0, 0.0, 0.0, self.h)

    # -- state ---------------------------------------------------------------
    def state_dict(self) -> dict:
        host = np.array(self.backend.to_host(self.S), copy=True)
        return {"t": self.t, **{name: host[j] for j, name in enumerate(self.names)}}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a dict, as state_dict() returns, got {type(state).__name__}")
        missing = {"t", *self.names} - set(state)
        if missing:
            raise ValueError(f"state is missing {sorted(missing)}")
        extra = set(state) - {"t", *self.names}
        if extra:
            raise ValueError(f"state has entries this optimizer does not use: {sorted(extra)}")
        t = state["t"]
        try:
            t = ck.count("state['t']", t)
        except TypeError:
            raise TypeError(f"state['t'] must be the number of steps taken, an integer >= 0, "
                            f"got {t!r}") from None
        host = np.empty((len(self.names), self.n), dtype=self.dtype)
        for j, name in enumerate(self.names):
            a = state[name]
            if not isinstance(a, np.ndarray):
                a = np.asarray(self.backend.to_host(a) if hasattr(a, "copy_to_host") else a)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"state {name!r} must hold real numbers, got dtype {a.dtype}")
            if a.size != self.n:
                raise ValueError(f"state {name!r} has {a.size} elements, expected {self.n}")
            if not np.all(np.isfinite(a)):
                raise ValueError(f"state {name!r} contains NaN or inf")
            if name in SQUARE_ROWS and np.any(a < 0):
                raise ValueError(f"state {name!r} has negative values; it is a running mean of squares, "
                                 "whose square root the update takes")
            host[j] = a.reshape(-1)
        self.backend.load_state(self.S, host)
        self.t = t
        self._ready = False
        self.constant_h = None


# A batch fills its rows one by one in parallel from this many problems (every problem its own p:
# a random search of β1; or p shared by a method whose coefficients have no parts, γ scheduled):
# on 2 cores, 1,000 Adam rows took 72 µs serial and 37 in parallel, 10,000 took 717 and 457;
# 2,000 RMSProp rows 35 and 15.
PARALLEL_FILL_MIN_ROWS = 1024
# In groups (a sweep of η, a grid), a row costs its finish alone (~11 ns for Adam), and the fill
# is parallel over pieces of at most FILL_PIECE_ROWS rows from PARALLEL_GROUPED_FILL_MIN_ROWS
# problems: on 2 cores, 2,048 Adam rows took 23 µs serial and 17 in parallel, 10,000 took 112 and 70.
PARALLEL_GROUPED_FILL_MIN_ROWS = 2048
FILL_PIECE_ROWS = 256


def _fill_rows(P, t, LR, GAMMA, GF, H, active, rows, starts):  # pragma: no cover - compiled
    """H[b] ← the coefficients of problem b at step t, for the active rows (rows and starts: see
    _fill_rows_grouped; a method whose coefficients cost no powers of t has no use for them)."""
    for b in prange(P.shape[0]):
        if active[b]:
            COEF(P[b], t, LR[b], GAMMA[b], GF[b], H[b])  # noqa: F821 - bound per method


def _fill_rows_grouped(P, t, LR, GAMMA, GF, H, active, rows, starts):  # pragma: no cover - compiled
    """_fill_rows for a method with parts (Method.parts), whose problems come in groups with the
    same packed parameters p (their own values being η, γ or the clip factor alone: a sweep of η
    is one group, a grid of η × β1 one group a β1): the powers of t once a piece of a group, not a
    row each.  Piece k's problems are rows[starts[k]:starts[k + 1]] (BatchedState.fill_groups)."""
    for k in prange(starts.size - 1):
        p = P[rows[starts[k]]]
        powers = POWERS(p, t)  # noqa: F821 - bound per method
        for j in range(starts[k], starts[k + 1]):
            b = rows[j]
            if active[b]:
                FINISH(p, t, powers, LR[b], GAMMA[b], GF[b], H[b])  # noqa: F821 - bound per method


def _coefficients(p, t, lr, gamma, gfactor, h):  # pragma: no cover - compiled
    """h ← the coefficients of step t (MethodState.coefficients)."""
    COEF(p, t, lr, gamma, gfactor, h)  # noqa: F821 - bound per method


@cache
def _with_coefficients(template, coefficients, parallel: bool = False):
    """template (_coefficients, _fill_rows) compiled with one method's coefficient function as COEF."""
    name = f"{template.__name__.lstrip('_')}_{coefficients.__name__}"  # (the cache file's name)
    return jit(bind(template, name + ("_par" if parallel else ""), COEF=coefficients), nogil=True,
               parallel=parallel)


@cache
def _grouped_fill(powers, finish, parallel: bool = False):
    """_fill_rows_grouped compiled with one method's parts."""
    name = f"fill_rows_grouped_{powers.__name__}" + ("_par" if parallel else "")
    return jit(bind(_fill_rows_grouped, name, POWERS=powers, FINISH=finish), nogil=True, parallel=parallel)


def _groups(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, starts): the problems ordered by their packed parameters P[b], and where each group of
    equal ones starts (its last entry is B).  A schedule writes the same value into every row, so
    the groups hold for the whole run."""
    if (P == P[0]).all():
        return np.arange(len(P), dtype=np.int64), np.array([0, len(P)], dtype=np.int64)
    _, group = np.unique(P, axis=0, return_inverse=True)
    group = group.reshape(-1)
    rows = np.argsort(group, kind="stable").astype(np.int64)
    starts = np.searchsorted(group[rows], np.arange(group.max() + 2)).astype(np.int64)
    return rows, starts


def _pieces(starts: np.ndarray, size: int) -> np.ndarray:
    """The groups' starts with each group cut into pieces of at most ``size`` rows (the units of a
    parallel fill: a sweep of η is one group; each piece computes its group's powers again, the
    same bits)."""
    counts = -(-np.diff(starts) // size)
    first = np.repeat(np.cumsum(counts) - counts, counts)
    cut = np.repeat(starts[:-1], counts) + size * (np.arange(counts.sum()) - first)
    return np.append(cut, starts[-1]).astype(np.int64)


class BatchedState(MethodState):
    """MethodState for B problems of n elements each (x is their rows, one after the other): the
    state rows span all B·n elements; each problem has its own packed parameters P[b], η and γ,
    and coefficients H[b] (per-problem hyperparameters, see presets.configure_batch)."""

    def __init__(self, config: Config, per_problem: dict, B: int, n: int, dtype, backend=CPU,
                 varies: bool = False):
        super().__init__(config, B * n, dtype, backend)
        self._varies = config.varies or varies  # (some problem's own values may make H vary)
        self.B = B
        self.P = np.tile(self.p, (B, 1))
        for name, i in config.method.schedulable.items():
            if name in per_problem:
                self.P[:, i] = per_problem[name]
        self.per_problem = per_problem
        self.LR, self.GAMMA, self.GF = np.zeros(B), np.zeros(B), np.ones(B)
        self.H = np.zeros((B, config.method.nh), dtype=self.dtype)
        self.h_count = 0  # how many times H was computed (a device copy of it is current or not)
        # the problems in groups of equal p: one group where their own values are η, γ or the clip
        # factor alone (the common sweep); a method with parts computes its powers once a group
        self.groups = _groups(self.P)
        self.shares_p = len(self.groups[1]) == 2
        # (groups of one or two problems gain nothing: a random search of β1 computed its rows
        # 15% slower through the groups than row by row)
        self.grouped = bool(config.method.parts) and len(self.groups[1]) - 1 <= B // 2
        if self.grouped:
            self._fill = self._fill_par = _grouped_fill(*config.method.parts)
            if B >= PARALLEL_GROUPED_FILL_MIN_ROWS:
                self._fill_par = _grouped_fill(*config.method.parts, parallel=True)
        else:
            self._fill = self._fill_par = _with_coefficients(_fill_rows, config.method.coefficients)
            if B >= PARALLEL_FILL_MIN_ROWS:
                self._fill_par = _with_coefficients(_fill_rows, config.method.coefficients, parallel=True)
        # (the fill's arguments rows, starts: the groups in pieces; a fill row by row ignores them)
        self.fill_groups = (self.groups[0], _pieces(self.groups[1], FILL_PIECE_ROWS))
        # (the compiled loop binds both and runs _fill_par with its parallel kernels; from Python,
        # the parallel fill wherever parallel code may run)
        self._host_fill = Chosen(self._choose_fill)
        # every problem has the same coefficients at every step (no per-problem values, no
        # clip by each problem's norm): while all run, one flat launch over all B·n elements
        # computes what the rows kernel would, from one row of coefficients rather than B, and
        # parallelizes over elements, not problems (a few long problems split evenly too)
        self.uniform = not per_problem and self._clip_norm == math.inf
        # a backend that keeps H elsewhere may fill it there (CUDA: a sweep of η with Adam)
        self._device_fill = backend.device_fill(self)

    def _choose_fill(self):
        if self._fill_par is self._fill or not parallel_ready():
            return self._fill
        return _threads.guard(self._fill_par)

    def _column(self, name: str, out: np.ndarray) -> None:
        if name in self.per_problem:
            out[:] = self.per_problem[name]
        else:
            out[:] = self.value(name)

    def row_coefficients(self, g, active: np.ndarray) -> np.ndarray:
        """H for step t + 1 of the active problems (g: their flat gradients, for clip_norm)."""
        if self._ready and not self._varies:
            return self.H
        if self._varies and self.uniform:
            # every problem's h is the same: one computed, not B (Adam at B = 10,000 computed 10,000
            # equal rows a step, most of its step's time), and copied to the other rows only where a
            # rows kernel reads them (a flat launch, while all run on the CPU, reads H[0] alone)
            self.H[0] = self.coefficients()
            if not self.backend.first_row_serves(active):
                self.H[1:] = self.H[0]
            self.h_count += 1
            return self.H
        if self._clip_norm < math.inf:
            norms = self.backend.row_norms(g, self.B)[:, 1]
            self.GF[:] = self._clip_norm / np.maximum(norms, self._clip_norm)
        self._column("lr", self.LR)
        self._column("gamma", self.GAMMA)
        for i, name, schedule, interval in self.config.scheduled:
            self.P[:, i] = ck.scheduled(name, schedule(self.t), self.t, interval)
        (self._device_fill or self._host_fill)(self.P, self.t + 1, self.LR, self.GAMMA, self.GF, self.H,
                                               active, *self.fill_groups)
        self._ready = True
        self.h_count += 1
        return self.H
