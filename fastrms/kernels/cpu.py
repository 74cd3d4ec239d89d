"""CPU kernels: the rules of ``fastrms.methods`` looped over flat arrays with Numba.

Each (rule, flags) pair gets its kernels from two loop templates below, each
compiled twice, serial and ``parallel=True`` (``prange`` is ``range`` in the
serial one), like umap/pynndescent's serial and parallel variants of one
Python function.  ``kernels_for`` picks the variant by array size at run time.

The rule is bound as the global ``RULE`` of a copy of the template function
(not a closure: a closure over a dispatcher would carry its random UUID into
Numba's cache key and miss the cache in every new process).  The copy gets a
qualified name of its own, which names its on-disk cache file, and that name
carries a hash of the package's source so an edited rule never loads a stale
kernel.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import types
from functools import cache
from pathlib import Path

# See fastrms/__init__.py: a short OpenMP spin, unless the user chose one (repeated
# here for code that imports this module directly).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
from numba import prange  # noqa: E402
from numba.np.unsafe.ndarray import to_fixed_tuple  # noqa: E402

from . import _threads  # noqa: E402 - chooses the threading layer before any parallel kernel runs
from ._jit import jit  # noqa: E402

# Below this many bytes of x the serial kernel wins: the parallel one pays a thread-pool
# wake-up that a small update never earns back.  Measured on 2 cores (the benchmark's
# serial/parallel table, bench/RESULTS.md): with OpenMP the two meet near 8,000 float64
# elements; TBB wakes its workers about 10 µs later and meets near 20,000, then wins by more.
# Bytes, not elements: a float32 element costs half as much, so its crossover is twice as far.
PARALLEL_MIN_BYTES = {"tbb": 192 * 1024, "omp": 64 * 1024, "workqueue": 192 * 1024}

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


@cache
def _source_tag() -> str:
    """Hash of the package's source: Numba's cache checks only the file that defines a
    function, not the rules, coefficients and schedules compiled into it."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha1()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def _compile(template, rule, flags: tuple, nh: int, parallel: bool, cache: bool = True):
    flag_tag = "".join("1" if f else "0" for f in flags) or "x"
    name = f"{template.__name__}_{rule.__name__}_{flag_tag}_{'par' if parallel else 'ser'}_{_source_tag()}"
    namespace = dict(template.__globals__, RULE=rule, FLAGS=flags, NH=nh)
    fn = types.FunctionType(template.__code__, namespace, name)
    fn.__qualname__ = name
    fn.__doc__ = template.__doc__
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


def use_parallel(n: int, itemsize: int = 8) -> bool:
    """Whether n elements of itemsize bytes are updated by the parallel kernel."""
    if numba.get_num_threads() < 2 or not _threads.parallel_allowed():  # (launches the thread pool)
        return False
    return n * itemsize >= PARALLEL_MIN_BYTES.get(_threads.layer(), max(PARALLEL_MIN_BYTES.values()))


def parallel_lock():
    """What a Python caller holds while it runs a parallel kernel inside compiled code: a lock
    under the workqueue layer (it aborts when two threads enter it), else nothing."""
    return _threads.workqueue_lock if _threads.layer() == "workqueue" else contextlib.nullcontext()


@cache
def kernels_for(rule, flags: tuple, nh: int) -> CpuKernels:
    return CpuKernels(rule, flags, nh)
