"""Backends: where the per-element rules of ``fastrms.rules`` run.

``cpu.py`` compiles them with ``numba.njit`` (serial and parallel), ``cuda.py``
with ``numba.cuda.jit``.  A backend object allocates the state, builds the
kernels of a configured method and launches them; the engine and the drivers
talk to nothing else.  A new backend is one more module with the same four
methods as ``CpuBackend``.
"""

from __future__ import annotations

import numpy as np


class CpuBackend:
    name = "cpu"

    def zeros(self, shape, dtype):
        return np.zeros(shape, dtype=dtype)

    def kernels(self, config):
        from . import cpu

        return cpu.kernels_for(config.method.rule, config.flags, config.method.nh)

    def step(self, engine, x, g, h):
        engine.kernels.step(x.size)(x, g, engine.S, h)

    def step_checked(self, engine, x, g, h, gtol, out):
        return engine.kernels.step_checked(x.size)(x, g, engine.S, h, gtol, out)


CPU = CpuBackend()


def cuda_backend_for(x):
    """The CUDA backend if x is a device array (``__cuda_array_interface__``), else None."""
    if not hasattr(x, "__cuda_array_interface__"):
        return None
    from . import cuda

    return cuda.backend()
