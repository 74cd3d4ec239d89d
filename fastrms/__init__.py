"""fastrms: RMSProp and its relatives as fused Numba kernels behind a scipy-style API.

    res = fastrms.minimize(F, dF, x0, method='rmsprop', options={'lr': 0.01})

Layout, in the order a call flows:
``_minimize.py`` (front: options, results) → ``drivers/`` (the loop) →
``kernels/`` (CPU and CUDA loops) → ``rules.py`` (the per-element math,
written once).  ``methods.py`` holds each method's hyperparameters and
coefficients, ``presets.py`` the other libraries' conventions.

Submodules load on first use, so ``import fastrms`` stays cheap and compiles nothing.
"""

from __future__ import annotations

import importlib
import os

__version__ = "0.1.0"

# GNU OpenMP threads spin ~300,000 times after each parallel region; between our
# update kernels the user's gradient runs, often in multithreaded BLAS, and the
# spinning threads steal its cores (AX=I, n=500: 2x slower than its gradients
# alone).  A short spin keeps back-to-back kernels as fast (bench/RESULTS.md).
# Set here, before any Numba parallel code can start libgomp; a user's value wins.
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

# public name -> module that defines it (relative to fastrms unless absolute)
_EXPORTS = {
    "minimize": "._minimize",
    "gd": "._minimize", "momentum": "._minimize", "rmsprop": "._minimize", "adagrad": "._minimize",
    "adam": "._minimize", "adamw": "._minimize", "adadelta": "._minimize",
    "Optimizer": ".steppers", "GradientDescent": ".steppers", "Momentum": ".steppers",
    "RMSProp": ".steppers", "Adagrad": ".steppers", "Adam": ".steppers", "AdamW": ".steppers",
    "Adadelta": ".steppers",
    "cuda_available": ".kernels.cuda",
    "OptimizeResult": "scipy.optimize",
}
_SUBMODULES = {"methods", "presets", "rules", "schedules", "steppers", "datasets", "experiments",
               "kernels", "drivers"}

__all__ = sorted(_EXPORTS) + sorted(_SUBMODULES)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'fastrms' has no attribute {name!r}")


def __dir__():
    return __all__
