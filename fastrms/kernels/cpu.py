"""CPU kernels: the rules of ``fastrms.methods`` looped over flat arrays with Numba.

Each (rule, flags) pair gets its kernels from two loop templates below, each
compiled twice, serial and ``parallel=True`` (``prange`` is ``range`` in the
serial one), like umap/pynndescent's serial and parallel variants of one
Python function.  ``kernels_for`` picks the variant by array size at run time.

The rule is bound as the global ``RULE`` of a copy of the template function
(``_jit.bind``, the one place that does this for every backend and driver).
"""

from __future__ import annotations

import contextlib
import math
import os
from functools import cache

# See fastrms/__init__.py: a short OpenMP spin, unless the user chose one (repeated
# here for code that imports this module directly).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402
from numba.np.unsafe.ndarray import to_fixed_tuple  # noqa: E402

from .. import _arrays  # noqa: E402
from . import _threads  # noqa: E402 - chooses the threading layer before any parallel kernel runs
from ._jit import bind, flag_tag, jit  # noqa: E402

# Below this many bytes of x the serial kernel wins: the parallel one pays a thread-pool
# wake-up that a small update never earns back.  Measured on 2 cores by the benchmark's
# serial/parallel table (bench/RESULTS.md): under TBB, float64 breaks even between 8,000
# and 16,000 elements (64 to 128 KiB, with the machine's load); float32, whose serial loop is more than
# twice as fast per element, breaks even between 24,000 and 49,000 (96 to 192 KiB).  128 KiB
# serves both.  OpenMP wakes its threads about 10 µs sooner: 64 KiB (8,192 float64 elements).
PARALLEL_MIN_BYTES = {"tbb": 128 * 1024, "omp": 64 * 1024, "workqueue": 128 * 1024}

_JIT_OPTIONS = dict(error_model="numpy", nogil=True)


def _step(x, g, S, h):  # pragma: no cover - compiled
    """x ← rule(x, g) in place, one pass over x, g and S."""
    hh = to_fixed_tuple(h, NH)  # noqa: F821 - bound per kernel, see _compile
    for i in prange(x.size):
        x[i] = RULE(x[i], g[i], S, i, hh, FLAGS)  # noqa: F821


def _step_checked(x, g, S, h, gtol, out):  # pragma: no cover - compiled
    """out ← rule(x, g), x untouched; counts |g_i| > gtol and non-finite out_i.

    The counts are the driver's stopping tests, fused into the same pass: all
    |g_i| ≤ gtol means x was already converged (and x is still intact), any
    non-finite out_i means the run diverged (and x is the last finite iterate).
    """
    hh = to_fixed_tuple(h, NH)  # noqa: F821
    n_big = 0
    n_bad = 0
    for i in prange(x.size):
        gi = g[i]
        xi = RULE(x[i], gi, S, i, hh, FLAGS)  # noqa: F821
        out[i] = xi
        n_big += abs(gi) > gtol
        n_bad += not (xi - xi == 0)  # NaN and ±inf, without a float64 constant
    return n_big, n_bad


def _compile(template, rule, flags: tuple, nh: int, parallel: bool, cache: bool = True):
    name = f"{template.__name__}_{rule.__name__}_{flag_tag(flags)}_{'par' if parallel else 'ser'}"
    fn = bind(template, name, RULE=rule, FLAGS=flags, NH=nh)
    return jit(fn, parallel=parallel, cache=cache, **_JIT_OPTIONS)


class CpuKernels:
    """The four compiled kernels of one (rule, flags) pair, compiled on first use."""

    def __init__(self, rule, flags: tuple, nh: int):
        self.rule, self.flags, self.nh = rule, tuple(bool(f) for f in flags), nh
        self._cache: dict = {}

    def _get(self, template, parallel: bool):
        key = (template.__name__, parallel)
        k = self._cache.get(key)
        if k is None:
            k = self._cache[key] = _compile(template, self.rule, self.flags, self.nh, parallel)
        return k

    def _callable(self, template, n: int, itemsize: int):
        parallel = use_parallel(n, itemsize)
        key = (template.__name__, parallel, "guarded")
        k = self._cache.get(key)
        if k is None:
            raw = self._get(template, parallel)
            k = self._cache[key] = _threads.guard(raw) if parallel else raw
        return k

    def step(self, n: int, itemsize: int = 8):
        """In-place kernel ``(x, g, S, h) -> None`` suited to n elements of itemsize bytes."""
        return self._callable(_step, n, itemsize)

    def step_checked(self, n: int, itemsize: int = 8):
        """Checked kernel ``(x, g, S, h, gtol, out) -> (n_big, n_bad)``."""
        return self._callable(_step_checked, n, itemsize)

    def variant(self, checked: bool, parallel: bool):
        """A specific variant as a Numba dispatcher (the compiled driver and the benchmarks name it;
        a caller from Python that picks a parallel one holds ``parallel_lock()``)."""
        return self._get(_step_checked if checked else _step, parallel)


