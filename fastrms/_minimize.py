"""The public front: ``minimize``, its options, and scipy-pluggable method functions.

A call flows front → driver → kernel: this module validates everything and
builds a ``Problem`` and a ``MethodState``; ``drivers/`` iterate; ``kernels/`` update.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable
from functools import cache, lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
from scipy.optimize import OptimizeResult

from . import _checks as ck
from . import cluster, kernels, methods, presets
from ._arrays import fingerprint, host_values
from .drivers import batched_loop, python_loop
from .drivers.batches import Batches
from .drivers.callback import wrap_callback
from .drivers.finite_diff import SCHEMES as FINITE_DIFFERENCES
from .drivers.finite_diff import FiniteDifferences
from .drivers.outcome import NAN
from .drivers.problem import Problem
from .method_state import BatchedState, MethodState

# Options of the driver (the method's hyperparameters come on top of these).
DRIVER_OPTIONS = {
    "maxiter": 1000,        # iterations (= updates) at most
    "gtol": 1e-5,           # stop when max_i |g_i| <= gtol (0: never)
    "disp": False,          # print a summary at the end
    "history": False,       # res.history: loss and max|g| at every iterate
    "trajectory": False,    # res.trajectory: every iterate (small problems)
    "preset": None,         # 'torch', 'keras', 'tf1', 'optax', 'mxnet', 'timm', 'autograd', 'd2l'
    "dtype": None,          # compute in float32 or float64 (default: x0's)
    "driver": "auto",       # 'auto', 'python' or 'compiled'
    "backend": "auto",      # 'auto' (where x0 lives), 'cpu' or 'cuda'
    "check_every": 1,       # run the stopping tests every that many steps (GPU: a host round trip)
    "in_place": False,      # one buffer for x, stepped in place (CPU; see _solve for divergence)
    # mini-batch (stochastic) mode: the data arrays in args are split along axis 0
    "batch_size": None,     # rows per step (None: all the data every step)
    "epochs": None,         # passes over the data (sets maxiter)
    "shuffle": True,        # reshuffle the rows every epoch
    "seed": None,           # seed of the shuffle, for reproducible runs
    "drop_last": False,     # drop the last, smaller batch of an epoch
    "history_every": 1,     # record the (full-data) loss every that many steps
    # B independent problems in one call: x0 has shape (B, ...), F returns B losses, dF (B, ...)
    "batched": False,
    # jac='2-point', '3-point' or 'cs': the relative step (None: scipy's default, see finite_diff.py)
    "finite_diff_rel_step": None,
}


# iterations are counted in the platform's integer (the compiled loop's intp), with room for k + 1
MAX_ITER = int(np.iinfo(np.intp).max) - 1


def _split_options(method: methods.Method, options: dict, tol) -> tuple[dict, dict, methods.Config | None]:
    """(driver options, hyperparameters, the configured method), validated; remembered for
    hashable options, as a script calling minimize in a loop passes the same ones each time.
    The config is None for batched problems (presets.configure_batch configures them)."""
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise TypeError(f"options must be a dict, got {type(options).__name__}")
    try:
        key = (method.name, type(tol), tol, ck.typed_items(options))  # (tol=True == 1, and is refused)
        hash(key)
    except TypeError:  # an unhashable value (a list of betas, per-problem arrays)
        return _configured(method, options, tol)
    driver, hyper, config = _configured_cached(key)
    return dict(driver), dict(hyper), config


@lru_cache(maxsize=128)
def _configured_cached(key):
    name, _, tol, items = key
    return _configured(methods.get(name), {k: v for k, _, v in items}, tol)


def _configured(method: methods.Method, options: dict, tol) -> tuple[dict, dict, methods.Config | None]:
    driver, hyper = _split(method, options, tol)
    config = None if driver["batched"] else presets.configure(method.name, hyper, driver["preset"])
    return driver, hyper, config


def _split(method: methods.Method, options: dict, tol) -> tuple[dict, dict]:
    driver, hyper = dict(DRIVER_OPTIONS), {}
    preset = options.get("preset")
    known_hyper = set(method.hypers) | set(method.fixed) | set(methods.ALIASES) | {"betas"}
    if isinstance(preset, str):
        for table in (presets.PRESET_ALIASES, presets.INERT):  # (its names, and its inert arguments)
            known_hyper |= set(table.get(preset.lower(), {}))
    for key, value in options.items():
        if key in DRIVER_OPTIONS:
            driver[key] = value
        elif key in known_hyper:
            hyper[key] = value
        else:
            raise ck.unknown(f"option for method {method.name!r}:", key,
                             set(DRIVER_OPTIONS) | set(method.hypers))
    if tol is not None and "gtol" not in options:
        driver["gtol"] = tol
    if driver["batch_size"] is not None:
        driver["batch_size"] = ck.count("batch_size", driver["batch_size"], lo=1)
        if "gtol" not in options and tol is None:
            driver["gtol"] = 0.0  # a mini-batch gradient's size says little about convergence
    if driver["epochs"] is not None:
        driver["epochs"] = ck.count("epochs", driver["epochs"], lo=1, hi=MAX_ITER)
        if "maxiter" in options:
            raise ValueError("give epochs or maxiter, not both")
    driver["history_every"] = ck.count("history_every", driver["history_every"], lo=1)
    driver["check_every"] = ck.count("check_every", driver["check_every"], lo=1)
    for flag in ("shuffle", "drop_last"):
        driver[flag] = ck.boolean(flag, driver[flag])
    driver["maxiter"] = ck.count("maxiter", driver["maxiter"], hi=MAX_ITER)
    driver["gtol"] = ck.nonneg("gtol", driver["gtol"])
    for flag in ("disp", "history", "trajectory", "batched", "in_place"):
        driver[flag] = ck.boolean(flag, driver[flag])
    driver["seed"] = ck.seed("seed", driver["seed"])
    if driver["finite_diff_rel_step"] is not None:
        driver["finite_diff_rel_step"] = ck.in_range("finite_diff_rel_step", driver["finite_diff_rel_step"],
                                                     lo=0, lo_open=True, hi=math.inf, hi_open=True)
    if driver["in_place"]:
        for name, bad, why in (
                ("check_every", driver["check_every"] != 1, "in_place already steps in place between tests"),
                ("batched", driver["batched"], "batched problems keep two buffers")):
            if bad:
                raise ValueError(f"in_place=True cannot be combined with {name}: {why}")
    ck.choice("driver", driver["driver"], ("auto", "python", "compiled"))
    ck.choice("backend", driver["backend"], ("auto", *kernels.BACKENDS))
    return driver, hyper


class _Missing:
    def __repr__(self) -> str:  # (as help(minimize) shows the default)
        return "<not given>"


_MISSING = _Missing()


def _parse_positional(second, rest, jac, x0):
    """Accept minimize(F, dF, x0) and scipy's minimize(F, x0, jac=dF), x0 also by keyword; dF may be
    True or a finite-difference scheme there too (minimize(F, True, x0), as Minimizer(F, True))."""
    if second is _MISSING:
        if x0 is _MISSING:
            raise TypeError("minimize(F, dF, x0) or minimize(F, x0, jac=dF): x0 is missing")
        return jac, x0
    # (True and a string are never an x0: as the second argument they can only be dF's stand-ins)
    if (callable(second) and not hasattr(second, "__array__")) or second is True or isinstance(second, str):
        if len(rest) > 1:
            raise TypeError("minimize takes at most three positional arguments (F, dF, x0); "
                            "pass the rest by keyword")
        if jac is not None:
            raise TypeError("the gradient was given twice: as the second argument and as jac=")
        if rest and x0 is not _MISSING:
            raise TypeError("x0 was given twice: as the third argument and as x0=")
        if not rest and x0 is _MISSING:
            raise TypeError("minimize(F, dF, x0): x0 is missing")
        return second, rest[0] if rest else x0
    if rest:
        raise TypeError("minimize(F, x0, ...): pass args, method, jac ... by keyword")
    if x0 is not _MISSING:
        raise TypeError(f"x0 was given twice: as the second argument and as x0= (the second argument is "
                        f"dF, a callable, or x0; got {type(second).__name__})")
    return jac, second


DEFAULT_METHOD = "rmsprop"


def minimize(fun: Callable, x0_or_jac: Any = _MISSING, *rest: Any, x0: Any = _MISSING, args: tuple = (),
             method: str | Callable | None = DEFAULT_METHOD, jac: Callable | bool | None = None,
             hess: Any = None, hessp: Any = None, bounds: Any = None, constraints: Any = (),
             tol: float | None = None, callback: Callable | None = None,
             options: dict | None = None) -> OptimizeResult:
    """Minimize ``fun`` with RMSProp or a relative, scipy.optimize.minimize style.

    Called as ``minimize(F, dF, x0, ...)`` or, as scipy, ``minimize(F, x0, jac=dF, ...)`` (x0 may
    be given as ``x0=`` either way);
    ``jac=True`` means F returns (f, g); ``jac='2-point'``, ``'3-point'`` or ``'cs'`` takes the
    gradient by finite differences of F, as scipy does (n + 1, 2n or n evaluations of F a step;
    option ``finite_diff_rel_step``); either may stand in dF's place (``minimize(F, True, x0)``).
    F and dF receive x in x0's shape and dtype, plus ``*args``.  ``method``: a name (any case), a
    fastrms method function (``fastrms.adam``), or None for the default, RMSProp (scipy's None
    is its default too).  ``options`` holds the driver options (``maxiter``
    1000, ``gtol`` 1e-5 on max|g|, ``disp``, ``history``, ``trajectory``,
    ``preset``, ``dtype``, ``driver``, ``backend``, ``in_place`` ...) and the
    method's hyperparameters (``lr``, ``gamma``, ``eps`` ... see ``fastrms.methods``).

    Returns scipy's OptimizeResult: x (x0's shape), fun, jac, nit, nfev, njev,
    status (0 converged, 1 maxiter, 3 non-finite, 99 callback), success,
    message, and ``history`` / ``trajectory`` when asked for.

    scipy's ``hess`` and ``hessp`` are accepted and not used (a warning says so, as scipy's BFGS
    does); ``bounds`` and ``constraints`` are a ValueError: the methods are unconstrained (scipy's
    BFGS only warns, and returns an x outside the bounds).
    """
    if not callable(fun):
        raise TypeError(f"fun must be callable, got {fun!r}")
    method = _method_name(method)
    _first_order_only(method, hess, hessp, bounds, constraints, front=True)
    jac, x0 = _parse_positional(x0_or_jac, rest, jac, x0)
    if not isinstance(args, tuple):
        args = (args,)
    _check_jac(jac, "pass dF (minimize(F, dF, x0)), jac=dF, jac=True when F returns (f, g), or "
                    "jac='2-point' for finite differences (n + 1 evaluations of F a step)")
    return _minimize(fun, jac, x0, args, method, tol, callback, options)


def _first_order_only(method, hess, hessp, bounds, constraints, *, front: bool, stacklevel: int = 3) -> None:
    """scipy.optimize.minimize's arguments that a first-order, unconstrained method cannot use:
    a Hessian is ignored with a warning (as by scipy's BFGS); bounds and constraints are refused,
    where BFGS warns and ignores them: its x may then lie outside the bounds, a silent wrong
    answer for a script that counted on them.  The messages name fastrms.minimize(method=...)
    (``front``) or the scipy-pluggable fastrms.<method>; built only when one is given."""
    def who():
        return f"minimize(method={method!r})" if front else method

    no_constraints = constraints is None or (isinstance(constraints, (list, tuple, dict)) and not constraints)
    if bounds is not None or not no_constraints:
        raise ValueError(f"fastrms.{who()} is unconstrained: it cannot honour bounds or constraints "
                         "(scipy's 'L-BFGS-B' takes bounds, 'SLSQP' and 'trust-constr' constraints)")
    for given, what in ((hess, "hess"), (hessp, "hessp")):
        if given is not None:
            warnings.warn(f"fastrms.{who()} does not use Hessian information ({what})", RuntimeWarning,
                          stacklevel=stacklevel)


def _check_jac(jac, how: str) -> None:
    """A clear error unless jac is a gradient function, True or a finite-difference scheme (``how``:
    how to pass one)."""
    if jac is None or jac is False:
        raise ValueError(f"fastrms methods need the gradient: {how}")
    if isinstance(jac, str):
        ck.choice("jac", jac, FINITE_DIFFERENCES)
    elif jac is not True and not callable(jac):
        raise TypeError(f"jac must be callable, True, or one of {FINITE_DIFFERENCES}, got {jac!r}")


def _finite_differences(fun, jac, opts: dict, batched: bool = False):
    """(F, dF, the FiniteDifferences or None): for jac='2-point', '3-point' or 'cs', F's value and
    gradient by finite differences (drivers/finite_diff.py), which count every evaluation of F."""
    if not isinstance(jac, str):
        if opts["finite_diff_rel_step"] is not None:
            raise ValueError("finite_diff_rel_step is the step of jac='2-point', '3-point' or 'cs'; "
                             "with a gradient function it would do nothing")
        return fun, jac, None
    fd = FiniteDifferences(fun, jac, opts["finite_diff_rel_step"], batched)
    return fd.value, fd.gradient, fd


def _host_only(fd, backend) -> None:
    if fd is not None and not backend.host_memory:
        raise ValueError(f"finite differences (jac={fd.method!r}) run on the CPU backend: pass x0 as a "
                         "host array, or a gradient function dF")


def _method_name(method):
    """The method's name; scipy takes a method as a function (minimize(..., method=fastrms.adam)),
    and None as its default."""
    if method is None:
        return DEFAULT_METHOD
    return METHOD_NAMES.get(method, method) if callable(method) else method


def _minimize(fun, jac, x0, args, method, tol, callback, options) -> OptimizeResult:
    """minimize, its arguments checked and parsed."""
    if isinstance(options, dict) and options.get("batched"):  # per-problem values as torch tensors ...
        options = {k: host_values(v) for k, v in options.items()}
    if cluster.any_dask(x0, *args):  # Dask: the same solvers, on the blocks where the data lives
        if tol is not None and "gtol" not in (options or {}):
            options = {**(options or {}), "gtol": tol}
        if cluster.is_dask(x0):
            if callback is not None:
                raise ValueError("a callback runs in this process, and a dask batch is solved chunk by chunk "
                                 "on the workers: record history=True (or trajectory=True) instead")
            if not (options or {}).get("batched"):
                raise ValueError("x0 is a dask array: that is a batch of problems (shape (B, ...), chunked "
                                 "along problems) and needs options={'batched': True}; for data too large "
                                 "for memory, pass the data as dask arrays in args and x0 as a NumPy array")
            _check_batch(method, options, tol, x0.shape[0])
            return cluster.minimize_batched(minimize, fun, jac, x0, args, method, options)
        if isinstance(jac, str):
            raise ValueError(f"jac={jac!r} evaluates F at n + 1 or more points a step, each a pass over the "
                             "dask data: pass the gradient dF (or jac=True)")
        return cluster.minimize_on_blocks(minimize, fun, jac, x0, args, method, options, callback)
    m = methods.get(method)
    opts, hyper, config = _split_options(m, options, tol)
    if opts["batched"]:
        return _solve_batched(fun, jac, x0, args, m, hyper, opts, wrap_callback(callback))
    return _solve(fun, jac, x0, args, config, opts, wrap_callback(callback))


class Minimizer:
    """``minimize`` for one objective, prepared once and called many times.

        solve = fastrms.Minimizer(F, dF, method="rmsprop", options={"lr": 1e-3, "maxiter": 300})
        res = solve(X0, args=(A,))  # = fastrms.minimize(F, dF, X0, args=(A,), method=..., options=...)

    A script that solves many small problems of one form (a fit per pixel, per sample, per
    bootstrap draw) calls minimize in a loop, and each call checks its options, its x0 and args,
    and chooses its driver again: about 50 µs, a third of a 5x5 solve of 300 steps.
    A Minimizer checks the method and options once, here (it keeps a copy of options).  Its first
    call with x0 of a new shape and dtype, or with args of new types, runs as minimize does and
    keeps what it decided (backend, driver, the compiled loop for numba.njit F and dF); later calls
    with x0 and args of those types check only x0's values and run.  Each call starts afresh (its
    own state, step 0) and returns what minimize would, bit for bit.  ``args`` given to a call
    replace the ones given here.  Batched problems, mini-batches, Dask arrays and x0 that is not a
    NumPy array run through minimize itself every call: correct, without the saving.
    """

    def __init__(self, fun: Callable, jac: Callable | bool, *, args: tuple = (),
                 method: str | Callable | None = DEFAULT_METHOD, tol: float | None = None,
                 callback: Callable | None = None, options: dict | None = None):
        if not callable(fun):
            raise TypeError(f"fun must be callable, got {fun!r}")
        _check_jac(jac, "Minimizer(F, dF), Minimizer(F, True) when F returns (f, g), or "
                        "Minimizer(F, '2-point') for finite differences")
        method = _method_name(method)
        options = dict(options) if isinstance(options, dict) else options
        self._opts, _, self._config = _split_options(methods.get(method), options, tol)  # errors now
        _finite_differences(fun, jac, self._opts)  # (its options' errors too)
        self.fun, self.jac, self.method, self.tol, self._options = fun, jac, method, tol, options
        self.args = args if isinstance(args, tuple) else (args,)
        self.callback = callback
        self._callback = wrap_callback(callback)
        self._plans: dict = {}
        self._lock = threading.Lock()
        self._one_problem = not self._opts["batched"]
        self._made = True

    def __setattr__(self, name: str, value: Any) -> None:
        if getattr(self, "_made", False):  # (its plans were made for these; a changed one would not see them)
            raise AttributeError(f"a Minimizer's {name} is fixed when it is made: make a new Minimizer")
        object.__setattr__(self, name, value)

    @property
    def options(self) -> MappingProxyType | None:
        """The options, as given (a read-only view of the Minimizer's copy)."""
        return None if self._options is None else MappingProxyType(self._options)

    def __call__(self, x0: Any, args: tuple | None = None) -> OptimizeResult:
        """minimize(fun, jac, x0, args=args, ...) with this Minimizer's method and options (args:
        the ones given to the Minimizer, unless given here)."""
        if args is None:
            args = self.args
        elif not isinstance(args, tuple):
            args = (args,)
        if type(x0) is np.ndarray and self._one_problem:  # (_solve keeps no plan for mini-batches)
            key = (x0.dtype.str, x0.shape, fingerprint(args))
            plan = self._plans.get(key)
            if plan is not None:
                return _solve(self.fun, self.jac, x0, args, self._config, self._opts, self._callback, plan)
            if not cluster.any_dask(*args):
                return _solve(self.fun, self.jac, x0, args, self._config, self._opts, self._callback,
                              keep=lambda plan: self._keep(key, plan))
        return _minimize(self.fun, self.jac, x0, args, self.method, self.tol, self.callback, self._options)

    MAX_PLANS = 64  # x0 shapes and argument types kept (oldest dropped first)

    def _keep(self, key, plan: _Plan) -> None:
        with self._lock:
            self._plans[key] = plan
            while len(self._plans) > self.MAX_PLANS:
                del self._plans[next(iter(self._plans))]

    def __reduce__(self):
        # (for multiprocessing and Dask workers: the plans hold compiled code and a lock, and a new
        # process makes its own on its first call)
        return (_rebuild_minimizer, (self.fun, self.jac, self.args, self.method, self.tol, self.callback,
                                     self._options))

    def __repr__(self) -> str:
        name = getattr(self.fun, "__name__", self.fun)
        return f"Minimizer({name!r}, method={self.method!r}, options={self._options!r})"


def _rebuild_minimizer(fun, jac, args, method, tol, callback, options) -> Minimizer:
    return Minimizer(fun, jac, args=args, method=method, tol=tol, callback=callback, options=options)


def _check_batch(method, options, tol, B: int) -> None:
    """The options of B batched problems, checked as one batch before a cluster solves it in
    chunks: an error names the problem by its index in the whole batch, not in its chunk."""
    m = methods.get(method)
    opts, hyper, _ = _split_options(m, options, tol)
    presets.configure_batch(m.name, hyper, opts["preset"], B)


def _start(x0, opts):
    """(flat copy of x0 on its backend, shape, backend, the kind of array x0 was)."""
    where = kernels.owner(x0)
    choice = where if opts["backend"] == "auto" else opts["backend"]
    if choice == "cpu" and where != "cpu":
        raise ValueError(f"x0 lives on the {where} backend: use backend={where!r} (or 'auto'), "
                         "or pass a host array")
    backend = kernels.get(choice)  # a clear error where it cannot run here
    x, shape = backend.x0(x0, opts["dtype"])
    return x, shape, backend, backend.array_kind(x0)


def _problem(fun, jac, args, x, shape, backend, kind, opts, B=None) -> Problem:
    """The user's F and dF as the drivers call them, with the mini-batches when asked for (B: the
    number of batched problems, whose data has a leading B axis)."""
    batches = None
    if opts["batch_size"] is not None:
        batches = Batches(args, opts["batch_size"], opts["shuffle"], opts["seed"], opts["drop_last"],
                          problems=B)
    return Problem(fun, jac, args, shape, x.dtype, batches, backend, kind, batch=B)


# A run with in_place=True writes x_{k+1} over x_k.  If that step diverges, x_k is lost; the
# front then repeats the run from x0 with checks and two buffers, as without in_place, which
# ends at the same iterate when dF is deterministic and is an ordinary checked run otherwise:
# either way the result is that of a checked run.  Mini-batches get a drawn seed, so that the
# repeat sees the same batches.
RERUN_NOTE = ("(in_place: the step from that iterate had overwritten it, so the run was repeated "
              "from x0 with checks to return it.)")


def _draw_seed() -> int:
    return np.random.SeedSequence().entropy


class _Plan(NamedTuple):
    """What _solve decided for an x0 and args of some types, besides their values: a Minimizer
    keeps it for its next calls with x0 and args of those types."""
    backend: Any
    shape: tuple
    kind: str
    driver: Any       # drivers.python_loop or drivers.compiled
    compiled: Any     # compiled.prepare's answer (None for the Python loop)


def _solve(fun, jac, x0, args, config, opts, callback, plan: _Plan | None = None,
           keep: Callable[[_Plan], None] | None = None) -> OptimizeResult:
    """One problem. ``plan``: what an earlier run decided for x0 and args of these types (they
    passed every check then: only x0's values are checked again); ``keep``: takes this run's plan
    where one can serve later runs (not with mini-batches, whose data decide the compiled loop)."""
    fun, jac, fd = _finite_differences(fun, jac, opts)
    if plan is None:
        if opts["in_place"]:
            if callback is not None:
                raise ValueError("in_place=True cannot be combined with a callback: a diverged in-place "
                                 "run is repeated from x0, which would call the callback twice")
            if opts["batch_size"] is not None and opts["seed"] is None:
                opts = {**opts, "seed": _draw_seed()}
        x, shape, backend, kind = _start(x0, opts)
        if opts["in_place"] and not backend.host_memory:
            raise ValueError("in_place=True runs on the CPU backend (on a GPU the two buffers stay)")
        _host_only(fd, backend)
    else:
        backend, shape, kind = plan.backend, plan.shape, plan.kind
        x = backend.x0(x0, opts["dtype"])[0]

    def solve(x, in_place: bool, spent=(0, 0)):
        mstate = MethodState(config, x.size, x.dtype, backend)
        problem = _problem(fun, jac, args, x, shape, backend, kind, opts)
        problem.nfev, problem.njev = spent
        if in_place != opts["in_place"]:  # (the checked rerun of a diverged in-place run)
            driver = _choose_driver(problem, x, mstate, {**opts, "in_place": in_place}, callback)
        elif plan is not None:
            driver, problem.compiled = plan.driver, plan.compiled
        else:
            driver = _choose_driver(problem, x, mstate, opts, callback)
            if keep is not None and problem.batches is None:
                keep(_Plan(backend, shape, kind, driver, problem.compiled))
        end = "epochs" if opts["epochs"] is not None else "maxiter"
        out = driver.run(problem, mstate, x, maxiter=_maxiter(opts, problem), gtol=opts["gtol"],
                         callback=callback, history=opts["history"], trajectory=opts["trajectory"],
                         every=opts["history_every"], end=end, check_every=opts["check_every"],
                         in_place=in_place)
        return problem, out

    problem, out = solve(x, opts["in_place"])
    rerun = out.reason == "diverged_in_place"
    if rerun:
        problem, out = solve(_start(x0, opts)[0], False, (problem.nfev, problem.njev))
    batches = problem.batches
    f = out.f if out.f is not None else problem.value(out.x)
    if not math.isfinite(f) and out.status != NAN:
        out.reason = "loss_at_end"  # every update was finite, but F is not: never a success
    x_end, g_end = backend.result(out.x, shape, kind), backend.result(out.g, shape, kind)
    res = OptimizeResult(
        x=x_end, fun=f, jac=g_end, nit=out.nit,
        nfev=problem.nfev if fd is None else fd.calls, njev=problem.njev, status=out.status,
        success=out.status == 0, message=f"{out.message} {RERUN_NOTE}" if rerun else out.message)
    if out.losses is not None:
        res.history = _history(out, batches)
    if out.xs is not None:
        res.trajectory = np.asarray(out.xs)
    if opts["disp"]:
        print(f"{res.message}\n         Current function value: {f:.6g}\n"
              f"         Iterations: {res.nit}\n         Function evaluations: {res.nfev}\n"
              f"         Gradient evaluations: {res.njev}")
    return res


def _solve_batched(fun, jac, x0, args, method, hyper, opts, callback) -> OptimizeResult:
    """B problems in one call; the result holds arrays of length B (scipy.optimize.elementwise's
    convention): x (B, ...), fun, nit, status, success, message, and jac (B, ...); with history,
    res.history's loss and gnorm are (steps, B), and with trajectory res.trajectory is
    (steps, B, ...), NaN after a problem stopped.  A callback sees all B problems after each step
    (batched_loop.run); StopIteration ends those still running."""
    fun, jac, fd = _finite_differences(fun, jac, opts, batched=True)
    x, shape, backend, kind = _start(x0, opts)
    _host_only(fd, backend)
    if len(shape) < 1:
        raise ValueError("batched problems need x0 of shape (B, ...): one row per problem")
    B = shape[0]
    config, per_problem, varies = presets.configure_batch(method.name, hyper, opts["preset"], B)
    bstate = BatchedState(config, per_problem, B, x.size // B, x.dtype, backend, varies)
    problem = _problem(fun, jac, args, x, shape, backend, kind, opts, B)
    maxiter = _maxiter(opts, problem)
    driver = _choose_driver(problem, x, bstate, opts, callback)
    end = "epochs" if opts["epochs"] is not None else "maxiter"
    out = driver.run(problem, bstate, x, maxiter=maxiter, gtol=opts["gtol"], end=end, history=opts["history"],
                     every=opts["history_every"], trajectory=opts["trajectory"], callback=callback,
                     check_every=opts["check_every"])
    f = problem.value(out.x)
    out.reasons[~np.isfinite(f) & (out.status() != NAN)] = "loss_at_end"
    status = out.status()
    res = OptimizeResult(x=backend.result(out.x, shape, kind), fun=f, jac=backend.result(out.g, shape, kind),
                         nit=out.nit, nfev=problem.nfev if fd is None else fd.calls, njev=problem.njev,
                         status=status,
                         success=status == 0, message=out.messages())
    if out.losses is not None:  # loss and gnorm (steps, B): NaN where a problem had stopped
        res.history = _history(out, problem.batches)
    if out.xs is not None:  # (steps, B, ...), NaN where a problem had stopped
        res.trajectory = np.asarray(out.xs)
    if opts["disp"]:
        print(f"{B} problems: {int(np.sum(status == 0))} succeeded; "
              + ", ".join(f"status {s}: {int(np.sum(status == s))}" for s in np.unique(status)))
    return res


def _history(out, batches) -> dict:
    """res.history from what a driver recorded: loss, gnorm (max |g|) and step, and with
    mini-batches the epoch of each step."""
    history = {"loss": np.asarray(out.losses), "gnorm": np.asarray(out.gnorms), "step": np.asarray(out.steps)}
    if batches is not None:
        history["epoch"] = history["step"] / batches.per_epoch
    return history


def _maxiter(opts: dict, problem: Problem) -> int:
    """maxiter, or epochs × (batches per epoch)."""
    if opts["epochs"] is None:
        return opts["maxiter"]
    n = opts["epochs"] * (problem.batches.per_epoch if problem.batches else 1)
    if n > MAX_ITER:
        raise ValueError(f"epochs={opts['epochs']} is {n} steps, more than this platform's integer holds")
    return n


@cache
def _compiled_drivers():
    """The compiled loops' modules, imported on first use (they import Numba's compiler: ~0.4 s)."""
    from .drivers import compiled, compiled_batched

    return compiled, compiled_batched


def _choose_driver(problem: Problem, x, mstate: MethodState, opts: dict, callback):
    """The compiled loop for jitted F and dF (unless something needs Python), else the Python loop."""
    choice = opts["driver"]
    batched = problem.batch is not None
    if choice == "python":
        return batched_loop if batched else python_loop
    compiled, compiled_batched = _compiled_drivers()
    if isinstance(getattr(problem.jac, "__self__", None), FiniteDifferences):
        why = "finite-difference gradients (jac='2-point', '3-point', 'cs') call F from Python"
    else:
        why = compiled.not_applicable(problem.fun, problem.jac, mstate.config, callback, mstate.backend)
    loop = compiled_batched if batched else compiled
    if why is None:
        try:
            problem.compiled = loop.prepare(problem, mstate, x, _maxiter(opts, problem),
                                            **({"in_place": True} if opts.get("in_place") else {}))
        except ck.NotCompilable:  # the Python loop would call the same compiled code, and fail alike
            raise
        except TypeError as e:
            why = str(e)
    if why is None:
        return loop
    if choice == "compiled":
        raise ValueError(f"driver='compiled' cannot run this problem: {why}")
    return batched_loop if batched else python_loop


def _method_function(name: str):
    def solver(fun, x0, args=(), jac=None, hess=None, hessp=None, bounds=None, constraints=(),
               callback=None, **options):
        _first_order_only(name, hess, hessp, bounds, constraints, front=False, stacklevel=4)
        if jac is None:  # (scipy.optimize.minimize hands a custom method None for jac='2-point' too)
            raise ValueError(f"fastrms.{name} needs the gradient: pass jac=dF, or jac=True when F returns "
                             "(f, g); for finite differences call fastrms.minimize(F, x0, jac='2-point', "
                             f"method={name!r}), as scipy passes a custom method no finite-difference scheme")
        tol = options.pop("tol", None)
        return minimize(fun, x0, args=args, method=name, jac=jac, tol=tol, callback=callback,
                        options=options)

    solver.__name__ = solver.__qualname__ = name
    solver.__doc__ = (f"fastrms's {name!r} as a scipy method: "
                      f"``scipy.optimize.minimize(F, x0, jac=dF, method=fastrms.{name}, options=...)``.\n\n"
                      f"{methods.METHODS[name].doc}")
    return solver


# one scipy-pluggable function per registered method: fastrms.rmsprop, fastrms.adam, ...
METHOD_FUNCTIONS = {name: _method_function(name) for name in methods.METHODS}
globals().update(METHOD_FUNCTIONS)
METHOD_NAMES = {fn: name for name, fn in METHOD_FUNCTIONS.items()}  # minimize(..., method=fastrms.adam)
