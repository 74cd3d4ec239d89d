"""The seeds' experiments as functions that return their numbers.

The demo (``fastrms demo``) only prints and draws what these return, and the
tests check the same numbers.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

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


def decay_weights(gammas=(0.95, 0.9, 0.8, 0.7), steps: int = 40) -> dict:
    """The weight (1 − γ)γᵗ that s_t gives to the gradient of t steps ago; sums to 1 − γ^steps."""
    t = np.arange(steps)
    return {g: (1 - g) * g ** t for g in gammas}


def seed_loop(F, dF, x, steps, lr=0.001, decay=0.9, eps=1e-8, mu=None):
    """The notebook seed's own NumPy loops, rmsprop (mu None) and rmsprop_momentum, transcribed:
    the baseline that the tests check fastrms against step by step and the benchmark times.
    Updates x in place; returns (x, the loss after each step)."""
    loss = []
    s = np.zeros(x.shape)
    b = np.zeros(x.shape)
    for _ in range(steps):
        dx = dF(x)
        s = decay * s + (1 - decay) * dx ** 2
        if mu is None:
            x -= lr * dx / (np.sqrt(s) + eps)
        else:
            b = mu * b + lr * dx / (np.sqrt(s) + eps)
            x -= b
        loss.append(F(x))
    return x, loss


# -- linear regression on the airfoil data (d2l's train_ch11) ---------------------

def linreg_loss(x, X, y, scale=1.0):
    """d2l's squared loss: mean over rows of (Xw + b − y)²/2, with x = (w, b)."""
    r = X @ x[:-1] + x[-1] - y
    return float(r @ r) / (2 * len(y))


def linreg_grad(x, X, y, scale=1.0):
    """Its gradient; ``scale=2`` is the gradient of the plain mean squared error
    (d2l's concise versions use nn.MSELoss / keras' MSE, without the 1/2)."""
    r = X @ x[:-1] + x[-1] - y
    g = np.empty_like(x)
    g[:-1] = X.T @ r
    g[-1] = r.sum()
    return g * (scale / len(y))


@njit(cache=True)
def linreg_loss_jit(x, X, y):
    """linreg_loss as plain loops (no BLAS): its rounding depends on the values only, not on where
    the arrays sit in memory, so a block recomputed on another worker gives the same bits."""
    d, s = X.shape[1], 0.0
    for i in range(X.shape[0]):
        r = x[d] - y[i]
        for j in range(d):
            r += X[i, j] * x[j]
        s += r * r
    return s / (2 * X.shape[0])


@njit(cache=True)
def linreg_grad_jit(x, X, y):
    d = X.shape[1]
    g = np.zeros_like(x)
    for i in range(X.shape[0]):
        r = x[d] - y[i]
        for j in range(d):
            r += X[i, j] * x[j]
        for j in range(d):
            g[j] += X[i, j] * r
        g[d] += r
    return g / X.shape[0]


# The seeds' concise versions: torch.optim.RMSprop(lr=.01, alpha=.9), keras RMSprop(lr=.01, rho=.9),
# gluon 'rmsprop' (lr=.01, gamma1=.9); scratch is the d2l code itself.
AIRFOIL_RUNS = {
    "scratch (d2l)": (None, {"gamma": 0.9}, 1.0),
    "torch": ("torch", {"alpha": 0.9}, 2.0),
    "keras": ("keras", {"rho": 0.9}, 2.0),
    "gluon": ("mxnet", {"gamma1": 0.9}, 2.0),
}


