"""fastrms benchmark harness: ``python -m bench`` (or ``python bench/run.py``).

Everything is measured side by side in one run and reported as ratios, since
absolute times on a shared machine mean little:

1. update kernels (rmsprop, rmsprop+momentum, centered, adam; float32/float64) against a kernel
   that reads and writes exactly what the fused step does (the memory limit), NumPy written
   with out= and torch.optim.RMSprop or Adam (foreach=True) when torch is installed, in turns;
2. whole solves: AX=I n = 5 ... 1000 against the seed's NumPy loop and a hand-written @njit
   loop, each candidate in its own fresh process (bench/solves.py; ``--solves`` runs only these);
3. overheads: import time, first-call compilation, second-process load;
4. the serial/parallel crossover that sets kernels.cpu.PARALLEL_MIN_BYTES;
5. batched solves (bench/batched.py; ``--batched`` runs only these);
6. ``--dask`` alone: fastrms on a Dask LocalCluster against dask-glm (bench/dask_bench.py);
7. ``--many`` alone: a stepper over 100 arrays, and over a small model's 4, against a flat loop and torch (bench/many_arrays.py);
8. ``--gpu`` adds (first), ``--gpu-only`` runs alone, the GPU tables (bench/gpu.py).

Writes results/bench.json after each part, then results/bench.md and results/bandwidth.png
(matplotlib optional).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numba
import numpy as np
from numba import prange

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import fastrms  # noqa: E402
from bench.report import in_turns, ratio, serial_and_parallel, table  # noqa: E402
from fastrms.kernels import cpu  # noqa: E402
from fastrms.method_state import MethodState  # noqa: E402
from fastrms.presets import configure  # noqa: E402


def _torch():
    """torch, or None: imported when a benchmark runs (seconds), not when the harness is imported."""
    try:
        import torch
    except ImportError:  # optional
        return None
    return torch


def best(fn, reps=5, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts), statistics.median(ts)


def _same_traffic_5(x, g, s, c):  # pragma: no cover - compiled
    """What rmsprop's step reads and writes (x, g, s in; x, s out) with trivial arithmetic."""
    for i in prange(x.size):
        si = s[i] + c * g[i]
        s[i] = si
        x[i] = x[i] - c * si


def _same_traffic_7(x, g, s, b, c):  # pragma: no cover - compiled
    """The same with a second state row (momentum's b, centered's m)."""
    for i in prange(x.size):
        si = s[i] + c * g[i]
        bi = b[i] + c * si
        s[i] = si
        b[i] = bi
        x[i] = x[i] - c * bi


# serial and parallel, picked by fastrms's own size rule: the limit for the kernel fastrms runs
LIMIT = {(streams, par): k for streams, fn in ((5, _same_traffic_5), (7, _same_traffic_7))
         for par, k in serial_and_parallel(fn, error_model="numpy").items()}
# Every constant comes in x's dtype (1 − γ and μ too): a literal such as 1 - gamma is float64 in
# Numba, which would run a float32 loop in float64, slower than a float32 user's own loop.

def _hand_rmsprop(x, g, s, b, lr, gamma, omg, mu, eps):  # pragma: no cover - compiled
    """The fused update as a user writes it by hand (omg = 1 − γ; b and mu unused)."""
    for i in prange(x.size):
        si = gamma * s[i] + omg * g[i] * g[i]
        s[i] = si
        x[i] -= lr * g[i] / np.sqrt(si + eps)


def _hand_momentum(x, g, s, b, lr, gamma, omg, mu, eps):  # pragma: no cover - compiled
    for i in prange(x.size):
        si = gamma * s[i] + omg * g[i] * g[i]
        bi = mu * b[i] + g[i] / np.sqrt(si + eps)
        s[i] = si
        b[i] = bi
        x[i] -= lr * bi


def _hand_centered(x, g, s, m, lr, gamma, omg, mu, eps):  # pragma: no cover - compiled
    for i in prange(x.size):
        si = gamma * s[i] + omg * g[i] * g[i]
        mi = gamma * m[i] + omg * g[i]
        s[i] = si
        m[i] = mi
        x[i] -= lr * g[i] / np.sqrt(si - mi * mi + eps)


