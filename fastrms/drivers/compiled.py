"""The compiled driver: the whole loop in nopython mode, for Numba-jitted F and dF.

The loop below is compiled once per function-type signature (x's dtype and
ndim, the types of ``args``, what F and dF return), cached on disk, and any
user function of that signature runs through it: F and dF arrive as the
addresses of their compiled code (see function_at).  Passing dispatchers as
arguments would recompile the driver for every new user function and never
hit the disk cache (a dispatcher's type name carries its address); passing
them as first-class function objects costs about 8 µs a function a call.

Globals are frozen into jitted code when it compiles: data must reach F and dF
through ``args``, never through module globals.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import sys
import threading
import time
from collections import OrderedDict
from functools import cache

import numba
import numpy as np
from numba import types
from numba.core import cgutils
from numba.core.registry import CPUDispatcher
from numba.extending import intrinsic, overload, register_jitable

from .. import _checks as ck
from .._arrays import fingerprint
from ..kernels import cpu
from ..kernels._jit import bind, flag_tag, jit
from ..schedules import schedule_value
from .outcome import END_REASONS, Outcome

# How a call of the loop ended: an index into END_REASONS (the drivers' one vocabulary),
# or one of the codes after it that the host turns into an exception or a resumed call.
CONVERGED, MAXITER, DIVERGED, DIVERGED_IN_PLACE, LOSS = (
    END_REASONS.index(r) for r in ("converged", "maxiter", "diverged", "diverged_in_place", "loss"))
BAD_SHAPE, USER_ERROR, BAD_LR, BAD_GAMMA, PAUSED = range(len(END_REASONS), len(END_REASONS) + 5)
BAD_SCHEDULE = PAUSED + 1  # + the row of the scheduled hyperparameter that left its interval


@intrinsic
def function_at(typingctx, ftype, address):
    """The first-class function of type ``ftype`` whose C wrapper is at ``address``.

    Numba calls a first-class function through its C wrapper unless it also has the
    entry point of Numba's own calling convention (jit_addr, left null here): the
    wrapper hands an exception raised in the function to sys.unraisablehook and
    returns zeros, where propagating it would leak every array the loop holds.
    """
    fnty = ftype.instance_type

    def codegen(context, builder, sig, args):
        voidptr = context.get_value_type(types.voidptr)
        fn = cgutils.create_struct_proxy(fnty)(context, builder)
        if "c_addr" in context.data_model_manager[fnty]._fields:
            fn.c_addr = builder.inttoptr(args[1], voidptr)
            fn.py_addr = voidptr(None)
            fn.jit_addr = voidptr(None)
        else:  # Numba before 0.60: (addr, pyaddr), always called through the C wrapper
            fn.addr = builder.inttoptr(args[1], voidptr)
            fn.pyaddr = voidptr(None)
        return fn._getvalue()

    return fnty(ftype, address), codegen


# Inlined into the loop's IR: a register_jitable is otherwise compiled as a function of its own,
# in a library that LLVM cannot inline across, and its (f, g, nf) return through memory cost
# about a tenth of a 5x5 AX = I step (bench/RESULTS.md, item 4).
@register_jitable(inline="always")
def _eval_separate(fun, jac, x, args, batch_args, want_f):
    g = jac(x, *batch_args)
    if want_f:
        return float(fun(x, *args)), g, 1
    return np.nan, g, 0


@register_jitable(inline="always")
def _eval_combined(fun, jac, x, args, batch_args, want_f):
    f, g = fun(x, *args)
    return float(f), g, 1


@register_jitable
def _value_separate(fun, x, args):
    return float(fun(x, *args))


@register_jitable
def _value_combined(fun, x, args):
    return float(fun(x, *args)[0])


def _take(args, rows, mask):
    """args with the data arrays (mask[i] True) cut to ``rows``; compiled only, see _take_typed."""


def take_impl(mask, index: str):
    """The implementation of a take: ``args`` with each data argument (mask[i] True) indexed by
    ``index`` ('[rows]'; '[:, rows]' for batched problems' data).  mask is a tuple of literal
    booleans bound at compile time (DATA below), so the tuple built here has a type Numba
    knows: one generated line per arity and mask."""
    flags = [bool(getattr(m, "literal_value", False)) for m in mask]
    items = "".join(f"args[{i}]{index}, " if f else f"args[{i}], " for i, f in enumerate(flags))
    namespace: dict = {}
    exec(f"def take(args, rows, mask):\n    return ({items})\n", namespace)  # noqa: S102
    return namespace["take"]


@overload(_take, prefer_literal=True)
def _take_typed(args, rows, mask):
    return take_impl(mask, "[rows]")


def _loop(fns, shape, args, S, p, h, lr_kind, lr_p, gamma_kind, gamma_p, clip_norm, t0, maxiter, gtol,
          want_f, every, order, batch, per_epoch, sched, err,
          x, spare, k0, k_stop, losses, gnorms, steps, xs, par):  # pragma: no cover - compiled
    """Same steps and stopping tests as drivers/python_loop.py, without leaving nopython mode.

    The arguments up to ``err`` stay the same through a run (run_constants); the others change
    from call to call.  Runs iterations k0 … k_stop − 1 and returns PAUSED at k_stop, so the host can
    look at signals (Ctrl-C) and grow the history between calls; x is x_k there.
    fns holds the addresses of F and dF (see function_at); err[0] is set by the host's
    unraisable hook when F or dF raised.  Each row of sched is a scheduled packed
    hyperparameter (methods.Config.schedule_rows); its value goes into p every step.
    Where the run ends, f is F at the x returned.  par: step with STEP_PAR rather than STEP
    (the parallel and serial kernels of a racing driver; the same kernel otherwise).
    """
    fun = function_at(F_TYPE, fns[0])  # noqa: F821 - bound per driver
    jac = function_at(G_TYPE, fns[1])  # noqa: F821
    xv, sv = x.reshape(shape), spare.reshape(shape)  # the user's shape, made once, swapped with x
    k = k0
    nfev = 0
    njev = 0
    n_rec = 0
    code = MAXITER
    f = np.nan
    fresh = False  # f is F at x
    gf = np.empty(0, dtype=x.dtype)
    while True:
        if k == k_stop and k < maxiter:
            code = PAUSED
            break
        f_now = want_f and (k % every == 0 or k == maxiter)
        if BATCHED:  # noqa: F821 - bound per driver
            epoch, j = divmod(k, per_epoch)
            rows = order[epoch, j * batch:(j + 1) * batch]
            f, g, nf = EVAL(fun, jac, xv, args, _take(args, rows, DATA), f_now)  # noqa: F821
        else:
            f, g, nf = EVAL(fun, jac, xv, args, args, f_now)  # noqa: F821
        nfev += nf
        njev += 1
        fresh = nf == 1
        if err[0]:  # F or dF raised: what it returned is garbage
            code = USER_ERROR
            break
        if g.shape != shape:
            code = BAD_SHAPE
            break
        if CAST:  # noqa: F821 - dF returns another float type than x (cast, as the Python loop does)
            gf = g.ravel().astype(x.dtype)
        else:
            gf = g.ravel()
        if f_now and losses.size:
            losses[n_rec] = f
            gnorms[n_rec] = cpu.max_abs(gf)
            steps[n_rec] = k
            n_rec += 1
        if xs.shape[0]:
            cpu.copy_range(x, xs[k - k0], 0, x.size)
        if f_now and not math.isfinite(f):
            code = LOSS
            break
        if k == maxiter:
            break
        if VARIES or k == k0:  # noqa: F821 - constant coefficients are computed once a call
            gfactor = 1.0
            if clip_norm < math.inf:
                gfactor = clip_norm / max(cpu.norm2(gf), clip_norm)
            bad, value = COEFFICIENTS_AT(p, sched, t0 + k, lr_kind, lr_p,  # noqa: F821 - bound per method
                                         gamma_kind, gamma_p, gfactor, h)
            if bad >= 0:
                code = bad
                f = value
                break
        if par:  # (in place: spare is x)
            n_big, n_bad = STEP_PAR(x, gf, S, h, gtol, spare)  # noqa: F821
        else:
            n_big, n_bad = STEP(x, gf, S, h, gtol, spare)  # noqa: F821
        if n_bad:
            code = DIVERGED_IN_PLACE if IN_PLACE and n_big else DIVERGED  # noqa: F821
            break
        if n_big == 0:
            code = CONVERGED
            break
        k += 1
        x, spare = spare, x  # (in place both are x)
        xv, sv = sv, xv
    if not fresh and (code == CONVERGED or code == MAXITER or code == DIVERGED):
        f = VALUE(fun, xv, args)  # noqa: F821
        nfev += 1
        if err[0]:
            code = USER_ERROR
    # the last gradient is copied only when the run ends: a copy per chunk cost a large x (whose chunks
    # are one step each) a copy of g every step
    g_end = gf.copy() if code != PAUSED else np.empty(0, dtype=x.dtype)
    return code, k, f, x, g_end, nfev, njev, n_rec


def _scheduled_values(sched, t, p):  # pragma: no cover - compiled
    """p[..., index] ← each scheduled packed hyperparameter's value at step t (a row of sched each,
    see methods.Config.schedule_rows; p is one problem's parameters or B problems' rows).
    Returns (-1, 0.0), or the first row whose value left its interval and that value."""
    for r in range(sched.shape[0]):
        v = schedule_value(int(sched[r, 1]), sched[r, 6:], t)
        above = v > sched[r, 2] if sched[r, 4] != 0.0 else v >= sched[r, 2]
        below = v < sched[r, 3] if sched[r, 5] != 0.0 else v <= sched[r, 3]
        if not (above and below):
            return r, v
        p[..., int(sched[r, 0])] = v
    return -1, 0.0


# bound with the source tag, as the loops are: it inlines schedules.schedule_value, and Numba's cache
# checks only the file that defines a function, so a plain @jit here kept a stale schedule_value
scheduled_values = jit(bind(_scheduled_values, "scheduled_values"), nogil=True)


def _coefficients_at(p, sched, t, lr_kind, lr_p, gamma_kind, gamma_p, gfactor, h):  # pragma: no cover
    """h ← the method's coefficients for step t + 1, with η, γ and the scheduled rows at step t.
    Returns (-1, 0.0), or the loop's end code for the value that left its interval and that value."""
    lr = schedule_value(lr_kind, lr_p, t)
    gamma = schedule_value(gamma_kind, gamma_p, t)
    if not (lr >= 0.0 and lr < math.inf):
        return BAD_LR, lr
    if not (gamma >= 0.0 and gamma <= 1.0):
        return BAD_GAMMA, gamma
    r, v = scheduled_values(sched, t, p)
    if r >= 0:
        return BAD_SCHEDULE + r, v
    COEF(p, t + 1, lr, gamma, gfactor, h)  # noqa: F821 - bound per method
    return -1, 0.0


