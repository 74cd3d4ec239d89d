"""The compiled driver for B independent problems: batched_loop.py's steps without leaving nopython mode.

Built like compiled.py's loop (explicit signature, F and dF by the addresses of their code, cached
on disk, resumable chunks, exceptions from F and dF re-raised on the host) and from the same kernels:
the rows kernel of the method's rule, and the method's coefficient function filled per row.
The loop calls F (B losses) only for a history; the host evaluates it once at the end.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from numba import types
from numba.extending import overload, register_jitable

from ..kernels import cpu
from ..kernels._jit import bind, flag_tag, jit
from ..method_state import BatchedState
from ..schedules import N_PARAMS, Schedule, kind_and_params, schedule_value
from . import compiled
from .batched_loop import BatchOutcome
from .compiled import (
    BAD_GAMMA,
    BAD_LR,
    BAD_SCHEDULE,
    BAD_SHAPE,
    CONVERGED,
    DIVERGED,
    LOSS,
    MAXITER,
    PAUSED,
    USER_ERROR,
    function_at,
    function_types_tag,
)
from .outcome import END_REASONS

STOPPED = -1  # every problem has stopped
BAD_LOSSES = -2  # F returned another number of losses than B (the host says so, as the Python loop does)


# as compiled._eval_separate: (the B losses as float64, or none; g; F's calls), inlined, once a step
@register_jitable(inline="always")
def _eval_rows_separate(fun, jac, x, args, batch_args, want_f):
    g = jac(x, *batch_args)
    if want_f:
        return fun(x, *args).astype(np.float64), g, 1
    return np.empty(0), g, 0


@register_jitable(inline="always")
def _eval_rows_combined(fun, jac, x, args, batch_args, want_f):
    f, g = fun(x, *args)
    return f.astype(np.float64), g, 1


@register_jitable
def _scheduled(kind, p, t, lo, hi):
    """A shared schedule's value at t, or NaN when it leaves [lo, hi] (the host raises)."""
    v = schedule_value(kind, p, t)
    return v if (v >= lo and v <= hi) else math.nan


def _take_rows(args, rows, mask):
    """args with the data arrays (mask[i] True) cut to ``rows`` along axis 1; compiled only."""


@overload(_take_rows, prefer_literal=True)
def _take_rows_typed(args, rows, mask):
    # as compiled._take, for data of shape (B, rows, ...): every problem takes the same rows
    return compiled.take_impl(mask, "[:, rows]")


