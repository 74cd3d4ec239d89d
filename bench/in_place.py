"""minimize in place (performance issue, item 2), side by side in one run (``python -m bench --in-place``).

RMSProp on n = 5e7 float64 elements with the compiled loop; dF hands back one fixed gradient and
F is 0, so an iteration is the update and its stopping tests.  Per iteration of a minimize call:
the time of a 45-iteration call minus that of a 5-iteration call, over 40 (what every call pays
once, the copy of x0 and the first touch of 1.2 GB of fresh buffers, cancels).  Candidates take
turns round by round, 7 rounds; medians with min-max.  (With 25 and 5 iterations and 5 rounds, the
one-off costs' own noise, divided by 20, moved the in-place ratio from 0.91x to 1.18x between runs
of the same code on this machine.)  Candidates:
- minimize as before: x_{k+1} written into a spare buffer (two n-sized buffers for x),
- minimize with ``in_place=True``: one buffer for x,
- the stepper's in-place step (``fastrms.RMSProp(x).step(g)``), the target's yardstick.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
from numba import njit

import fastrms

N, SHORT, LONG = 50_000_000, 5, 45
OPTIONS = {"lr": 1e-9, "gamma": 0.9, "eps": 1e-6, "gtol": 0.0, "driver": "compiled"}


@njit(cache=True)
def zero(x, G):
    return 0.0


@njit(cache=True)
def fixed(x, G):
    return G


def run(rounds=7, n=N):
    rng = np.random.default_rng(0)
    x0, G = np.zeros(n), rng.normal(size=n)

    def per_iteration(in_place):
        def call(maxiter):
            t = time.perf_counter()
            res = fastrms.minimize(zero, fixed, x0, args=(G,), method="rmsprop",
                                   options={**OPTIONS, "maxiter": maxiter, "in_place": in_place})
            assert res.nit == maxiter
            return time.perf_counter() - t
        return (call(LONG) - call(SHORT)) / (LONG - SHORT)

    x = x0.copy()
    opt = fastrms.RMSProp(x, **{k: OPTIONS[k] for k in ("lr", "gamma", "eps")})

    def stepper():
        t = time.perf_counter()
        for _ in range(LONG - SHORT):
            opt.step(G)
        return (time.perf_counter() - t) / (LONG - SHORT)

    cands = {"minimize, two buffers (in_place=False)": lambda: per_iteration(False),
             "minimize, in_place=True": lambda: per_iteration(True),
             "stepper step (in place)": stepper}
    for fn in cands.values():  # compile and touch everything once
        fn()
    times: dict = {name: [] for name in cands}
    for _ in range(rounds):
        for name, fn in cands.items():
            times[name].append(fn())
    return {"n": n, "rows": [{"candidate": c, "s": statistics.median(v), "min": min(v), "max": max(v)}
                             for c, v in times.items()]}


def markdown(res) -> str:
    from bench.report import table

    base = res["rows"][-1]["s"]
    lines = [f"### minimize in place: RMSProp, n = {res['n']:,} float64, compiled loop (ms per iteration)", ""]
    lines += table("candidate | ms per iteration (median) | min–max | ÷ stepper step", "lrrr",
                   ([r["candidate"], f"{r['s'] * 1e3:.2f}", f"{r['min'] * 1e3:.2f}–{r['max'] * 1e3:.2f}",
                     f"{r['s'] / base:.2f}"] for r in res["rows"]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
