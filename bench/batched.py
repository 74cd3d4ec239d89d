"""Batched solves, side by side in one run (``python -m bench --batched``, or part of the full run).

1. B = 10,000 least-squares problems (8 parameters, 32 rows each), 500 steps of RMSProp with
   momentum: fastrms batched (Python loop with NumPy F/dF; compiled loop with @njit F/dF) against
   a Python loop of single ``minimize`` calls (timed on a subset, scaled to B), against
   ``jax.jit(jax.vmap(...))`` of an Optax rmsprop loop on the CPU (when jax and optax are
   installed), and against a hand-written @njit loop over all problems with the same dF.
2. The same problems solved with Adam, η per problem (a sweep of η), η and β1 per problem (a
   100 × 100 grid), and a random β1 per problem (a random search): fastrms batched (compiled loop)
   against a hand-written @njit Adam loop and ``jax.jit(jax.vmap(...))`` of Optax's adam.
3. B = 25 (the 5 × 5 η × γ sweep on airfoil): one batched call against 25 separate calls.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

import fastrms
from bench.report import in_turns
from fastrms import experiments as ex

B, N, M, STEPS = 10_000, 8, 32, 500
LR, GAMMA, MU, EPS = 0.01, 0.9, 0.9, 1e-6


def F(X, A, y):
    r = (A @ X[..., None])[..., 0] - y
    return 0.5 * np.mean(r * r, axis=-1)


def dF(X, A, y):
    r = (A @ X[..., None])[..., 0] - y
    return (np.swapaxes(A, -1, -2) @ r[..., None])[..., 0] / A.shape[-2]


@njit(cache=True)
def F_jit(X, A, y):
    out = np.empty(X.shape[0])
    for b in range(X.shape[0]):
        r = A[b] @ X[b] - y[b]
        out[b] = 0.5 * np.mean(r * r)
    return out


@njit(parallel=True, cache=True)
def dF_jit(X, A, y):
    """The gradient of all problems, parallel over problems (what a user would write)."""
    G = np.empty_like(X)
    m, n = A.shape[1], A.shape[2]
    for b in prange(X.shape[0]):
        for j in range(n):
            G[b, j] = 0.0
        for i in range(m):
            r = -y[b, i]
            for j in range(n):
                r += A[b, i, j] * X[b, j]
            for j in range(n):
                G[b, j] += A[b, i, j] * r
        for j in range(n):
            G[b, j] /= m
    return G


@njit(parallel=True, cache=True, error_model="numpy")
def _hand_update(X, G, S, Bu, lr, gamma, mu, eps):
    for b in prange(X.shape[0]):
        for j in range(X.shape[1]):
            g = G[b, j]
            s = gamma * S[b, j] + (1 - gamma) * (g * g)
            S[b, j] = s
            u = g / np.sqrt(s + eps)
            v = mu * Bu[b, j] + u
            Bu[b, j] = v
            X[b, j] -= lr * v


@njit(cache=True)
def hand_loop(X, A, y, steps, lr, gamma, mu, eps):
    """The hand-written baseline: the same dF, then one fused parallel update over all problems."""
    S = np.zeros_like(X)
    Bu = np.zeros_like(X)
    for _ in range(steps):
        G = dF_jit(X, A, y)
        _hand_update(X, G, S, Bu, lr, gamma, mu, eps)
    return X


B1, B2 = 0.9, 0.999  # Adam's defaults
SWEEP_LR = np.geomspace(1e-3, 0.1, B)


@njit(parallel=True, cache=True, error_model="numpy")
def _hand_adam_update(X, G, M1, M2, lr, bc1, c2):
    for b in prange(X.shape[0]):
        step = lr[b] / bc1
        for j in range(X.shape[1]):
            g = G[b, j]
            m = B1 * M1[b, j] + (1 - B1) * g
            v = B2 * M2[b, j] + (1 - B2) * (g * g)
            M1[b, j] = m
            M2[b, j] = v
            X[b, j] -= step * (m / (np.sqrt(v) / c2 + EPS))


@njit(cache=True)
def hand_adam_loop(X, A, y, steps, lr):
    """Adam with η per problem, torch's order of operations: the bias corrections once a step."""
    M1 = np.zeros_like(X)
    M2 = np.zeros_like(X)
    for t in range(1, steps + 1):
        G = dF_jit(X, A, y)
        bc1, bc2 = 1 - math.pow(B1, float(t)), 1 - math.pow(B2, float(t))  # (torch's beta ** step)
        _hand_adam_update(X, G, M1, M2, lr, bc1, math.sqrt(bc2))
    return X


