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
import time
from functools import cache, partial

# See fastrms/__init__.py: a short OpenMP spin, unless the user chose one (repeated
# here for code that imports this module directly).
os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import prange  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic, overload  # noqa: E402
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


def _step_checked_in_place(x, g, S, h, gtol, out):  # pragma: no cover - compiled
    """_step_checked writing x itself (out is unused; the signature is _step_checked's): minimize's
    in_place mode, one buffer and the in-place kernel's memory traffic.

    A scan for the first |g_i| > gtol comes first, and ends at once unless the run is nearly
    converged.  Where there is none, the run has converged at x, which is left as it is (only the
    non-finite count is taken).  Otherwise x_{k+1} overwrites x_k, so if n_bad > 0 as well, x_k
    is lost: the driver reports that, and the front recomputes x_k (see _minimize._solve).
    """
    hh = to_fixed_tuple(h, NH)  # noqa: F821
    first = 0
    while first < x.size and not abs(g[first]) > gtol:  # (NaN is not > gtol, as in _step_checked)
        first += 1
    if first == x.size:
        n_bad = 0
        for i in prange(x.size):
            xi = RULE(x[i], g[i], S, i, hh, FLAGS)  # noqa: F821
            n_bad += not (xi - xi == 0)
        return 0, n_bad
    # n_big is not counted in the writing pass, which must stay at the in-place step's cost: the
    # scan found a large |g_i|, and the drivers only compare n_big with 0.  (A float sum of
    # xi − xi would be cheaper still, but without reassociation it does not vectorize.)
    n_bad = 0
    for i in prange(x.size):
        xi = RULE(x[i], g[i], S, i, hh, FLAGS)  # noqa: F821
        x[i] = xi
        n_bad += not (xi - xi == 0)
    return 1, n_bad


def row_tuple(H, b, nh):
    """(H[b, 0], …, H[b, nh − 1]) as a tuple; compiled only, see _row_tuple_typed."""


@overload(row_tuple, prefer_literal=True)
def _row_tuple_typed(H, b, nh):
    # direct loads: to_fixed_tuple(H[b], nh) makes a view per row, 8x slower on rows of 8 elements
    items = "".join(f"H[b, {k}], " for k in range(nh.literal_value))
    namespace: dict = {}
    exec(f"def row(H, b, nh):\n    return ({items})\n", namespace)  # noqa: S102
    return namespace["row"]


# Batched problems: x is B problems' flat parameters, one after the other (row b is
# x[b*n:(b+1)*n]), each with its own coefficients H[b]; rows with active[b] False have
# finished and are left alone.  Parallel over problems, each row a vectorized loop.  A row's
# first index is max(b·n, 0): provably ≥ 0, so its loads need no negative-index wraparound
# and the loop vectorizes.  Without it the parallel variant (whose b comes from its scheduler)
# did not: it ran 1.2 to 2.5x slower than the serial one, which LLVM could prove b ≥ 0 in.

def _step_rows(x, g, S, H, active):  # pragma: no cover - compiled
    """x ← rule(x, g) in place, row b with coefficients H[b], for the active rows."""
    n = x.size // H.shape[0]
    for b in prange(H.shape[0]):
        if active[b]:
            hh = row_tuple(H, b, NH)  # noqa: F821
            start = max(b * n, 0)  # (see above)
            for j in range(n):  # (a range from b·n does not vectorize: 4x slower)
                i = start + j
                x[i] = RULE(x[i], g[i], S, i, hh, FLAGS)  # noqa: F821


def _step_rows_checked(x, g, S, H, active, gtol, out, big, bad):  # pragma: no cover - compiled
    """_step_checked row by row: out ← rule(x, g) for the active rows, x untouched; big[b] and
    bad[b] count row b's |g_i| > gtol and its non-finite out_i (each problem's stopping tests)."""
    n = x.size // H.shape[0]
    for b in prange(H.shape[0]):
        if active[b]:
            hh = row_tuple(H, b, NH)  # noqa: F821
            n_big = 0
            n_bad = 0
            start = max(b * n, 0)  # (see above)
            for j in range(n):
                i = start + j
                gi = g[i]
                xi = RULE(x[i], gi, S, i, hh, FLAGS)  # noqa: F821
                out[i] = xi
                n_big += abs(gi) > gtol
                n_bad += not (xi - xi == 0)
            big[b] = n_big
            bad[b] = n_bad