def _loop_rows(fns, x, spare, g_end, shape, args, S, P, H, LR, GAMMA, GF, p_rows, p_starts, lr_kind, lr_p,
               gamma_kind, gamma_p, clip_norm, t0, k0, k_stop, maxiter, gtol, end_is_maxiter, order, batch,
               per_epoch, sched, active, nit, reasons, big, bad, err, want_f, every, losses, gnorms, steps,
               xs, par):  # pragma: no cover - compiled
    """Iterations k0 … k_stop − 1 of B problems; returns PAUSED at k_stop (x is x_k there).

    reasons[b] and nit[b] record where problem b stopped (an index into END_REASONS);
    p_rows, p_starts: the problems' groups of equal packed parameters, in pieces (BatchedState.fill_groups);
    lr_kind / gamma_kind < 0: LR / GAMMA hold per-problem values, else a shared schedule;
    want_f: the B losses every ``every`` steps and at maxiter, into losses (steps, B) with the
    rows' max |g| into gnorms and k into steps (a history), NaN for the stopped problems, and a
    problem whose loss is not finite stops there (as batched_loop's); xs (steps, x.size): each
    step's x, NaN for the stopped problems (a trajectory; xs is empty without one);
    par: STEP_PAR and FLAT_PAR rather than STEP and FLAT (the same kernels unless racing).  The
    rows are filled by FILL_PAR: FILL's parallel variant where the problems are many and parallel
    code may run, whatever the kernels' mode (a random search of 2,000 Adam problems of 4
    parameters spends most of its step in its rows' powers of t), else FILL itself.
    """
    fun = function_at(F_TYPE, fns[0])  # noqa: F821 - bound per driver
    jac = function_at(G_TYPE, fns[1])  # noqa: F821
    xv, sv = x.reshape(shape), spare.reshape(shape)  # the user's shape, made once, swapped with x
    B = H.shape[0]
    n = x.size // B
    all_running = True
    for b in range(B):
        all_running = all_running and active[b]
    k = k0
    nfev = 0
    njev = 0
    n_rec = 0
    code = MAXITER
    bad_value = 0.0
    gf = np.empty(0, dtype=x.dtype)
    first = np.array([0, 1], dtype=np.int64)  # (problem 0 as a group of its own: H[0] alone)
    while True:
        if k == k_stop and k < maxiter:
            code = PAUSED
            break
        f_now = want_f and (k % every == 0 or k == maxiter)
        if BATCHED:  # noqa: F821 - bound per driver
            epoch, j = divmod(k, per_epoch)
            rows = order[epoch, j * batch:(j + 1) * batch]
            f, g, nf = EVAL(fun, jac, xv, args, _take_rows(args, rows, DATA), f_now)  # noqa: F821
        else:
            f, g, nf = EVAL(fun, jac, xv, args, args, f_now)  # noqa: F821
        nfev += nf
        njev += 1
        if err[0]:
            code = USER_ERROR
            break
        if g.shape != shape:
            code = BAD_SHAPE
            break
        if f_now and f.shape[0] != B:
            code = BAD_LOSSES
            break
        if CAST:  # noqa: F821
            gf = g.ravel().astype(x.dtype)
        else:
            gf = g.ravel()
        if xs.shape[0]:
            for b in range(B):
                if active[b]:
                    cpu.copy_range(x, xs[k - k0], b * n, (b + 1) * n)
                else:
                    for i in range(b * n, (b + 1) * n):
                        xs[k - k0, i] = np.nan
        if f_now:
            if losses.shape[0]:
                for b in range(B):
                    losses[n_rec, b] = f[b] if active[b] else np.nan
                    gnorms[n_rec, b] = cpu.max_abs(gf[b * n:(b + 1) * n]) if active[b] else np.nan
                steps[n_rec] = k
                n_rec += 1
            running = 0
            for b in range(B):
                if active[b]:
                    if math.isfinite(f[b]):
                        running += 1
                    else:  # as a run of its own ends: x_k, which is finite (see compiled._loop)
                        reasons[b] = LOSS
                        nit[b] = k
                        active[b] = False
                        cpu.copy_range(x, spare, b * n, (b + 1) * n)
                        cpu.copy_range(gf, g_end, b * n, (b + 1) * n)
            if running == 0:
                code = STOPPED
                break
            all_running = running == B
        if k == maxiter:
            for b in range(B):
                if active[b]:
                    gmax = cpu.max_abs(gf[b * n:(b + 1) * n])
                    reasons[b] = MAXITER
                    if not math.isfinite(gmax):
                        reasons[b] = DIVERGED
                    elif end_is_maxiter and gtol > 0 and gmax <= gtol:
                        reasons[b] = CONVERGED
                    nit[b] = k
                    cpu.copy_range(gf, g_end, b * n, (b + 1) * n)
            break
        t = t0 + k
        if clip_norm < math.inf:
            for b in range(B):
                GF[b] = clip_norm / max(cpu.norm2(gf[b * n:(b + 1) * n]), clip_norm)
        if lr_kind >= 0:
            v = _scheduled(lr_kind, lr_p, t, 0.0, math.inf)
            if not (v < math.inf):
                code, bad_value = BAD_LR, schedule_value(lr_kind, lr_p, t)
                break
            LR[:] = v
        if gamma_kind >= 0:
            v = _scheduled(gamma_kind, gamma_p, t, 0.0, 1.0)
            if v != v:
                code, bad_value = BAD_GAMMA, schedule_value(gamma_kind, gamma_p, t)
                break
            GAMMA[:] = v
        bad_row, v = compiled.scheduled_values(sched, t, P)
        if bad_row >= 0:
            code, bad_value = BAD_SCHEDULE + bad_row, v
            break
        if VARIES:  # noqa: F821 - else the host filled H once
            if UNIFORM and all_running:  # noqa: F821 - the flat launch below reads H[0] alone
                FILL(P[:1], t + 1, LR, GAMMA, GF, H[:1], active, first[:1], first)  # noqa: F821
            else:
                FILL_PAR(P, t + 1, LR, GAMMA, GF, H, active, p_rows, p_starts)  # noqa: F821
        if UNIFORM and all_running:  # noqa: F821 - see BatchedState.uniform
            if par:
                n_big, n_bad = FLAT_PAR(x, gf, S, H[0], gtol, spare)  # noqa: F821
            else:
                n_big, n_bad = FLAT(x, gf, S, H[0], gtol, spare)  # noqa: F821
            if n_bad == 0 and n_big == x.size:  # no problem stopped
                k += 1
                x, spare = spare, x
                xv, sv = sv, xv
                continue
            cpu.row_counts(gf, spare, gtol, big, bad)
        elif par:
            STEP_PAR(x, gf, S, H, active, gtol, spare, big, bad)  # noqa: F821
        else:
            STEP(x, gf, S, H, active, gtol, spare, big, bad)  # noqa: F821
        running = 0
        for b in range(B):
            if active[b]:
                if bad[b] > 0 or big[b] == 0:
                    reasons[b] = DIVERGED if bad[b] > 0 else CONVERGED
                    nit[b] = k
                    active[b] = False
                    # both buffers keep x_k, so swapping them never moves this problem again
                    cpu.copy_range(x, spare, b * n, (b + 1) * n)
                    cpu.copy_range(gf, g_end, b * n, (b + 1) * n)
                else:
                    running += 1
        if running == 0:
            code = STOPPED
            break
        all_running = running == B
        k += 1
        x, spare = spare, x
        xv, sv = sv, xv
    return code, k, bad_value, x, nfev, njev, n_rec