@cache
def coefficients_at(coefficients):
    """_coefficients_at for one method, compiled apart and cached on disk: inside the loop it was
    compiled again into every driver (about 0.5 s each, and 1.2 s for the first in a process)."""
    return jit(bind(_coefficients_at, f"coefficients_at_{coefficients.__name__}", COEF=coefficients),
               nogil=True)


class _LRU(OrderedDict):
    """A bounded cache: a long session that makes many jitted objectives must not grow without end."""

    def __init__(self, maxsize: int):
        super().__init__()
        self.maxsize = maxsize

    def get(self, key, default=None):
        if key in self:
            self.move_to_end(key)
            return self[key]
        return default

    def put(self, key, value):
        self[key] = value
        while len(self) > self.maxsize:
            self.popitem(last=False)
        return value


# (F, dF, argument types) -> signatures and first-class handles; holds the user's functions
_signatures = _LRU(64)
# driver dispatchers by method, flags and argument *types*: every user function of one
# signature runs through one driver
_drivers = _LRU(32)
_cache_lock = threading.Lock()


def is_jitted(f) -> bool:
    return isinstance(f, CPUDispatcher)


def not_applicable(fun, jac, config, callback, backend) -> str | None:
    """Why the compiled driver cannot run this problem (None: it can)."""
    if not is_jitted(fun) or not (jac is True or is_jitted(jac)):
        if numba.config.DISABLE_JIT:
            return "F and dF must be numba.njit functions, and NUMBA_DISABLE_JIT=1 makes them plain Python"
        return "F and dF must be numba.njit functions"
    if callback is not None:
        return "a callback needs the Python loop"
    if backend.name != "cpu":
        return "the compiled driver runs on the CPU backend"
    if config.python_callables:
        return (f"{config.python_callables[0]} is a Python callable; use a fastrms.schedules schedule "
                "to compile the loop")
    return None