# Many arrays (a stepper over a list or dict of arrays, fastrms.steppers): their elements in
# turn make one flat state; the kernel reaches each array through its address.  The elements
# are cut into chunks of ARRAY_CHUNK (the last one shorter), each the pieces of the arrays it
# covers, so that every prange iteration does the same work: prange hands each thread a
# contiguous run of iterations, and chunks of whole arrays put the small ones on one thread.
# One compiled kernel serves any number of arrays of any shapes.

ARRAY_CHUNK = 1 << 14


@intrinsic
def _array_at(typingctx, address, n, like):
    """A 1-D C-contiguous array of n elements of like's dtype at address (an integer); it holds
    no reference, so the caller keeps the memory alive while it is used."""
    array_type = types.Array(like.dtype, 1, "C")

    def codegen(context, builder, signature, args):
        address, n, _ = args
        item = context.get_data_type(like.dtype)
        itemsize = context.get_constant(types.intp, context.get_abi_sizeof(item))
        ary = context.make_array(array_type)(context, builder)
        context.populate_array(ary, data=builder.inttoptr(address, item.as_pointer()),
                               shape=cgutils.pack_array(builder, [n]),
                               strides=cgutils.pack_array(builder, [itemsize]),
                               itemsize=itemsize, meminfo=None)
        return ary._getvalue()

    return array_type(types.int64, types.intp, like), codegen


def _step_arrays(xs, gs, offsets, pieces, chunks, S, h):  # pragma: no cover - compiled
    """Array j (xs[j], gs[j]: addresses) owns state columns offsets[j] on; piece p is
    (j, start, stop) within array j, chunk c the pieces chunks[c] to chunks[c + 1].
    x ← rule(x, g) in place, chunk by chunk."""
    hh = to_fixed_tuple(h, NH)  # noqa: F821
    for c in prange(chunks.size - 1):
        for p in range(chunks[c], chunks[c + 1]):
            j = pieces[p, 0]
            start = pieces[p, 1]
            m = pieces[p, 2] - start
            x = _array_at(xs[j] + start * S.itemsize, m, S)
            g = _array_at(gs[j] + start * S.itemsize, m, S)
            o = max(offsets[j] + start, 0)  # provably ≥ 0: no negative-index wraparound, so it vectorizes
            for k in range(m):
                x[k] = RULE(x[k], g[k], S, o + k, hh, FLAGS)  # noqa: F821


def same_dtype(a, like):
    """Whether a and like hold the same dtype; compiled only (a constant per signature)."""


@overload(same_dtype)
def _same_dtype_typed(a, like):
    same = a.dtype == like.dtype
    return lambda a, like: same


@jit(nogil=True)
def gather_addresses(arrays, shapes, where, like, out):  # pragma: no cover - compiled
    """out[where[j]] ← the address of arrays[j] (a tuple of arrays of one type) after checking it
    is C-contiguous, of like's dtype and of shape shapes[j]; -1, or the first j that is not."""
    for j in range(len(arrays)):
        a = arrays[j]
        if not same_dtype(a, like) or a.ndim != shapes.shape[1] or not a.flags.c_contiguous:
            return j
        for d in range(a.ndim):  # (the size alone would take a transposed gradient for its array)
            if a.shape[d] != shapes[j, d]:
                return j
        out[where[j]] = a.ctypes.data
    return -1


def _compile(template, rule, flags: tuple, nh: int, parallel: bool, cache: bool = True):
    name = f"{template.__name__}_{rule.__name__}_{flag_tag(flags)}_{'par' if parallel else 'ser'}"
    fn = bind(template, name, RULE=rule, FLAGS=flags, NH=nh)
    return jit(fn, parallel=parallel, cache=cache, **_JIT_OPTIONS)