_drivers = compiled._LRU(32)


def _build(bstate, sigs, combined: bool, parallel, mask, fill_parallel: bool):
    fsig, jsig, xt, at = sigs[:4]
    dt = numba.from_dtype(bstate.dtype)
    flat = types.Array(dt, 1, "C")
    f64 = types.Array(types.float64, 1, "C")
    f64_2 = types.Array(types.float64, 2, "C")
    ip = types.intp
    sig = types.Tuple((ip, ip, types.float64, flat, ip, ip, ip))(
        compiled.ADDRESSES, flat, flat, flat, types.UniTuple(ip, xt.ndim), at,
        types.Array(dt, 2, "C"), f64_2, types.Array(dt, 2, "C"), f64, f64, f64,
        types.Array(types.int64, 1, "C"), types.Array(types.int64, 1, "C"), ip, f64, ip, f64,
        types.float64, ip, ip, ip, ip, dt, types.boolean, types.Array(types.int64, 2, "C"), ip, ip, f64_2,
        types.Array(types.boolean, 1, "C"), types.Array(ip, 1, "C"), types.Array(ip, 1, "C"),
        types.Array(ip, 1, "C"), types.Array(ip, 1, "C"), types.Array(types.int64, 1, "C"),
        # want_f, every, losses, gnorms, steps, xs, par
        types.boolean, ip, f64_2, f64_2, types.Array(types.int64, 1, "C"), types.Array(dt, 2, "C"),
        types.boolean)
    method = bstate.config.method
    # parallel: False, True, or cpu.RACE (both kernels, the host picks one per call)
    step, step_par = bstate.kernels.checked_pair(parallel, batched=True)
    flat, flat_par = bstate.kernels.checked_pair(parallel)
    cast = (fsig.return_type[1] if combined else jsig.return_type).dtype != xt.dtype
    fill_par = bstate._fill_par if fill_parallel else bstate._fill
    # (and which FILL, and whether FILL_PAR is another)
    rows = ("u" if bstate.uniform else "r") + ("g" if bstate.grouped else "")
    rows += "p" if fill_par is not bstate._fill else ""
    name = (f"drive_rows_{method.rule.__name__}_{flag_tag(bstate.config.flags)}_"
            f"{'v' if bstate._varies else 'c'}{rows}_{'fg' if combined else 'f_g'}_"
            f"{compiled.MODE_TAGS[parallel]}_{'cast' if cast else 'g'}_"
            f"{'b' + flag_tag(mask) if mask else 'full'}_{function_types_tag(fsig, jsig)}")
    fn = bind(_loop_rows, name, STEP=step, STEP_PAR=step_par, FILL=bstate._fill, FILL_PAR=fill_par,
              CAST=cast, VARIES=bstate._varies,
              FLAT=flat, FLAT_PAR=flat_par, UNIFORM=bstate.uniform,
              EVAL=_eval_rows_combined if combined else _eval_rows_separate,
              F_TYPE=types.FunctionType(fsig), G_TYPE=types.FunctionType(jsig),
              BATCHED=mask is not None, DATA=mask if mask is not None else ())
    return jit(fn, signature=sig, nogil=True)


