"""The Python-level driver for B independent problems: one fused kernel call per step for all of them.

The same steps and stopping tests as python_loop.py, per problem: each problem stops on its own
(gtol on its own max|g|, divergence, maxiter) and then stops moving while the others go on; its
rows are no longer updated, though the user's vectorized dF still sees them.  Problem b's x,
nit and ending equal those of a separate minimize call, bit for bit.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import OptimizeResult

from ..method_state import BatchedState
from .outcome import MESSAGES
from .problem import Problem


class BatchOutcome:
    """Where each problem stopped: nit[b] and reasons[b] (keys of outcome.MESSAGES); with history,
    the recorded steps and, per step, each problem's loss and max |g| (NaN once it had stopped)."""

    def __init__(self, B: int, history: bool = False, trajectory: bool = False):
        self.nit = np.zeros(B, dtype=np.intp)
        self.reasons = np.empty(B, dtype=object)
        self.x = self.g = None
        self.losses = [] if history else None
        self.gnorms = [] if history else None
        self.steps = [] if history else None
        self.xs = [] if trajectory else None

    def record(self, k: int, f: np.ndarray, gmax: np.ndarray, active: np.ndarray) -> None:
        self.steps.append(k)
        self.losses.append(np.where(active, f, np.nan))
        self.gnorms.append(np.where(active, gmax, np.nan))

    def record_x(self, x: np.ndarray, shape: tuple, active: np.ndarray) -> None:
        """The iterate of every running problem (x on the host, shape (B, ...)); NaN for the others."""
        rows = x.reshape(shape[0], -1)
        self.xs.append(np.where(active[:, None], rows, np.nan).reshape(shape))

    def status(self) -> np.ndarray:
        return np.array([MESSAGES[r][0] for r in self.reasons], dtype=np.intp)

    def messages(self) -> np.ndarray:
        endings = list(zip(self.reasons.tolist(), self.nit.tolist(), strict=True))
        made = {e: MESSAGES[e[0]][1].format(k=e[1]) for e in set(endings)}  # (most problems end alike)
        return np.array([made[e] for e in endings], dtype=object)


def run(problem: Problem, bstate: BatchedState, x: np.ndarray, *, maxiter: int, gtol: float,
        end: str = "maxiter", history: bool = False, every: int = 1, trajectory: bool = False,
        callback=None, check_every: int = 1) -> BatchOutcome:
    """Iterate the B problems in the flat array x (owned by the driver) until each has stopped.

    ``history``: record the running problems' losses (all the data) and max |g| every ``every``
    steps and at maxiter, as python_loop does for one; a problem whose recorded loss is not finite
    stops there, with reason 'loss', as its own run would.  ``trajectory``: record the running
    problems' iterates at every step.  ``callback`` (wrapped: it returns whether to stop) gets,
    after each step, an OptimizeResult with every problem's x (B, ...), fun and nit, and which
    problems still run (``active``); asking to stop ends the running ones with reason 'callback'.
    ``check_every``: the stopping tests run every that many steps, the running problems stepping
    in place in between (on a GPU each test copies B counts to the host); a problem whose x is not
    finite where it stops diverged between two tests, and ends at the last checked iterate, as
    python_loop's run does for one.
    """
    B = bstate.B
    gtol_k = x.dtype.type(gtol if gtol > 0 else -1.0)
    backend = bstate.backend
    spare = backend.empty_like(x)
    # (a long uniform run races the serial and parallel kernels, as python_loop's does)
    step_checked = backend.rows_checked_stepper(bstate, x.size, steps=maxiter if check_every == 1 else 0)
    rows_step = backend.rows_stepper(bstate, x.size)  # (the steps between two stopping tests)
    active = np.ones(B, dtype=np.bool_)
    big, bad = np.zeros(B, dtype=np.intp), np.zeros(B, dtype=np.intp)
    out = BatchOutcome(B, history, trajectory)
    g_end = backend.empty_like(x)  # each problem's gradient where it stopped
    kept = Kept(problem, backend, x, B) if check_every > 1 else None
    k = 0
    want_f = history or callback is not None
    while True:
        f_now = want_f and (k % every == 0 or k == maxiter or callback is not None)
        f, g = problem.evaluate(x, f_now, k)
        if problem.retained:  # F or dF kept x: leave that buffer to them
            x, problem.retained = backend.copy(x), False
        if trajectory:
            out.record_x(backend.to_host(x), problem.shape, active)
        if f_now:
            if history:
                out.record(k, f, backend.row_norms(g, B)[:, 0], active)
            lost = active & ~np.isfinite(f)
            if lost.any():
                out.reasons[lost] = "loss"
                if not _stop(out, lost, k, active, x, spare, g, g_end, backend, B, kept):
                    break
        if callback is not None and k > 0:
            res = OptimizeResult(x=np.array(backend.to_host(x), copy=True).reshape(problem.shape), fun=f,
                                 nit=np.where(active, k, out.nit), active=active.copy())
            if callback(res):
                out.reasons[active] = "callback"
                _stop(out, active.copy(), k, active, x, spare, g, g_end, backend, B, kept)
                break
        if k == maxiter:
            ending = active.copy()
            _finish_at_end(out, backend.row_norms(g, B)[:, 0], active, k, end, gtol)
            backend.copy_rows(g, g_end, np.flatnonzero(active), B)
            if kept is not None:
                kept.restore(out, ending, x, spare, g_end)
            break
        H = bstate.row_coefficients(g, active)
        if kept is not None and k % check_every:
            rows_step(x, g, H, active)
            bstate.t += 1
            k += 1
            continue
        step_checked(x, g, H, active, gtol_k, spare, big, bad)
        diverged = active & (bad > 0)
        converged = active & (bad == 0) & (big == 0)
        if diverged.any() or converged.any():
            out.reasons[diverged] = "diverged"
            out.reasons[converged] = "converged"
            if not _stop(out, diverged | converged, k, active, x, spare, g, g_end, backend, B, kept):
                break
        bstate.t += 1
        k += 1
        x, spare = spare, x
        if kept is not None:
            kept.keep(x, k)
    out.x, out.g = x, g_end
    return out


