"""CUDA kernels: the rules of ``fastrms.methods`` as ``@cuda.jit`` grid-stride loops.

The templates below are bound to a rule exactly as in ``cpu.py`` (the rule is
the global ``RULE`` of a renamed copy), so the math is the same Python function
on both backends.  Every scalar reaches the kernel in the array's dtype: h is
a tuple of NumPy scalars of that dtype and the finiteness test is ``x − x == 0``
rather than a comparison with a float64 infinity, so a float32 kernel has no
f64 instruction (tests/test_cuda.py reads the PTX).

Works on any array with ``__cuda_array_interface__`` (Numba device arrays,
CuPy, PyTorch CUDA tensors) and, under ``NUMBA_ENABLE_CUDASIM=1``, on the
simulator's arrays.  Requires numba-cuda: ``pip install 'fastrms[cuda12]'``
(or ``[cuda13]``).
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
import types
import weakref
from functools import cache, partial
from typing import Any, NamedTuple

import numpy as np
from numba import prange

from .._arrays import callable_gradient_error, is_torch, lazy_tensor_error, none_gradient_error, shape_error
from . import _jit

THREADS_PER_BLOCK = 256  # at most 1024 on every CUDA device
BLOCKS_PER_SM = 32
SIMULATOR_GRID = (1, 32)  # the simulator runs one Python thread per GPU thread


class CudaUnavailable(RuntimeError):
    """backend='cuda' was asked for on a machine that cannot run it."""


@cache
def _cuda():
    """numba.cuda from numba-cuda (NVIDIA's target), or a clear error."""
    import numba

    try:
        cuda = importlib.import_module("numba.cuda")
    except Exception as e:  # ImportError, or a driver error at import
        raise CudaUnavailable(f"numba.cuda cannot be imported ({e}); install numba-cuda with "
                              "pip install 'fastrms[cuda12]' or 'fastrms[cuda13]'") from None
    if getattr(cuda, "implementation", None) != "NVIDIA" and not numba.config.ENABLE_CUDASIM:
        # numba-cuda installs an import redirector through a .pth file; an environment
        # that skipped .pth processing gets numba's deprecated built-in target instead.
        try:
            importlib.import_module("_numba_cuda_redirector")
        except ImportError:
            raise CudaUnavailable("numba.cuda is numba's deprecated built-in CUDA target: install "
                                  "numba-cuda (pip install 'fastrms[cuda12]' or 'fastrms[cuda13]')") from None
        for name in [m for m in sys.modules if m == "numba.cuda" or m.startswith("numba.cuda.")]:
            del sys.modules[name]
        cuda = importlib.import_module("numba.cuda")
        if getattr(cuda, "implementation", None) != "NVIDIA":
            raise CudaUnavailable("numba.cuda does not come from numba-cuda even after its redirector")
    return cuda


def check_numpy_support() -> None:
    """numba-cuda imports its NumPy overloads at the first kernel compile, whoever compiles; one
    naming a function this NumPy removed fails there (numba-cuda 0.30, in maintenance, under
    NumPy 2.5: ``np.row_stack``).  Raises CudaUnavailable with the fix instead."""
    try:
        importlib.import_module("numba.cuda.np.arrayobj")
    except AttributeError as e:
        from importlib.metadata import PackageNotFoundError, version

        try:
            numba_cuda = f"numba-cuda {version('numba-cuda')}"
        except PackageNotFoundError:
            numba_cuda = "this numba-cuda"
        raise CudaUnavailable(
            f"{numba_cuda} cannot compile kernels under NumPy {np.__version__} ({e}): install "
            f"NumPy < 2.5 (pip install 'numpy<2.5', as the fastrms[cuda12] and fastrms[cuda13] "
            f"extras do), or use backend='cpu'") from None
    except ImportError:  # another layout of numba-cuda: nothing to check here
        pass


def cuda_available() -> bool:
    """True when CUDA kernels can run here (a GPU and driver, or the simulator); never raises."""
    try:
        if not _cuda().is_available():
            return False
        if not _simulator():
            check_numpy_support()
        return True
    except Exception:
        return False


def _simulator() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


# -- kernel templates (cuda is bound in the namespace, RULE/FLAGS per kernel) -------

def _step(x, g, S, h):  # pragma: no cover - compiled for the device
    start = cuda.grid(1)  # noqa: F821
    stride = cuda.gridsize(1)  # noqa: F821
    for i in range(start, x.size, stride):
        x[i] = RULE(x[i], g[i], S, i, h, FLAGS)  # noqa: F821


def _step_checked(x, g, S, h, gtol, out, stop, stamp):  # pragma: no cover - compiled
    """out ← rule(x, g); stop[0] = stamp if some |g_i| > gtol, stop[1] = stamp if some out_i is
    not finite.  Stamping with the step number saves a reset launch per step."""
    start = cuda.grid(1)  # noqa: F821
    stride = cuda.gridsize(1)  # noqa: F821
    big = False
    bad = False
    for i in range(start, x.size, stride):
        gi = g[i]
        xi = RULE(x[i], gi, S, i, h, FLAGS)  # noqa: F821
        out[i] = xi
        big = big or abs(gi) > gtol
        bad = bad or not (xi - xi == 0)  # NaN and ±inf, without a float64 constant
    if big:
        stop[0] = stamp
    if bad:
        stop[1] = stamp


# Batched problems (see cpu.py): a 2-D grid, x along the first axis of the grid and problems
# along the second; row b reads its own coefficients H[b].

def _step_rows(x, g, S, H, active):  # pragma: no cover - compiled for the device
    j0, b0 = cuda.grid(2)  # noqa: F821
    sj, sb = cuda.gridsize(2)  # noqa: F821
    n = x.size // H.shape[0]
    for b in range(b0, H.shape[0], sb):
        if active[b]:
            hb = H[b]
            for i in range(b * n + j0, (b + 1) * n, sj):
                x[i] = RULE(x[i], g[i], S, i, hb, FLAGS)  # noqa: F821


def _step_rows_checked(x, g, S, H, active, gtol, out, big, bad, stamp):  # pragma: no cover - compiled
    """_step_checked per problem: big[b] = stamp if some |g_i| > gtol in row b, bad[b] = stamp if some
    out_i there is not finite."""
    j0, b0 = cuda.grid(2)  # noqa: F821
    sj, sb = cuda.gridsize(2)  # noqa: F821
    n = x.size // H.shape[0]
    for b in range(b0, H.shape[0], sb):
        if active[b]:
            hb = H[b]
            any_big = False
            any_bad = False
            for i in range(b * n + j0, (b + 1) * n, sj):
                gi = g[i]
                xi = RULE(x[i], gi, S, i, hb, FLAGS)  # noqa: F821
                out[i] = xi
                any_big = any_big or abs(gi) > gtol
                any_bad = any_bad or not (xi - xi == 0)
            if any_big:
                big[b] = stamp
            if any_bad:
                bad[b] = stamp


def _broadcast_row(h, H):  # pragma: no cover - compiled
    """H[b] ← h for every row b: a uniform batch's coefficients cross to the device as one row."""
    start, stride = cuda.grid(1), cuda.gridsize(1)  # noqa: F821
    nh = h.size
    for i in range(start, H.size, stride):
        H[i // nh, i % nh] = h[i % nh]


def _fill_rows_shared(p, t, powers, LR, GAMMA, GF, H):  # pragma: no cover - compiled for the device
    """H[b] ← the coefficients of problem b at step t, one thread a problem, for a batch whose
    problems share the packed parameters p (method_state._fill_rows_grouped's one group, on the
    device): RULE is the method's ``finish`` (Method.parts), and ``powers`` its powers of t,
    computed once on the host and passed as arguments."""
    start, stride = cuda.grid(1), cuda.gridsize(1)  # noqa: F821
    for b in range(start, H.shape[0], stride):
        RULE(p, t, powers, LR[b], GAMMA[b], GF[b], H[b])  # noqa: F821


def _fill_rows_groups(P, t, PW, group, LR, GAMMA, GF, H):  # pragma: no cover - compiled for the device
    """_fill_rows_shared for a batch whose problems come in several groups of equal p (a grid of η ×
    β1): problem b's powers of t are row group[b] of PW, its group's, computed on the host
    (_GroupPowers) and unpacked into the method's tuple by UNPACK."""
    start, stride = cuda.grid(1), cuda.gridsize(1)  # noqa: F821
    for b in range(start, H.shape[0], stride):
        RULE(P[b], t, UNPACK(PW, group[b]), LR[b], GAMMA[b], GF[b], H[b])  # noqa: F821


def _reduce(g, out):  # pragma: no cover - compiled
    """out[0] ← max |g_i| and out[1] ← Σ g_i² (float64 atomics, out zeroed first), out[2] = 1 if a
    g_i is NaN.  Each thread starts from its first element, not from a zero made of g[0]
    (g[0]·0 is NaN when g[0] is ±inf, which atomic.max ignores); the sum is float64, as
    cpu.norm2's, since a float32 Σ g_i² overflows from |g_i| ≈ 1.8e19 and clip_norm would then
    zero the gradient."""
    start = cuda.grid(1)  # noqa: F821
    if start >= g.size:
        return
    stride = cuda.gridsize(1)  # noqa: F821
    m = abs(g[start])
    s = np.float64(m) * np.float64(m)  # (float() of a float32 stays float32 in compiled code)
    nan = m != m
    for i in range(start + stride, g.size, stride):
        a = abs(g[i])
        if a > m:
            m = a
        nan = nan or a != a
        s += np.float64(a) * np.float64(a)
    cuda.atomic.max(out, 0, np.float64(m))  # noqa: F821
    cuda.atomic.add(out, 1, s)  # noqa: F821
    if nan:
        out[2] = 1


def _compile(template, rule, flags: tuple, device_cache: bool = True, **bound):
    """(bound: further globals, each a function of the rule alone: the rule's name keys the cache)"""
    cuda = _cuda()
    name = f"cuda{template.__name__}_{getattr(rule, '__name__', 'plain')}_{_jit.flag_tag(flags)}"
    fn = _jit.bind(template, name, cuda=cuda, RULE=rule, FLAGS=flags, **bound)
    if _simulator():
        return cuda.jit(fn)
    try:
        return cuda.jit(cache=device_cache)(fn)
    except RuntimeError as e:  # no writable cache location: compile in memory (see _jit.py)
        if "cannot cache" not in str(e):
            raise
        _jit._warn_once("locator", "fastrms: no writable location for Numba's cache; compiling "
                                   "CUDA kernels in memory. Set NUMBA_CACHE_DIR to cache them.")
        return cuda.jit(fn)


def ptx(template_name: str, rule, flags: tuple, nh: int, dtype, cc=(9, 0)) -> str:
    """The PTX of a kernel, compiled without a GPU (for checking float32 purity)."""
    import numba
    from numba import types as nt

    cuda = _cuda()
    template = {"step": _step, "step_checked": _step_checked, "step_rows": _step_rows,
                "step_rows_checked": _step_rows_checked, "reduce": _reduce,
                "broadcast": _broadcast_row}[template_name]
    fn = _jit.bind(template, f"ptx_{template_name}", cuda=cuda, RULE=rule, FLAGS=tuple(flags))
    dt = numba.from_dtype(np.dtype(dtype))
    vec, mat, ints = nt.Array(dt, 1, "C"), nt.Array(dt, 2, "C"), nt.Array(nt.int64, 1, "A")
    if template_name == "reduce":  # (g, its float64 max, sum of squares and NaN flag)
        args = [vec, nt.Array(nt.float64, 1, "C")]
    elif template_name == "broadcast":  # (h, H)
        args = [vec, mat]
    elif template_name.startswith("step_rows"):  # H (B, nh) and the active mask
        args = [vec, vec, mat, mat, nt.Array(nt.uint8, 1, "C")]
        if template_name == "step_rows_checked":
            args += [dt, vec, ints, ints, nt.int64]
    else:
        args = [vec, vec, mat, nt.UniTuple(dt, nh)]
        if template_name == "step_checked":
            args += [dt, vec, nt.Array(nt.int64, 1, "C"), nt.int64]
    return _compile_ptx(fn, args, cc)


def fill_ptx(parts, p, dtype, cc=(9, 0), groups: bool = False) -> str:
    """The PTX of a batch's device fill (_fill_rows_shared, or _fill_rows_groups) for a method's
    parts and packed parameters p (a configuration's ``packed()``), compiled without a GPU."""
    import numba
    from numba import types as nt

    powers, finish = parts
    col, H = nt.Array(nt.float64, 1, "C"), nt.Array(numba.from_dtype(np.dtype(dtype)), 2, "C")
    if groups:
        fn = _jit.bind(_fill_rows_groups, "ptx_fill_rows_groups", cuda=_cuda(), RULE=finish,
                       UNPACK=_powers_layout(powers, p).unpack)
        grid = nt.Array(nt.float64, 2, "C")
        args = [grid, nt.int64, grid, nt.Array(nt.int64, 1, "C"), col, col, col, H]
    else:
        fn = _jit.bind(_fill_rows_shared, "ptx_fill_rows_shared", cuda=_cuda(), RULE=finish)
        args = [col, nt.int64, numba.typeof(powers(p, 1)), col, col, col, H]
    return _compile_ptx(fn, args, cc)


def _compile_ptx(fn, args, cc) -> str:
    cuda = _cuda()
    if cuda.is_available():
        return cuda.compile_ptx(fn, tuple(args), cc=cc)[0]
    # numba-cuda compiles nested device functions (the rule) for "the current device",
    # which needs a driver; without a GPU, stand in a device of the requested capability.
    dispatcher = importlib.import_module("numba.cuda.dispatcher")
    real = dispatcher.get_current_device
    dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=cc)
    try:
        return cuda.compile_ptx(fn, tuple(args), cc=cc)[0]
    finally:
        dispatcher.get_current_device = real


@cache
def _sm_count() -> int:
    # asking the driver costs ~10 µs a call; one device per process is the common case, and a
    # count from another device only changes the grid's shape, never the result
    return _cuda().get_current_device().MULTIPROCESSOR_COUNT


def launch_config(n: int, itemsize: int = 4) -> tuple[int, int]:
    if _simulator():
        return SIMULATOR_GRID
    return grid(n, _sm_count(), itemsize)


def grid(n: int, sms: int, itemsize: int = 4) -> tuple[int, int]:
    """(blocks, threads) for n elements of itemsize bytes on sms multiprocessors.

    One thread per element, except that 4-byte elements stop at BLOCKS_PER_SM blocks per
    multiprocessor and a grid-stride loop takes over: on an H100 at n = 1e8 that streams at 0.94
    of a copy's bandwidth against 0.90 with a full grid, and 8-byte elements the other way round
    (0.98 full, 0.95 capped; bench/RESULTS.md, GPU).  The reduction (one atomic per thread) keeps
    the cap: it is launched as for 4-byte elements."""
    blocks = -(-n // THREADS_PER_BLOCK)
    if itemsize < 8:
        blocks = min(blocks, BLOCKS_PER_SM * sms)
    return max(min(blocks, 2**31 - 1), 1), THREADS_PER_BLOCK


SIMULATOR_ROWS_GRID = ((1, 2), (8, 2))


def rows_launch_config(n: int, B: int):
    if _simulator():
        return SIMULATOR_ROWS_GRID
    return rows_grid(n, B, _sm_count())


def rows_grid(n: int, B: int, sms: int):
    """((blocks x, blocks y), (threads x, threads y)) for B problems of n elements: a block's
    THREADS_PER_BLOCK threads cover one problem's elements (32 at least, a warp) and as many
    problems as fit beside them; grid-stride loops take over beyond BLOCKS_PER_SM·sms blocks."""
    tx = min(THREADS_PER_BLOCK, max(32, 1 << max(n - 1, 0).bit_length()))
    ty = THREADS_PER_BLOCK // tx
    bx = min(-(-n // tx), BLOCKS_PER_SM * sms)
    by = min(-(-B // ty), max(1, BLOCKS_PER_SM * sms // bx), 65535)
    return (bx, by), (tx, ty)


class Launch:
    """``kernel[griddim, blockdim]`` with a lean call: ``Launch(kernel, grid, block)(*args)``.

    numba-cuda types every argument, builds a launch configuration and marshals the arguments
    through a chain of type tests on each call: ~100 µs of host time, ten times a small update's
    device time (bench/RESULTS.md, GPU).  The first call here goes through numba-cuda, which
    compiles and loads the kernel.  Later calls write the arguments, in numba-cuda's own layout
    (an array is meminfo, parent, size, itemsize, data, shape, strides; one 8-byte parameter
    each), into a fixed buffer with one ``struct.pack_into`` and hand its address to the
    driver's ``cuLaunchKernel``.  An argument unlike the first call's, a launch the driver
    refuses (a thread with no current context), another numba-cuda or the simulator: that call
    goes through numba-cuda.
    """

    def __init__(self, kernel, griddim, blockdim):
        self.kernel, self.griddim, self.blockdim = kernel, griddim, blockdim
        self._lean = None  # after the first call: the lean launch, or False where there is none
        self._seen: dict = {}  # id -> (weak array, its packed fields): x and the state, step after step
        self._lock = threading.Lock()  # one argument buffer per launch: one caller at a time
        self.fallbacks = 0  # calls after the first that went through numba-cuda (tests read it)

    def __call__(self, *args):
        lean = self._lean
        if lean:
            func, dims, packers, layout, buf, params, stream, launch, ok = lean
            if len(args) == len(packers):
                values: list = []
                try:
                    for pack, a in zip(packers, args, strict=True):
                        pack(a, values)
                except _Mismatch:
                    pass
                else:
                    try:
                        with self._lock:
                            layout.pack_into(buf, 0, *values)
                            err = launch(func, *dims, 0, stream, params, 0)[0]
                    except Exception:  # nothing was launched: numba-cuda's way from now on
                        self._lean = err = False
                    if err == ok:
                        return None
        self.kernel[self.griddim, self.blockdim](*args)
        if lean is None and not _simulator():
            self._lean = self._prepare(args)
        elif lean is not None:
            self.fallbacks += 1
        return None

    def _prepare(self, args):
        import ctypes
        import struct

        try:
            from cuda.bindings import driver

            types_ = tuple(self.kernel.typeof_pyval(a) for a in args)
            handle = self.kernel.overloads[types_]._codelibrary.get_cufunc().kernel.handle
            # a library kernel (CUkernel) launches in whichever context is current
            func = handle if isinstance(handle, driver.CUkernel) else driver.CUfunction(int(handle))
            fmt: list = []
            packers = tuple(self._packer(t, fmt) for t in types_)
            layout = struct.Struct("<" + "".join(fmt))
            buf = ctypes.create_string_buffer(8 * len(fmt))
            base = ctypes.addressof(buf)
            params = (ctypes.c_void_p * len(fmt))(*(base + 8 * k for k in range(len(fmt))))
            self._keep = params
            dims = _dims3(self.griddim) + _dims3(self.blockdim)
        except Exception:  # another numba-cuda or cuda-python: the ordinary launch stays correct
            return False
        stream = driver.CUstream(0)  # numba-cuda's default: the legacy default stream
        return (func, dims, packers, layout, buf, ctypes.addressof(params), stream, driver.cuLaunchKernel,
                driver.CUresult.CUDA_SUCCESS)

    def _packer(self, ty, fmt: list):
        """A function appending an argument's parameter values; fmt gets their struct codes."""
        from numba.core import types as nt

        if isinstance(ty, nt.Array):
            dtype, ndim, seen = np.dtype(str(ty.dtype)), ty.ndim, self._seen
            fmt += ["q"] * (5 + 2 * ndim)

            def pack_array(a, out):
                hit = seen.get(id(a))
                if hit is not None and hit[0]() is a:
                    out += hit[1]
                    return
                if getattr(a, "dtype", None) != dtype or getattr(a, "ndim", None) != ndim:
                    raise _Mismatch
                fields = [0, 0, a.size, dtype.itemsize, a.device_ctypes_pointer.value or 0,
                          *a.shape, *a.strides]
                if len(seen) >= 64:
                    seen.clear()
                seen[id(a)] = (weakref.ref(a), fields)  # weak: the array's life is not extended
                out += fields

            return pack_array
        if isinstance(ty, nt.BaseTuple):
            inner = tuple(self._packer(t, fmt) for t in ty)

            def pack_tuple(a, out):
                if len(a) != len(inner):
                    raise _Mismatch
                for p, v in zip(inner, a, strict=True):
                    p(v, out)

            return pack_tuple
        code = {nt.float64: "d", nt.float32: "fxxxx", nt.int64: "q", nt.uint8: "Bxxxxxxx",
                nt.boolean: "?xxxxxxx"}.get(ty)
        if code is None:
            raise TypeError(f"no lean launch for an argument of type {ty}")
        fmt.append(code)
        py = float if isinstance(ty, nt.Float) else int

        def pack_scalar(v, out):
            if not isinstance(v, (py, np.generic)):
                raise _Mismatch
            out.append(v)

        return pack_scalar


class _Mismatch(Exception):
    """An argument unlike the first call's: this call goes through numba-cuda."""


def _dims3(d) -> tuple:
    d = (d,) if isinstance(d, int) else tuple(d)
    return d + (1,) * (3 - len(d))


class CudaKernels:
    def __init__(self, rule, flags: tuple):
        self.rule, self.flags = rule, tuple(bool(f) for f in flags)
        self._cache: dict = {}
        self._launches: dict = {}

    def get(self, template, **bound):
        """(bound: the template's further globals, functions of the rule alone; see _compile)"""
        k = self._cache.get(template.__name__)
        if k is None:
            k = self._cache[template.__name__] = _compile(template, self.rule, self.flags, **bound)
        return k

    def launch(self, template, griddim, blockdim, dtype, **bound) -> Launch:
        """The kernel for arrays of dtype at one launch shape (one Launch per argument types)."""
        key = (template.__name__, griddim, blockdim, np.dtype(dtype))
        k = self._launches.get(key)
        if k is None:
            k = self._launches[key] = Launch(self.get(template, **bound), griddim, blockdim)
        return k


@cache
def kernels_for(rule, flags: tuple) -> CudaKernels:
    return CudaKernels(rule, flags)


def _plain_launch(template, blocks: int, threads: int, dtype) -> Launch:
    """A kernel with no rule (the norms' reduction, the row broadcast), compiled and launched as
    the rules' kernels are."""
    return kernels_for(None, ()).launch(template, blocks, threads, dtype)


class _DeviceRows:
    """A batch's H and active flags on the device for its rows kernels, sent only when they change:
    H each time the host computed it (once where h is constant; for a uniform batch H[0] alone,
    copied to the other rows on the device: 10,000 Adam problems would send ~1 MB a step), the
    flags when a problem stops."""

    def __init__(self, cuda, mstate):  # (holds no reference to mstate: the key of _DEVICE_ROWS)
        self.H = cuda.device_array(mstate.H.shape, dtype=mstate.H.dtype)
        self.row = cuda.device_array(mstate.H.shape[1], dtype=mstate.H.dtype) if mstate.uniform else None
        self.active = cuda.device_array(mstate.B, dtype=np.uint8)
        self._h_count = self._active = None
        self.filled_here = False  # (a _DeviceFill writes self.H: the host's H is never filled)

    def __call__(self, H, active, h_count: int):
        """(H, active) on the device, for the host's H, computed for the h_count-th time, and active."""
        if self._h_count != h_count and not self.filled_here:
            if self.row is not None:
                self.row.copy_to_device(H[0])
                _plain_launch(_broadcast_row, *launch_config(H.size), H.dtype)(self.row, self.H)
            else:
                self.H.copy_to_device(H)
            self._h_count = h_count
        if self._active is None or not np.array_equal(self._active, active):
            self.active.copy_to_device(active.astype(np.uint8))
            self._active = active.copy()
        return self.H, self.active


_DEVICE_ROWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # BatchedState -> _DeviceRows


class _DeviceFill:
    """BatchedState's fill ``(P, t, LR, GAMMA, GF, H, active, rows, starts)`` for a batch whose
    problems share p (one group) and whose method has parts (a sweep of η with Adam), run on the
    device: the host computes ``powers(p, t)`` once a step and a thread per problem finishes its
    row of the device's H.  What crosses a step is a few numbers as kernel arguments, where the
    host's fill sent B rows (10,000 Adam problems: 1.4 MB a step); p and the per-problem η, γ
    and clip factors cross only when they change (a schedule, clip_norm).  Every row is filled
    (the rows kernels skip the problems that stopped), and the host's H is left as it is."""

    def __init__(self, cuda, rows: _DeviceRows, parts, B: int):
        self.powers, finish = parts
        self.rows = rows
        rows.filled_here = True
        blocks, threads = launch_config(B)
        self.launch = kernels_for(finish, ()).launch(_fill_rows_shared, blocks, threads, rows.H.dtype)
        self.cuda = cuda
        self._sent: dict = {}  # name -> (the host values the device holds, their device array)

    def _on_device(self, name: str, values: np.ndarray):
        sent = self._sent.get(name)
        if sent is None:
            sent = self._sent[name] = (values.copy(), self.cuda.to_device(values))
        elif not np.array_equal(sent[0], values):
            sent[0][:] = values
            sent[1].copy_to_device(values)
        return sent[1]

    def __call__(self, P, t, LR, GAMMA, GF, H, active, rows, starts) -> None:
        p = P[0]
        self.launch(self._on_device("p", p), t, self.powers(p, t), self._on_device("lr", LR),
                    self._on_device("gamma", GAMMA), self._on_device("gfactor", GF), self.rows.H)


_LAYOUTS: dict = {}  # powers -> _PowersLayout


class _PowersLayout(NamedTuple):
    """A method's powers of t (a tuple of floats and bools) as a row of float64: ``pack(pw, PW, k)``
    writes a tuple into PW[k] on the host, ``unpack(PW, k)`` rebuilds it with its own types on the
    device (so that finish sees what the host's fill gives it)."""
    powers: Any
    pack: Any
    unpack: Any

    @cache  # noqa: B019 - one per layout, which lives as long as the process
    def fill(self, parallel: bool):
        """_group_powers compiled on the host for these powers, serial or parallel over groups."""
        name = f"group_powers_{self.powers.__name__}" + ("_par" if parallel else "")
        return _jit.jit(_jit.bind(_group_powers, name, POWERS=self.powers, PACK=self.pack), nogil=True,
                        parallel=parallel)


def _group_powers(P, rows, starts, t, PW):  # pragma: no cover - compiled for the host
    """PW[k] ← the powers of t of group k (its problems rows[starts[k]:starts[k + 1]] share p)."""
    for k in prange(starts.size - 1):
        PACK(POWERS(P[rows[starts[k]]], t), PW, k)  # noqa: F821 - bound per method


def _powers_layout(powers, p) -> _PowersLayout:
    """The _PowersLayout of a method's powers (p: any valid packed parameters, to read the tuple's
    types, which do not depend on its values)."""
    layout = _LAYOUTS.get(powers)
    if layout is None:
        from numba.extending import register_jitable

        kinds = [isinstance(v, (bool, np.bool_)) for v in powers(p, 1)]
        writes = "".join(f"    PW[k, {i}] = 1.0 if pw[{i}] else 0.0\n" if b else f"    PW[k, {i}] = pw[{i}]\n"
                         for i, b in enumerate(kinds))
        items = "".join(f"PW[k, {i}] != 0.0, " if b else f"PW[k, {i}], " for i, b in enumerate(kinds))
        namespace: dict = {}
        exec(f"def pack(pw, PW, k):\n{writes}\n"  # noqa: S102 - source made here, from the tuple's types
             f"def unpack(PW, k):\n    return ({items})\n", namespace)
        layout = _LAYOUTS.setdefault(powers, _PowersLayout(powers, register_jitable(namespace["pack"]),
                                                           register_jitable(namespace["unpack"])))
    return layout


class _DeviceGroupFill(_DeviceFill):
    """_DeviceFill for a batch whose problems come in several groups of equal p (a grid of η × β1:
    a group a β1; a random search: a group a problem; BatchedState.groups): the host computes each
    group's powers of t (compiled, the CPU fill's own arithmetic) and sends them, a few numbers a
    group; a thread per problem finishes its row with its group's.  P crosses once, or every step
    where a schedule rewrites it (p's scheduled columns)."""

    def __init__(self, cuda, rows: _DeviceRows, parts, mstate):
        powers, finish = parts
        self.rows, self.cuda, self._sent = rows, cuda, {}
        rows.filled_here = True
        members, starts = mstate.groups
        n_groups = len(starts) - 1
        group = np.empty(mstate.B, dtype=np.int64)
        group[members] = np.repeat(np.arange(n_groups), np.diff(starts))
        self.group = cuda.to_device(group)
        self.members, self.starts = members, starts
        self.PW = np.zeros((n_groups, len(powers(mstate.P[0], 1))))
        self.PW_device = cuda.to_device(self.PW)  # (new every step: sent without a comparison)
        layout = _powers_layout(powers, mstate.P[0])
        self.powers = layout.fill(False)
        from ..method_state import PARALLEL_FILL_MIN_ROWS

        if n_groups >= PARALLEL_FILL_MIN_ROWS:  # (as the host's fill of a random search)
            from . import _threads
            from .cpu import Chosen, parallel_ready

            self.powers = Chosen(lambda: _threads.guard(layout.fill(True)) if parallel_ready()
                                 else layout.fill(False))
        self.p_scheduled = bool(mstate.config.scheduled)
        self.P = None
        blocks, threads = launch_config(mstate.B)
        self.launch = kernels_for(finish, ()).launch(_fill_rows_groups, blocks, threads, rows.H.dtype,
                                                     UNPACK=layout.unpack)

    def __call__(self, P, t, LR, GAMMA, GF, H, active, rows, starts) -> None:
        self.powers(P, self.members, self.starts, t, self.PW)
        self.PW_device.copy_to_device(self.PW)
        if self.P is None:
            self.P = self.cuda.to_device(P)
        elif self.p_scheduled:
            self.P.copy_to_device(P)
        self.launch(self.P, t, self.PW_device, self.group, self._on_device("lr", LR),
                    self._on_device("gamma", GAMMA), self._on_device("gfactor", GF), self.rows.H)


# -- arrays ------------------------------------------------------------------------

def array_kind(a) -> str | None:
    """'numba', 'cupy' or 'torch' for a device array, None for anything else."""
    mod = type(a).__module__.split(".")[0]
    if mod == "cupy":
        return "cupy"
    if mod == "torch" and getattr(a, "is_cuda", False):
        return "torch"
    if mod == "numba" and (hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"):
        return "numba"
    if hasattr(a, "__cuda_array_interface__"):
        return "numba"  # any other producer: seen through a Numba view
    return None


def as_device(a):
    """A Numba device-array view of a (no copy), or None if a is not on the device."""
    kind = array_kind(a)
    if kind is None:
        return None
    if type(a).__name__ in ("DeviceNDArray", "FakeCUDAArray", "MappedNDArray"):
        return a
    if kind == "torch":
        if not a.is_contiguous():
            raise ValueError("the CUDA tensor must be contiguous")
        a = _readable(a)
    if _simulator():
        return _cuda().as_cuda_array(a)
    _wait_for(a.__cuda_array_interface__)
    return _cuda().as_cuda_array(a, sync=False)  # a view that keeps a alive


def _wait_for(desc: dict) -> None:
    """Synchronize the producer's stream, as the CUDA Array Interface asks, unless it is ordered
    with the legacy default stream that fastrms launches on (Numba would synchronize even then:
    a stall of the whole pipeline on every step)."""
    if desc.get("stream") not in _ORDERED_STREAMS:
        _cuda().external_stream(desc["stream"]).synchronize()


def _interface(a) -> dict | None:
    """a's CUDA Array Interface, or None for host arrays and the simulator's."""
    if isinstance(a, np.ndarray):
        return None
    if is_torch(a):
        if not getattr(a, "is_cuda", False):
            return None
        a = _readable(a)
    if _simulator():
        return None
    return getattr(a, "__cuda_array_interface__", None)


def _readable(t):
    """A CUDA tensor whose memory holds its values, detached (a tensor that requires grad, an
    nn.Parameter, refuses the interface; detach() shares its memory, so updates reach it)."""
    e = lazy_tensor_error(t)
    if e is not None:
        raise e
    return t.detach()


# Streams ordered with the legacy default stream (CUDA Array Interface v3: None = no stream
# given, 1 = legacy default, 2 = per-thread default).
_ORDERED_STREAMS = (None, 1, 2)


def to_kind(dev, kind: str):
    """dev (a Numba device array) as the user's kind of array, sharing memory."""
    if kind == "cupy":
        import cupy

        return cupy.asarray(dev)
    if kind == "torch":
        import torch

        return torch.as_tensor(dev, device="cuda")
    if kind == "numpy":
        return dev.copy_to_host()
    return dev


def device_x0(x0, dtype, backend: CudaBackend):
    """A validated flat device copy of x0 (host or device) and its shape; x0 is never mutated."""
    from .._arrays import FLOATS, as_x0

    cuda = _cuda()
    dev = as_device(x0)
    if dev is None:  # a host array: copied to the device once (and back once at the end)
        host = as_x0(x0, dtype)
        return cuda.to_device(host.reshape(-1)), host.shape
    if dev.dtype not in FLOATS:
        raise TypeError(f"x0 must hold float32 or float64 numbers, got dtype {dev.dtype}")
    if dtype is not None and np.dtype(dtype) != dev.dtype:
        raise TypeError(f"x0 is a {dev.dtype} device array; fastrms does not cast on the GPU "
                        f"(convert it to {np.dtype(dtype)} first)")
    if dev.size == 0:
        raise ValueError("x0 is empty: there is nothing to optimize")
    if not dev.is_c_contiguous():
        raise ValueError("x0 must be a C-contiguous device array")
    x = cuda.device_array(dev.size, dtype=dev.dtype)
    x.copy_to_device(dev.reshape(dev.size))
    if not math.isfinite(backend.max_abs(x)):
        raise ValueError("x0 contains NaN or inf")
    return x, tuple(dev.shape)


def owns(a) -> bool:
    """Whether a is a CUDA device array (cheap: numba.cuda is not imported for host arrays)."""
    if isinstance(a, np.ndarray):
        return False
    if is_torch(a):  # first: a tensor that requires grad (an
        return bool(getattr(a, "is_cuda", False))   # nn.Parameter) raises on the interface
    return hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray"


class CudaBackend:
    """The CUDA backend (see ``kernels.Backend``; the CPU's twin is ``cpu.CpuBackend``)."""

    name = "cuda"
    host_memory = False

    def __init__(self):
        cuda = _cuda()
        if not cuda.is_available():
            raise CudaUnavailable("backend='cuda' needs a CUDA GPU with a working driver, and none is "
                                  "usable here (numba.cuda.is_available() is False); use backend='cpu'")
        if not _simulator():  # (the simulator compiles nothing)
            check_numpy_support()
        self.cuda = cuda
        self._local = threading.local()  # reduction buffers: one set per thread, never shared

    # intake and output
    def x0(self, x0, dtype):
        return device_x0(x0, dtype, self)

    def array_kind(self, a) -> str:
        return array_kind(a) or "numpy"

    def param_array(self, x):
        """x's Numba device view, checked for in-place updates."""
        from .._arrays import FLOATS, kind_error

        dev = as_device(x)
        if dev.dtype not in FLOATS:
            raise kind_error("x", dev.dtype)
        if not dev.is_c_contiguous():
            raise ValueError("x must be C-contiguous (the update runs over its flat memory)")
        return dev

    def result(self, a, shape, kind):
        return to_kind(a.reshape(shape), kind)

    # state and buffers
    def state(self, host: np.ndarray):
        return self.cuda.to_device(host)

    def load_state(self, S, host) -> None:
        S.copy_to_device(host)

    def empty_like(self, x):
        return self.cuda.device_array(x.shape, dtype=x.dtype)

    def to_host(self, a) -> np.ndarray:
        return a.copy_to_host()

    def copy(self, src, dst=None):
        """dst ← src on the device (a new device array when dst is None)."""
        if dst is None:
            dst = self.cuda.device_array(src.shape, dtype=src.dtype)
        dst.copy_to_device(src)
        return dst

    def kernels(self, config):
        return kernels_for(config.method.rule, config.flags)

    # launches
    def stepper(self, mstate, n):
        """The in-place step ``(x, g, h) -> None`` for n elements, its launch looked up once."""
        launch = mstate.kernels.launch(_step, *launch_config(n, mstate.dtype.itemsize), mstate.dtype)
        S = mstate.S
        return lambda x, g, h: launch(x, g, S, tuple(h))

    def checked_stepper(self, mstate, n, in_place: bool = False, steps: int = 0):
        """``(x, g, h, gtol, out) -> (any |g_i| > gtol, any out_i non-finite)`` for n elements
        (``steps``, the run's length, matters only on the CPU: its kernels race)."""
        if in_place:  # (the front refuses it first, with a message)
            raise NotImplementedError("in_place runs on the CPU backend")
        kernel = mstate.kernels.launch(_step_checked, *launch_config(n, mstate.dtype.itemsize), mstate.dtype)
        # the stop flags and stamps belong to this run: concurrent runs never see each other's
        stop = self.cuda.to_device(np.zeros(2, np.int64))
        stamp = 0

        def step_checked(x, g, h, gtol, out):
            nonlocal stamp
            stamp += 1
            kernel(x, g, mstate.S, tuple(h), gtol, out, stop, stamp)
            flags = stop.copy_to_host()  # the one host round trip a checked step needs
            return int(flags[0] == stamp), int(flags[1] == stamp)

        return step_checked

    # batched problems
    def rows_checked_stepper(self, mstate, n, steps: int = 0):
        """The batched checked launch for n elements in all: ``(x, g, H, active, gtol, out, big, bad)``
        with host H, active, big and bad (big[b], bad[b] set to 0 or 1 for the active problems;
        ``steps`` as in checked_stepper)."""
        B = mstate.B
        kernel = mstate.kernels.launch(_step_rows_checked, *rows_launch_config(n // B, B), mstate.H.dtype)
        flags = self.cuda.to_device(np.zeros((2, B), np.int64))
        on_device = self._device_rows(mstate)
        stamp = 0

        def step(x, g, H, active, gtol, out, big, bad):
            nonlocal stamp
            stamp += 1
            H_dev, active_dev = on_device(H, active, mstate.h_count)
            kernel(x, g, mstate.S, H_dev, active_dev, gtol, out, flags[0], flags[1], stamp)
            f = flags.copy_to_host()  # the one host round trip a checked step needs
            big[:] = f[0] == stamp
            bad[:] = f[1] == stamp

        return step

    def first_row_serves(self, active) -> bool:
        return True  # (a uniform batch's H[0] is copied to the other rows on the device)

    def device_fill(self, mstate):
        """A batch sharing p whose method has parts fills its H on the device (_DeviceFill), as does
        one whose problems come in groups of equal p (_DeviceGroupFill), down to groups of one (a
        random search of β1: its powers, 7 numbers a problem for Adam, cross rather than its rows'
        16, and the host computes no finish)."""
        parts = mstate.config.method.parts
        if not parts or mstate.uniform:
            return None
        if mstate.shares_p:
            return _DeviceFill(self.cuda, self._device_rows(mstate), parts, mstate.B)
        return _DeviceGroupFill(self.cuda, self._device_rows(mstate), parts, mstate)

    def rows_stepper(self, mstate, n):
        B = mstate.B
        kernel = mstate.kernels.launch(_step_rows, *rows_launch_config(n // B, B), mstate.H.dtype)
        on_device = self._device_rows(mstate)
        return lambda x, g, H, active: kernel(x, g, mstate.S, *on_device(H, active, mstate.h_count))

    def _device_rows(self, mstate) -> _DeviceRows:
        """mstate's H and flags on the device, one copy for its steppers (checked or not)."""
        rows = _DEVICE_ROWS.get(mstate)
        if rows is None:
            rows = _DEVICE_ROWS[mstate] = _DeviceRows(self.cuda, mstate)
        return rows

    def row_norms(self, g, B: int) -> np.ndarray:
        from .cpu import CPU

        return CPU.row_norms(g.copy_to_host(), B)

    def copy_rows(self, src, dst, rows, B: int) -> None:
        n = src.size // B
        for b in rows:
            dst[b * n:(b + 1) * n].copy_to_device(src[b * n:(b + 1) * n])

    def norms(self, g) -> tuple[float, float]:
        """(max |g_i|, ‖g‖₂) by one device reduction; NaN if g holds a NaN."""
        zeros = np.zeros(3)
        buf = self._local.__dict__.get("sums")  # (float64 for every dtype: see _reduce)
        if buf is None:
            buf = self._local.sums = self.cuda.to_device(zeros)
        else:
            buf.copy_to_device(zeros)
        blocks, threads = launch_config(g.size)  # capped: one atomic per thread
        _plain_launch(_reduce, blocks, threads, g.dtype)(g, buf)
        m, s, nan = buf.copy_to_host()
        if nan:
            return math.nan, math.nan
        return float(m), math.sqrt(float(s))

    def max_abs(self, g) -> float:
        return self.norms(g)[0]

    def view(self, x, shape, kind):
        """x (a device buffer) as the user's kind of array in the problem's shape, sharing memory."""
        return to_kind(x.reshape(shape), kind if kind != "numpy" else _host_kind())

    def as_gradient(self, g, x):
        """g as a flat device array of x's dtype and shape (keeping g alive), or a clear error."""
        dev = as_device(g)
        if dev is None:
            if g is None:
                raise none_gradient_error()
            if callable(g):
                raise callable_gradient_error()
            a = np.asarray(g)
            if a.dtype.kind not in "fiu":
                raise TypeError(f"the gradient must hold real numbers, got dtype {a.dtype}")
            dev = self.cuda.to_device(np.ascontiguousarray(a, dtype=x.dtype))
        e = shape_error(tuple(dev.shape), tuple(x.shape))
        if e is not None:
            raise e
        if dev.dtype != x.dtype:
            raise TypeError(f"the gradient's dtype {dev.dtype} differs from x's {x.dtype}; on the GPU "
                            "fastrms does not cast (return the gradient in x's dtype)")
        if not dev.is_c_contiguous():
            raise ValueError("the gradient must be a C-contiguous device array")
        return dev.reshape(dev.size)

    def step_gradient(self, g, x):
        """as_gradient for a stepper's step, which reads g only while it runs.

        Building a Numba view of a CuPy array or a tensor costs ~25 µs, most of a small step.  A
        view that holds no reference to g can be kept and reused for the same memory
        (frameworks' pools and in-place gradients hand it back step after step), and is safe
        because it is only used while the caller holds g.
        """
        desc = _interface(g)
        if desc is None or desc.get("mask") is not None:
            return self.as_gradient(g, x)
        _wait_for(desc)
        key = (desc["data"][0], tuple(desc["shape"]), desc.get("strides"), desc["typestr"])
        flat = _FLAT_GRADIENTS.get(key)
        if flat is None:
            dev = self.cuda.from_cuda_array_interface(dict(desc, stream=None), owner=None, sync=False)
            flat = self.as_gradient(dev, x)  # the checks
            if len(_FLAT_GRADIENTS) >= 256:  # bounded: a long run through a fresh allocator
                _FLAT_GRADIENTS.clear()
            _FLAT_GRADIENTS[key] = flat
        elif key[1] != tuple(x.shape) or flat.dtype != x.dtype:
            return self.as_gradient(g, x)  # the same memory seen by another stepper: its errors
        return flat

    def gradient_for(self, x):
        """step_gradient with x bound (what a stepper calls every step)."""
        return partial(self.step_gradient, x=x)

    def single_step(self, mstate, x, flat):
        """A stepper's whole ``step(g)`` over one array x (``flat`` its 1-D view): g checked, h, the
        kernel's launch, t + 1."""
        gradient, kernel = self.gradient_for(x), self.stepper(mstate, flat.size)

        def step(g) -> None:
            gf = gradient(g)
            kernel(flat, gf, mstate.coefficients(gf))
            mstate.t += 1

        return step


_FLAT_GRADIENTS: dict = {}  # (pointer, shape, strides, typestr) -> a checked flat view without an owner


@cache
def _host_kind() -> str:
    """What the user's functions receive when x0 came from the host: CuPy arrays when CuPy is
    installed, else Numba device arrays."""
    try:
        importlib.import_module("cupy")
    except ImportError:
        return "numba"
    return "cupy"


@cache
def backend() -> CudaBackend:
    return CudaBackend()