def _function_type(dispatcher, argtypes, what):
    try:
        dispatcher.compile(argtypes)
    except Exception as e:  # a Numba typing error must not reach the user as such
        raise ck.not_compilable(what, argtypes, e) from None
    for sig in dispatcher.nopython_signatures:
        if tuple(sig.args) == tuple(argtypes):
            return sig
    raise TypeError(f"{what}: no compiled signature for {argtypes}")


def _address(dispatcher, sig) -> int:
    """The address of the C wrapper of ``dispatcher``'s code for ``sig`` (Numba's own lookup for a
    dispatcher passed as a first-class function), or a TypeError."""
    try:
        cres = dispatcher.get_compile_result(sig)
        return cres.library.get_pointer_to_function(cres.fndesc.llvm_cfunc_wrapper_name)
    except AttributeError as e:  # Numba's internals moved: the Python loop runs it instead
        raise TypeError(f"this Numba does not expose compiled addresses ({e})") from None


def signature_for(fun, jac, x_shaped, args, batch_args=None, problems: bool = False):
    """The driver's explicit signature for these functions and argument types, or a TypeError.

    ``batch_args``: a sample mini-batch of args (dF is typed for batches, F for all the data);
    ``problems``: x holds a batch of problems, and F returns their losses.
    """
    # (x is the drivers' own buffer, C-contiguous and aligned: its dtype and ndim are its type)
    key = (fun, jac, x_shaped.dtype.str, x_shaped.ndim, fingerprint(args),
           None if batch_args is None else fingerprint(batch_args), problems)
    with _cache_lock:
        sigs = _signatures.get(key)
    if sigs is None:
        xt = numba.typeof(x_shaped)
        at = _typeof_args(args)
        bt = at if batch_args is None else _typeof_args(batch_args)
        if batch_args is not None and jac is True:
            raise TypeError("mini-batches in the compiled loop need F and dF as two functions")
        sigs = _signature(fun, jac, xt, at, bt, problems)
        with _cache_lock:
            _signatures.put(key, sigs)
    return sigs


