"""Backends: where the per-element rules of ``fastrms.methods`` run.

A backend is one module in this package whose backend object follows
``Backend`` below: it takes in the user's arrays, allocates the state, builds
the kernels of a configured method and launches them.  The method state, the
drivers, the steppers and the front talk to nothing else, and this module is
the only place that knows which backends exist (``BACKENDS``).

    cpu.py    numba.njit kernels, serial and parallel (prange)
    cuda.py   numba.cuda.jit grid-stride kernels (needs numba-cuda)

To add a backend: write ``kernels/NAME.py`` with ``owns(a)`` (cheap: does this
array live there?) and ``backend()`` returning a ``Backend``, and add NAME to
``BACKENDS``.
"""

from __future__ import annotations

import importlib
from typing import Any, Protocol

import numpy as np

from .cpu import CPU

# claim order: an array belongs to the first backend (after the CPU) whose owns() says so
BACKENDS = ("cpu", "cuda")


class Backend(Protocol):
    """What the rest of fastrms asks of a backend.  Arrays here are the backend's own (NumPy
    arrays on the CPU, Numba device arrays on CUDA); ``kind`` names the user's kind of array
    ('numpy', 'cupy', 'torch', 'numba') so results go back as they came."""

    name: str
    host_memory: bool  # whether F and dF see host NumPy arrays (copy-on-retain applies)

    # intake and output
    def x0(self, x0: Any, dtype) -> tuple[Any, tuple]: ...          # a validated flat copy, shape
    def array_kind(self, a: Any) -> str: ...
    def param_array(self, x: Any) -> Any: ...                       # x, shaped, checked for in-place steps
    def as_gradient(self, g: Any, x_shaped: Any) -> Any: ...       # flat, x's dtype, or a clear error
    def gradient_for(self, x_shaped: Any) -> Any: ...              # g -> as_gradient, valid while g is held
    def view(self, x: Any, shape: tuple, kind: str) -> Any: ...    # x as F and dF see it
    def result(self, a: Any, shape: tuple, kind: str) -> Any: ...  # a as minimize returns it
    # buffers and state
    def state(self, host) -> Any: ...
    def load_state(self, S: Any, host) -> None: ...
    def empty_like(self, x: Any) -> Any: ...
    def copy(self, src: Any, dst: Any = None) -> Any: ...
    def to_host(self, a: Any): ...
    def norms(self, g: Any) -> tuple[float, float]: ...            # (max |g_i|, ‖g‖₂)
    def max_abs(self, g: Any) -> float: ...
    # kernels
    def kernels(self, config) -> Any: ...
    def stepper(self, mstate, n: int): ...                          # (x, g, h) -> None, in place
    def single_step(self, mstate, x_shaped: Any, flat: Any): ...    # step(g): g checked, h, kernel, t + 1
    # (x, g, h, gtol, out) -> (n_big, n_bad); in_place: out is x; steps: the run's length, if known
    def checked_stepper(self, mstate, n: int, in_place: bool = False, steps: int = 0): ...
    # batched problems (mstate a BatchedState; B rows of x, one per problem)
    # whether a uniform batch's (BatchedState.uniform) rows steps read H[0] alone with these
    # problems active, so that its other rows need not be filled
    def first_row_serves(self, active) -> bool: ...
    # None, or a fill (BatchedState._fill's signature) writing H where the rows kernels read it
    def device_fill(self, mstate) -> Any: ...
    def rows_stepper(self, mstate, n: int): ...                     # (x, g, H, active) -> None
    # (x, g, H, active, gtol, out, big, bad) -> None; steps as in checked_stepper
    def rows_checked_stepper(self, mstate, n: int, steps: int = 0): ...
    def row_norms(self, g: Any, B: int): ...                        # (B, 2): each row's (max |g_i|, ‖g‖₂)
    def copy_rows(self, src: Any, dst: Any, rows, B: int) -> None: ...


def get(name: str) -> Backend:
    """The backend called ``name`` (a clear error where it cannot run here)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r} (known: {', '.join(BACKENDS)})")
    if name == "cpu":
        return CPU
    return importlib.import_module(f".{name}", __name__).backend()


def owner(a) -> str:
    """The name of the backend an array lives on ('cpu' for anything host-side)."""
    if type(a) is np.ndarray:  # every call of minimize asks: the common answer without imports
        return "cpu"
    for name in BACKENDS[1:]:
        if importlib.import_module(f".{name}", __name__).owns(a):
            return name
    return "cpu"
