"""The user's objective and gradient as the drivers call them: views of x, call counters,
clear errors for what F and dF return."""

from __future__ import annotations

import numbers
import sys

import numba
import numpy as np
from numba.core.dispatcher import Dispatcher
from numba.core.errors import NumbaError

from .. import _checks as ck
from ..kernels.cpu import CPU
from .batches import Batches


def as_scalar(f) -> float:
    """The user's F(x) as a float, or a clear error."""
    if type(f) is float or type(f) is np.float64:
        return float(f)
    if isinstance(f, numbers.Real) and not isinstance(f, bool):
        return float(f)
    a = np.asarray(f)
    if a.size == 1 and a.dtype.kind in "fiu":  # a 0-d or one-element array, as scipy's .item()
        return float(a.item())
    if a.dtype.kind in "fiu":
        raise ValueError(f"the objective must return a scalar, got an array of shape {a.shape} "
                         "(return float(...) or .item())")
    raise TypeError(f"the objective must return a real scalar, got {type(f).__name__} "
                    f"{'of shape ' + str(a.shape) if a.ndim else repr(f)}")


def as_pair(out) -> tuple:
    """What F returned with jac=True, as (f, g), or a clear error."""
    try:
        f, g = out
    except (TypeError, ValueError):
        raise TypeError("with jac=True the objective must return a pair (f, g)") from None
    return f, g


def as_losses(f, B: int) -> np.ndarray:
    """The user's F(X) for B problems as B floats, or a clear error."""
    try:
        a = np.asarray(f)
    except (TypeError, ValueError):
        a = None
    if a is None or a.dtype.kind not in "fiu":
        raise TypeError(f"with batched problems the objective must return an array of {B} real losses, "
                        f"got {type(f).__name__}")
    if a.shape != (B,):
        raise ValueError(f"with batched problems the objective must return one loss per problem, shape "
                         f"({B},); it returned shape {a.shape}")
    return a.astype(np.float64)


def _gradient_error(g):
    if g is None:
        return TypeError("dF returned None; it must return the gradient, an array of x's shape "
                         "(a missing `return`?)")
    if isinstance(g, (str, bytes)):
        return TypeError(f"dF returned the string {g!r}; it must return an array of x's shape")
    return None


class Problem:
    """The user's objective and gradient, seen through flat views, with call counters.

    On the CPU, F and dF see x as a read-only view of the driver's buffer.  If
    they keep it (or a view of it) beyond the call, ``retained`` turns True and
    the driver moves on to a fresh buffer, so a kept x never changes under the
    user (scipy passes copies; this costs a copy only when x is kept).
    """

    def __init__(self, fun, jac, args: tuple, shape: tuple, dtype, batches: Batches | None = None,
                 backend=CPU, kind: str = "numpy", batch: int | None = None):
        self.fun, self.jac, self.args = fun, jac, args
        # B problems at once (shape is (B, ...)): F returns B losses
        self.batch = batch
        self._loss = as_scalar if batch is None else (lambda f: as_losses(f, batch))
        self.combined = jac is True
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.nfev = self.njev = 0
        self.batches = batches
        self.backend, self.kind = backend, kind
        self._views: dict = {}
        self.retained = False
        self.compiled = None  # what the compiled loop's prepare() returned, once the front called it

    def views(self, x):
        """(x as the user's functions see it, x shaped on its backend) for a flat buffer x."""
        v = self._views.get(id(x))
        if v is None or v[0] is not x:  # a run has two buffers (more only when F keeps x): wrap each once
            if len(self._views) >= 4:
                self._views.clear()
            xu = self.backend.view(x, self.shape, self.kind)  # read-only on the CPU
            v = self._views[id(x)] = (x, xu, xu if self.backend.host_memory else x.reshape(self.shape))
        return v[1], v[2]

    def _call(self, fn, x, xu, args):
        """fn(xu, *args), noting whether fn kept xu (or a view of it) beyond the call."""
        if not self.backend.host_memory:
            return fn(xu, *args)
        owner = x if x.base is None else x.base  # every view of x has this as its base
        before_x, before_u = sys.getrefcount(owner), sys.getrefcount(xu)
        try:
            out = fn(xu, *args)
        except NumbaError as e:  # a jitted F or dF that does not compile for these types
            raise self._not_compilable(fn, xu, args, e) from None
        # what fn returned may itself be x (dF = lambda x: x) or hold it: that is not a kept x
        held = out if not isinstance(out, tuple) else out[-1]
        own_x = isinstance(held, np.ndarray) and held is not xu and held.base is owner
        if (sys.getrefcount(owner) > before_x + own_x) or (sys.getrefcount(xu) > before_u + (held is xu)):
            self.retained = True
        return out

    def _not_compilable(self, fn, xu, args, e) -> TypeError:
        types = None
        if isinstance(fn, Dispatcher):  # (else fn is Python calling jitted code: its types say nothing)
            try:
                types = [numba.typeof(a) for a in (xu, *args)]
            except ValueError:
                types = [type(a).__name__ for a in (xu, *args)]
        return ck.not_compilable("dF" if fn is self.jac else "F", types, e)

    def value(self, x: np.ndarray) -> float:
        self.nfev += 1
        xu = self.views(x)[0]
        if self.combined:
            self.njev += 1
            f, _ = as_pair(self._call(self.fun, x, xu, self.args))
            return self._loss(f)
        return self._loss(self._call(self.fun, x, xu, self.args))

    def evaluate(self, x: np.ndarray, want_f: bool, k: int = 0):
        """(f or None, flat g) at x; f comes free when fun returns (f, g).

        With mini-batches g is the gradient on step k's batch and f the loss on all the data.
        """
        xu, xs = self.views(x)
        self.njev += 1
        if self.batches is not None:
            args = self.batches(k)
            if self.combined:
                g = as_pair(self._call(self.fun, x, xu, args))[1]
            else:
                g = self._call(self.jac, x, xu, args)
            return (self.value(x) if want_f else None), self._gradient(g, xs)
        if self.combined:
            self.nfev += 1
            f, g = as_pair(self._call(self.fun, x, xu, self.args))
            return self._loss(f), self._gradient(g, xs)
        g = self._gradient(self._call(self.jac, x, xu, self.args), xs)
        return (self.value(x) if want_f else None), g

    def _gradient(self, g, xs):
        if type(g) is not np.ndarray:
            e = _gradient_error(g)
            if e is not None:
                raise e
        return self.backend.as_gradient(g, xs)