def _typeof_args(args):
    """numba.typeof(args), or a TypeError naming the argument compiled code cannot take."""
    for i, a in enumerate(args):
        try:
            numba.typeof(a)
        except ValueError:
            raise TypeError(f"args[{i}], a {type(a).__name__}, cannot be passed to compiled code") from None
    return numba.typeof(args)


def _signature(fun, jac, xt, at, bt, problems: bool):
    argtypes = (xt, *at.types)
    fsig = _function_type(fun, argtypes, "F")
    ftype = fsig.return_type
    if jac is True:
        if not (isinstance(ftype, types.BaseTuple) and len(ftype) == 2):
            raise TypeError("with jac=True the objective must return a pair (f, g)")
        ftype, gtype, jsig = ftype[0], ftype[1], fsig
    real = (types.Float, types.Integer)  # (Numba's Boolean is neither)
    if problems:
        if not (isinstance(ftype, types.Array) and ftype.ndim == 1 and isinstance(ftype.dtype, real)):
            raise TypeError(f"F must return the problems' losses, a 1-D real array, returns {ftype}")
    elif not isinstance(ftype, real):
        raise TypeError(f"F must return a real number, returns {ftype}")
    if jac is not True:
        jsig = _function_type(jac, (xt, *bt.types), "dF")
        gtype = jsig.return_type
    if not (isinstance(gtype, types.Array) and isinstance(gtype.dtype, (types.Float, types.Integer))
            and gtype.ndim == xt.ndim):
        raise TypeError(f"dF must return a real array of x's ndim ({xt.ndim}-d), returns {gtype}")
    fns = np.array([_address(fun, fsig), _address(fun if jac is True else jac, jsig)], np.int64)
    fns.flags.writeable = False
    # (the entry holds fun and jac: their code stays alive as long as these addresses are handed out)
    return fsig, jsig, xt, at, fns