class CpuKernels:
    """The kernels of one (rule, flags) pair, each template serial and parallel, compiled on first use."""

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
        return self._guarded(template, use_parallel(n, itemsize))

    def _guarded(self, template, parallel: bool):
        """The variant, callable from Python (under workqueue, a parallel one takes a lock)."""
        key = (template.__name__, parallel, "guarded")
        k = self._cache.get(key)
        if k is None:
            raw = self._get(template, parallel)
            k = self._cache[key] = _threads.guard(raw) if parallel else raw
        return k

    def step(self, n: int, itemsize: int = 8):
        """In-place kernel ``(x, g, S, h) -> None`` suited to n elements of itemsize bytes."""
        return self._callable(_step, n, itemsize)

    def step_checked(self, n: int, itemsize: int = 8, in_place: bool = False):
        """Checked kernel ``(x, g, S, h, gtol, out) -> (n_big, n_bad)`` (in_place: x is the output)."""
        return self._callable(_step_checked_in_place if in_place else _step_checked, n, itemsize)

    def checked(self, parallel: bool, in_place: bool = False, batched: bool = False):
        """The serial or parallel checked kernel (step_checked's, or rows_checked's when batched),
        callable from Python."""
        return self._guarded(_checked_template(in_place, batched), parallel)

    def step_checked_racing(self, in_place: bool = False):
        """step_checked whose first calls race its serial and parallel variants (see Race)."""
        return racing_stepper(self.checked(False, in_place), self.checked(True, in_place))

    def step_checked_for(self, n: int, itemsize: int, steps: int, in_place: bool = False):
        """step_checked for a run of ``steps`` steps: racing where races() says so (see Race)."""
        if races(n, itemsize, steps):
            return self.step_checked_racing(in_place)
        return self.step_checked(n, itemsize, in_place)

    # The rows kernels are chosen as the one-problem kernels are, by the bytes of x in all (B
    # problems of n / B elements): their prange over problems took 0.57 to 0.86 of the serial
    # kernel's time on 2 cores with rows of 32 elements or more, and 0.84 to 1.11 with rows of 8
    # (bench/RESULTS.md, `python -m bench --threshold`).  A long run of minimize races the two.
    def rows(self, n: int, itemsize: int = 8):
        """Batched in-place kernel ``(x, g, S, H, active) -> None`` for n elements in all."""
        return self._callable(_step_rows, n, itemsize)

    def rows_checked(self, n: int, itemsize: int = 8):
        """Batched checked kernel ``(x, g, S, H, active, gtol, out, big, bad) -> None``."""
        return self._callable(_step_rows_checked, n, itemsize)

    def arrays(self, n: int, itemsize: int = 8):
        """Many-arrays kernel ``(xs, gs, offsets, pieces, chunks, S, h) -> None`` for n elements in all."""
        return self._callable(_step_arrays, n, itemsize)

    def variant(self, checked: bool, parallel: bool, batched: bool = False, in_place: bool = False):
        """A specific variant as a Numba dispatcher (the compiled driver and the benchmarks name it;
        a caller from Python that picks a parallel one holds ``parallel_lock()``)."""
        if checked:
            return self._get(_checked_template(in_place, batched), parallel)
        return self._get(_step_rows if batched else _step, parallel)

    def checked_pair(self, mode, **variant):
        """A compiled driver's (serial, parallel) checked variants for kernel mode RACE (the host
        picks one per call), else the mode's variant twice (see kernel_mode)."""
        return tuple(self.variant(checked=True, parallel=p, **variant)
                     for p in ((False, True) if mode == RACE else (mode, mode)))


def _checked_template(in_place: bool, batched: bool):
    if batched:
        return _step_rows_checked
    return _step_checked_in_place if in_place else _step_checked


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


SMALL = 4096  # elements: below, the compiled test; above, NumPy's vectorized one is faster


def all_finite(a: np.ndarray) -> bool:
    """Whether every element of the float array a is finite (x0's intake)."""
    # (np.isfinite(a).all() spends ~1.8 µs in dispatch on a small array, a tenth of a small compiled
    # solve's whole call; the compiled loop does not vectorize, so large arrays keep NumPy's)
    return _all_finite(a.reshape(-1)) if a.size <= SMALL else _arrays.numpy_all_finite(a)


