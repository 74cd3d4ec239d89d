"""GPU benchmark: ``python -m bench --gpu`` (needs a CUDA GPU, numba-cuda, CuPy; torch optional).

Side by side in one run, per step, at n = 1e6 ... 2e8, float32 and float64:
- fastrms's fused RMSProp kernel (5 streams; 7 with momentum),
- a device-to-device copy of the same bytes (the roofline: 2 streams),
- a CuPy ElementwiseKernel doing the same update (one fused kernel, CuPy's codegen),
- torch.optim.RMSprop(foreach=True) on the same GPU, when torch is installed;
batched Adam steppers (one set of hyperparameters, η per problem, a grid of η × β1, a random
search, one flat stepper); 100 parameter tensors (a stepper each, one over them packed, torch
foreach); and an end-to-end AX = I solve with n = 4096 whose F and dF use CuPy matmuls.
"""

from __future__ import annotations

import time

import numpy as np

from bench.report import in_turns, ratio, table

STREAMS = {"rmsprop": 5, "rmsprop+momentum": 7}


def _events(cuda):
    return cuda.event(timing=True), cuda.event(timing=True)


def _time(cuda, fn, reps=20):
    """Median device time of fn() in seconds, by CUDA events."""
    fn()
    cuda.synchronize()
    times = []
    for _ in range(reps):
        start, stop = _events(cuda)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cuda.event_elapsed_time(start, stop) / 1e3)
    return float(np.median(times))


def run(sizes=(100_000, 1_000_000, 10_000_000, 100_000_000, 200_000_000)):
    from numba import cuda

    import fastrms

    if not fastrms.cuda_available():
        print("no usable CUDA GPU: skipping the GPU benchmark")
        return None
    import cupy

    try:
        import torch
    except ImportError:
        torch = None
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else dev.name
    update = cupy.ElementwiseKernel(
        "T g, T lr, T gamma, T w, T eps", "T x, T s",
        "s = gamma * s + w * g * g; x = x - lr * g / sqrt(s + eps);", "rms_update")
    rows = []
    for dtype in (np.float32, np.float64):
        for n in sizes:
            x = cupy.random.standard_normal(n).astype(dtype)
            g = cupy.random.standard_normal(n).astype(dtype)
            s = cupy.zeros(n, dtype)
            y = cupy.empty_like(x)
            item = x.itemsize
            t_copy = _time(cuda, lambda: y.__setitem__(Ellipsis, x))
            for variant, opts in (("rmsprop", {}), ("rmsprop+momentum", {"momentum": 0.9})):
                opt = fastrms.RMSProp(x, lr=1e-6, **opts)
                t_fused = _time(cuda, lambda: opt.step(g))
                row = {"gpu": name, "dtype": np.dtype(dtype).name, "n": n, "variant": variant,
                       "fused_s": t_fused, "copy_s": t_copy,
                       "fused_GBps": STREAMS[variant] * n * item / t_fused / 1e9,
                       "copy_GBps": 2 * n * item / t_copy / 1e9}
                if variant == "rmsprop":
                    c = [dtype(v) for v in (1e-6, 0.9, 0.1, 1e-6)]
                    row["cupy_s"] = _time(cuda, lambda: update(g, *c, x, s))
                if torch is not None:
                    p = torch.nn.Parameter(torch.as_tensor(x, device="cuda").clone())
                    p.grad = torch.as_tensor(g, device="cuda")
                    topt = torch.optim.RMSprop([p], lr=1e-6, alpha=0.9, eps=1e-6, foreach=True, **opts)
                    row["torch_s"] = _time(cuda, topt.step)
                rows.append(row)
                print(f"  {name} {row['dtype']} n={n:>11,} {variant:17} {t_fused * 1e3:8.3f} ms "
                      f"{row['fused_GBps']:7.1f} GB/s  (copy {row['copy_GBps']:7.1f} GB/s)", flush=True)
            x = g = s = y = opt = p = topt = None  # free the device memory before the next size
            _release(cupy, torch)
    return {"kernels": rows, "host": host_overhead(cupy, torch), "batched": batched_steps(cupy),
            "many": many_tensors(torch), "solve": solve_ax(cupy)}