# a grid of 100 η × 100 β1 over the same problems: β1 the slow axis, as np.meshgrid(etas, betas) lays it
GRID_LR, GRID_BETA1 = (a.ravel() for a in np.meshgrid(np.geomspace(1e-3, 0.1, 100), np.linspace(0.5, 0.95, 100)))


@njit(parallel=True, cache=True, error_model="numpy")
def _hand_adam_grid_update(X, G, M1, M2, lr, beta1, t, c2):
    for b in prange(X.shape[0]):
        b1 = beta1[b]
        step = lr[b] / (1 - math.pow(b1, float(t)))  # (each problem's own bias correction)
        for j in range(X.shape[1]):
            g = G[b, j]
            m = b1 * M1[b, j] + (1 - b1) * g
            v = B2 * M2[b, j] + (1 - B2) * (g * g)
            M1[b, j] = m
            M2[b, j] = v
            X[b, j] -= step * (m / (np.sqrt(v) / c2 + EPS))


@njit(cache=True)
def hand_adam_grid_loop(X, A, y, steps, lr, beta1):
    """Adam with η and β1 per problem, torch's order of operations: each problem's 1 − β1ᵗ in the
    parallel update, 1 − β2ᵗ once a step."""
    M1 = np.zeros_like(X)
    M2 = np.zeros_like(X)
    for t in range(1, steps + 1):
        G = dF_jit(X, A, y)
        _hand_adam_grid_update(X, G, M1, M2, lr, beta1, t, math.sqrt(1 - math.pow(B2, float(t))))
    return X


# a random search: every problem its own β1 (and the grid's η), so every row its own powers of t
SEARCH_BETA1 = np.random.default_rng(2).uniform(0.5, 0.95, B)


def adam_sweep(reps=3, grid=False, search=False):
    """Adam over the least-squares problems, η per problem (grid: η and β1, GRID_LR × GRID_BETA1;
    search: GRID_LR and SEARCH_BETA1, a random search)."""
    rng = np.random.default_rng(0)
    A = rng.normal(size=(B, M, N))
    y = rng.normal(size=(B, M))
    X0 = np.zeros((B, N))
    opts = {"lr": SWEEP_LR, "eps": EPS, "maxiter": STEPS, "gtol": 0, "batched": True}
    beta1 = SEARCH_BETA1 if search else GRID_BETA1
    if grid or search:
        opts = {**opts, "lr": GRID_LR, "beta1": beta1}

    def hand(steps):
        if grid or search:  # (the grid's loop: each problem's own 1 − β1ᵗ)
            return hand_adam_grid_loop(X0.copy(), A, y, steps, GRID_LR, beta1)
        return hand_adam_loop(X0.copy(), A, y, steps, SWEEP_LR)

    fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="adam", options=opts)  # compile once
    hand(2)
    out = _interleaved({
        "fastrms batched, compiled loop (@njit F, dF)":
            lambda: fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="adam", options=opts),
        "hand-written @njit loop, same dF": lambda: hand(STEPS)}, reps)
    try:
        out["jax.jit(jax.vmap(optax adam loop)), CPU"] = _jax(A, y, X0, reps, adam=True,
                                                              beta1=beta1 if grid or search else None)
    except ImportError:
        pass
    res = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), method="adam", options=opts)
    out["_max_abs_difference_vs_hand_loop"] = float(np.max(np.abs(res.x - hand(STEPS))))
    return out


def _best(fn, reps):
    return _interleaved({"": fn}, reps)[""]


def _interleaved(candidates: dict, rounds: int) -> dict:
    """{name: (median, min, max) seconds}, the candidates timed in turn round by round, so that the
    shared machine's slow and fast moments fall on all of them alike."""
    ts = in_turns(candidates, rounds, warm=False)
    return {name: (float(np.median(v)), float(np.min(v)), float(np.max(v))) for name, v in ts.items()}


