"""The compiled driver: the whole loop in nopython mode, for Numba-jitted F and dF.

The loop below is compiled with an explicit signature whose function
parameters are ``numba.types.FunctionType``: one compilation per argument-type
signature (x's dtype and ndim, the types of ``args``), cached on disk, and any
user function of that signature runs through it.  Passing dispatchers as plain
arguments would instead recompile the driver for every new user function and
never hit the disk cache (a dispatcher's type name carries its address).

Globals are frozen into jitted code when it compiles: data must reach F and dF
through ``args``, never through module globals.
"""

from __future__ import annotations

import math
import types as pytypes

import numba
import numpy as np
from numba import njit, types
from numba.core.registry import CPUDispatcher
from numba.extending import overload, register_jitable

from ..kernels import CPU, cpu
from ..schedules import Schedule, schedule_value
from .problem import Outcome

CONVERGED, MAXITER, DIVERGED, LOSS, BAD_SHAPE = range(5)
_REASONS = {CONVERGED: "converged", MAXITER: "maxiter", DIVERGED: "diverged", LOSS: "loss"}


@register_jitable
def _eval_separate(fun, jac, x, args, batch_args, want_f):
    g = jac(x, *batch_args)
    if want_f:
        return float(fun(x, *args)), g, 1
    return np.nan, g, 0


@register_jitable
def _eval_combined(fun, jac, x, args, batch_args, want_f):
    f, g = fun(x, *args)
    return float(f), g, 1


def _take(args, rows, mask):
    """args with the data arrays (mask[i] True) cut to ``rows``; compiled only, see _take_typed."""


@overload(_take, prefer_literal=True)
def _take_typed(args, rows, mask):
    # mask is a tuple of literal booleans bound at compile time (DATA below), so the
    # tuple built here has a type Numba knows: one generated line per arity and mask.
    flags = [bool(getattr(m, "literal_value", False)) for m in mask]
    items = "".join(f"args[{i}][rows], " if f else f"args[{i}], " for i, f in enumerate(flags))
    namespace: dict = {}
    exec(f"def take(args, rows, mask):\n    return ({items})\n", namespace)  # noqa: S102
    return namespace["take"]


def _loop(fun, jac, x, spare, shape, args, S, p, h, lr_kind, lr_p, gamma_kind, gamma_p, clip_norm,
          t0, maxiter, gtol, want_f, every, order, batch, per_epoch, losses, gnorms, steps,
          xs):  # pragma: no cover - compiled
    """Same steps and stopping tests as drivers/python_loop.py, without leaving nopython mode."""
    k = 0
    nfev = 0
    njev = 0
    n_rec = 0
    code = MAXITER
    while True:
        f_now = want_f and (k % every == 0 or k == maxiter)
        if BATCHED:  # noqa: F821 - bound per driver
            epoch, j = divmod(k, per_epoch)
            rows = order[epoch, j * batch:(j + 1) * batch]
            f, g, nf = EVAL(fun, jac, x.reshape(shape), args, _take(args, rows, DATA), f_now)  # noqa: F821
        else:
            f, g, nf = EVAL(fun, jac, x.reshape(shape), args, args, f_now)  # noqa: F821
        nfev += nf
        njev += 1
        if g.shape != shape:
            code = BAD_SHAPE
            break
        gf = g.ravel()
        if CAST:  # noqa: F821 - dF returns another float type than x (cast, as the Python loop does)
            gf = gf.astype(x.dtype)
        if f_now and losses.size:
            losses[n_rec] = f
            gnorms[n_rec] = cpu.max_abs(gf)
            steps[n_rec] = k
            n_rec += 1
        if xs.shape[0]:
            xs[k] = x
        if f_now and not math.isfinite(f):
            code = LOSS
            break
        if k == maxiter:
            break
        gfactor = 1.0
        if clip_norm < math.inf:
            gfactor = clip_norm / max(cpu.norm2(gf), clip_norm)
        COEF(p, t0 + k + 1, schedule_value(lr_kind, lr_p, t0 + k),  # noqa: F821
             schedule_value(gamma_kind, gamma_p, t0 + k), gfactor, h)
        n_big, n_bad = STEP(x, gf, S, h, gtol, spare)  # noqa: F821
        if n_bad:
            code = DIVERGED
            break
        if n_big == 0:
            code = CONVERGED
            break
        k += 1
        x, spare = spare, x
    return code, k, f, x, gf.copy(), nfev, njev, n_rec


_drivers: dict = {}


def _schedule(value):
    """(kind, params) of a float or a Schedule, for schedule_value."""
    if isinstance(value, Schedule):
        return value.code, np.asarray(value.params, np.float64)
    return 0, np.array([float(value), 0.0, 0.0, 1.0, 0.0])


def is_jitted(f) -> bool:
    return isinstance(f, CPUDispatcher)