def _release(cupy, torch):
    """Hand every freed block back to the device: CuPy's pool, numba-cuda's deferred
    deallocations and torch's caching allocator each keep what they freed, and a 200M-element
    float64 row needs ~13 GB at once (a full ``--gpu`` run once ran out of memory there)."""
    import gc

    from numba import cuda

    gc.collect()
    cuda.current_context().deallocations.clear()
    cupy.get_default_memory_pool().free_all_blocks()
    if torch is not None:
        torch.cuda.empty_cache()
    free, total = cuda.current_context().get_memory_info()
    print(f"  device memory free after the size: {free / 2**30:.1f} of {total / 2**30:.1f} GiB", flush=True)


def host_overhead(cupy, torch, sizes=(1_000, 100_000), steps=2000, rounds=5):
    """Wall time per step of a loop of steps (what a small model's training loop sees), float32:
    fastrms's stepper fed CuPy arrays, and a torch nn.Parameter's .grad; the same compiled kernel
    launched the ordinary numba-cuda way; a CuPy ElementwiseKernel; torch.optim.RMSprop(foreach).
    Candidates take turns round by round; medians with min-max."""
    from numba import cuda

    import fastrms
    from fastrms.kernels import cuda as fcuda

    update = cupy.ElementwiseKernel(
        "T g, T lr, T gamma, T w, T eps", "T x, T s",
        "s = gamma * s + w * g * g; x = x - lr * g / sqrt(s + eps);", "rms_update_host")
    out = []
    for n in sizes:
        x, g, s = cupy.zeros(n, cupy.float32), cupy.ones(n, cupy.float32), cupy.zeros(n, cupy.float32)
        opt = fastrms.RMSProp(x, lr=1e-6)
        e, gd = opt._mstate, opt._backend.as_gradient(g, opt._shaped)
        kernel, config = e.kernels.get(fcuda._step), fcuda.launch_config(n)
        c = [cupy.float32(v) for v in (1e-6, 0.9, 0.1, 1e-6)]
        cands = {"fastrms (CuPy g)": lambda: opt.step(g),
                 "numba-cuda launch of the same kernel": lambda: kernel[config](
                     opt._flat, gd, e.S, tuple(e.coefficients(gd))),
                 "CuPy ElementwiseKernel": lambda: update(g, *c, x, s)}
        if torch is not None:
            p = torch.nn.Parameter(torch.zeros(n, device="cuda"))
            p.grad = torch.ones(n, device="cuda")
            topt, popt = torch.optim.RMSprop([p], lr=1e-6, foreach=True), fastrms.RMSProp(p, lr=1e-6)
            cands["fastrms (torch p.grad)"] = lambda: popt.step(p.grad)
            cands["torch.optim.RMSprop(foreach)"] = topt.step
        times = in_turns(cands, rounds, inner=steps, sync=cuda.synchronize)
        for name, ts in times.items():
            out.append({"n": n, "candidate": name, "us": float(np.median(ts)) * 1e6,
                        "min_us": min(ts) * 1e6, "max_us": max(ts) * 1e6})
            print(f"  n={n:>7,} {name:38} {out[-1]['us']:8.1f} µs per step", flush=True)
    return out


