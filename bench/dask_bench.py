"""fastrms on Dask (``python -m bench --dask``): full-batch steps over row-chunked data on a LocalCluster.

Synthetic least squares, ROWS × 10 features in 8 row blocks, on a 2-worker LocalCluster (loopback);
time per full-batch step of fastrms (RMSProp, reduction='mean', jitted F and dF on the workers)
against dask-glm's ``gradient_descent`` (family Normal) on the same persisted data and cluster,
and against the same fastrms step in memory on one machine; then, on a cluster whose workers'
memory limit is below the data's size, a short run that must complete.  Needs dask,
distributed and dask-glm.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit, prange

import fastrms

ROWS, FEATURES, BLOCKS, STEPS = 20_000_000, 10, 8, 10


@njit(parallel=True, cache=True)
def loss(w, X, y):
    s = 0.0
    for i in prange(X.shape[0]):
        r = -y[i]
        for j in range(X.shape[1]):
            r += X[i, j] * w[j]
        s += r * r
    return 0.5 * s / X.shape[0]


@njit(parallel=True, cache=True)
def grad(w, X, y):
    n, d = X.shape
    parts = np.zeros((n // 65536 + 1, d))
    for c in prange(n // 65536 + 1):
        for i in range(c * 65536, min(n, (c + 1) * 65536)):
            r = -y[i]
            for j in range(d):
                r += X[i, j] * w[j]
            for j in range(d):
                parts[c, j] += X[i, j] * r
    return parts.sum(axis=0) / n


def _data(client, rows):
    import dask.array as da

    rs = da.random.RandomState(0)
    X = rs.normal(size=(rows, FEATURES), chunks=(rows // BLOCKS, FEATURES))
    y = X @ np.arange(1.0, FEATURES + 1) + 0.1 * rs.normal(size=rows, chunks=rows // BLOCKS)
    return client.persist([X, y])


OPTS = {"lr": 0.05, "gamma": 0.9, "gtol": 0, "reduction": "mean"}


def run(rows=ROWS, steps=STEPS):
    from distributed import Client, LocalCluster

    nbytes = rows * (FEATURES + 1) * 8
    out = {"rows": rows, "GB": nbytes / 1e9}
    cluster_kw = dict(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address="127.0.0.1:0")  # (None still serves on 8787)
    # 1. fastrms and dask-glm side by side, default memory limits
    with LocalCluster(**cluster_kw) as cluster, Client(cluster) as client:
        X, y = _data(client, rows)
        fastrms.minimize(loss, grad, np.zeros(FEATURES), args=(X, y), options={**OPTS, "maxiter": 1})  # compile
        t = time.perf_counter()
        res = fastrms.minimize(loss, grad, np.zeros(FEATURES), args=(X, y), options={**OPTS, "maxiter": steps})
        out["fastrms_step_s"] = (time.perf_counter() - t) / (steps + 1)  # steps updates, steps + 2 calls
        out["fastrms_loss"] = float(res.fun)
        print(f"  on the cluster: fastrms {out['fastrms_step_s']:.3f} s per step", flush=True)
        try:
            from dask_glm.algorithms import gradient_descent
            from dask_glm.families import Normal

            gradient_descent(X, y, max_iter=1, family=Normal)
            t = time.perf_counter()
            gradient_descent(X, y, max_iter=steps, tol=0.0, family=Normal)
            out["dask_glm_step_s"] = (time.perf_counter() - t) / steps
            print(f"  dask-glm {out['dask_glm_step_s']:.3f} s per iteration", flush=True)
        except ImportError:
            out["dask_glm_step_s"] = None
        # block by block to this process (a single finalize task would need it all on one worker)
        Xm = np.concatenate(client.gather(client.compute(list(X.to_delayed().ravel()))))
        ym = np.concatenate(client.gather(client.compute(list(y.to_delayed().ravel()))))
    # 2. the same steps in memory, one process
    grad(np.zeros(FEATURES), Xm[:1000], ym[:1000])
    t = time.perf_counter()
    fastrms.minimize(loss, grad, np.zeros(FEATURES), args=(Xm, ym),
                     options={"lr": 0.05, "gamma": 0.9, "maxiter": steps, "gtol": 0, "driver": "python"})
    out["in_memory_step_s"] = (time.perf_counter() - t) / (steps + 1)
    del Xm, ym
    # 3. data larger than one worker's memory limit, within the cluster's
    limit = int(0.6 * nbytes) + 400 * 2**20  # (~0.3 GB of it is the worker process with NumPy and Numba)
    out["worker_memory_limit_GB"] = limit / 1e9
    with LocalCluster(**cluster_kw, memory_limit=limit) as cluster, Client(cluster) as client:
        X, y = _data(client, rows)
        res = fastrms.minimize(loss, grad, np.zeros(FEATURES), args=(X, y), options={**OPTS, "maxiter": 3})
        out["limited_completed"] = bool(res.nit == 3 and np.isfinite(res.fun))
    return out


def markdown(r: dict) -> str:
    glm = r["dask_glm_step_s"]
    lines = [f"### fastrms on Dask: {r['rows']:,} rows × {FEATURES} features ({r['GB']:.1f} GB) in {BLOCKS} "
             "blocks, 2-worker LocalCluster", "",
             "| candidate | s per full-batch step | fastrms is × faster |", "|---|---|---|",
             f"| fastrms, reduction='mean', jitted F and dF on the workers | {r['fastrms_step_s']:.3f} | 1.00 |"]
    if glm is not None:
        lines.append(f"| dask-glm gradient_descent (Normal) | {glm:.3f} | {glm / r['fastrms_step_s']:.2f} |")
    lines.append(f"| the same fastrms step in memory, one process | {r['in_memory_step_s']:.3f} | "
                 f"{r['in_memory_step_s'] / r['fastrms_step_s']:.2f} |")
    lines.append(f"\nWith each worker's memory limit at {r['worker_memory_limit_GB']:.2f} GB, below the data's "
                 f"{r['GB']:.2f} GB, a 3-step run {'completed' if r['limited_completed'] else 'did NOT complete'}.")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