def _stop(out: BatchOutcome, stopped, k: int, active, x, spare, g, g_end, backend, B: int,
          kept: Kept | None = None) -> bool:
    """The problems ``stopped`` end at step k with x_k: it is kept in the spare buffer too (the
    kernel skips stopped rows), so that swapping the buffers never moves it again.  Returns
    whether any problem still runs."""
    out.nit[stopped] = k
    active &= ~stopped
    rows = np.flatnonzero(stopped)
    backend.copy_rows(x, spare, rows, B)
    backend.copy_rows(g, g_end, rows, B)
    if kept is not None:
        kept.restore(out, stopped, x, spare, g_end)
    return bool(active.any())


class Kept:
    """The iterate of the last stopping test (check_every > 1), for the problems that diverge
    between two tests: python_loop's kept copy, for B problems."""

    def __init__(self, problem: Problem, backend, x, B: int):
        self.problem, self.backend, self.B = problem, backend, B
        self.x, self.k = backend.copy(x), 0

    def keep(self, x, k: int) -> None:
        self.backend.copy(x, self.x)
        self.k = k

    def restore(self, out: BatchOutcome, stopped, x, spare, g_end) -> None:
        """Of the problems ``stopped`` (just now), those whose x is not finite end at the kept
        iterate instead, with its gradient (one evaluation of dF, as python_loop's finish makes)."""
        backend, B = self.backend, self.B
        unchecked = stopped & ~np.isfinite(backend.row_norms(x, B)[:, 0])
        if not unchecked.any():
            return
        rows = np.flatnonzero(unchecked)
        at = backend.copy(x)  # (every row is evaluated: the others' rows are x's, and ignored)
        backend.copy_rows(self.x, at, rows, B)
        _, g = self.problem.evaluate(at, False, self.k)
        for buffer in (x, spare):
            backend.copy_rows(self.x, buffer, rows, B)
        backend.copy_rows(g, g_end, rows, B)
        out.nit[unchecked] = self.k
        out.reasons[unchecked] = "diverged_unchecked"


def _finish_at_end(out: BatchOutcome, gmax: np.ndarray, active: np.ndarray, k: int, end: str,
                   gtol: float) -> None:
    """The problems still running at maxiter (or the last epoch) end as python_loop's Outcome.finish
    ends one: a non-finite gradient there is divergence, one within gtol convergence."""
    out.nit[active] = k
    out.reasons[active] = end
    out.reasons[active & ~np.isfinite(gmax)] = "diverged"
    if end == "maxiter" and gtol > 0:
        out.reasons[active & np.isfinite(gmax) & (gmax <= gtol)] = "converged"