def _driver(mstate, sigs, combined: bool, parallel: bool, mask, in_place: bool = False):
    method = mstate.config.method
    fsig, jsig, xt, at = sigs[:4]
    key = (method.name, mstate.config.flags, mstate.config.varies, combined, parallel, mstate.dtype, fsig,
           jsig, xt, at, mask, in_place)
    with _cache_lock:
        drive = _drivers.get(key)
    if drive is None:
        try:
            drive = _build_driver(mstate, sigs, combined, parallel, mask, in_place)
        except numba.core.errors.NumbaError as e:  # never a Numba traceback for the user
            raise TypeError(f"the compiled loop cannot be built for these functions and args: "
                            f"{str(e).splitlines()[0]}") from None
        with _cache_lock:
            _drivers.put(key, drive)
    return drive


MODE_TAGS = {False: "ser", True: "par", cpu.RACE: "race"}  # (kernel modes: cpu.kernel_mode)

# the addresses of F's and dF's code (their C wrappers)
ADDRESSES = types.Array(types.int64, 1, "C", readonly=True)


def function_types_tag(fsig, jsig) -> str:
    """A short name for F's and dF's signatures: the argument types do not decide what F and dF
    return, and each pair of function types is a driver (and a cache file) of its own."""
    return hashlib.sha1(f"{fsig}|{jsig}".encode()).hexdigest()[:8]


def _build_driver(mstate, sigs, combined: bool, parallel: bool, mask, in_place: bool):
    fsig, jsig, xt, at = sigs[:4]
    dt = numba.from_dtype(mstate.dtype)
    flat = types.Array(dt, 1, "C")
    f64 = types.Array(types.float64, 1, "C")
    ints = types.Array(types.int64, 1, "C")
    sig = types.Tuple((types.intp, types.intp, types.float64, flat, flat, types.intp, types.intp,
                       types.intp))(
        # fns, shape, args, S, p, h, lr_kind, lr_p, gamma_kind, gamma_p, clip_norm, t0, maxiter, gtol, want_f,
        ADDRESSES, types.UniTuple(types.intp, xt.ndim), at, types.Array(dt, 2, "C"), f64, flat,
        types.intp, f64, types.intp, f64, types.float64, types.intp, types.intp, dt, types.boolean,
        # every, order, batch, per_epoch, sched, err,
        types.intp, types.Array(types.int64, 2, "C"), types.intp, types.intp,
        types.Array(types.float64, 2, "C"), types.Array(types.int64, 1, "C"),
        # x, spare, k0, k_stop, losses, gnorms, steps, xs, par
        flat, flat, types.intp, types.intp, f64, f64, ints, types.Array(dt, 2, "C"), types.boolean)
    method = mstate.config.method
    # parallel: False, True, or cpu.RACE (both kernels, the host picks one per call: see run)
    step, step_par = mstate.kernels.checked_pair(parallel, in_place=in_place)
    cast = (fsig.return_type[1] if combined else jsig.return_type).dtype != xt.dtype
    batch_tag = "b" + flag_tag(mask) if mask else "full"
    varies = mstate.config.varies
    name = (f"drive_{method.rule.__name__}_{method.coefficients.__name__}_{flag_tag(mstate.config.flags)}_"
            f"{'v' if varies else 'c'}_"
            f"{'fg' if combined else 'f_g'}_{MODE_TAGS[parallel]}_{'cast' if cast else 'g'}_"
            f"{batch_tag}{'_inplace' if in_place else ''}_{function_types_tag(fsig, jsig)}")
    fn = bind(_loop, name, STEP=step, STEP_PAR=step_par, COEFFICIENTS_AT=coefficients_at(method.coefficients),
              CAST=cast, IN_PLACE=in_place, VARIES=varies,
              EVAL=_eval_combined if combined else _eval_separate,
              VALUE=_value_combined if combined else _value_separate,
              F_TYPE=types.FunctionType(fsig), G_TYPE=types.FunctionType(jsig),
              BATCHED=mask is not None, DATA=mask if mask is not None else ())
    return jit(fn, signature=sig, nogil=True)


MAX_ORDER_BYTES = 256 * 2 ** 20  # the row orders of all epochs are handed to the loop at once