def least_squares(reps=3, subset=100):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(B, M, N))
    y = rng.normal(size=(B, M))
    X0 = np.zeros((B, N))
    opts = {"lr": LR, "gamma": GAMMA, "momentum": MU, "eps": EPS, "maxiter": STEPS, "gtol": 0}
    batched = {**opts, "batched": True}
    fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), options=batched)  # compile once
    hand_loop(X0.copy(), A, y, 2, LR, GAMMA, MU, EPS)
    out = _interleaved({
        "fastrms batched, compiled loop (@njit F, dF)":
            lambda: fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), options=batched),
        "hand-written @njit loop, same dF": lambda: hand_loop(X0.copy(), A, y, STEPS, LR, GAMMA, MU, EPS),
        "fastrms batched, Python loop (NumPy F, dF)":
            lambda: fastrms.minimize(F, dF, X0, args=(A, y), options=batched)}, reps)

    def separate():
        for b in range(subset):
            fastrms.minimize(lambda x: F(x, A[b], y[b]), lambda x: dF(x, A[b], y[b]), X0[b], options=opts)

    med, lo, hi = _best(separate, 1)
    scale = B / subset
    out[f"Python loop of single minimize calls (timed on {subset}, × {scale:g})"] = (med * scale, lo * scale,
                                                                                   hi * scale)
    try:
        out["jax.jit(jax.vmap(optax rmsprop loop)), CPU"] = _jax(A, y, X0, reps)
    except ImportError:
        pass
    # the answers agree
    res = fastrms.minimize(F_jit, dF_jit, X0, args=(A, y), options=batched)
    ref = hand_loop(X0.copy(), A, y, STEPS, LR, GAMMA, MU, EPS)
    out["_max_abs_difference_vs_hand_loop"] = float(np.max(np.abs(res.x - ref)))
    return out


def _jax(A, y, X0, reps, adam=False, beta1=None):
    import jax
    import optax

    # the table says CPU: on a GPU machine jax would run there, and take 75% of its memory
    # up front (which starved the GPU tables of a full ``--gpu`` run)
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy

    def make(lr, b1):
        return optax.adam(lr, b1=b1, eps=EPS) if adam else optax.rmsprop(LR, decay=GAMMA, eps=EPS, momentum=MU)

    def solve(x, a, yy, lr, b1):
        opt = make(lr, b1)

        def loss(x):
            r = a @ x - yy
            return 0.5 * jnp.mean(r * r)

        def body(_, carry):
            x, state = carry
            updates, state = opt.update(jax.grad(loss)(x), state, x)
            return optax.apply_updates(x, updates), state

        return jax.lax.fori_loop(0, STEPS, body, (x, opt.init(x)))[0]

    run = jax.jit(jax.vmap(solve))
    a, yy, x0 = jnp.asarray(A), jnp.asarray(y), jnp.asarray(X0)
    lr, b1 = (GRID_LR, beta1) if beta1 is not None else (SWEEP_LR, np.full(len(X0), B1))
    lr, b1 = jnp.asarray(lr), jnp.asarray(b1)
    run(x0, a, yy, lr, b1).block_until_ready()  # compile
    return _best(lambda: run(x0, a, yy, lr, b1).block_until_ready(), reps)


def sweep(reps=3):
    lrs, gammas = (0.001, 0.003, 0.01, 0.03, 0.1), (0.5, 0.8, 0.9, 0.95, 0.99)
    ex.sensitivity(lrs, gammas)  # compile once
    return _interleaved({
        "one batched call (B = 25)": lambda: ex.sensitivity(lrs, gammas),
        "25 separate calls": lambda: [ex.airfoil(hyper={"gamma": g}, lr=lr) for g in gammas for lr in lrs]},
        reps)


CURVES_B = 25  # a sweep's size: the loss curves of 25 small problems


def curves(reps=5):
    """A sweep that records its loss curves (history=True, so F runs every step): B = 25 of the
    least-squares problems with jitted F and dF, through the Python loop and the compiled loop."""
    rng = np.random.default_rng(1)
    A, y = rng.normal(size=(CURVES_B, M, N)), rng.normal(size=(CURVES_B, M))
    X0 = np.zeros((CURVES_B, N))
    opts = {"lr": np.geomspace(1e-3, 0.1, CURVES_B), "gamma": GAMMA, "momentum": MU, "eps": EPS, "maxiter": STEPS,
            "gtol": 0, "batched": True, "history": True}
    runs = {f"history=True, {driver} loop": (lambda d=driver: fastrms.minimize(
        F_jit, dF_jit, X0, args=(A, y), options={**opts, "driver": d})) for driver in ("python", "compiled")}
    for fn in runs.values():
        fn()  # compile once
    return _interleaved(runs, reps)