def not_applicable(fun, jac, config, callback, backend) -> str | None:
    """Why the compiled driver cannot run this problem (None: it can)."""
    if not is_jitted(fun) or not (jac is True or is_jitted(jac)):
        return "F and dF must be numba.njit functions"
    if callback is not None:
        return "a callback needs the Python loop"
    if backend is not CPU:
        return "the compiled driver runs on the CPU backend"
    for name in ("lr", "gamma"):
        v = config.values.get(name, 0.0)
        if callable(v) and not isinstance(v, Schedule):
            return f"{name} is a Python callable; use a fastrms.schedules schedule to compile the loop"
    return None


def _function_type(dispatcher, argtypes, what):
    try:
        dispatcher.compile(argtypes)
    except Exception as e:  # a Numba typing error must not reach the user as such
        raise TypeError(f"{what} cannot be compiled for x and args of types {argtypes}: "
                        f"{str(e).splitlines()[0]}") from None
    for sig in dispatcher.nopython_signatures:
        if tuple(sig.args) == tuple(argtypes):
            return sig
    raise TypeError(f"{what}: no compiled signature for {argtypes}")


_signatures: dict = {}


class _Address:
    """A jitted function as a first-class function whose address and type are resolved once.

    Numba would otherwise look the address up, and build the FunctionType, again
    on every driver call (tens of microseconds for two functions).  This follows
    Numba's WrapperAddressProtocol; ``_numba_type_`` makes typing it a lookup.
    """

    def __init__(self, dispatcher, sig):
        from numba.experimental.function_type import _get_wrapper_address

        self.dispatcher, self.sig = dispatcher, sig
        self.address = _get_wrapper_address(dispatcher, sig)
        self._numba_type_ = types.FunctionType(sig)

    def __wrapper_address__(self):
        return self.address

    def signature(self):
        return self.sig


def _first_class(dispatcher, sig):
    try:
        return _Address(dispatcher, sig)
    except (ImportError, AttributeError, TypeError):  # private Numba API moved: let Numba convert
        return dispatcher


def _fingerprint(a):
    """A cheap stand-in for numba.typeof(a) as a cache key (typeof costs ~10 µs an array)."""
    if isinstance(a, np.ndarray):
        f = a.flags
        return (a.dtype.str, a.ndim, f.c_contiguous, f.f_contiguous, f.writeable, f.aligned)
    if isinstance(a, tuple):
        return tuple(_fingerprint(b) for b in a)
    return type(a)


def signature_for(fun, jac, x_shaped, args, batch_args=None):
    """The driver's explicit signature for these functions and argument types, or a TypeError.

    ``batch_args``: a sample mini-batch of args (dF is typed for batches, F for all the data).
    """
    key = (fun, jac, _fingerprint(x_shaped), _fingerprint(args), _fingerprint(batch_args))
    sigs = _signatures.get(key)
    if sigs is None:
        try:
            xt = numba.typeof(x_shaped)
            at = numba.typeof(args)
            bt = at if batch_args is None else numba.typeof(batch_args)
        except ValueError as e:
            raise TypeError(f"args cannot be passed to compiled code: {e}") from None
        if batch_args is not None and jac is True:
            raise TypeError("mini-batches in the compiled loop need F and dF as two functions")
        sigs = _signatures[key] = _signature(fun, jac, xt, at, bt)
    return sigs


def _signature(fun, jac, xt, at, bt):
    argtypes = (xt, *at.types)
    fsig = _function_type(fun, argtypes, "F")
    if jac is True:
        ret = fsig.return_type
        if not (isinstance(ret, types.BaseTuple) and len(ret) == 2):
            raise TypeError("with jac=True the objective must return a pair (f, g)")
        gtype, jsig = ret[1], fsig
    else:
        jsig = _function_type(jac, (xt, *bt.types), "dF")
        gtype = jsig.return_type
    if not (isinstance(gtype, types.Array) and isinstance(gtype.dtype, (types.Float, types.Integer))
            and gtype.ndim == xt.ndim):
        raise TypeError(f"dF must return a real array of x's ndim ({xt.ndim}-d), returns {gtype}")
    # sigs live in _signatures for the whole process, so id(sigs) is a stable key
    return fsig, jsig, xt, at, _first_class(fun, fsig), _first_class(jac if jac is not True else fun, jsig)


def _driver(engine, sigs, combined: bool, parallel: bool, mask):
    method = engine.config.method
    key = (method.name, engine.config.flags, combined, parallel, engine.dtype, id(sigs), mask)
    if key not in _drivers:
        try:
            _drivers[key] = _build_driver(engine, sigs, combined, parallel, mask)
        except numba.core.errors.NumbaError as e:  # never a Numba traceback for the user
            raise TypeError(f"the compiled loop cannot be built for these functions and args: "
                            f"{str(e).splitlines()[0]}") from None
    return _drivers[key]


