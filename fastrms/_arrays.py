"""Array intake: turn what users pass into flat contiguous float arrays, or say clearly why not."""

from __future__ import annotations

import math

import numpy as np

FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def none_gradient_error() -> TypeError:
    # (np.asarray(None) is a 0-d object array: "shape ()" would mislead)
    return TypeError("the gradient is None; step(g) needs an array of x's shape")


def callable_gradient_error() -> TypeError:
    return TypeError("the gradient is a function: step(g) takes the gradient itself (torch's "
                     "step(closure), a function that computes the loss and calls backward(), is taken "
                     "over torch tensors, whose .grad it fills)")


def kind_error(what: str, dtype) -> TypeError:
    return TypeError(f"{what} must hold real numbers (float32 or float64; integers are "
                     f"converted to float64), got dtype {dtype}")


def shape_error(g_shape: tuple, x_shape: tuple) -> ValueError | None:
    """None where a gradient of g_shape serves an x of x_shape: the same shape, or one element for
    one (scipy's convention: jac may return a scalar for a one-variable x); else the error."""
    if g_shape == x_shape or (math.prod(g_shape) == 1 and math.prod(x_shape) == 1):
        return None
    return ValueError(f"the gradient has shape {g_shape}, but x has shape {x_shape}")


def numpy_all_finite(a: np.ndarray) -> bool:
    return bool(np.isfinite(a).all())


def as_x0(x0, dtype=None, all_finite=numpy_all_finite) -> np.ndarray:
    """A float copy of x0 (never a view: x0 is never mutated). Integers and lists become float64.
    ``all_finite(a)``: the backend's test that every element of a float array is finite."""
    if type(x0) is np.ndarray and dtype is None and x0.dtype in FLOATS and x0.size:
        a = x0  # the common case, kept cheap: every call of minimize takes this path
    else:
        a = _float_array(x0, dtype)
    if not all_finite(a):
        raise ValueError("x0 contains NaN or inf")
    return np.array(a, copy=True, order="C")


def _float_array(x0, dtype) -> np.ndarray:
    if isinstance(x0, (str, bytes)):
        raise TypeError(f"x0 must be an array of numbers, got the string {x0!r}")
    try:
        view = cpu_tensor_view(x0)  # (np.asarray refuses a tensor that requires grad, a Parameter)
    except TypeError as e:
        raise TypeError(f"x0: {e}") from None
    if view is not None:
        x0 = view
    try:
        a = np.asarray(x0)
    except (ValueError, TypeError) as e:
        raise TypeError(f"x0 must be an array of numbers: {e}") from None
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f" or a.dtype not in FLOATS:
        if a.dtype.kind == "f":  # float16, longdouble: compute in float64
            a = a.astype(np.float64)
        else:
            raise kind_error("x0", a.dtype)
    if dtype is not None:
        dtype = np.dtype(dtype)
        if dtype not in FLOATS:
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        a = a.astype(dtype)
    if a.size == 0:
        raise ValueError("x0 is empty: there is nothing to optimize")
    return a


def is_torch(x) -> bool:
    """Whether x is a PyTorch tensor (torch is never imported to tell)."""
    return type(x).__module__.split(".")[0] == "torch"


def host_values(v):
    """A hyperparameter given as an array of another library (a torch tensor, on any device, JAX,
    CuPy, a Numba device array, pandas), one value per problem of a batch: the NumPy array of its
    values.  Anything else (a number, a 0-d array, a NumPy array, a list, a schedule) as it is."""
    if type(v) is np.ndarray or isinstance(v, (list, tuple, str)) or not getattr(v, "ndim", 0):
        return v
    try:
        if is_torch(v):
            return v.detach().to("cpu").double().numpy()  # (bfloat16 has no NumPy dtype)
        if hasattr(v, "copy_to_host"):  # a Numba device array
            return v.copy_to_host()
        if type(v).__module__.split(".")[0] == "cupy":
            return v.get()
        return np.asarray(v)
    except Exception:  # (not an array after all: the hyperparameter's own check says what it is)
        return v


def lazy_tensor_error(t) -> TypeError | None:
    """Why the tensor t's memory does not hold its values, or None: torch's lazily negated views
    (memory −t) and ZeroTensors (autograd's zeros, a null pointer) would be stepped as −g or read
    at address 0 by a kernel that reads memory (a CUDA tensor's interface does not refuse them)."""
    if t.is_neg():
        return TypeError("this tensor has its negative bit set (a lazily negated view: its memory "
                         "holds the values negated); pass t.resolve_neg()")
    if getattr(t, "_is_zerotensor", bool)():
        return TypeError("this tensor is a ZeroTensor (autograd's zeros, with no memory); pass "
                         "torch.zeros_like(t)")
    return None


