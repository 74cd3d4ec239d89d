"""The Python-level driver: any Python callables, one fused kernel call per step.

x lives in two flat buffers that the checked kernel swaps: it writes x_{k+1}
into the spare buffer and leaves x_k intact, so a converged or diverged run
can always return x_k (the last finite iterate) without a copy per step.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import OptimizeResult

from ..method_state import MethodState
from .outcome import Outcome
from .problem import Problem


def run(problem: Problem, mstate: MethodState, x: np.ndarray, *, maxiter: int, gtol: float,
        callback=None, history: bool = False, trajectory: bool = False, every: int = 1,
        end: str = "maxiter", check_every: int = 1, in_place: bool = False) -> Outcome:
    """Iterate from the flat array x (owned by the driver) until a stopping test fires.

    ``every``: record the loss every that many steps (and at the end); ``end``: the
    reason reported when maxiter is reached ('epochs' for a completed mini-batch run);
    ``check_every``: run the stopping tests (gtol, non-finite update) every that many
    steps, stepping in place in between (on a GPU each test is a host round trip);
    then a copy of the last checked finite iterate is kept, to return if the run
    diverges between two tests.  ``in_place``: one buffer, x_{k+1} written over x_k
    (kernels/cpu.py's _step_checked_in_place); a run that diverges then ends with
    reason 'diverged_in_place' and x_k lost, for the front to recompute.
    """
    gtol_k = x.dtype.type(gtol if gtol > 0 else -1.0)
    backend = mstate.backend
    spare = x if in_place else backend.empty_like(x)
    # (a long run times the serial and parallel kernels in its first steps: kernels/cpu.py, Race)
    step_checked = backend.checked_stepper(mstate, x.size, in_place, steps=maxiter if check_every == 1 else 0)
    step = backend.stepper(mstate, x.size)
    want_f = history or callback is not None
    recording = history or trajectory
    out = Outcome(problem.shape, history, trajectory, backend)
    kept, k_kept = (backend.empty_like(x), 0) if check_every > 1 else (None, 0)
    if kept is not None:
        backend.copy(x, kept)

    def finish(k, x, f, g, reason, gtol=0.0):
        if kept is not None and not math.isfinite(backend.max_abs(x)):
            # diverged between two tests: x itself is lost, return the last checked finite iterate
            _, g = problem.evaluate(kept, False, k_kept)
            return out.finish(k_kept, kept, None, g, "diverged_unchecked")
        return out.finish(k, x, f, g, reason, gtol)

    k = 0
    while True:
        f_now = want_f and (k % every == 0 or k == maxiter or callback is not None)
        f, g = problem.evaluate(x, f_now, k)
        if problem.retained:  # F or dF kept x: leave that buffer to them, never write it again
            x, problem.retained = backend.copy(x), False
            if in_place:  # one buffer: the copy is it from now on
                spare = x
        if recording:
            out.record(k, x, f if f_now else None, g)  # (jac=True gives f every step; history_every holds)
        if f_now and not math.isfinite(f):
            return finish(k, x, f, g, "loss")
        if callback is not None and k > 0:
            res = OptimizeResult(x=np.array(backend.to_host(x), copy=True).reshape(problem.shape),
                                 fun=f, nit=k)
            if callback(res):
                return finish(k, x, f, g, "callback")
        if k == maxiter:
            return finish(k, x, f, g, end, gtol)
        h = mstate.constant_h  # (read without a call where it cannot change)
        if h is None:
            h = mstate.coefficients(g)
        if kept is not None and k % check_every:
            step(x, g, h)
            mstate.t += 1
            k += 1
            continue
        n_big, n_bad = step_checked(x, g, h, gtol_k, spare)  # (in place: spare is x)
        if n_bad:
            return finish(k, x, f, g, "diverged_in_place" if in_place and n_big else "diverged")
        if n_big == 0:
            return finish(k, x, f, g, "converged")
        mstate.t += 1
        k += 1
        x, spare = spare, x
        if kept is not None:
            backend.copy(x, kept)
            k_kept = k