@jit(nogil=True)
def _all_finite(a):  # pragma: no cover - compiled
    bad = False
    for v in a:
        bad |= not (v - v == 0.0)  # (inf - inf and NaN - NaN are NaN)
    return not bad


@jit(nogil=True)
def norm2(a):  # pragma: no cover - compiled
    """‖a‖₂ accumulated in float64 (clip-by-norm; one function for both drivers, so both round alike).
    Each square too: Numba's float() of a float32 stays float32, whose square overflows from
    |a_i| ≈ 1.8e19, and clip_norm would then zero the gradient."""
    s = 0.0
    for v in a:
        s += np.float64(v) * np.float64(v)
    return math.sqrt(s)


@jit(nogil=True)
def sum_squares(a, s):  # pragma: no cover - compiled
    """s + Σ a_i² in float64, in norm2's order (the global norm of several arrays, bit for bit
    the norm of their concatenation)."""
    for v in a.reshape(-1):
        s += np.float64(v) * np.float64(v)
    return s


@jit(nogil=True)
def row_counts(g, out, gtol, big, bad):  # pragma: no cover - compiled
    """big[b], bad[b] ← row b's count of |g_i| > gtol and of non-finite out_i (what the batched
    checked kernel counts, for a step taken by the flat kernel)."""
    n = g.size // big.size
    for b in range(big.size):
        n_big = 0
        n_bad = 0
        for j in range(n):
            i = b * n + j
            n_big += abs(g[i]) > gtol
            n_bad += not (out[i] - out[i] == 0)
        big[b] = n_big
        bad[b] = n_bad


@jit(nogil=True)
def copy_range(src, dst, start, stop):  # pragma: no cover - compiled
    """dst[start:stop] ← src[start:stop].  The compiled drivers copy with this loop: Numba builds the
    error message of an array-to-slice assignment with compiled str() and f-strings, which cost the
    first compile of a driver in each process about 5 s."""
    for i in range(start, stop):
        dst[i] = src[i]


@jit(nogil=True)
def row_norms(a, out):  # pragma: no cover - compiled
    """out[b] ← (max |a_b,i|, ‖a_b‖₂) for each row b of a (B, n), as max_abs and norm2 per row."""
    for b in range(a.shape[0]):
        out[b, 0] = max_abs(a[b])
        out[b, 1] = norm2(a[b])


_SMALLEST_PARALLEL = min(PARALLEL_MIN_BYTES.values())


def use_parallel(n: int, itemsize: int = 8) -> bool:
    """Whether n elements of itemsize bytes are updated by the parallel kernel (called every
    step of a stepper: the size test comes first, before Numba's thread-count lookup)."""
    nbytes = n * itemsize
    if nbytes < _SMALLEST_PARALLEL or not parallel_ready():
        return False
    return nbytes >= PARALLEL_MIN_BYTES.get(_threads.layer(), max(PARALLEL_MIN_BYTES.values()))


def parallel_ready() -> bool:
    """Whether parallel code may run here at all: two threads or more, and not in a child forked
    after OpenMP ran in its parent."""
    if not _threads.parallel_allowed():
        return False
    if _threads.layer() is None or numba.config.NUMBA_NUM_THREADS < 2:
        # asking Numba launches its thread pool, which fixes the layer; after that the pool's
        # size answers (get_num_threads costs ~2 µs, a tenth of a 1e4-element step; a thread
        # that set_num_threads(1) runs the parallel kernel on one thread, correctly)
        threads = numba.get_num_threads()
        _threads.layer()  # (noticing the layer moves _threads.epoch)
        return threads >= 2
    return True


