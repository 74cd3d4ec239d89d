"""Many parameter arrays, side by side in one run (``python -m bench --many``).

100 float64 arrays of 1e2 to 1e5 elements (log-spaced; every other one 2-D), one RMSProp step
each, fresh gradients held fixed.  Candidates take turns round by round (15 rounds: with 7, the
list-to-flat ratio moved by 0.15 between runs on a busy machine); each is timed over ``steps``
steps per round; medians with min-max:
- fastrms's stepper over the list (one fused kernel over all arrays, in place),
- a hand-written @njit loop over one flat buffer of the same size (the ``fastrms.pack`` form,
  the limit for this traffic; parallel where fastrms's size rule runs its parallel kernel),
- fastrms's stepper over that flat buffer,
- one fastrms stepper per array (what 0.1 offered),
- ``torch.optim.RMSprop(foreach=True)`` over the same 100 tensors (when torch is installed),
- fastrms's stepper over those tensors themselves, stepped with their ``.grad`` (a CPU torch
  model's loop: the tensors' NumPy views, made every step for the gradients).

The same candidates then step a small model, an MLP 5-64-1 on the airfoil's 5 features (4 arrays,
449 elements), where a step's fixed Python cost is what the candidates differ by.
"""

from __future__ import annotations

import numpy as np
from numba import prange

import fastrms
from bench.report import in_turns, serial_and_parallel
from fastrms.kernels import cpu

LR, GAMMA, EPS = 0.01, 0.9, 1e-6


def _flat_rmsprop(x, g, s, lr, gamma, eps):  # pragma: no cover - compiled
    for i in prange(x.size):
        s[i] = gamma * s[i] + (1 - gamma) * g[i] * g[i]
        x[i] -= lr * g[i] / (np.sqrt(s[i]) + eps)


FLAT_RMSPROP = serial_and_parallel(_flat_rmsprop)  # (picked by fastrms's size rule, as its own kernel)


def arrays(count=100, seed=0):
    rng = np.random.default_rng(seed)
    sizes = np.logspace(2, 5, count).astype(int)
    shapes = [(int(m) // 10, 10) if j % 2 else (int(m),) for j, m in enumerate(sizes)]
    return [rng.normal(size=s) for s in shapes], [rng.normal(size=s) for s in shapes]


SMALL_MODEL = [(5, 64), (64,), (64, 1), (1,)]  # W1, b1, W2, b2 of an MLP on the airfoil's 5 features


def small_model(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s) for s in SMALL_MODEL], [rng.normal(size=s) for s in SMALL_MODEL]


def run(rounds=15, steps=20):
    return {"models": [run_model("100 float64 arrays", *arrays(), rounds, steps),
                       run_model("a small model: an MLP 5-64-1 (4 float64 arrays)", *small_model(), rounds,
                                 steps * 50)]}


def run_model(what: str, xs, gs, rounds: int, steps: int) -> dict:
    """The candidates over the arrays xs with gradients gs, in turns."""
    n = sum(a.size for a in xs)
    flat_x, _ = fastrms.pack(xs)
    flat_g, _ = fastrms.pack(gs)
    flat_s = np.zeros_like(flat_x)
    flat_loop = FLAT_RMSPROP[cpu.use_parallel(n, flat_x.itemsize)]
    opts = dict(lr=LR, gamma=GAMMA, eps=EPS, eps_in_sqrt=False)
    many = fastrms.RMSProp([a.copy() for a in xs], **opts)
    flat = fastrms.RMSProp(flat_x.copy(), **opts)
    per_array = [fastrms.RMSProp(a.copy(), **opts) for a in xs]
    cands = {
        "fastrms over the list (one fused kernel)": lambda: many.step(gs),
        "hand-written @njit flat loop": lambda: flat_loop(flat_x, flat_g, flat_s, LR, GAMMA, EPS),
        "fastrms over one flat buffer (fastrms.pack)": lambda: flat.step(flat_g),
        "one fastrms stepper per array": lambda: [o.step(g) for o, g in zip(per_array, gs, strict=True)],
    }
    try:
        import torch

        params = [torch.nn.Parameter(torch.as_tensor(a.copy())) for a in xs]
        for p, g in zip(params, gs, strict=True):
            p.grad = torch.as_tensor(g)
        topt = torch.optim.RMSprop(params, lr=LR, alpha=GAMMA, eps=EPS, foreach=True)
        cands["torch.optim.RMSprop(foreach=True) over the list"] = topt.step
        tensors = [torch.nn.Parameter(torch.as_tensor(a.copy())) for a in xs]
        for p, g in zip(tensors, gs, strict=True):
            p.grad = torch.as_tensor(g)
        on_tensors = fastrms.RMSProp(tensors, **opts)
        cands["fastrms over the torch tensors (their .grad)"] = lambda: on_tensors.step([p.grad for p in tensors])
    except ImportError:
        pass
    times = in_turns(cands, rounds, inner=steps, settle=1, settle_s=0.01)
    # the answer: fastrms over the list and over the flat buffer took the same steps
    check = fastrms.RMSProp([a.copy() for a in xs], **opts)
    ref = fastrms.RMSProp(np.concatenate([a.ravel() for a in xs]), **opts)  # (flat_x has been stepped)
    for _ in range(3):
        check.step(gs)
        ref.step(flat_g)
    same = np.array_equal(np.concatenate([a.ravel() for a in check.x]), ref.x)
    rows = [{"candidate": k, "s": float(np.median(v)), "min": min(v), "max": max(v)} for k, v in times.items()]
    return {"what": what, "n": n, "arrays": len(xs), "rows": rows, "same_bits": bool(same)}


def markdown(res) -> str:
    return "\n\n".join(model_markdown(m) for m in res["models"])


def model_markdown(res) -> str:
    from bench.report import table

    rows = {r["candidate"]: r for r in res["rows"]}
    mine = rows["fastrms over the list (one fused kernel)"]["s"]
    small = res["n"] < 100_000  # (µs where a step takes microseconds)
    unit, scale = ("µs", 1e6) if small else ("ms", 1e3)
    lines = [f"### Many arrays: {res['what']}, {res['n']:,} elements in all, one RMSProp step", ""]
    lines += table(f"candidate | {unit} per step (median) | min–max | ÷ fastrms over the list", "lrrr",
                   ([r["candidate"], f"{r['s'] * scale:.3f}", f"{r['min'] * scale:.3f}–{r['max'] * scale:.3f}",
                     f"{r['s'] / mine:.2f}"] for r in res["rows"]))
    lines += ["", f"fastrms over the list and over the packed flat buffer agree bit for bit: {res['same_bits']}."]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