def hand_constants(dtype):
    """(lr, γ, 1 − γ, μ, ε) of the benchmark's update, in dtype."""
    return tuple(dtype(v) for v in (1e-6, 0.9, 0.1, 0.9, 1e-6))


HAND = {(name, par): k for name, fn in (("rmsprop", _hand_rmsprop), ("rmsprop+momentum", _hand_momentum),
                                        ("centered", _hand_centered))
        for par, k in serial_and_parallel(fn, error_model="numpy").items()}
# (stepper, its options): the update of each row of the table
VARIANTS = {"rmsprop": (fastrms.RMSProp, {}), "rmsprop+momentum": (fastrms.RMSProp, {"momentum": 0.9}),
            "centered": (fastrms.RMSProp, {"centered": True}), "adam": (fastrms.Adam, {})}
STREAMS = {"rmsprop": 5, "rmsprop+momentum": 7, "centered": 7, "adam": 7}
ADAM = {"lr": 1e-6, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8}


def _hand_adam(x, g, m, v, lr_t, b1, omb1, b2, omb2, c2, eps):  # pragma: no cover - compiled
    """Adam as a user writes it by hand, with the step's bias corrections in lr_t = η/(1 − β1ᵗ)
    and c2 = √(1 − β2ᵗ), computed in Python each step (HandAdam)."""
    for i in prange(x.size):
        mi = b1 * m[i] + omb1 * g[i]
        vi = b2 * v[i] + omb2 * g[i] * g[i]
        m[i] = mi
        v[i] = vi
        x[i] -= lr_t * mi / (np.sqrt(vi) / c2 + eps)


HAND_ADAM = serial_and_parallel(_hand_adam, error_model="numpy")


class HandAdam:
    """A hand-written Adam loop's step: t counted, the bias corrections computed in Python and cast to
    x's dtype (a float64 scalar would run a float32 loop in float64), then the @njit kernel."""

    def __init__(self, n, dtype, parallel):
        self.m, self.v, self.t, self.dtype = np.zeros(n, dtype), np.zeros(n, dtype), 0, dtype
        self.kernel = HAND_ADAM[parallel]
        d, a = dtype, ADAM
        self.constants = (d(a["beta1"]), d(1 - a["beta1"]), d(a["beta2"]), d(1 - a["beta2"]))
        self.eps = d(a["eps"])

    def __call__(self, x, g):
        self.t += 1
        a, d = ADAM, self.dtype
        lr_t = d(a["lr"] / (1 - a["beta1"] ** self.t))
        c2 = d(math.sqrt(1 - a["beta2"] ** self.t))
        self.kernel(x, g, self.m, self.v, lr_t, *self.constants, c2, self.eps)


class NumpyUpdate:
    """The update written in NumPy as a careful user would: in place, ``out=`` everywhere, the
    temporaries allocated once."""

    def __init__(self, n, dtype, variant):
        self.variant, self.dtype, self.t = variant, dtype, 0
        self.s, self.m, self.b = (np.zeros(n, dtype) for _ in range(3))
        self.t1, self.t2 = np.empty(n, dtype), np.empty(n, dtype)
        self.lr, self.gamma, self.eps = dtype(1e-6), dtype(0.9), dtype(1e-6)

    def __call__(self, x, g):
        if self.variant == "adam":
            return self._adam(x, g)
        s, m, b, t1, t2, gamma = self.s, self.m, self.b, self.t1, self.t2, self.gamma
        np.multiply(g, g, out=t1)
        t1 *= 1 - gamma
        s *= gamma
        s += t1
        v = s
        if self.variant == "centered":
            m *= gamma
            np.multiply(g, 1 - gamma, out=t1)
            m += t1
            np.multiply(m, m, out=t1)
            np.subtract(s, t1, out=t1)
            v = t1
        np.add(v, self.eps, out=t2)
        np.sqrt(t2, out=t2)
        np.divide(g, t2, out=t2)
        if self.variant == "rmsprop+momentum":
            b *= 0.9
            b += t2
            t2 = b
        np.multiply(t2, self.lr, out=t1)
        x -= t1

    def _adam(self, x, g):
        m, v, t1, t2, d, a = self.m, self.s, self.t1, self.t2, self.dtype, ADAM
        self.t += 1
        m *= d(a["beta1"])
        np.multiply(g, d(1 - a["beta1"]), out=t1)
        m += t1
        v *= d(a["beta2"])
        np.multiply(g, g, out=t1)
        t1 *= d(1 - a["beta2"])
        v += t1
        np.sqrt(v, out=t2)
        t2 *= d(1 / math.sqrt(1 - a["beta2"] ** self.t))
        t2 += d(a["eps"])
        np.divide(m, t2, out=t2)
        t2 *= d(a["lr"] / (1 - a["beta1"] ** self.t))
        x -= t2