# minimize does not trust the size rule alone where it could be wrong: between the parallel
# threshold and RACE_MAX_BYTES, a parallel update can lose to the serial one once the user's
# gradient runs between two updates (its BLAS threads and the kernel's wake and spin in turn),
# on many cores under OpenMP, or where Numba sees more cores than the process may use (a
# container's CPU quota).  There a run of at least RACE_MIN_STEPS steps times both kernels in
# its own first steps (Race) and keeps the faster.  From RACE_MAX_BYTES up the parallel kernel
# was the faster in every serial/parallel table measured, by 1.15 to 6.6x (bench/RESULTS.md).
# Serial and parallel kernels give the same iterates bit for bit: the race changes only the time.
RACE_MAX_BYTES = 8 * 2**20
RACE_MIN_STEPS = 64


RACE = "race"  # the kernel mode of a run that races the two kernels (kernel_mode)


def races(n: int, itemsize: int, steps: int) -> bool:
    """Whether a run of ``steps`` steps over n elements of itemsize bytes races the two kernels."""
    return steps >= RACE_MIN_STEPS and n * itemsize <= RACE_MAX_BYTES and use_parallel(n, itemsize)


def kernel_mode(n: int, itemsize: int, steps: int):
    """False (serial), True (parallel) or RACE, for a compiled driver's run of ``steps`` steps."""
    return RACE if races(n, itemsize, steps) else use_parallel(n, itemsize)


class Race:
    """Serial or parallel: blocks of BLOCK steps run serial, parallel, serial, parallel; the first
    block of each kernel is a warm-up (first calls, the thread pool starting), and the second,
    timed from the end of the block before it (so it includes the user's gradient), decides.

    A driver asks ``parallel`` which kernel the next block runs, calls ``block_done(seconds)``
    after each block, and once ``decided`` runs ``parallel`` for the rest of the run.
    """

    BLOCK = 4
    ORDER = (False, True, False, True)
    STEPS = BLOCK * len(ORDER)

    def __init__(self) -> None:
        self.block = 0
        self.seconds: dict[bool, float] = {}
        self.parallel = self.ORDER[0]

    @property
    def decided(self) -> bool:
        return self.block == len(self.ORDER)

    def block_done(self, seconds: float) -> None:
        if self.block >= len(self.ORDER) // 2:  # (the second half of ORDER is timed)
            self.seconds[self.ORDER[self.block]] = seconds
        self.block += 1
        if self.block < len(self.ORDER):
            self.parallel = self.ORDER[self.block]
        else:
            self.parallel = self.seconds[True] < self.seconds[False]


def racing_stepper(serial, parallel):
    """A checked step that races the serial and the parallel kernel (or batched step) over its first
    Race.STEPS calls (see Race), then calls the faster."""
    race = Race()
    kernels = (serial, parallel)
    calls = 0
    began = 0.0

    def step(*args):
        nonlocal calls, began
        if race.decided:
            return kernels[race.parallel](*args)
        if calls == 0:
            began = time.perf_counter()
        result = kernels[race.parallel](*args)
        calls += 1
        if calls % Race.BLOCK == 0:
            now = time.perf_counter()
            race.block_done(now - began)
            began = now
        return result

    step.race = race
    return step


def parallel_lock():
    """What a Python caller holds while it runs a parallel kernel inside compiled code: a lock
    under the workqueue layer (it aborts when two threads enter it), else nothing."""
    return _threads.workqueue_lock if _threads.layer() == "workqueue" else contextlib.nullcontext()


# NumPy's flag bits (NPY_ARRAY_*) of the arrays a kernel's usual entry point takes: C-contiguous,
# aligned, writeable; any other layout goes through Numba's dispatcher, which types it
USUAL_FLAGS = 0x1 | 0x100 | 0x400


def entry_point(kernel, *like):
    """kernel's compiled code for arguments of ``like``'s Numba types, to be called without the
    dispatcher, which types every argument on every call (0.2 µs of a 0.5 µs call of a small
    kernel).  Its callers pass arrays of exactly those types (dtype, ndim, USUAL_FLAGS): the
    compiled code does not check them.  kernel itself where it is not a dispatcher (a
    lock-guarded parallel kernel under workqueue)."""
    if not isinstance(kernel, numba.core.registry.CPUDispatcher):
        return kernel
    return kernel.compile(tuple(numba.typeof(a) for a in like))