def run(reps=5):
    print("  batched least squares (B = 10,000, 500 steps) ...", flush=True)
    ls = least_squares(reps)
    print("  Adam, η per problem (B = 10,000, 500 steps) ...", flush=True)
    adam = adam_sweep(reps)
    print("  Adam, a grid of η × β1 (B = 10,000, 500 steps) ...", flush=True)
    grid = adam_sweep(reps, grid=True)
    print("  Adam, a random search of β1 (B = 10,000, 500 steps) ...", flush=True)
    search = adam_sweep(reps, search=True)
    print("  batched η × γ sweep on airfoil (B = 25) ...", flush=True)
    sw = sweep(reps)
    print(f"  loss curves of a sweep (B = {CURVES_B}, history=True) ...", flush=True)
    return {"least_squares": ls, "adam_sweep": adam, "adam_grid": grid, "adam_search": search, "sweep": sw,
            "curves": curves(reps)}


def _vs_ours(title: str, table: dict) -> list:
    table = dict(table)
    diff = table.pop("_max_abs_difference_vs_hand_loop")
    ours = table["fastrms batched, compiled loop (@njit F, dF)"][0]
    lines = [title, "", "| candidate | median s (min–max) | fastrms compiled is × faster |", "|---|---|---|"]
    for name, (med, lo, hi) in table.items():
        lines.append(f"| {name} | {med:.3f} ({lo:.3f}–{hi:.3f}) | {med / ours:.2f} |")
    return lines + ["", f"fastrms's answer differs from the hand-written loop's by at most {diff:.1e}."]


def markdown(r: dict) -> str:
    lines = _vs_ours(f"### Batched solves: B = {B:,} least-squares problems ({N} parameters, {M} rows), {STEPS} "
                     "steps of RMSProp with momentum", r["least_squares"])
    if "adam_sweep" in r:
        lines += [""] + _vs_ours(f"### A sweep of η with Adam: the same {B:,} problems, {STEPS} steps, η from "
                                 f"{SWEEP_LR[0]:g} to {SWEEP_LR[-1]:g} (one per problem)", r["adam_sweep"])
    if "adam_grid" in r:
        lines += [""] + _vs_ours(f"### A grid of η × β1 with Adam: the same {B:,} problems, {STEPS} steps, 100 η "
                                 f"from {GRID_LR.min():g} to {GRID_LR.max():g} × 100 β1 from {GRID_BETA1.min():g} "
                                 f"to {GRID_BETA1.max():g}", r["adam_grid"])
    if "adam_search" in r:
        lines += [""] + _vs_ours(f"### A random search with Adam: the same {B:,} problems, {STEPS} steps, the "
                                 f"grid's η and a β1 a problem drawn from [{SEARCH_BETA1.min():.2f}, "
                                 f"{SEARCH_BETA1.max():.2f}]", r["adam_search"])
    lines += ["", "### The 5 × 5 η × γ sweep on airfoil (2 epochs, batch 10)", "",
              "| candidate | median s (min–max) |", "|---|---|"]
    for name, (med, lo, hi) in r["sweep"].items():
        lines.append(f"| {name} | {med:.3f} ({lo:.3f}–{hi:.3f}) |")
    one, sep = r["sweep"]["one batched call (B = 25)"][0], r["sweep"]["25 separate calls"][0]
    lines.append(f"\nThe batched sweep is {sep / one:.1f}× faster than 25 separate calls.")
    if "curves" in r:
        lines += ["", f"### A sweep's loss curves: B = {CURVES_B} least-squares problems, {STEPS} steps, "
                  "history=True, jitted F and dF", "", "| candidate | median s (min–max) |", "|---|---|"]
        for name, (med, lo, hi) in r["curves"].items():
            lines.append(f"| {name} | {med:.4f} ({lo:.4f}–{hi:.4f}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    res = run()
    print(markdown(res))
