"""How a run ends: scipy's status codes and messages, and what a driver recorded on the way."""

from __future__ import annotations

import math

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
    "diverged_in_place": (NAN, "NaN result encountered: the update became non-finite at iteration {k} "
                               "(in_place: x is overwritten, and the front recomputes it)"),
    "loss_at_end": (NAN, "NaN result encountered: the objective is not finite at the final x "
                         "(iteration {k}), although every update was; check F."),
    "loss": (NAN, "NaN result encountered: the loss became non-finite at iteration {k} "
                  "(the run diverged; lower lr?); x is that iterate, which is still finite."),
    "callback": (CALLBACK, "`callback` raised `StopIteration`."),
    "epochs": (SUCCESS, "Completed the requested epochs."),
}
END_REASONS = tuple(MESSAGES)  # the compiled loop reports its end as an index into this


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
            if not math.isfinite(gmax):
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