def airfoil(preset=None, hyper=None, scale=1.0, lr=0.01, batch_size=10, epochs=2, seed=0,
            method="rmsprop") -> dict:
    """RMSProp linear regression on the airfoil data, as d2l trains it.

    Batch size 10, lr 0.01, γ 0.9, 2 epochs, w ~ N(0, 0.01²), b = 0, float32; the loss
    on all 1500 rows is recorded every 200 examples.  Returns {'epoch', 'loss', 'final', 'x'}.
    """
    from .datasets import airfoil as load

    X, y = load()
    x0 = _airfoil_x0(X.shape[1], seed)
    res = minimize(linreg_loss, linreg_grad, x0, args=(X, y, scale), method=method,
                   options={"lr": lr, "preset": preset, **(hyper if hyper is not None else {"gamma": 0.9}),
                            "batch_size": batch_size, "epochs": epochs, "seed": seed,
                            "history": True, "history_every": max(1, 200 // batch_size)})
    return {"epoch": res.history["epoch"], "loss": res.history["loss"], "final": res.fun, "x": res.x,
            "result": res}


def _airfoil_x0(d: int, seed: int) -> np.ndarray:
    """w ~ N(0, 0.01²), b = 0, float32, as d2l initializes it."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(0.0, 0.01, d), [0.0]]).astype(np.float32)


def airfoil_runs(seed: int = 0) -> dict:
    return {name: airfoil(preset, hyper, scale, seed=seed)
            for name, (preset, hyper, scale) in AIRFOIL_RUNS.items()}


# -- the exercises ----------------------------------------------------------------

def extreme_gamma(steps: int = 200) -> dict:
    """γ = 1: s never leaves 0, every step is η g/√ε and the run diverges; γ = 0: sign descent."""
    out = {}
    for gamma in (1.0, 0.0):
        with np.errstate(over="ignore", invalid="ignore"):  # the divergence is the point
            res = minimize(f_2d, grad_2d, np.array([-5.0, -2.0]),
                           options={"lr": 0.4, "gamma": gamma, "maxiter": steps, "gtol": 0, "history": True})
        out[gamma] = {"result": res, "success": res.success, "message": res.message, "nit": res.nit,
                      "loss": res.history["loss"], "x": res.x}
    return out


def f_rotated(x):
    """f(x) = 0.1 (x1 + x2)² + 2 (x1 − x2)²: the seeds' quadratic rotated by 45°."""
    return 0.1 * (x[0] + x[1]) ** 2 + 2.0 * (x[0] - x[1]) ** 2


def grad_rotated(x):
    a, b = 0.2 * (x[0] + x[1]), 4.0 * (x[0] - x[1])
    return np.array([a + b, a - b])


def rotated(steps: int = 20) -> dict:
    """RMSProp on the rotated problem beside the axis-aligned one (same start, lr 0.4, γ 0.9)."""
    aligned = trace_2d(steps=steps)
    rot = trace_2d(steps=steps, f=f_rotated, grad=grad_rotated)
    return {"aligned": aligned, "rotated": rot,
            "f_aligned": f_2d(aligned["x"]), "f_rotated": f_rotated(rot["x"])}


def linreg_loss_rows(W, X, y, scale=1.0):
    """linreg_loss of B problems at once: W (B, d + 1), X (B, rows, d), y (B, rows)."""
    r = (X @ W[:, :-1, None])[..., 0] + W[:, -1:] - y
    return np.sum(r * r, axis=1) / (2 * y.shape[1])


def linreg_grad_rows(W, X, y, scale=1.0):
    r = (X @ W[:, :-1, None])[..., 0] + W[:, -1:] - y
    G = np.empty_like(W)
    G[:, :-1] = (np.swapaxes(X, 1, 2) @ r[..., None])[..., 0]
    G[:, -1] = r.sum(axis=1)
    return G * (scale / y.shape[1])


def sensitivity(lrs=(0.001, 0.003, 0.01, 0.03, 0.1), gammas=(0.5, 0.8, 0.9, 0.95, 0.99), epochs=2,
                progress=None, batch_size=10, seed=0) -> dict:
    """Final airfoil loss over a grid of η × γ (how sensitive is RMSProp to γ?).

    The whole grid is one batched call: B = len(gammas)·len(lrs) copies of airfoil()'s problem
    (same start, same mini-batches), each with its own η and γ.
    """
    from .datasets import airfoil as load

    X, y = load()
    G, L = np.meshgrid(np.asarray(gammas, float), np.asarray(lrs, float), indexing="ij")
    B = G.size
    x0 = np.tile(_airfoil_x0(X.shape[1], seed), (B, 1))
    data = (np.broadcast_to(X, (B, *X.shape)), np.broadcast_to(y, (B, *y.shape)))
    res = minimize(linreg_loss_rows, linreg_grad_rows, x0, args=data,
                   options={"lr": L.ravel(), "gamma": G.ravel(), "batch_size": batch_size, "epochs": epochs,
                            "seed": seed, "batched": True})
    if progress is not None:
        progress()
    return {"lrs": np.asarray(lrs), "gammas": np.asarray(gammas), "loss": res.fun.reshape(G.shape),
            "result": res}


def softmax_loss(W, X, Y):
    Z = X @ W
    Z = Z - Z.max(axis=1, keepdims=True)
    logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))
    return float(-(Y * logp).sum() / len(X))


def softmax_grad(W, X, Y):
    Z = X @ W
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    return X.T @ (P - Y) / len(X)


def digits(lrs=(0.001, 0.01, 0.1), epochs: int = 5, batch_size: int = 32, seed: int = 0,
           progress=None) -> dict:
    """Softmax regression on scikit-learn's handwritten digits with RMSProp at several η.

    Trains on the first 1400 images, reports the training loss and the accuracy on the
    other 397.  Needs scikit-learn (``pip install fastrms[digits]``); it ships the data.
    """
    from sklearn.datasets import load_digits

    data = load_digits()
    X = np.hstack([data.data / 16.0, np.ones((len(data.data), 1))])
    Y = np.eye(10)[data.target]
    Xtr, Ytr, Xte, yte = X[:1400], Y[:1400], X[1400:], data.target[1400:]
    out = {}
    for lr in lrs:
        res = minimize(softmax_loss, softmax_grad, np.zeros((X.shape[1], 10)), args=(Xtr, Ytr),
                       options={"lr": lr, "gamma": 0.9, "batch_size": batch_size, "epochs": epochs,
                                "seed": seed, "history": True, "history_every": 20})
        acc = float(np.mean(np.argmax(Xte @ res.x, axis=1) == yte))
        out[lr] = {"epoch": res.history["epoch"], "loss": res.history["loss"], "final": res.fun,
                   "accuracy": acc}
        if progress is not None:
            progress()
    return out
