"""Whole AX = I solves, each candidate timed in a fresh process (``python -m bench --solves``).

A solve alternates the user's gradient (often multithreaded BLAS) with the update kernel; one
candidate's spinning BLAS or OpenMP threads slow the next one down in the same process.
So every (candidate, n, round) runs in its own ``python -m bench.solves worker ...`` process: a
warm-up solve (compilation, cache loads, thread pools), then timed solves; medians over all
rounds with min-max.  RMSProp with η = 1e-3, γ = 0.9, ε = 1e-8 outside the root, from X = 0.

Candidates:
- the seed's NumPy loop (it evaluates the loss every step) and the same loop without the loss,
- a hand-written @njit loop with the same jitted dF as fastrms's compiled loop,
- fastrms's Python loop (the seed's NumPy F and dF), with and without the loss history,
- fastrms's compiled loop (jitted F and dF), through minimize and through a Minimizer made once
  (the warm-up solve is its first call: the timed ones reuse its plan),
- at n = 5, fastrms's batched solver on 100 copies of the problem in one call, its time divided
  by 100: where many small problems of one form are to be solved, the call is paid once.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from numba import njit

from bench.ax import jit_dF

LR, GAMMA, EPS = 1e-3, 0.9, 1e-8
STEPS = {5: 300, 100: 300, 200: 300, 500: 100, 1000: 20}
REPS = {5: 40, 100: 5, 200: 3, 500: 2, 1000: 1}
HAND_WRITTEN = ("seed NumPy loop (loss every step)", "NumPy loop (no loss)", "hand-written @njit loop")
FASTRMS = ("fastrms Python loop, loss history", "fastrms Python loop", "fastrms compiled loop",
           "fastrms Minimizer, compiled loop", "fastrms batched, 100 copies at once (per problem)")
BATCH = 100  # the batched candidate solves this many copies of the problem in one call (n = 5 only)
ONLY_AT = {"fastrms batched, 100 copies at once (per problem)": (5,)}
ROOT = Path(__file__).resolve().parent.parent


def problem(n: int):
    from fastrms import experiments as ex

    rng = np.random.default_rng(1)
    return ex.A_SEED if n == 5 else np.eye(n) + rng.standard_normal((n, n)) / (2 * np.sqrt(n))


@njit(cache=True)
def hand_loop(X, A, steps, lr, gamma, eps):  # pragma: no cover - compiled
    """What a user writes by hand: the whole solve in one jitted function, serial update."""
    s = np.zeros_like(X)
    for _ in range(steps):
        G = jit_dF(X, A)
        for i in range(X.shape[0]):
            for j in range(X.shape[1]):
                s[i, j] = gamma * s[i, j] + (1 - gamma) * G[i, j] * G[i, j]
                X[i, j] -= lr * G[i, j] / (np.sqrt(s[i, j]) + eps)
    return X


def candidate(name: str, n: int):
    """A function running one solve of candidate name at size n."""
    import fastrms
    from bench.ax import jit_F
    from fastrms import experiments as ex

    A, eye, steps = problem(n), np.eye(n), STEPS[n]

    def F(X):
        return np.sum((A @ X - eye) ** 2)

    def dF(X):
        return 2 * A.T @ (A @ X - eye)

    opts = {"lr": LR, "gamma": GAMMA, "eps": EPS, "eps_in_sqrt": False, "maxiter": steps, "gtol": 0}
    if name == "seed NumPy loop (loss every step)":
        return lambda: ex.seed_loop(F, dF, np.zeros((n, n)), steps=steps, lr=LR, decay=GAMMA, eps=EPS)
    if name == "NumPy loop (no loss)":
        def numpy_loop():
            X, s = np.zeros((n, n)), np.zeros((n, n))
            for _ in range(steps):
                dx = dF(X)
                s = GAMMA * s + (1 - GAMMA) * dx ** 2
                X -= LR * dx / (np.sqrt(s) + EPS)
            return X
        return numpy_loop
    if name == "hand-written @njit loop":
        return lambda: hand_loop(np.zeros((n, n)), A, steps, LR, GAMMA, EPS)
    if name == "fastrms Python loop, loss history":
        return lambda: fastrms.minimize(F, dF, np.zeros((n, n)), options={**opts, "history": True})
    if name == "fastrms Python loop":
        return lambda: fastrms.minimize(F, dF, np.zeros((n, n)), options=opts)
    if name == "fastrms compiled loop":
        return lambda: fastrms.minimize(jit_F, jit_dF, np.zeros((n, n)), args=(A,), options=opts)
    if name == "fastrms Minimizer, compiled loop":
        solve = fastrms.Minimizer(jit_F, jit_dF, options=opts)
        return lambda: solve(np.zeros((n, n)), args=(A,))
    if name == "fastrms batched, 100 copies at once (per problem)":
        from bench.ax import jit_dF_rows, jit_F_rows

        As = np.ascontiguousarray(np.broadcast_to(A, (BATCH, n, n)))
        batched = {**opts, "batched": True}

        def solve_batch():
            return fastrms.minimize(jit_F_rows, jit_dF_rows, np.zeros((BATCH, n, n)), args=(As,), options=batched)

        solve_batch.per = BATCH  # (worker divides its time by this)
        return solve_batch
    raise ValueError(f"no candidate {name!r}")


def worker(name: str, n: int, reps: int) -> list[float]:
    fn = candidate(name, n)
    fn()  # warm: compilation, cache loads, thread pools
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) / getattr(fn, "per", 1))
    return times


def _in_fresh_process(name: str, n: int, reps: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-m", "bench.solves", "worker", name, str(n), str(reps)],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name} at n = {n} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(sizes=(5, 100, 200, 500, 1000), rounds=3) -> dict:
    rows = []
    for n in sizes:
        times: dict = {name: [] for name in HAND_WRITTEN + FASTRMS if n in ONLY_AT.get(name, (n,))}
        for _ in range(rounds):  # candidates take turns, round by round
            for name in times:
                times[name] += _in_fresh_process(name, n, REPS[n])
        for name, ts in times.items():
            rows.append({"n": n, "steps": STEPS[n], "candidate": name, "median_s": statistics.median(ts),
                         "min_s": min(ts), "max_s": max(ts)})
        best = min(r["median_s"] for r in rows if r["n"] == n and r["candidate"] in HAND_WRITTEN)
        for r in rows:
            if r["n"] == n:
                r["vs_best_hand_written"] = r["median_s"] / best
        print(f"  AX=I n={n:>4}: " + ", ".join(
            f"{r['candidate']} {r['median_s'] * 1e3:.2f} ms" for r in rows if r["n"] == n), flush=True)
    return {"rows": rows, "cores": os.cpu_count()}


def markdown(res: dict) -> str:
    from bench.report import table

    lines = ["### Whole solves: AX = I, RMSProp, each candidate in its own fresh process "
             f"({res['cores']} cores; medians over all rounds, min–max)", ""]
    lines += table("n | steps | candidate | ms (median) | min–max | ÷ best hand-written", "rrlrrr",
                   ([str(r["n"]), str(r["steps"]), r["candidate"], f"{r['median_s'] * 1e3:.3f}",
                     f"{r['min_s'] * 1e3:.3f}–{r['max_s'] * 1e3:.3f}", f"{r['vs_best_hand_written']:.2f}"]
                    for r in res["rows"]))
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        print(json.dumps(worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
    else:
        print(markdown(run()))