def batch_sample(b) -> tuple:
    """args with each data array replaced by an empty one of the type of its mini-batches, to type
    dF with: rows taken by an index array make a new C-contiguous array, in NumPy (the Python
    loop) and in Numba (this loop) alike, whatever the layout of the data.  (A slice of the data
    would type dF for the data's layout: for batched problems' data, cut along axis 1, a
    non-contiguous one, whose matrix products round differently from the Python loop's.)"""
    return tuple(np.empty((0,) * a.ndim, a.dtype) if i in b.data else a for i, a in enumerate(b.args))


# prepare's answers by what decides them: a script that calls minimize in a loop asks the same
# question every call, and this one lookup answers it (the signature's and the driver's own keys
# hash Numba's types: tens of microseconds).  An entry holds F and dF, as _signatures does.
_prepared = _LRU(64)


def prepare(problem, mstate, x, maxiter: int, in_place: bool = False):
    """(driver, signatures, parallel: False, True or cpu.RACE) for this problem, or a TypeError saying
    why not."""
    b = problem.batches
    sample = mask = None
    if b is not None:
        if (maxiter // b.per_epoch + 1) * b.N * 8 > MAX_ORDER_BYTES:
            raise TypeError("the epochs' row orders are too large to hand to the compiled loop")
        sample, mask = batch_sample(b), b.mask
    parallel = cpu.kernel_mode(x.size, x.itemsize, maxiter)
    cfg = mstate.config
    # (x is the drivers' own buffer: its dtype and ndim are its type)
    key = (problem.fun, problem.jac, x.dtype.str, len(problem.shape), fingerprint(problem.args),
           None if sample is None else fingerprint(sample), mask, cfg.method.name, cfg.flags, cfg.varies,
           parallel, in_place)
    with _cache_lock:
        hit = _prepared.get(key)
    if hit is None:
        sigs = signature_for(problem.fun, problem.jac, x.reshape(problem.shape), problem.args, sample)
        hit = _driver(mstate, sigs, problem.jac is True, parallel, mask, in_place), sigs
        with _cache_lock:
            _prepared.put(key, hit)
    return hit[0], hit[1], parallel


# -- exceptions raised inside F and dF ----------------------------------------------
# A first-class function call cannot raise into its nopython caller: Numba's wrapper
# hands the exception to sys.unraisablehook and returns zeros.  While a loop runs, a
# hook catches it for that thread's run, and the loop polls err[0] after each call.

_local = threading.local()
_hook_users = 0
_hook_lock = threading.Lock()
_previous_hook = None


def _unraisable_hook(unraisable):
    run = getattr(_local, "run", None)
    if run is None:
        return (_previous_hook or sys.__unraisablehook__)(unraisable)
    if run.error is None:
        run.error = unraisable.exc_value
    run.err[0] = 1


class _CatchUserErrors:
    def __init__(self):
        self.error = None
        self.err = np.zeros(1, np.int64)

    def __enter__(self):
        global _hook_users, _previous_hook
        with _hook_lock:
            if _hook_users == 0 or sys.unraisablehook is not _unraisable_hook:
                _previous_hook = sys.unraisablehook
                sys.unraisablehook = _unraisable_hook
            _hook_users += 1
        _local.run = self
        return self

    def __exit__(self, *exc):
        global _hook_users
        _local.run = None
        with _hook_lock:
            _hook_users -= 1
            if _hook_users == 0 and sys.unraisablehook is _unraisable_hook:
                sys.unraisablehook = _previous_hook
        return False


# -- chunks ---------------------------------------------------------------------------
CHUNK_SECONDS = 0.25   # the host regains control this often: Ctrl-C answers within about that
FIRST_CHUNK_WORK = 2_000_000  # elements touched in the first chunk (x plus the data in args)
MAX_FIRST_CHUNK = 4096


def _first_chunk(x, args) -> int:
    work = x.size
    for a in args:
        if isinstance(a, np.ndarray):
            work += a.size
    return max(1, min(MAX_FIRST_CHUNK, FIRST_CHUNK_WORK // max(work, 1)))


class Chunks:
    """Where each of a compiled loop's calls stops: for a racing driver (parallel == cpu.RACE) first
    the race's blocks, each timed (kernels/cpu.py, Race), then chunks of about CHUNK_SECONDS,
    the first sized by _first_chunk.  ``parallel`` is the kernel flag for the next call."""

    def __init__(self, parallel, x, args):
        self.race = cpu.Race() if parallel == cpu.RACE else None
        self._parallel = parallel
        self._chunk = _first_chunk(x, args)
        self._racing = False

    @property
    def parallel(self) -> bool:
        return self.race.parallel if self.race is not None else self._parallel

    def stop(self, k: int, maxiter: int) -> int:
        """k_stop for a call starting at step k."""
        self._racing = self.race is not None and not self.race.decided
        return min(maxiter, k + (self.race.BLOCK if self._racing else self._chunk))

    def done(self, steps: int, seconds: float, paused: bool) -> None:
        """The call took ``seconds`` for ``steps`` steps, and paused (rather than ended) at k_stop."""
        if self._racing:
            self.race.block_done(seconds)
        if paused:
            self._chunk = max(1, min(16 * self._chunk, int(steps * CHUNK_SECONDS / max(seconds, 1e-6))))


def other(buffers, x):
    """The one of two buffers that x is not (the second, in place, where both are x).  A compiled
    function returning one of its array arguments hands back that very object; the address
    comparison is there for a Numba that would box a new one."""
    a, b = buffers
    if x is a:
        return b
    if x is b:
        return a
    return b if a.ctypes.data == x.ctypes.data else a


_NO_HISTORY = (np.empty(0), np.empty(0), np.empty(0, np.int64))
NO_LOCK = contextlib.nullcontext()  # (reusable: it holds nothing)
NO_ORDER = np.zeros((1, 1), np.int64)  # the row orders without mini-batches (read only by the loops)


def run(problem, mstate, x, *, maxiter: int, gtol: float, callback=None, history: bool = False,
        trajectory: bool = False, every: int = 1, end: str = "maxiter", check_every: int = 1,
        in_place: bool = False) -> Outcome:
    """The compiled twin of python_loop.run (same arguments, same Outcome).

    Every step is checked whatever ``check_every`` says: on the CPU the stopping
    tests are fused into the update kernel and cost nothing.  The loop runs in
    chunks of about CHUNK_SECONDS, so history is allocated as it grows (maxiter
    may be huge) and Ctrl-C stops the run between chunks.
    """
    drive, sigs, parallel = problem.compiled or prepare(problem, mstate, x, maxiter, in_place)
    shape, b = problem.shape, problem.batches
    one_call = b is None and not (history or trajectory) and parallel is False
    if one_call and maxiter <= _first_chunk(x, problem.args):
        # the whole run in one call (a small problem's usual run): none of the chunks' bookkeeping
        with _CatchUserErrors() as catch:
            code, k, f, x, g, nfev, njev, _ = drive(
                *run_constants(problem, mstate, sigs, x, maxiter, gtol, catch.err),
                x, x if in_place else np.empty_like(x), 0, maxiter, *_NO_HISTORY,
                np.empty((0, x.size), x.dtype), False)
        problem.nfev += nfev
        problem.njev += njev
        return _ended(Outcome(shape, False, False), problem, mstate, catch, code, k, f, x, g, end, gtol)
    order = b.orders(maxiter).astype(np.int64) if b is not None else NO_ORDER
    batch, per_epoch = (b.size, b.per_epoch) if b is not None else (0, 1)
    records = Records(history, trajectory)
    buffers = (x, x) if in_place else (x, np.empty_like(x))
    k, chunks = 0, Chunks(parallel, x, problem.args)
    lock = cpu.parallel_lock() if parallel else NO_LOCK
    with _CatchUserErrors() as catch, lock:
        constants = run_constants(problem, mstate, sigs, x, maxiter, gtol, catch.err, history, every, order,
                                  batch, per_epoch)
        while True:
            k_stop = chunks.stop(k, maxiter)
            rec, xs_k = records.arrays(k_stop - k + 1, x)
            began = time.perf_counter()
            code, k_end, f, x, g, nfev, njev, n_rec = drive(
                *constants, x, other(buffers, x), k, k_stop, *rec, xs_k, chunks.parallel)
            chunks.done(k_end - k, time.perf_counter() - began, code == PAUSED)
            problem.nfev += nfev
            problem.njev += njev
            records.keep(n_rec, k_end - k + (code != PAUSED))
            k = k_end
            if code != PAUSED:
                break
            # (Python runs signal handlers here: Ctrl-C raises KeyboardInterrupt between chunks)
    out = records.into(Outcome(shape, history, trajectory), shape)
    return _ended(out, problem, mstate, catch, code, k, f, x, g, end, gtol)


class Records:
    """A run's history and trajectory as the compiled loops record them, in arrays handed to each
    call (``B`` problems: a row of B losses and B max |g| per recorded step), joined at the end."""

    def __init__(self, history: bool, trajectory: bool, B: int | None = None):
        self.history, self.trajectory = history, trajectory
        self.per_step = () if B is None else (B,)
        self.losses, self.gnorms, self.steps, self.xs = [], [], [], []
        self._rec = self._xs = None

    def arrays(self, n: int, x) -> tuple:
        """(losses, gnorms, steps) and xs for a call that records at most n steps (empty where not asked)."""
        rows = (n if self.history else 0, *self.per_step)
        self._rec = (np.empty(rows), np.empty(rows), np.empty(rows[0], np.int64))
        self._xs = np.empty((n if self.trajectory else 0, x.size), x.dtype)
        return self._rec, self._xs

    def keep(self, n_rec: int, n_xs: int) -> None:
        """The last call recorded n_rec steps of history and n_xs iterates."""
        if self.history:
            for kept, a in zip((self.losses, self.gnorms, self.steps), self._rec, strict=True):
                kept.append(a[:n_rec])
        if self.trajectory:
            self.xs.append(self._xs[:n_xs])

    def into(self, out, shape: tuple):
        """out (an Outcome or BatchOutcome) with the joined records."""
        if self.history:
            out.losses = list(np.concatenate(self.losses))
            out.gnorms = list(np.concatenate(self.gnorms))
            out.steps = list(np.concatenate(self.steps))
        if self.trajectory:
            out.xs = list(np.concatenate(self.xs).reshape((-1, *shape)))
        return out


def run_constants(problem, mstate, sigs, x, maxiter: int, gtol: float, err, history: bool = False,
                  every: int = 1, order=NO_ORDER, batch: int = 0, per_epoch: int = 1) -> tuple:
    """The loop's arguments that stay the same through a run's calls (_loop's first ones)."""
    cfg = mstate.config
    return (sigs[4], problem.shape, problem.args, mstate.S, mstate.p, mstate.h, *cfg.lr_gamma_schedules,
            cfg.values["clip_norm"], mstate.t, maxiter, x.dtype.type(gtol if gtol > 0 else -1.0), history,
            every, order, batch, per_epoch, cfg.schedule_rows, err)


def _ended(out: Outcome, problem, mstate, catch, code: int, k: int, f: float, x, g, end: str,
           gtol: float) -> Outcome:
    """The run's Outcome from the loop's end code, or the exception the code stands for."""
    if code >= BAD_SHAPE:
        raise_for(code, catch, problem.shape, mstate.config, f, mstate.t + k)
    mstate.t += k
    reason = end if code == MAXITER else END_REASONS[code]
    return out.finish(k, x, f if code != DIVERGED_IN_PLACE else None, g, reason, gtol)


def raise_for(code: int, catch, shape, cfg, value: float, t: int) -> None:
    """The exception a loop's end code stands for, if any: the user's own from F or dF, a
    gradient of the wrong shape, or a scheduled value (``value`` at step t) out of its interval."""
    if code == USER_ERROR:
        raise catch.error.with_traceback(catch.error.__traceback__)
    if code == BAD_SHAPE:
        raise ValueError(f"the gradient's shape differs from x's shape {shape}")
    if code in (BAD_LR, BAD_GAMMA):  # raises, with the message
        name = "lr" if code == BAD_LR else "gamma"
        ck.scheduled(name, value, t, ck.SCHEDULED[name])
    if code >= BAD_SCHEDULE:
        _, name, _, interval = cfg.scheduled[code - BAD_SCHEDULE]
        ck.scheduled(name, value, t, interval)
