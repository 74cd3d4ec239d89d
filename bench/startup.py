"""A script's start: imports and the first call, each in a fresh process (``python -m bench --startup``).

What a user waits for before a script's first result, the interpreter's own start excluded: the
imports and the first call of each candidate, with Numba's disk cache warm (a first round, not
counted, fills it).  Every candidate that runs compiled code pays Numba's own start-up (its import
and its first load of cached code, whoever's); that floor is the first row, and the last column
is each candidate's time above it.  Rounds take turns, each candidate in its own process.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLOOR = "Numba's own start: a cached @njit function's first call"
A = "A = np.array([[2, 5, 1, 4, 6], [3, 5, 0, 0, 0], [1, 1, 0, 3, 8], [6, 6, 2, 2, 1], [8, 3, 5, 1, 4]], float)\n"
# what each candidate's script runs, timed from its first import to the end of its first call
SCRIPTS = {
    FLOOR: "import numpy as np\n"
           "from bench.ax import jit_dF\n"
           "jit_dF(np.zeros((5, 5)), np.eye(5))",
    "fastrms stepper: RMSProp(x).step(g), 1,000 elements": "import numpy as np\n"
                                                           "import fastrms\n"
                                                           "x = np.ones(1000)\n"
                                                           "fastrms.RMSProp(x, lr=1e-3).step(np.ones(1000))",
    "fastrms minimize, Python loop (NumPy F, dF), AX = I 5x5, 300 steps":
        "import numpy as np\n"
        "import fastrms\n"
        + A +
        "fastrms.minimize(lambda X: np.sum((A @ X - np.eye(5)) ** 2),\n"
        "                 lambda X: 2 * A.T @ (A @ X - np.eye(5)), np.zeros((5, 5)),\n"
        "                 options={'lr': 1e-3, 'maxiter': 300, 'gtol': 0})",
    "fastrms minimize, compiled loop (@njit F, dF), AX = I 5x5, 300 steps":
        "import numpy as np\n"
        "import fastrms\n"
        "from bench.ax import jit_F, jit_dF\n"
        + A +
        "fastrms.minimize(jit_F, jit_dF, np.zeros((5, 5)), args=(A,),\n"
        "                 options={'lr': 1e-3, 'maxiter': 300, 'gtol': 0})",
    "scipy.optimize.minimize, BFGS (no Numba)": "import numpy as np\n"
                                                "import scipy.optimize as so\n"
                                                "so.minimize(lambda x: float(x @ x), np.ones(5), jac=lambda x: 2 * x)",
    "torch: import, one RMSprop step (foreach), 1,000 elements":
        "import torch\n"
        "p = torch.ones(1000, dtype=torch.float64, requires_grad=True)\n"
        "p.grad = torch.ones(1000, dtype=torch.float64)\n"
        "torch.optim.RMSprop([p], lr=1e-3, foreach=True).step()",
}
NEEDS = {"torch: import, one RMSprop step (foreach), 1,000 elements": "torch"}


def timed(script: str) -> str:
    """The script, printing the seconds from its first line to its end."""
    return f"import time\n_began = time.perf_counter()\n{script}\nprint(time.perf_counter() - _began)\n"


def first_call(name: str) -> float:
    """Seconds to run candidate ``name``'s script in a fresh interpreter (its start excluded)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", timed(SCRIPTS[name])], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{name} failed:\n{out.stderr[-3000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def available(name: str) -> bool:
    import importlib.util

    return name not in NEEDS or importlib.util.find_spec(NEEDS[name]) is not None


def run(rounds: int = 7) -> dict:
    names = [name for name in SCRIPTS if available(name)]
    for name in names:  # (not counted: compiles on a cold cache, fills the OS's file cache)
        first_call(name)
    times: dict = {name: [] for name in names}
    for _ in range(rounds):  # candidates take turns, round by round
        for name in names:
            times[name].append(first_call(name))
    floor = statistics.median(times[FLOOR])
    rows = [{"candidate": name, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
             "above_floor_s": statistics.median(ts) - floor} for name, ts in times.items()]
    return {"rows": rows, "rounds": rounds, "python": sys.version.split()[0]}


def markdown(res: dict) -> str:
    from bench.report import table

    lines = [f"### A script's start: imports and the first call, each in a fresh process (warm disk cache; "
             f"medians of {res['rounds']} rounds, min–max; Python {res['python']})", ""]
    lines += table("candidate | ms (median) | min–max | above Numba's own start (ms)", "lrrr",
                   ([r["candidate"], f"{r['median_s'] * 1e3:.0f}",
                     f"{r['min_s'] * 1e3:.0f}–{r['max_s'] * 1e3:.0f}", f"{r['above_floor_s'] * 1e3:+.0f}"]
                    for r in res["rows"]))
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(run()))