def prepare(problem, bstate: BatchedState, x, maxiter: int):
    """(driver, signatures, parallel: False, True or cpu.RACE, whether the driver fills its rows in
    parallel) for these batched problems, or a TypeError saying why not."""
    b = problem.batches
    sample = None
    if b is not None:
        if (maxiter // b.per_epoch + 1) * b.N * 8 > compiled.MAX_ORDER_BYTES:
            raise TypeError("the epochs' row orders are too large to hand to the compiled loop")
        sample = compiled.batch_sample(b)
    sigs = compiled.signature_for(problem.fun, problem.jac, x.reshape(problem.shape), problem.args, sample,
                                  problems=True)
    mask = b.mask if b is not None else None
    # the rows kernel, and the flat one of a uniform batch, serial or parallel by x's bytes in all,
    # raced in a long run (kernels/cpu.py)
    parallel = cpu.kernel_mode(x.size, x.itemsize, maxiter)
    # the rows' fill by the problems' number (BatchedState), whatever the kernels' mode
    fill_parallel = bstate._fill_par is not bstate._fill and cpu.parallel_ready()
    combined = problem.jac is True
    key = (bstate.config.method.name, bstate.config.flags, bstate._varies, bstate.uniform, bstate.grouped,
           fill_parallel, combined, parallel, bstate.dtype, *sigs[:4], mask)
    with compiled._cache_lock:
        drive = _drivers.get(key)
    if drive is None:
        try:
            drive = _build(bstate, sigs, combined, parallel, mask, fill_parallel)
        except numba.core.errors.NumbaError as e:
            raise TypeError(f"the compiled loop cannot be built for these functions and args: "
                            f"{str(e).splitlines()[0]}") from None
        with compiled._cache_lock:
            _drivers.put(key, drive)
    return drive, sigs, parallel, fill_parallel


def _lr_gamma(bstate: BatchedState, name: str):
    """(kind, params, per-problem array): kind −1 when the array holds per-problem values."""
    if name in bstate.per_problem:
        return -1, np.zeros(N_PARAMS), bstate.per_problem[name].astype(np.float64)
    value = bstate.config.values.get(name, 0.0)
    if not isinstance(value, Schedule):
        return -1, np.zeros(N_PARAMS), np.full(bstate.B, float(value))
    kind, p = kind_and_params(value)
    return kind, p, np.zeros(bstate.B)


def run(problem, bstate: BatchedState, x, *, maxiter: int, gtol: float, end: str = "maxiter",
        history: bool = False, every: int = 1, trajectory: bool = False, callback=None,
        check_every: int = 1) -> BatchOutcome:
    """The compiled twin of batched_loop.run (same arguments, same BatchOutcome); a callback is
    batched_loop's only (the front chooses it then).  Every step is checked whatever
    ``check_every`` says, as in compiled.run: the tests are fused into the update and cost nothing."""
    if callback is not None:
        raise ValueError("the compiled loop runs batched problems without a callback")
    B, shape, b = bstate.B, problem.shape, problem.batches
    drive, sigs, parallel, fill_parallel = problem.compiled or prepare(problem, bstate, x, maxiter)
    cfg = bstate.config
    lr_kind, lr_p, LR = _lr_gamma(bstate, "lr")
    gamma_kind, gamma_p, GAMMA = _lr_gamma(bstate, "gamma")
    order = b.orders(maxiter).astype(np.int64) if b is not None else compiled.NO_ORDER
    gtol_x = x.dtype.type(gtol if gtol > 0 else -1.0)
    batch, per_epoch = (b.size, b.per_epoch) if b is not None else (0, 1)
    active = np.ones(B, dtype=np.bool_)
    if not bstate._varies:
        bstate.row_coefficients(x, active)  # constant coefficients: filled once, here
    nit, reasons = np.zeros(B, np.intp), np.full(B, MAXITER, np.intp)
    big, bad = np.zeros(B, np.intp), np.zeros(B, np.intp)
    g_end = np.empty_like(x)
    buffers = (x, np.empty_like(x))
    records = compiled.Records(history, trajectory, B)
    k, chunks = 0, compiled.Chunks(parallel, x, problem.args)
    lock = cpu.parallel_lock() if parallel or fill_parallel else compiled.NO_LOCK
    with compiled._CatchUserErrors() as catch, lock:
        while True:
            k_stop = chunks.stop(k, maxiter)
            rec, xs_k = records.arrays(k_stop - k + 1, x)
            spare = compiled.other(buffers, x)
            began = time.perf_counter()
            code, k_end, bad_value, x, nfev, njev, n_rec = drive(
                sigs[4], x, spare, g_end, shape, problem.args, bstate.S, bstate.P, bstate.H, LR,
                GAMMA, bstate.GF, *bstate.fill_groups, lr_kind, lr_p, gamma_kind, gamma_p,
                cfg.values["clip_norm"], bstate.t, k,
                k_stop, maxiter, gtol_x, end == "maxiter", order, batch, per_epoch, cfg.schedule_rows, active,
                nit, reasons, big, bad, catch.err, history, every, *rec, xs_k, chunks.parallel)
            chunks.done(k_end - k, time.perf_counter() - began, code == PAUSED)
            problem.nfev += nfev
            problem.njev += njev
            records.keep(n_rec, k_end - k + (code != PAUSED))
            k = k_end
            if code != PAUSED:
                break
    if code == BAD_LOSSES:
        problem.value(x)  # raises the Python loop's error for what F returned
        raise ValueError(f"with batched problems the objective must return one loss per problem, "
                         f"shape ({B},)")
    compiled.raise_for(code, catch, shape, cfg, bad_value, bstate.t + k)
    bstate.t += k
    out = records.into(BatchOutcome(B, history, trajectory), shape)
    out.nit[:] = nit
    out.reasons[:] = [END_REASONS[r] for r in reasons]
    if end != "maxiter":
        out.reasons[out.reasons == "maxiter"] = end
    out.x, out.g = x, g_end
    return out