@jit(nogil=True)
def max_abs(a):  # pragma: no cover - compiled
    """max |a_i|, NaN if any a_i is NaN (the history's gradient norm; ~10x np.max(np.abs(a)) on small a)."""
    m = 0.0
    for v in a:
        v = abs(v)
        if v > m:
            m = v
        elif v != v:
            return v
    return m


@jit(nogil=True)
def norm2(a):  # pragma: no cover - compiled
    """‖a‖₂ accumulated in float64 (clip-by-norm; one function for both drivers, so both round alike)."""
    s = 0.0
    for v in a:
        s += float(v) * float(v)
    return math.sqrt(s)


_SMALLEST_PARALLEL = min(PARALLEL_MIN_BYTES.values())


def use_parallel(n: int, itemsize: int = 8) -> bool:
    """Whether n elements of itemsize bytes are updated by the parallel kernel (called every
    step of a stepper: the size test comes first, before Numba's thread-count lookup)."""
    nbytes = n * itemsize
    if nbytes < _SMALLEST_PARALLEL or not _threads.parallel_allowed():
        return False
    if numba.get_num_threads() < 2:  # (this also launches the thread pool, fixing the layer)
        return False
    return nbytes >= PARALLEL_MIN_BYTES.get(_threads.layer(), max(PARALLEL_MIN_BYTES.values()))


def parallel_lock():
    """What a Python caller holds while it runs a parallel kernel inside compiled code: a lock
    under the workqueue layer (it aborts when two threads enter it), else nothing."""
    return _threads.workqueue_lock if _threads.layer() == "workqueue" else contextlib.nullcontext()


@cache
def kernels_for(rule, flags: tuple, nh: int) -> CpuKernels:
    return CpuKernels(rule, flags, nh)


class CpuBackend:
    """The CPU backend (see ``kernels.Backend``): NumPy arrays, njit kernels."""

    name = "cpu"
    host_memory = True

    def x0(self, x0, dtype):
        x = _arrays.as_x0(x0, dtype)
        return x.reshape(-1), x.shape

    def array_kind(self, a) -> str:
        return "numpy"

    param_array = staticmethod(_arrays.check_param_array)
    as_gradient = staticmethod(_arrays.as_gradient)  # every step: no wrapper

    def view(self, x, shape, kind):
        """A read-only view: F and dF must not write into the driver's buffer."""
        v = x.reshape(shape)
        v.flags.writeable = False
        return v

    def result(self, a, shape, kind):
        return a.reshape(shape)

    def state(self, host: np.ndarray):
        return host

    def load_state(self, S, host) -> None:
        S[...] = host  # in place: keep the live views that opt.state handed out

    def empty_like(self, x):
        return np.empty_like(x)

    def copy(self, src, dst=None):
        """dst ← src (a new array when dst is None)."""
        if dst is None:
            return src.copy()
        np.copyto(dst, src)
        return dst

    def to_host(self, a) -> np.ndarray:
        return a

    def norms(self, g) -> tuple[float, float]:
        """(max |g_i|, ‖g‖₂)."""
        return max_abs(g), norm2(g)

    def max_abs(self, g) -> float:
        return max_abs(g)

    def kernels(self, config):
        return kernels_for(config.method.rule, config.flags, config.method.nh)

    def step(self, mstate, x, g, h):
        mstate.kernels.step(x.size, x.itemsize)(x, g, mstate.S, h)

    def checked_stepper(self, mstate, n):
        """step_checked with the kernel for n elements looked up once (the loop calls it every step)."""
        kernel, S = mstate.kernels.step_checked(n, mstate.dtype.itemsize), mstate.S
        return lambda x, g, h, gtol, out: kernel(x, g, S, h, gtol, out)


CPU = CpuBackend()


def backend() -> CpuBackend:
    return CPU


def owns(a) -> bool:
    return isinstance(a, np.ndarray)
