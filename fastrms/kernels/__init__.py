"""Backends: where the per-element rules of ``fastrms.methods`` run.

``cpu.py`` compiles them with ``numba.njit`` (serial and parallel), ``cuda.py``
with ``numba.cuda.jit``.  A backend object allocates the state, builds the
kernels of a configured method and launches them; the engine and the drivers
talk to nothing else.  A new backend is one more module whose backend object has
the methods of ``CpuBackend``.
"""

from __future__ import annotations

import numpy as np

from .._arrays import as_gradient as _as_gradient
from . import cpu
from .cpu import max_abs as _max_abs


class CpuBackend:
    name = "cpu"

    def state(self, host: np.ndarray):
        return host

    def empty_like(self, x):
        return np.empty_like(x)

    def to_host(self, a) -> np.ndarray:
        return a

    def copy(self, src, dst=None):
        """dst ← src (a new array when dst is None)."""
        if dst is None:
            return src.copy()
        np.copyto(dst, src)
        return dst

    def norms(self, g) -> tuple[float, float]:
        """(max |g_i|, ‖g‖₂)."""
        return _max_abs(g), cpu.norm2(g)

    max_abs = staticmethod(_max_abs)

    def view(self, x, shape, kind):
        return x.reshape(shape)

    as_gradient = staticmethod(_as_gradient)

    def kernels(self, config):
        return cpu.kernels_for(config.method.rule, config.flags, config.method.nh)

    def step(self, engine, x, g, h):
        engine.kernels.step(x.size, x.itemsize)(x, g, engine.S, h)

    def checked_stepper(self, engine, n):
        """step_checked with the kernel for n elements looked up once (the loop calls it every step)."""
        kernel, S = engine.kernels.step_checked(n, engine.dtype.itemsize), engine.S
        return lambda x, g, h, gtol, out: kernel(x, g, S, h, gtol, out)


CPU = CpuBackend()


def on_device(x) -> bool:
    """Whether x is a CUDA device array (without importing numba.cuda for host arrays)."""
    if isinstance(x, np.ndarray):
        return False
    if hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray":
        return True
    return type(x).__module__.split(".")[0] == "torch" and bool(getattr(x, "is_cuda", False))


def get(name: str):
    """The backend called ``name`` ('cpu' or 'cuda')."""
    if name == "cpu":
        return CPU
    from . import cuda

    return cuda.backend()