def bench_kernels(sizes, reps):
    """Per (dtype, n, variant): fastrms's fused step, a kernel with the same memory traffic (the
    limit), NumPy with out= and torch foreach take turns, round by round; medians with min-max."""
    rows = []
    for dtype in (np.float64, np.float32):
        for n in sizes:
            rng = np.random.default_rng(0)
            x = rng.standard_normal(n).astype(dtype)
            g = rng.standard_normal(n).astype(dtype)
            item = x.itemsize
            for name, (stepper, opts) in VARIANTS.items():
                adam = stepper is fastrms.Adam
                opt = stepper(x, **(ADAM if adam else {"lr": 1e-6}), **opts)
                k = STREAMS[name]
                parallel = cpu.use_parallel(n, item)
                limit = LIMIT[(k, parallel)]
                ls, lb, c = np.zeros_like(x), np.zeros_like(x), dtype(1e-9)
                if adam:
                    hand_adam = HandAdam(n, dtype, parallel)
                    hand = lambda: hand_adam(x, g)  # noqa: E731
                else:
                    kernel, hp = HAND[(name, parallel)], hand_constants(dtype)
                    hs, hb = np.zeros_like(x), np.zeros_like(x)
                    hand = lambda: kernel(x, g, hs, hb, *hp)  # noqa: E731
                cands = {"fused": lambda: opt.step(g),
                         "limit": (lambda: limit(x, g, ls, c)) if k == 5 else (lambda: limit(x, g, ls, lb, c)),
                         "hand": hand}
                if n <= 50_000_000:
                    npu = NumpyUpdate(n, dtype, name)
                    cands["numpy"] = lambda: npu(x, g)
                torch = _torch()
                if torch is not None:
                    p = torch.nn.Parameter(torch.from_numpy(x.copy()))
                    p.grad = torch.from_numpy(g)
                    if adam:
                        cands["torch"] = torch.optim.Adam([p], lr=ADAM["lr"], betas=(ADAM["beta1"], ADAM["beta2"]),
                                                          eps=ADAM["eps"], foreach=True).step
                    else:
                        kw = {"momentum": 0.9} if name == "rmsprop+momentum" else {}
                        cands["torch"] = torch.optim.RMSprop([p], lr=1e-6, alpha=0.9, eps=1e-6, foreach=True,
                                                             centered=name == "centered", **kw).step
                # small sizes repeat inside one timing; each starts with its own arrays in cache
                times = in_turns(cands, reps, inner=max(1, min(50, 2_000_000 // n)), settle=1, settle_s=0.01)
                med = {c_: statistics.median(v) for c_, v in times.items()}
                row = {"dtype": np.dtype(dtype).name, "n": n, "variant": name, "streams": k,
                       "fused_s": med["fused"], "fused_min_s": min(times["fused"]),
                       "fused_max_s": max(times["fused"]), "limit_s": med["limit"], "hand_s": med["hand"],
                       "fused_GBps": k * n * item / med["fused"] / 1e9,
                       "limit_GBps": k * n * item / med["limit"] / 1e9}
                for c_ in ("numpy", "torch"):
                    if c_ in med:
                        row[f"{c_}_s"] = med[c_]
                rows.append(row)
                print(f"  kernel {row['dtype']:7} n={n:>10,} {name:17} {med['fused'] * 1e3:9.3f} ms "
                      f"{row['fused_GBps']:6.1f} GB/s (same traffic {row['limit_GBps']:5.1f})", flush=True)
    return rows


def bench_threshold(reps):
    """Serial vs parallel kernel around the threshold, and which one fastrms picks (this layer)."""
    rows = []
    config = configure("rmsprop", {})
    for dtype in (np.float64, np.float32):
        for n in (1_000, 4_000, 8_192, 16_000, 24_576, 32_000, 49_152, 64_000, 256_000, 1_000_000):
            x = np.ones(n, dtype)
            g = np.full(n, 0.1, dtype)
            e = MethodState(config, n, x.dtype)
            h = e.coefficients()
            out = {"dtype": np.dtype(dtype).name, "n": n, "picks_parallel": cpu.use_parallel(n, x.itemsize)}
            for parallel in (False, True):
                k = e.kernels.variant(checked=False, parallel=parallel)
                out["parallel_s" if parallel else "serial_s"], _ = best(lambda: k(x, g, e.S, h), reps * 4)
            rows.append(out)
    return rows


ROWS_SHAPES = ((4_000, 8), (1_000, 32), (12_500, 8), (3_125, 32), (100, 1_000), (125_000, 8), (31_250, 32),
               (1_000, 1_000), (10, 100_000))


def bench_rows_threshold(reps):
    """Serial vs parallel rows kernel (a batch of B problems of n elements, each its own η: the
    in-place kernel of a batched stepper), in turns, and which one fastrms picks."""
    rows = []
    for B, n in ROWS_SHAPES:
        opt = fastrms.RMSProp(np.ones((B, n)), lr=np.linspace(1e-3, 1e-2, B))
        e, x, g = opt._mstate, opt._flat, np.full(B * n, 0.1)
        active = np.ones(B, np.bool_)
        H = e.row_coefficients(g, active)
        kernels = {par: e.kernels.variant(checked=False, parallel=par, batched=True) for par in (False, True)}
        times = in_turns({par: (lambda k=k: k(x, g, e.S, H, active)) for par, k in kernels.items()},
                         rounds=reps, inner=max(1, 200_000 // (B * n)), settle=3)
        rows.append({"B": B, "n": n, "picks_parallel": cpu.use_parallel(B * n, 8),
                     "serial_s": statistics.median(times[False]), "parallel_s": statistics.median(times[True])})
    return rows


# -- whole solves ---------------------------------------------------------------

from bench.ax import jit_dF, jit_F, jit_residual  # noqa: E402,F401 - the whole solves' jitted F and dF


def _subprocess_seconds(code, env):
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def bench_overheads():
    root = str(HERE.parent)
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": root}
        imp = "import time; t = time.perf_counter(); import fastrms; print(time.perf_counter() - t)"
        t_import = min(_subprocess_seconds(imp, env) for _ in range(3))
        Path(cache, "userfuns.py").write_text(textwrap.dedent('''
            import numpy as np
            from numba import njit
            @njit(cache=True)
            def F(X, A):
                R = A @ X - np.eye(A.shape[0])
                return np.sum(R * R)
            @njit(cache=True)
            def dF(X, A):
                return 2.0 * (A.T @ (A @ X - np.eye(A.shape[0])))
        '''))
        env["PYTHONPATH"] = os.pathsep.join([root, cache])
        first = textwrap.dedent('''
            import time, numpy as np, fastrms
            from fastrms.experiments import A_SEED, ax_loss, ax_grad
            import userfuns
            {warm}
            t = time.perf_counter()
            fastrms.minimize({F}, {dF}, np.zeros((5, 5)), args=(A_SEED,), options={{'maxiter': 300}})
            print(time.perf_counter() - t)
        ''')
        warm = "userfuns.F(np.zeros((5, 5)), A_SEED); userfuns.dF(np.zeros((5, 5)), A_SEED)"
        res = {"import_s": t_import}
        for label, F, dF, w in (("python_loop", "ax_loss", "ax_grad", ""),
                                ("compiled", "userfuns.F", "userfuns.dF", warm)):
            code = first.format(F=F, dF=dF, warm=w)
            res[f"{label}_first_process_s"] = _subprocess_seconds(code, env)
            res[f"{label}_second_process_s"] = min(_subprocess_seconds(code, env) for _ in range(2))
    print(f"  import {t_import:.3f} s; first call (compile) python loop "
          f"{res['python_loop_first_process_s']:.3f} s, compiled {res['compiled_first_process_s']:.3f} s; "
          f"second process {res['python_loop_second_process_s']:.3f} / {res['compiled_second_process_s']:.3f} s")
    return res


# -- report ---------------------------------------------------------------------

def threshold_table(results) -> list[str]:
    lines = [f"### Serial vs parallel kernel (µs per step, rmsprop; threading layer "
             f"{results.get('layer', '?')})", ""]
    return lines + table("dtype | n | serial | parallel | parallel ÷ serial | fastrms picks", "lrrrrl",
                         ([r.get("dtype", "float64"), f"{r['n']:,}", f"{r['serial_s'] * 1e6:.1f}",
                           f"{r['parallel_s'] * 1e6:.1f}", f"{r['parallel_s'] / r['serial_s']:.2f}",
                           ("parallel" if r["picks_parallel"] else "serial") if "picks_parallel" in r else "-"]
                          for r in results["threshold"]))


def rows_threshold_table(results) -> list[str]:
    lines = [f"### Serial vs parallel rows kernel (µs per step, rmsprop, float64, B problems of n elements "
             f"with their own η; threading layer {results.get('layer', '?')})", ""]
    return lines + table("B | n | B·n | serial | parallel | parallel ÷ serial | fastrms picks", "rrrrrrl",
                         ([f"{r['B']:,}", f"{r['n']:,}", f"{r['B'] * r['n']:,}", f"{r['serial_s'] * 1e6:.1f}",
                           f"{r['parallel_s'] * 1e6:.1f}", f"{r['parallel_s'] / r['serial_s']:.2f}",
                           "parallel" if r["picks_parallel"] else "serial"] for r in results["threshold_rows"]))


def kernel_markdown(rows) -> str:
    lines = ["### Update kernels (time per step; candidates in turn, round by round; bandwidth counts the "
             "5 streams rmsprop reads and writes, 7 with m or b)", ""]
    lines += table("dtype | n | variant | fused ms (median) | min–max | GB/s | same-traffic kernel GB/s | "
                   "fused ÷ same-traffic (time) | fused ÷ hand-written @njit | NumPy out= ÷ fused | torch ÷ fused",
                   "lrlrrrrrrrr",
                   ([r["dtype"], f"{r['n']:,}", r["variant"], f"{r['fused_s'] * 1e3:.4f}",
                     f"{r['fused_min_s'] * 1e3:.4f}–{r['fused_max_s'] * 1e3:.4f}", f"{r['fused_GBps']:.1f}",
                     f"{r['limit_GBps']:.1f}", f"{r['fused_s'] / r['limit_s']:.2f}",
                     f"{r['fused_s'] / r['hand_s']:.2f}" if "hand_s" in r else "-",
                     ratio(r, "numpy_s", "fused_s"), ratio(r, "torch_s", "fused_s")] for r in rows))
    return "\n".join(lines)


def _heading(results) -> str:
    return (f"fastrms benchmark, {results['date']}, {results['cores']} cores, numba {numba.__version__}, "
            f"{results['threads']} threads" + (f", torch {t.__version__}" if (t := _torch()) else ", no torch"))


def markdown(results):
    lines = [_heading(results), "", kernel_markdown(results["kernels"])]
    from bench import solves

    lines += ["", solves.markdown(results["solves"])]
    o = results["overheads"]
    lines += ["", "### Overheads (s)", ""]
    lines += table("import fastrms | first call, Python loop | first call, compiled | "
                   "second process, Python loop | second process, compiled", "rrrrr",
                   [[f"{o[k]:.3f}" for k in ("import_s", "python_loop_first_process_s", "compiled_first_process_s",
                                            "python_loop_second_process_s", "compiled_second_process_s")]])
    lines += ["", *threshold_table(results)]
    if results.get("threshold_rows"):
        lines += ["", *rows_threshold_table(results)]
    if results.get("batched"):
        from bench import batched

        lines += ["", batched.markdown(results["batched"])]
    return "\n".join(lines)


def plot(results, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("  (no matplotlib: skipping the plot; pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, dtype in zip(axes, ("float64", "float32"), strict=True):
        rows = [r for r in results["kernels"] if r["dtype"] == dtype]
        for variant in VARIANTS:
            rr = [r for r in rows if r["variant"] == variant]
            ax.plot([r["n"] for r in rr], [r["fused_GBps"] for r in rr], "o-", label=f"fused {variant}")
        rr = [r for r in rows if r["variant"] == "rmsprop"]
        ax.plot([r["n"] for r in rr], [r["limit_GBps"] for r in rr], "k--", label="same-traffic kernel")
        ax.set_xscale("log")
        ax.set_xlabel("n")
        ax.set_title(dtype)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("effective bandwidth (GB/s)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--gpu", action="store_true", help="also the GPU benchmark (bench/gpu.py)")
    ap.add_argument("--gpu-only", action="store_true", help="only the GPU benchmark (bench/gpu.py)")
    ap.add_argument("--batched", action="store_true", help="only the batched-solve benchmark (bench/batched.py)")
    ap.add_argument("--many", action="store_true", help="only the many-arrays benchmark (bench/many_arrays.py)")
    ap.add_argument("--solves", action="store_true",
                    help="only the whole solves, each candidate in a fresh process (bench/solves.py)")
    ap.add_argument("--dask", action="store_true", help="only the Dask benchmark (bench/dask_bench.py)")
    ap.add_argument("--kernels", action="store_true", help="only the update-kernel table")
    ap.add_argument("--threshold", action="store_true",
                    help="only the serial/parallel tables (one problem's kernel and the rows kernel)")
    ap.add_argument("--in-place", action="store_true", help="only minimize in place (bench/in_place.py)")
    ap.add_argument("--startup", action="store_true",
                    help="only a script's start: imports and first call, each in a fresh process (bench/startup.py)")
    args = ap.parse_args(argv)
    alone = {  # flag: (module, what it prints first, keyword arguments of its run())
        "gpu_only": ("gpu", "GPU", {}),
        "solves": ("solves", "whole solves, each candidate in a fresh process",
                   {"sizes": (5, 100, 200)} if args.quick else {}),
        "many": ("many_arrays", "many arrays", {}),
        "dask": ("dask_bench", "fastrms on Dask", {}),
        "batched": ("batched", "batched solves", {}),
        "in_place": ("in_place", "minimize in place", {}),
        "startup": ("startup", "a script's start, each candidate in a fresh process", {}),
    }
    for flag, (module, label, kwargs) in alone.items():
        if getattr(args, flag):
            part = importlib.import_module(f"bench.{module}")
            print(f"{label} ...")
            print(part.markdown(part.run(**kwargs)))
            return
    sizes = [1_000, 100_000, 1_000_000] if args.quick else [1_000, 10_000, 100_000, 1_000_000,
                                                             10_000_000, 50_000_000]
    reps = 3 if args.quick else 7
    results = {"date": time.strftime("%Y-%m-%d %H:%M"), "cores": os.cpu_count(),
               "threads": numba.get_num_threads()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():  # after each part: a run cut short (a time limit, Ctrl-C) keeps what it measured
        (out / "bench.json").write_text(json.dumps(results, indent=1))

    if args.gpu:  # first: on a lent GPU machine the device time is what runs out
        from bench import gpu

        print("GPU ...")
        results["gpu"] = gpu.run()
        save()
    if args.threshold:
        print("serial/parallel threshold ...")
        results["threshold"], results["threshold_rows"] = bench_threshold(reps), bench_rows_threshold(reps)
        results["layer"] = numba.threading_layer()
        print("", *threshold_table(results), "", *rows_threshold_table(results), sep="\n")
        return
    print("kernels ...")
    results["kernels"] = bench_kernels(sizes, reps)
    save()
    if args.kernels:
        print(f"\n{_heading(results)}\n\n{kernel_markdown(results['kernels'])}")
        return
    print("serial/parallel threshold ...")
    results["threshold"] = bench_threshold(reps)
    results["threshold_rows"] = bench_rows_threshold(reps)
    results["layer"] = numba.threading_layer()
    save()
    print("whole solves, each candidate in a fresh process ...")
    from bench import solves

    results["solves"] = solves.run(sizes=(5, 100, 200) if args.quick else (5, 100, 200, 500, 1000),
                                   rounds=2 if args.quick else 3)
    save()
    print("overheads ...")
    results["overheads"] = bench_overheads()
    save()
    print("batched solves ...")
    from bench import batched

    results["batched"] = batched.run(3 if args.quick else 5)
    save()
    plot(results, out / "bandwidth.png")
    text = markdown(results)
    if results.get("gpu"):
        from bench import gpu

        text += "\n\n" + gpu.markdown(results["gpu"])
    (out / "bench.md").write_text(text + "\n")
    print()
    print(text)

if __name__ == "__main__":
    main()
