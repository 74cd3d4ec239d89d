"""What every driver shares: calling the user's functions safely, and the outcome of a run."""

from __future__ import annotations

import inspect
import numbers
import sys

import numpy as np

from ..kernels.cpu import CPU

# scipy's status codes and messages (scipy.optimize._optimize._status_message).
SUCCESS, MAXITER, NAN, CALLBACK = 0, 1, 3, 99
MESSAGES = {
    "converged": (SUCCESS, "Optimization terminated successfully."),
    "maxiter": (MAXITER, "Maximum number of iterations has been exceeded."),
    "diverged": (NAN, "NaN result encountered: the update became non-finite at iteration {k} "
                      "(the run diverged, or a running mean such as s overflowed; lower lr?); "
                      "x is the last finite iterate."),
    "diverged_unchecked": (NAN, "NaN result encountered: the run diverged after iteration {k}, between "
                                "two stopping tests (check_every > 1; lower lr?); x is iteration {k}, "
                                "the last checked finite iterate."),
    "loss_at_end": (NAN, "NaN result encountered: the objective is not finite at the final x "
                         "(iteration {k}), although every update was; check F."),
    "loss": (NAN, "NaN result encountered: the loss became non-finite at iteration {k} "
                  "(the run diverged; lower lr?); x is that iterate, which is still finite."),
    "callback": (CALLBACK, "`callback` raised `StopIteration`."),
    "epochs": (SUCCESS, "Completed the requested epochs."),
}
END_REASONS = tuple(MESSAGES)  # the compiled loop reports its end as an index into this


def as_scalar(f) -> float:
    """The user's F(x) as a float, or a clear error."""
    if type(f) is float or type(f) is np.float64:
        return float(f)
    if isinstance(f, numbers.Real) and not isinstance(f, bool):
        return float(f)
    a = np.asarray(f)
    if a.ndim == 0 and a.dtype.kind in "fiu":
        return float(a)
    if a.dtype.kind in "fiu":
        raise ValueError(f"the objective must return a scalar, got an array of shape {a.shape} "
                         "(return float(...) or .item())")
    raise TypeError(f"the objective must return a real scalar, got {type(f).__name__} "
                    f"{'of shape ' + str(a.shape) if a.ndim else repr(f)}")