def _build_driver(engine, sigs, combined: bool, parallel: bool, mask):
    fsig, jsig, xt, at = sigs[:4]
    dt = numba.from_dtype(engine.dtype)
    flat = types.Array(dt, 1, "C")
    f64 = types.Array(types.float64, 1, "C")
    ints = types.Array(types.int64, 1, "C")
    sig = types.Tuple((types.intp, types.intp, types.float64, flat, flat, types.intp, types.intp,
                       types.intp))(
        types.FunctionType(fsig), types.FunctionType(jsig), flat, flat, types.UniTuple(types.intp, xt.ndim),
        at, types.Array(dt, 2, "C"), f64, flat, types.intp, f64, types.intp, f64, types.float64,
        types.intp, types.intp, dt, types.boolean, types.intp, types.Array(types.int64, 2, "C"),
        types.intp, types.intp, f64, f64, ints, types.Array(dt, 2, "C"))
    method = engine.config.method
    step = engine.kernels.variant(checked=True, parallel=parallel)
    cast = (fsig.return_type[1] if combined else jsig.return_type).dtype != xt.dtype
    flag_tag = "".join("1" if f else "0" for f in engine.config.flags) or "x"
    batch_tag = "b" + "".join("1" if m else "0" for m in mask) if mask else "full"
    name = (f"drive_{method.rule.__name__}_{method.coefficients.__name__}_{flag_tag}_"
            f"{'fg' if combined else 'f_g'}_{'par' if parallel else 'ser'}_{'cast' if cast else 'g'}_"
            f"{batch_tag}_{cpu._source_tag()}")
    namespace = dict(_loop.__globals__, STEP=step, COEF=method.coefficients, CAST=cast,
                     EVAL=_eval_combined if combined else _eval_separate,
                     BATCHED=mask is not None, DATA=mask if mask is not None else ())
    fn = pytypes.FunctionType(_loop.__code__, namespace, name)
    fn.__qualname__ = name
    return njit(sig, cache=True, nogil=True)(fn)


MAX_ORDER_BYTES = 256 * 2 ** 20  # the row orders of all epochs are handed to the loop at once


def prepare(problem, engine, x, maxiter: int):
    """(driver, signatures) for this problem, or a TypeError saying why not."""
    b = problem.batches
    sample = None
    if b is not None:
        if (maxiter // b.per_epoch + 1) * b.N * 8 > MAX_ORDER_BYTES:
            raise TypeError("the epochs' row orders are too large to hand to the compiled loop")
        sample = tuple(a[:b.size] if i in b.data else a for i, a in enumerate(b.args))
    sigs = signature_for(problem.fun, problem.jac, x.reshape(problem.shape), problem.args, sample)
    mask = b.mask if b is not None else None
    drive = _driver(engine, sigs, problem.jac is True, cpu.use_parallel(x.size), mask)
    return drive, sigs


def run(problem, engine, x, *, maxiter: int, gtol: float, callback=None, history: bool = False,
        trajectory: bool = False, every: int = 1, end: str = "maxiter", check_every: int = 1) -> Outcome:
    """The compiled twin of python_loop.run (same arguments, same Outcome).

    ``check_every`` is accepted and not needed: on the CPU the stopping tests are
    fused into the update kernel and cost nothing, so every step is checked.
    """
    shape, b = problem.shape, problem.batches
    drive, sigs = problem.compiled or prepare(problem, engine, x, maxiter)
    cfg = engine.config
    lr_kind, lr_p = _schedule(cfg.values["lr"])
    gamma_kind, gamma_p = _schedule(cfg.values.get("gamma", 0.0))
    n_rec = maxiter + 1 if history else 0
    losses, gnorms, steps = np.empty(n_rec), np.empty(n_rec), np.empty(n_rec, np.int64)
    xs = np.empty((maxiter + 1 if trajectory else 0, x.size), x.dtype)
    order = b.orders(maxiter) if b is not None else np.zeros((1, 1), np.int64)
    code, k, f, x_end, g, nfev, njev, n_rec = drive(
        sigs[4], sigs[5], x, np.empty_like(x), shape, problem.args, engine.S, engine.p, engine.h,
        lr_kind, lr_p, gamma_kind, gamma_p, cfg.values["clip_norm"], engine.t, maxiter,
        x.dtype.type(gtol if gtol > 0 else -1.0), history, every, order.astype(np.int64),
        b.size if b is not None else 0, b.per_epoch if b is not None else 1, losses, gnorms, steps, xs)
    problem.nfev += nfev
    problem.njev += njev
    if code == BAD_SHAPE:
        raise ValueError(f"the gradient's shape differs from x's shape {shape}")
    engine.t += k
    out = Outcome(shape, history, trajectory)
    if history:
        out.losses, out.gnorms, out.steps = list(losses[:n_rec]), list(gnorms[:n_rec]), list(steps[:n_rec])
    if trajectory:
        out.xs = list(xs[:k + 1].reshape((k + 1, *shape)))
    reason = end if code == MAXITER else _REASONS[code]
    f_end = f if (history or (problem.jac is True and b is None)) else None
    return out.finish(k, x_end, f_end, g, reason, gtol)
