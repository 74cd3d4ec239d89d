"""fastrms: RMSProp and its relatives as fused Numba kernels behind a scipy-style API.

    res = fastrms.minimize(F, dF, x0, method='rmsprop', options={'lr': 0.01})

Layout, in the order a call flows:
``_minimize.py`` (front: minimize, Minimizer, options, results) → ``drivers/`` (the loop) →
``kernels/`` (CPU and CUDA loops) → ``methods/`` (one module per method: its
per-element math, written once, its coefficients and hyperparameters; the
registry lists them).  ``presets.py`` holds the other libraries' conventions.

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

# public name -> module that defines it (relative to fastrms unless absolute); the methods'
# scipy functions and stepper classes come from the registry (fastrms.methods.REGISTRY)
_EXPORTS = {
    "minimize": "._minimize",
    "Minimizer": "._minimize",
    "Optimizer": ".steppers",
    "cuda_available": ".kernels.cuda",
    "pack": "._structure",
    "OptimizeResult": "scipy.optimize",
}
_SUBMODULES = {"methods", "presets", "schedules", "steppers", "datasets", "experiments",
               "kernels", "drivers", "cluster"}


def _stepper_classes() -> dict:
    """name -> class for every method's stepper (imports Numba, not scipy)."""
    from .steppers import STEPPERS

    return {cls.__name__: cls for cls in STEPPERS.values()}


def _method_functions() -> dict:
    """name -> every method's scipy function (imports scipy.optimize, which a script that only
    steps, ``fastrms.RMSProp(x).step(g)``, need not pay for: about half a second)."""
    from ._minimize import METHOD_FUNCTIONS

    return METHOD_FUNCTIONS


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    elif name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    elif name == "__all__":
        value = sorted(_EXPORTS) + sorted({**_method_functions(), **_stepper_classes()}) + sorted(_SUBMODULES)
    elif not name.startswith("_") and name in (classes := _stepper_classes()):
        value = classes[name]
    elif not name.startswith("_") and name in (functions := _method_functions()):
        value = functions[name]
    else:
        raise AttributeError(f"module 'fastrms' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__():
    return __getattr__("__all__")