def batched_steps(cupy, shapes=((10_000, 8), (100, 1_000)), steps=500, rounds=5):
    """Wall time per step of batched Adam steppers (B problems of n, float64, CuPy g): one set of
    hyperparameters (its varying h crosses to the device as one row), η per problem (the powers of
    t computed on the host, each row finished on the device), a grid of η × β1 (√B groups of equal
    β1: each group's powers computed on the host and sent, each row finished on the device), a
    random search of β1 (groups of one), and one flat Adam stepper over the same B·n elements (the floor: one launch, no rows).  Candidates
    take turns round by round; medians with min-max."""
    from numba import cuda

    import fastrms

    out = []
    for B, n in shapes:
        g = cupy.ones((B, n))
        shared = fastrms.Adam(cupy.zeros((B, n)), lr=1e-6, batched=True)
        swept = fastrms.Adam(cupy.zeros((B, n)), lr=cupy.asnumpy(cupy.linspace(1e-6, 1e-5, B)))
        side = int(round(B ** 0.5))
        etas, betas = np.meshgrid(np.geomspace(1e-6, 1e-5, side), np.linspace(0.5, 0.95, B // side))
        grid = fastrms.Adam(cupy.zeros((B, n)), lr=etas.ravel(), beta1=betas.ravel())
        search = fastrms.Adam(cupy.zeros((B, n)), lr=etas.ravel(),
                              beta1=np.random.default_rng(0).uniform(0.5, 0.95, B))
        flat, gf = fastrms.Adam(cupy.zeros(B * n), lr=1e-6), g.reshape(-1)
        cands = {"batched, shared hyperparameters": lambda: shared.step(g),
                 "batched, η per problem": lambda: swept.step(g),
                 "batched, a grid of η × β1": lambda: grid.step(g),
                 "batched, a random β1 per problem": lambda: search.step(g),
                 "one flat stepper over B·n": lambda: flat.step(gf)}
        times = in_turns(cands, rounds, inner=steps, sync=cuda.synchronize)
        for name, ts in times.items():
            out.append({"B": B, "n": n, "candidate": name, "us": float(np.median(ts)) * 1e6,
                        "min_us": min(ts) * 1e6, "max_us": max(ts) * 1e6})
            print(f"  B={B:>6,} n={n:>5,} {name:34} {out[-1]['us']:8.1f} µs per step", flush=True)
    return out


def many_tensors(torch, steps=200, rounds=5):
    """A model's many parameter tensors on the GPU (bench/many_arrays.py's 100 arrays of 1e2 to
    1e5, float32), wall time per RMSProp step: one fastrms stepper per tensor, one over the
    tensors packed by ``fastrms.pack`` (one launch), and ``torch.optim.RMSprop(foreach=True)``.
    Candidates take turns round by round; medians with min-max.  None without torch."""
    if torch is None:
        return None
    from numba import cuda

    import fastrms
    from bench.many_arrays import arrays

    xs, gs = arrays()
    ps = [torch.nn.Parameter(torch.as_tensor(x, dtype=torch.float32, device="cuda")) for x in xs]
    for p, g in zip(ps, gs, strict=True):
        p.grad = torch.as_tensor(g, dtype=torch.float32, device="cuda")
    each = [fastrms.RMSProp(p, lr=1e-6) for p in ps]
    flat, _ = fastrms.pack([p.detach().clone() for p in ps])
    gflat, _ = fastrms.pack([p.grad for p in ps])
    packed, topt = fastrms.RMSProp(flat, lr=1e-6), torch.optim.RMSprop(ps, lr=1e-6, foreach=True)

    def one_per_tensor():
        for opt, p in zip(each, ps, strict=True):
            opt.step(p.grad)

    cands = {"one fastrms stepper per tensor": one_per_tensor, "fastrms over the packed buffer":
             lambda: packed.step(gflat), "torch.optim.RMSprop(foreach)": topt.step}
    times = in_turns(cands, rounds, inner=steps, sync=cuda.synchronize)
    out = []
    for name, ts in times.items():
        out.append({"candidate": name, "us": float(np.median(ts)) * 1e6, "min_us": min(ts) * 1e6,
                    "max_us": max(ts) * 1e6, "elements": int(flat.numel())})
        print(f"  100 tensors {name:34} {out[-1]['us']:8.1f} µs per step", flush=True)
    return out


def solve_ax(cupy, n=4096, steps=100):
    import fastrms

    rng = cupy.random.default_rng(0)
    A = cupy.eye(n) + rng.standard_normal((n, n), dtype=cupy.float32) / (2 * n ** 0.5)
    A = A.astype(cupy.float32)
    eye = cupy.eye(n, dtype=cupy.float32)

    def F(X):
        R = A @ X - eye
        return float((R * R).sum())

    def dF(X):
        return 2 * (A.T @ (A @ X - eye))

    X0 = cupy.zeros((n, n), cupy.float32)
    opts = {"lr": 1e-3, "maxiter": steps, "gtol": 0, "check_every": 10}
    fastrms.minimize(F, dF, X0, options={**opts, "maxiter": 2})
    cupy.cuda.Device().synchronize()
    t = time.perf_counter()
    res = fastrms.minimize(F, dF, X0, options=opts)
    cupy.cuda.Device().synchronize()
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        dF(X0)
    cupy.cuda.Device().synchronize()
    t_grad = time.perf_counter() - t
    print(f"  AX=I n={n}, {steps} steps on the GPU: fastrms {t_fast:.3f} s, the gradients alone {t_grad:.3f} s")
    return {"n": n, "steps": steps, "fastrms_s": t_fast, "gradients_only_s": t_grad, "final_loss": res.fun}


def markdown(res) -> str:
    if not res:
        return ""
    lines = ["### GPU update kernels (device time per step)", ""]
    lines += table("GPU | dtype | n | variant | fused ms | GB/s | copy GB/s | fused/copy BW | CuPy ÷ fused | "
                   "torch ÷ fused", "llrlrrrrrr",
                   ([r["gpu"], r["dtype"], f"{r['n']:,}", r["variant"], f"{r['fused_s'] * 1e3:.3f}",
                     f"{r['fused_GBps']:.0f}", f"{r['copy_GBps']:.0f}", f"{r['fused_GBps'] / r['copy_GBps']:.2f}",
                     ratio(r, "cupy_s", "fused_s", 2), ratio(r, "torch_s", "fused_s")] for r in res["kernels"]))
    if res.get("host"):
        lines += ["", "### GPU: wall time per step in a loop of 2,000 steps (float32; host overhead at small n)", ""]
        base = {r["n"]: r["us"] for r in res["host"] if r["candidate"] == "fastrms (CuPy g)"}
        lines += table("n | candidate | µs per step (median) | min–max | ÷ fastrms (CuPy g)", "rlrrr",
                       ([f"{r['n']:,}", r["candidate"], f"{r['us']:.1f}", f"{r['min_us']:.1f}–{r['max_us']:.1f}",
                         f"{r['us'] / base[r['n']]:.2f}"] for r in res["host"]))
    if res.get("batched"):
        lines += ["", "### GPU: batched Adam steppers, wall time per step (float64, CuPy g)", ""]
        lines += table("B | n | candidate | µs per step (median) | min–max", "rrlrr",
                       ([f"{r['B']:,}", f"{r['n']:,}", r["candidate"], f"{r['us']:.1f}",
                         f"{r['min_us']:.1f}–{r['max_us']:.1f}"] for r in res["batched"]))
    if res.get("many"):
        n = res["many"][0]["elements"]
        lines += ["", f"### GPU: 100 parameter tensors ({n:,} float32 elements), wall time per RMSProp step", ""]
        lines += table("candidate | µs per step (median) | min–max", "lrr",
                       ([r["candidate"], f"{r['us']:.1f}", f"{r['min_us']:.1f}–{r['max_us']:.1f}"]
                        for r in res["many"]))
    s = res["solve"]
    lines += ["", f"AX = I, n = {s['n']}, {s['steps']} steps with CuPy matmuls: fastrms {s['fastrms_s']:.3f} s, "
              f"the gradients alone {s['gradients_only_s']:.3f} s."]
    return "\n".join(lines)
