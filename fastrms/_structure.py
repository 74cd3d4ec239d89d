"""Parameters as a list, tuple or dict of arrays (a model's weights and biases).

A stepper over such a structure keeps one flat state over all the arrays' elements, in
order, and updates every array in place with one fused kernel (``kernels.cpu._step_arrays``):
no copies in or out, and the math is the same rule as for one array.  The gradient comes in
the same structure.  ``pack`` goes the other way: one flat buffer, and views of it shaped
like the arrays, for a model that can live in it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from itertools import pairwise
from operator import itemgetter
from typing import Any

import numpy as np

from . import _arrays
from .kernels import cpu

Structure = list | tuple | dict


def is_structure(x: Any) -> bool:
    return isinstance(x, (list, tuple, dict))


def items(x: Structure) -> list:
    """The arrays of x, in order (a dict's values)."""
    return _leaves(x)[1]


def _leaves(x: Structure) -> tuple[list | None, list]:
    """(the dict's keys or None, the arrays in order)."""
    if isinstance(x, dict):
        return list(x), list(x.values())
    return None, list(x)


class Leaves:
    """The arrays of a structure: where each one's elements sit in the flat state, and how the
    kernel reaches them (addresses, chunks of at most ``cpu.ARRAY_CHUNK`` elements)."""

    def __init__(self, x: Structure):
        self.container = type(x)
        self.keys, arrays = _leaves(x)
        if not arrays:
            raise ValueError("x is an empty collection: there is nothing to optimize")
        self.names = self.keys if self.keys is not None else list(range(len(arrays)))
        arrays = [a if (v := _arrays.cpu_tensor_view(a)) is None else v for a in arrays]  # (CPU tensors)
        on_gpu = any(_pack_kind(a) != "NumPy arrays" for a in arrays)
        gpu = "; on a GPU, fastrms.pack them into one device buffer" if on_gpu else ""
        if not any(isinstance(a, np.ndarray) for a in arrays):  # numbers: x itself was meant as the array
            raise TypeError("steppers update x in place, so x must be a NumPy (or CUDA) array of float32 "
                            "or float64, or a list, tuple or dict of NumPy arrays (a model's parameters"
                            f"{gpu}); got a {type(x).__name__} of {type(arrays[0]).__name__}")
        for k, a in zip(self.names, arrays, strict=True):
            if not isinstance(a, np.ndarray):
                raise TypeError(f"x[{k!r}] must be a NumPy array of float32 or float64 (a stepper over "
                                f"several arrays runs on the CPU{gpu}), got {type(a).__name__}")
            try:
                _arrays.check_param_array(a)
            except (TypeError, ValueError) as e:
                raise type(e)(f"x[{k!r}]: {e}") from None
        dtypes = {a.dtype for a in arrays}
        if len(dtypes) > 1:
            raise TypeError(f"the arrays of x must share one dtype, got {sorted(map(str, dtypes))}")
        if len({id(a) for a in arrays}) < len(arrays) or _overlap(arrays):
            raise ValueError("the arrays of x overlap in memory: each element must be updated once")
        self.arrays = arrays
        self.dtype = arrays[0].dtype
        self.shapes = [a.shape for a in arrays]
        self.sizes = np.array([a.size for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)
        self.n = int(self.sizes.sum())
        self.xs = np.array([a.ctypes.data for a in arrays], dtype=np.int64)
        self.gs = np.zeros(len(arrays), dtype=np.int64)
        self.pieces, self.chunks = _chunks(self.sizes, cpu.ARRAY_CHUNK)
        # gradients are gathered by ndim: a tuple of arrays of one type compiles once per length
        by_ndim: dict = {}
        for j, shape in enumerate(self.shapes):
            by_ndim.setdefault(len(shape), []).append(j)
        # (itemgetter picks a group's gradients as a tuple in C: a list comprehension over an index
        # array cost about as much as the compiled gather itself)
        self.groups = [(itemgetter(*js), len(js) == 1, np.array(js, dtype=np.int64),
                        np.array([self.shapes[j] for j in js], dtype=np.int64).reshape(len(js), ndim))
                       for ndim, js in by_ndim.items()]
        self._fast = True
        self._torch_types = None  # (torch.Tensor, x's dtype in torch), for a torch model's .grad

    def structure(self, values: list) -> Structure:
        """values (one per array, in order) in x's structure."""
        if self.keys is not None:
            return dict(zip(self.keys, values, strict=True))
        return self.container(values) if self.container is tuple else list(values)

    def split(self, a, what: str) -> list:
        """The per-array items of a, which must have x's structure."""
        if self.keys is not None:
            if not isinstance(a, dict):
                raise TypeError(f"{what} must be a dict with x's keys, got {type(a).__name__}")
            if list(a) != self.keys:
                if set(a) != set(self.keys):
                    raise ValueError(f"{what} has keys {sorted(map(str, a))}, but x has "
                                     f"{sorted(map(str, self.keys))}")
                return [a[k] for k in self.keys]
            return list(a.values())
        if not isinstance(a, (list, tuple)):
            raise TypeError(f"{what} must be a list or tuple like x, got {type(a).__name__}")
        if len(a) != len(self.sizes):
            raise ValueError(f"{what} has {len(a)} arrays, but x has {len(self.sizes)}")
        return list(a)

    def gradient_addresses(self, grads, like: np.ndarray) -> list:
        """Fill self.gs with the gradients' addresses; returns what must stay alive meanwhile."""
        if callable(grads):  # (not a structure of any kind: say what a function was taken for)
            raise _arrays.callable_gradient_error()
        gs = self.split(grads, "the gradient")
        torch = sys.modules.get("torch")
        if torch is not None and gs and isinstance(gs[0], torch.Tensor):  # a torch model's .grad
            if self._tensor_addresses(gs, torch):
                return gs
            gs = [g if (v := _arrays.cpu_tensor_view(g)) is None else v for g in gs]  # their NumPy views
        if self._fast:
            try:
                for pick, single, where, shapes in self.groups:
                    picked = (pick(gs),) if single else pick(gs)
                    if cpu.gather_addresses(picked, shapes, where, like, self.gs) >= 0:
                        break
                else:
                    return gs
            except Exception:  # not a tuple of arrays of one type (lists, mixed dtypes or layouts)
                self._fast = False  # a structure like this one again: straight to the checks below
        keep = []
        for j, (g, x) in enumerate(zip(gs, self.arrays, strict=True)):
            try:
                flat = _arrays.as_gradient(g, x)
            except (TypeError, ValueError) as e:
                raise type(e)(f"gradient[{self.names[j]!r}]: {e}") from None
            keep.append(flat)
            self.gs[j] = flat.ctypes.data
        return keep

    def _tensor_addresses(self, gs: list, torch) -> bool:
        """Fill self.gs with the data pointers of CPU tensors whose memory holds exactly what the
        kernel reads (x's dtype and shapes, strided and contiguous, no lazy negation, not a
        ZeroTensor, whose pointer is null), making no NumPy view (~1.2 µs a tensor); False at the
        first other one, which the views (refusing what NumPy refuses) and the checks then take."""
        if self._torch_types is None:  # (looked up once: dtype.name alone costs a microsecond)
            self._torch_types = (torch.Tensor, getattr(torch, self.dtype.name), torch.strided)
        (tensor, want, strided), out = self._torch_types, self.gs
        try:
            for j, (g, shape) in enumerate(zip(gs, self.shapes, strict=True)):
                if not (type(g) is tensor and g.dtype is want and g.layout is strided and g.is_cpu
                        and g.size() == shape and g.is_contiguous() and not g.is_neg()):
                    return False
                out[j] = address = g.data_ptr()
                if not address:
                    return False
        except RuntimeError:  # (a nested tensor has no size(): the checked path says what it is)
            return False
        return True

    def columns(self, j: int) -> slice:
        return slice(int(self.offsets[j]), int(self.offsets[j] + self.sizes[j]))

    def unflatten(self, flat) -> Structure:
        """A flat state row as views shaped like the arrays, in x's structure."""
        return self.structure([flat[self.columns(j)].reshape(shape) for j, shape in enumerate(self.shapes)])

    def flatten(self, a, what: str) -> np.ndarray:
        """a (x's structure, each item the size of its array) as one flat array of x's dtype."""
        parts = self.split(a, what)
        for j, (item, size) in enumerate(zip(parts, self.sizes, strict=True)):
            if np.size(item) != size:
                raise ValueError(f"{what}[{self.names[j]!r}] has {np.size(item)} elements, expected {size}")
        return np.concatenate([np.asarray(item, dtype=self.dtype).reshape(-1) for item in parts])

    def global_norm(self, grads: list) -> float:
        """‖(g_1, …, g_k)‖₂, bit for bit the norm of their concatenation (norm2's order). grads
        are the gathered arrays, or a torch model's tensors read by their pointers (viewed here)."""
        s = 0.0
        for g in grads:
            s = cpu.sum_squares(g if isinstance(g, np.ndarray) else _arrays.cpu_tensor_view(g), s)
        return float(np.sqrt(s))


def _chunks(sizes: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """The elements of arrays of these sizes, in turn, cut every chunk elements: pieces (j, start,
    stop) within array j, and each chunk's first piece (chunks[c] to chunks[c + 1])."""
    pieces, chunks, filled = [], [0], 0
    for j, m in enumerate(int(v) for v in sizes):
        start = 0
        while start < m:
            stop = min(m, start + chunk - filled)
            pieces.append((j, start, stop))
            filled += stop - start
            start = stop
            if filled == chunk:
                chunks.append(len(pieces))
                filled = 0
    if filled:
        chunks.append(len(pieces))
    return np.array(pieces, dtype=np.int64), np.array(chunks, dtype=np.int64)


def _overlap(arrays: list) -> bool:
    """Whether two of the arrays share memory (their byte ranges intersect)."""
    spans = sorted((a.ctypes.data, a.ctypes.data + a.nbytes) for a in arrays)
    return any(end > start for (_, end), (start, _) in pairwise(spans))


def parameters(x, call: str) -> Any:
    """x as a stepper or ``pack`` takes it: torch's ways of passing a model's parameters become a
    list (``model.parameters()``, an ``nn.ParameterList``) or a dict keyed by name
    (``model.named_parameters()``, an ``nn.ParameterDict``), as torch's optimizers take them;
    ``call`` shows the right call in the errors."""
    if isinstance(x, Iterator):
        x = list(x)
        if x and all(isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) for p in x):
            if len({name for name, _ in x}) != len(x):
                raise ValueError("x names a parameter twice: each (name, parameter) pair needs its own name")
            return dict(x)
    elif type(x).__module__.startswith("torch.nn"):
        nn = sys.modules["torch"].nn
        if isinstance(x, nn.ParameterList):
            return list(x)
        if isinstance(x, nn.ParameterDict):
            return dict(x.items())
        if isinstance(x, nn.Module):
            raise TypeError(f"x is a torch module ({type(x).__name__}): pass its parameters, as to torch's "
                            f"optimizers: {call}")
    if isinstance(x, (list, tuple)) and x and all(isinstance(p, dict) and "params" in p for p in x):
        raise TypeError("x is a list of parameter groups (dicts with 'params'): a fastrms stepper has one "
                        "set of hyperparameters, so make one stepper per group")
    return x


def pack(arrays: Structure, dtype=None) -> tuple[Any, Structure]:
    """Copy arrays (a list, tuple or dict of arrays) into one flat buffer.

    Returns ``(flat, views)``: ``views`` has the structure of ``arrays``, each view shaped like
    its array and sharing ``flat``'s memory.  Keep the model in the views and step ``flat`` with
    any stepper, its gradient packed the same way, for zero copies per step::

        flat, (W, b) = fastrms.pack([W0, b0])
        gflat, (dW, db) = fastrms.pack([W0, b0])     # a gradient buffer of the same layout
        opt = fastrms.RMSProp(flat, lr=1e-3)
        ...; dW[...] = ...; db[...] = ...; opt.step(gflat)

    The buffer is of the arrays' kind: NumPy for NumPy arrays (and lists), a tensor on their
    device for PyTorch tensors, CuPy for CuPy arrays, a Numba device array for other CUDA
    arrays.  On a GPU that turns a model's many launches a step into one; a torch model moves
    into the views, and its gradients into a packed buffer, where backward() accumulates them::

        flat, views = fastrms.pack(model.parameters())
        gflat, gviews = fastrms.pack([torch.zeros_like(p) for p in model.parameters()])
        for p, v, g in zip(model.parameters(), views, gviews):
            p.data, p.grad = v, g
        opt = fastrms.RMSProp(flat, lr=1e-3)
        ...; gflat.zero_(); loss.backward(); opt.step(gflat)   # (not zero_grad(): it drops p.grad)
    """
    arrays = parameters(arrays, "fastrms.pack(model.parameters())")
    keys, items = _leaves(arrays) if is_structure(arrays) else (None, None)
    if items is None:
        raise TypeError(f"pack takes a list, tuple or dict of arrays, got {type(arrays).__name__}")
    if not items:
        raise ValueError("pack got an empty collection")
    kinds = {_pack_kind(a) for a in items}
    if len(kinds) > 1:
        raise TypeError(f"pack takes arrays of one kind, got {' and '.join(sorted(kinds))}")
    intake, buffer = _PACKERS[kinds.pop()]
    items = intake(items)
    dtypes = [_element_dtype(a) for a in items]
    for dt in dtypes:
        if dt.kind not in "fiu":
            raise _arrays.kind_error("each array", dt)
    if dtype is not None:
        dt = np.dtype(dtype)
        if dt not in _arrays.FLOATS:  # asked for: never silently another
            raise ValueError(f"dtype must be float32 or float64, got {dt}")
    else:  # the arrays' own, integers and float16 made float64 first, as x0's are
        dt = np.result_type(*(d if d in _arrays.FLOATS else np.float64 for d in dtypes))
    shapes = [tuple(a.shape) for a in items]
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    flat, place = buffer(items, sum(sizes), dt)
    views, o = [], 0
    for a, shape, size in zip(items, shapes, sizes, strict=True):
        v = flat[o:o + size].reshape(shape)
        place(v, a)
        views.append(v)
        o += size
    if keys is not None:
        return flat, dict(zip(keys, views, strict=True))
    return flat, (tuple(views) if isinstance(arrays, tuple) else views)


def _pack_kind(a) -> str:
    if _arrays.is_torch(a):
        return "torch tensors"
    if type(a).__module__.split(".")[0] == "cupy":
        return "CuPy arrays"
    if hasattr(a, "__cuda_array_interface__") or type(a).__name__ == "FakeCUDAArray":
        return "CUDA arrays"
    return "NumPy arrays"


def _element_dtype(a) -> np.dtype:
    """a's element type as NumPy names it (a torch bfloat16 as float16: both become float64)."""
    if not _arrays.is_torch(a):
        return np.dtype(a.dtype)
    name = str(a.dtype).removeprefix("torch.")
    try:
        return np.dtype("float16" if name == "bfloat16" else name)
    except TypeError:  # (float8 and other types NumPy lacks)
        return np.dtype(object)


def _numpy_intake(items):
    try:
        return [np.asarray(a) for a in items]
    except (TypeError, ValueError) as e:
        raise TypeError(f"pack takes arrays of numbers: {e}") from None


def _cuda_intake(items):
    from .kernels import cuda

    return [cuda.as_device(a) for a in items]  # (Numba's views of other producers' arrays)


def _assign(v, a) -> None:
    v[...] = a


def _numpy_buffer(items, n, dt):
    return np.empty(n, dtype=dt), _assign


def _torch_buffer(items, n, dt):
    torch = sys.modules["torch"]
    devices = sorted({str(a.device) for a in items})
    if len(devices) > 1:
        raise ValueError(f"pack's tensors must be on one device, got {' and '.join(devices)}")
    flat = torch.empty(n, dtype=getattr(torch, dt.name), device=devices[0])
    return flat, lambda v, a: v.copy_(a.detach())


def _cupy_buffer(items, n, dt):
    cupy = sys.modules["cupy"]
    devices = {a.device.id for a in items}
    if len(devices) > 1:
        raise ValueError(f"pack's arrays must be on one GPU, got devices {sorted(devices)}")
    with cupy.cuda.Device(devices.pop()):
        return cupy.empty(n, dtype=dt), _assign


def _cuda_buffer(items, n, dt):
    from .kernels import cuda

    def place(v, a):  # (Numba device arrays do not cast on the device: a cast goes by the host)
        v.copy_to_device(a if a.dtype == dt else a.copy_to_host().astype(dt))

    return cuda._cuda().device_array(n, dtype=dt), place


def _as_is(items):
    return items


_PACKERS = {"NumPy arrays": (_numpy_intake, _numpy_buffer), "torch tensors": (_as_is, _torch_buffer),
            "CuPy arrays": (_as_is, _cupy_buffer), "CUDA arrays": (_cuda_intake, _cuda_buffer)}