class Chosen:
    """The kernel ``lookup()`` returns, looked up once and again only when the serial/parallel
    choice can change (_threads.epoch moves: the pool starting, a fork): a step then costs its
    kernel call, not the size rule and two lookups (~2 µs) as well.  Callers that count every
    frame read ``kernel`` after ``if c.epoch != _threads.epoch: c.refresh()``; others call it.
    With ``like`` (the arrays of a usual call), ``entry`` is its entry_point for their types."""

    __slots__ = ("lookup", "epoch", "kernel", "like", "entry")

    def __init__(self, lookup, like: tuple = ()):
        self.lookup, self.epoch, self.kernel, self.like, self.entry = lookup, -1, None, like, None

    def refresh(self) -> None:
        self.kernel = self.lookup()
        if self.like:
            self.entry = entry_point(self.kernel, *self.like)
        self.epoch = _threads.epoch  # after the lookup (which may start the pool), and after the kernel

    def __call__(self, *args):
        if self.epoch != _threads.epoch:
            self.refresh()
        return self.kernel(*args)


@cache
def kernels_for(rule, flags: tuple, nh: int) -> CpuKernels:
    return CpuKernels(rule, flags, nh)


class CpuBackend:
    """The CPU backend (see ``kernels.Backend``): NumPy arrays, njit kernels."""

    name = "cpu"
    host_memory = True

    def x0(self, x0, dtype):
        x = _arrays.as_x0(x0, dtype, all_finite)
        return x.reshape(-1), x.shape

    def array_kind(self, a) -> str:
        return "numpy"

    param_array = staticmethod(_arrays.check_param_array)
    as_gradient = staticmethod(_arrays.as_gradient)  # every step: no wrapper

    def gradient_for(self, x):
        """as_gradient with x bound (a batched stepper's step; one array's is single_step)."""
        return partial(_arrays.as_gradient, x=x)

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

    def stepper(self, mstate, n):
        """The in-place step ``(x, g, h) -> None`` for n elements (serial or parallel: see Chosen)."""
        kernels, itemsize, S = mstate.kernels, mstate.dtype.itemsize, mstate.S
        run = Chosen(lambda: kernels.step(n, itemsize))
        return lambda x, g, h: run(x, g, S, h)

    def single_step(self, mstate, x, flat):
        """A stepper's whole ``step(g)`` over one array x (``flat`` its 1-D view): g checked, h, the
        in-place kernel, t + 1, in one Python frame.  The step's Python is what an in-cache update
        pays above a hand-written loop (item 3 of the performance issue), so nothing here is a
        call that the common case can skip: g's usual form is tested inline (as_gradient's first
        test, with x's shape and dtype read once, and the flags of the kernel's entry point, which
        it is then handed to past Numba's dispatcher), a constant h is read without one."""
        shape, dtype, is_flat, S = x.shape, x.dtype, x.ndim == 1, mstate.S
        kernels = mstate.kernels
        # (h is always mstate.h: coefficients() writes it, constant_h is it)
        chosen = Chosen(lambda: kernels.step(flat.size, dtype.itemsize), like=(flat, flat, S, mstate.h))
        ndarray, usual = np.ndarray, USUAL_FLAGS

        def step(g) -> None:
            if chosen.epoch != _threads.epoch:
                chosen.refresh()
            if type(g) is ndarray and g.shape == shape and g.dtype is dtype and g.flags.num & usual == usual:
                kernel = chosen.entry  # g has flat's type (reshaped): no dispatch needed
                if not is_flat:
                    g = g.reshape(-1)
            else:
                kernel = chosen.kernel
                g = _arrays.as_gradient(g, x)
            h = mstate.constant_h
            if h is None:
                h = mstate.coefficients(g)
            kernel(flat, g, S, h)
            mstate.t += 1

        return step

    def arrays_step(self, mstate, leaves):
        """A stepper's whole ``step(grads)`` over several arrays (``leaves``, a _structure.Leaves):
        the gradients' addresses gathered (and checked), h, the many-arrays kernel, t + 1.  The
        kernel's arguments are all the stepper's own int64 and state arrays, so it is called at its
        entry point for their types (see single_step): a small model's step pays little more than
        its gather."""
        S, xs, gs, offsets = mstate.S, leaves.xs, leaves.gs, leaves.offsets
        pieces, chunks = leaves.pieces, leaves.chunks
        chosen = Chosen(lambda: mstate.kernels.arrays(mstate.n, mstate.dtype.itemsize),
                        like=(xs, gs, offsets, pieces, chunks, S, mstate.h))

        def step(grads) -> None:
            if chosen.epoch != _threads.epoch:
                chosen.refresh()
            held = leaves.gradient_addresses(grads, S)  # alive until the kernel has run
            h = mstate.constant_h
            if h is None:
                h = mstate.coefficients(norm=lambda: leaves.global_norm(held))
            chosen.entry(xs, gs, offsets, pieces, chunks, S, h)
            mstate.t += 1

        return step

    def row_norms(self, g, B: int) -> np.ndarray:
        """(B, 2): each problem's (max |g_i|, ‖g‖₂), for a flat g of B problems."""
        out = np.empty((B, 2))
        row_norms(g.reshape(B, -1), out)
        return out

    def rows_checked_stepper(self, mstate, n, steps: int = 0):
        """The batched checked step for n elements in all, looked up once: the rows kernel, or while
        every problem runs with the same coefficients (mstate.uniform), the one-problem kernel over
        all n elements and the per-problem counts only when it saw a stop.  Both serial or both
        parallel, by size, or for a run of ``steps`` steps raced as one (as the compiled loop's)."""
        itemsize, S, kernels = mstate.dtype.itemsize, mstate.S, mstate.kernels

        def batched_step(parallel: bool):
            rows = kernels.checked(parallel, batched=True)
            flat = kernels.checked(parallel) if mstate.uniform else None

            def step(x, g, H, active, gtol, out, big, bad):
                if flat is not None and active.all():
                    n_big, n_bad = flat(x, g, S, H[0], gtol, out)
                    if n_bad == 0 and n_big == x.size:  # no problem stopped (the common step)
                        big[:] = 1
                        bad[:] = 0
                    else:
                        row_counts(g, out, gtol, big, bad)
                else:
                    rows(x, g, S, H, active, gtol, out, big, bad)

            return step

        if races(n, itemsize, steps):
            return racing_stepper(batched_step(False), batched_step(True))
        return batched_step(use_parallel(n, itemsize))

    def copy_rows(self, src, dst, rows, B: int) -> None:
        """dst's problems ``rows`` ← src's (flat arrays of B problems)."""
        dst.reshape(B, -1)[rows] = src.reshape(B, -1)[rows]

    def first_row_serves(self, active) -> bool:
        return bool(active.all())  # (rows_stepper, rows_checked_stepper: one flat launch then)

    def device_fill(self, mstate) -> None:
        return None  # (H is filled where it lives, by BatchedState's own fill)

    def rows_stepper(self, mstate, n):
        """The batched in-place step for n elements in all: the rows kernel, or the one-problem
        kernel while a uniform batch all runs (each serial or parallel by size: see Chosen)."""
        itemsize, S, kernels = mstate.dtype.itemsize, mstate.S, mstate.kernels
        rows = Chosen(lambda: kernels.rows(n, itemsize))
        flat = Chosen(lambda: kernels.step(n, itemsize)) if mstate.uniform else None

        def step(x, g, H, active):
            if flat is not None and active.all():  # one flat launch, as in rows_checked_stepper
                flat(x, g, S, H[0])
            else:
                rows(x, g, S, H, active)

        return step

    def checked_stepper(self, mstate, n, in_place: bool = False, steps: int = 0):
        """step_checked with the kernel for n elements looked up once (the loop calls it every step);
        for a run of ``steps`` steps where races() says so, the serial and parallel kernels race."""
        kernel, S = mstate.kernels.step_checked_for(n, mstate.dtype.itemsize, steps, in_place), mstate.S
        return lambda x, g, h, gtol, out: kernel(x, g, S, h, gtol, out)


CPU = CpuBackend()


def backend() -> CpuBackend:
    return CPU


def owns(a) -> bool:
    return isinstance(a, np.ndarray)