class Batches:
    """Mini-batches of the data arrays in ``args``, reshuffled every epoch.

    The data arrays are the ndarray arguments whose first axis has the length N
    of the first such argument; anything else (a matrix of another size,
    scalars) is passed whole.  Step k uses batch k mod (batches per epoch) of
    epoch k // (batches per epoch); shuffling comes from ``seed``.
    """

    def __init__(self, args: tuple, batch_size: int, shuffle: bool, seed, drop_last: bool):
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.ndim >= 1]
        if not arrays:
            raise ValueError("batch_size needs data: pass the data arrays in args (split along axis 0)")
        self.N = len(args[arrays[0]])
        self.data = [i for i in arrays if len(args[i]) == self.N]
        if batch_size > self.N:
            raise ValueError(f"batch_size {batch_size} is larger than the data ({self.N} rows)")
        self.args, self.size, self.shuffle = args, batch_size, shuffle
        self.per_epoch = self.N // batch_size if drop_last else -(-self.N // batch_size)
        self.rng = np.random.default_rng(seed)
        self._epoch, self._order = -1, np.arange(self.N)

    def order(self, epoch: int) -> np.ndarray:
        """The row order of an epoch; epochs are drawn in sequence from the seeded generator, so
        every driver sees the same batches (only the current epoch's order is kept)."""
        while self._epoch < epoch:
            self._epoch += 1
            if self.shuffle:
                self._order = self.rng.permutation(self.N)
        return self._order

    def orders(self, steps: int) -> np.ndarray:
        """The row orders of every epoch that steps 0 … steps touch (for the compiled loop)."""
        return np.stack([self.order(e).copy() for e in range(steps // self.per_epoch + 1)])

    @property
    def mask(self) -> tuple:
        """Which arguments are data (split into batches)."""
        return tuple(i in self.data for i in range(len(self.args)))

    def __call__(self, k: int) -> tuple:
        epoch, j = divmod(k, self.per_epoch)
        rows = self.order(epoch)[j * self.size:(j + 1) * self.size]
        return tuple(a[rows] if i in self.data else a for i, a in enumerate(self.args))


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
                 backend=CPU, kind: str = "numpy"):
        self.fun, self.jac, self.args = fun, jac, args
        self.combined = jac is True
        self.shape, self.dtype = shape, np.dtype(dtype)
        self.nfev = self.njev = 0
        self.batches = batches
        self.backend, self.kind = backend, kind
        self._views: dict = {}
        self.retained = False
        self.compiled = None  # (driver, signatures, parallel) once the front has prepared the compiled loop

    def views(self, x):
        """(x as the user's functions see it, x shaped on its backend) for a flat buffer x."""
        if self.backend.host_memory:
            xs = self.backend.view(x, self.shape, self.kind)  # read-only
            return xs, xs
        v = self._views.get(id(x))
        if v is None or v[0] is not x:  # device buffers are few and long-lived: wrap each once
            v = self._views[id(x)] = (x, self.backend.view(x, self.shape, self.kind), x.reshape(self.shape))
        return v[1], v[2]

    def _call(self, fn, x, xu, args):
        """fn(xu, *args), noting whether fn kept xu (or a view of it) beyond the call."""
        if not self.backend.host_memory:
            return fn(xu, *args)
        owner = x if x.base is None else x.base  # every view of x has this as its base
        before_x, before_u = sys.getrefcount(owner), sys.getrefcount(xu)
        out = fn(xu, *args)
        # what fn returned may itself be x (dF = lambda x: x) or hold it: that is not a kept x
        held = out if not isinstance(out, tuple) else out[-1]
        own_x = isinstance(held, np.ndarray) and held is not xu and held.base is owner
        if (sys.getrefcount(owner) > before_x + own_x) or (sys.getrefcount(xu) > before_u + (held is xu)):
            self.retained = True
        return out

    def value(self, x: np.ndarray) -> float:
        self.nfev += 1
        xu = self.views(x)[0]
        if self.combined:
            self.njev += 1
            f, _ = self._pair(self._call(self.fun, x, xu, self.args))
            return as_scalar(f)
        return as_scalar(self._call(self.fun, x, xu, self.args))

    def evaluate(self, x: np.ndarray, want_f: bool, k: int = 0):
        """(f or None, flat g) at x; f comes free when fun returns (f, g).

        With mini-batches g is the gradient on step k's batch and f the loss on all the data.
        """
        xu, xs = self.views(x)
        self.njev += 1
        if self.batches is not None:
            args = self.batches(k)
            if self.combined:
                g = self._pair(self._call(self.fun, x, xu, args))[1]
            else:
                g = self._call(self.jac, x, xu, args)
            return (self.value(x) if want_f else None), self._gradient(g, xs)
        if self.combined:
            self.nfev += 1
            f, g = self._pair(self._call(self.fun, x, xu, self.args))
            return as_scalar(f), self._gradient(g, xs)
        g = self._gradient(self._call(self.jac, x, xu, self.args), xs)
        return (self.value(x) if want_f else None), g

    def _gradient(self, g, xs):
        if type(g) is not np.ndarray:
            e = _gradient_error(g)
            if e is not None:
                raise e
        return self.backend.as_gradient(g, xs)

    @staticmethod
    def _pair(out):
        try:
            f, g = out
        except (TypeError, ValueError):
            raise TypeError("with jac=True the objective must return a pair (f, g)") from None
        return f, g


class Outcome:
    """Where a run stopped, and what it recorded on the way."""

    def __init__(self, shape, history: bool, trajectory: bool, backend=CPU):
        self.shape, self.backend = shape, backend
        self.losses = [] if history else None
        self.gnorms = [] if history else None
        self.steps = [] if history else None
        self.xs = [] if trajectory else None

    def record(self, k, x, f, g) -> None:
        if self.losses is not None and f is not None:
            self.steps.append(k)
            self.losses.append(f)
            self.gnorms.append(self.backend.max_abs(g))
        if self.xs is not None:
            self.xs.append(np.array(self.backend.to_host(x), copy=True).reshape(self.shape))

    def finish(self, k, x, f, g, reason: str, gtol: float = 0.0) -> Outcome:
        if reason in ("maxiter", "epochs"):
            gmax = self.backend.max_abs(g)
            if not np.isfinite(gmax):
                reason = "diverged"
            elif reason == "maxiter" and gtol > 0 and gmax <= gtol:
                reason = "converged"
        self.nit, self.x, self.f, self.g, self.reason = k, x, f, g, reason
        return self

    @property
    def status(self) -> int:
        return MESSAGES[self.reason][0]

    @property
    def message(self) -> str:
        return MESSAGES[self.reason][1].format(k=self.nit)


def _wants_intermediate_result(callback) -> bool:
    try:
        params = inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return False
    return set(params) == {"intermediate_result"}


def wrap_callback(callback):
    """A scipy-style callback as ``f(intermediate_result) -> stop?``.

    Like scipy >= 1.11: a callback whose only parameter is named
    ``intermediate_result`` gets the OptimizeResult, any other gets a copy of x;
    raising StopIteration asks to stop (status 99).
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    keyword = _wants_intermediate_result(callback)

    def call(res) -> bool:
        try:
            if keyword:
                callback(intermediate_result=res)
            else:
                callback(np.copy(res.x))
        except StopIteration:
            return True
        return False

    return call
