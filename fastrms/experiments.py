"""The seeds' experiments as functions that return their numbers.

The demo (``fastrms demo``) only prints and draws what these return, and the
tests check the same numbers.
"""

from __future__ import annotations

import time

import numpy as np

from ._minimize import minimize

# The matrix of the AX=I notebook seed.
A_SEED = np.array([[2, 5, 1, 4, 6],
                   [3, 5, 0, 0, 0],
                   [1, 1, 0, 3, 8],
                   [6, 6, 2, 2, 1],
                   [8, 3, 5, 1, 4]], dtype=float)


def ax_loss(X, A):
    """F(X) = Σ (AX − I)²."""
    R = A @ X
    R[np.diag_indices_from(R)] -= 1.0
    return float(np.sum(R * R))


def ax_grad(X, A):
    """∇F(X) = 2Aᵀ(AX − I)."""
    R = A @ X
    R[np.diag_indices_from(R)] -= 1.0
    return 2.0 * (A.T @ R)


# The notebook seed's three runs: X0 = 0, 300 steps, lr=1e-3, decay 0.9, eps=1e-8 outside the root.
AX_RUNS = {
    "gd": ("gd", {}),
    "rmsprop": ("rmsprop", {"gamma": 0.9, "eps": 1e-8, "eps_in_sqrt": False}),
    "rmsprop+momentum": ("rmsprop", {"gamma": 0.9, "eps": 1e-8, "eps_in_sqrt": False, "momentum": 0.9}),
}


def ax_identity(A=A_SEED, steps: int = 300, lr: float = 1e-3, runs=AX_RUNS) -> dict:
    """Gradient descent, RMSProp and RMSProp with momentum on F(X) = Σ(AX − I)², from X = 0.

    Returns {name: {'loss': F after each step (steps values), 'final': F(X_steps),
    'x': X_steps, 'seconds': wall time of the whole call, compilation included}}.
    """
    A = np.asarray(A, dtype=float)
    out = {}
    for name, (method, opts) in runs.items():
        t0 = time.perf_counter()
        res = minimize(ax_loss, ax_grad, np.zeros_like(A), args=(A,), method=method,
                       options={"lr": lr, "maxiter": steps, "gtol": 0, "history": True, **opts})
        seconds = time.perf_counter() - t0
        out[name] = {"loss": res.history["loss"][1:], "final": res.fun, "x": res.x,
                     "seconds": seconds, "result": res}
    return out


def f_2d(x):
    """The seeds' f(x) = 0.1 x1² + 2 x2²."""
    return 0.1 * x[0] ** 2 + 2.0 * x[1] ** 2


def grad_2d(x):
    return np.array([0.2 * x[0], 4.0 * x[1]])


def trace_2d(method: str = "rmsprop", steps: int = 20, x0=(-5.0, -2.0), f=f_2d, grad=grad_2d,
             **options) -> dict:
    """The d2l 2-D trace: (steps+1, 2) iterates of ``method`` on f (default lr=0.4, gamma=0.9)."""
    opts = {"lr": 0.4, **({"gamma": 0.9} if method == "rmsprop" else {}), **options}
    res = minimize(f, grad, np.asarray(x0, float), method=method,
                   options={"maxiter": steps, "gtol": 0, "trajectory": True, **opts})
    return {"trajectory": res.trajectory, "x": res.x, "result": res}