def cpu_tensor_view(x):
    """A PyTorch CPU tensor as the NumPy array over its memory (an nn.Parameter too: detach()
    shares the memory, so updates reach the parameter), or None for anything else."""
    if not is_torch(x) or getattr(x, "is_cuda", True):
        return None
    try:
        return x.detach().numpy() if x.requires_grad else x.numpy()  # (a .grad: no detach, ~1 µs less)
    except (TypeError, RuntimeError) as e:  # bfloat16, a sparse or meta tensor ...
        lazy = lazy_tensor_error(x)
        if lazy is not None:
            raise lazy from None
        hint = ("pass a dense, strided CPU tensor" if str(x.dtype) in ("torch.float32", "torch.float64")
                else "convert it, e.g. with .to(torch.float32)")
        raise TypeError(f"this {x.dtype} tensor has no NumPy view ({e}); {hint}") from None


def check_param_array(x: np.ndarray) -> np.ndarray:
    """x, checked for a stepper that updates it in place, as a plain ndarray over x's memory
    (a subclass such as np.matrix or np.memmap is updated through that view, a CPU tensor through
    its NumPy view)."""
    view = cpu_tensor_view(x)
    if view is not None:
        x = view
    if not isinstance(x, np.ndarray):
        raise TypeError(f"steppers update x in place, so x must be a NumPy (or CUDA) array of "
                        f"float32 or float64, got {type(x).__name__}")
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError("x is a masked array: a stepper updates every element of x in place and "
                        "cannot honour the mask; pass x.data to update all of them")
    if x.dtype not in FLOATS:
        raise kind_error("x", x.dtype)
    if not x.flags.c_contiguous:
        raise ValueError("x must be C-contiguous (the update runs over its flat memory)")
    if not x.flags.writeable:
        raise ValueError("x is read-only; steppers update x in place")
    if x.size == 0:
        raise ValueError("x is empty: there is nothing to optimize")
    return x if type(x) is np.ndarray else x.view(np.ndarray)


def as_gradient(g, x):
    """g as a flat contiguous array in x's dtype, or a clear error."""
    # the common case, kept cheap: it runs every step (an equal dtype that is not the same
    # object, or a 1-D g that is not contiguous, takes the checked path below)
    if type(g) is np.ndarray and g.shape == x.shape and g.dtype is x.dtype and g.flags.c_contiguous:
        return g if g.ndim == 1 else g.reshape(-1)
    if not isinstance(g, np.ndarray):
        if g is None:
            raise none_gradient_error()
        if callable(g):
            raise callable_gradient_error()
        if (view := cpu_tensor_view(g)) is not None:  # (np.asarray refuses one that requires grad)
            g = view
        try:
            g = np.asarray(g)
        except (ValueError, TypeError) as e:
            raise TypeError(f"the gradient must be an array of numbers: {e}") from None
    if g.dtype.kind not in "fiu":  # (first: a string's shape () would mislead)
        raise kind_error("the gradient", g.dtype)
    if g.shape != x.shape and (e := shape_error(g.shape, x.shape)) is not None:
        raise e
    if g.dtype != x.dtype:
        g = g.astype(x.dtype)
    return np.ascontiguousarray(g).reshape(-1)


# the flags that decide an array's Numba type: C- and F-contiguous, aligned, writeable (NumPy's
# NPY_ARRAY_* bits; reading them as one int costs a tenth of reading them one by one)
TYPE_FLAGS = 0x1 | 0x2 | 0x100 | 0x400


def fingerprint(a):
    """A cheap stand-in for numba.typeof(a) as a cache key (typeof costs ~10 µs an array)."""
    if isinstance(a, np.ndarray):
        return (a.dtype.str, a.ndim, a.flags.num & TYPE_FLAGS)
    if isinstance(a, tuple):
        return tuple(map(fingerprint, a))
    if isinstance(a, (bool, int, float, complex, str, np.generic)) or a is None:
        return type(a)  # (a scalar's Python or NumPy type is its Numba type)
    import numba  # (lazily: only containers need it)

    try:  # a container's Numba type depends on its items (a list of ints is not a list of floats)
        return numba.typeof(a)
    except (ValueError, TypeError):  # (not passable to compiled code: _typeof_args says so)
        return type(a)
