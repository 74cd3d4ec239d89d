"""Which Numba threading layer the parallel kernels run on, and how it is kept safe.

fastrms must be safe both from many threads (a thread pool, Dask's threaded
workers) and across ``fork`` (``multiprocessing`` pools, Dask's process
workers).  Numba's three layers differ exactly there:

=========  ============  ==========================================================
layer      threads       fork after a parallel kernel has run
=========  ============  ==========================================================
tbb        safe          safe
omp (GNU)  safe          the child is killed as soon as it runs a parallel kernel
workqueue  aborts        safe
=========  ============  ==========================================================

So fastrms depends on the ``tbb`` wheel where one exists and asks Numba for
TBB first.  pip puts ``libtbb.so.12`` in ``<prefix>/lib``, which the loader
does not search, so it is loaded here by its path (once it is loaded, Numba's
TBB extension links against it by its soname).  Where TBB still cannot load,
the other layers are made safe too: after a fork under OpenMP the child uses
the serial kernels; under workqueue the parallel kernels run under a lock, and
a warning says how to get TBB.  A user's own NUMBA_THREADING_LAYER (or
numba.config setting) is respected and gets the same guards.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import warnings

import numba
from numba.np.ufunc import parallel as _parallel

_LAYERS = ("tbb", "omp", "workqueue")
_forked_under_omp = False
# Bumped whenever the serial/parallel choice can change (the layer becoming known, a fork under
# OpenMP): a caller that made the choice once only looks again when this has moved.
epoch = 0
workqueue_lock = threading.Lock()


def _tbb_library() -> str | None:
    """Where pip put libtbb, if it did."""
    if not sys.platform.startswith("linux"):
        return None  # elsewhere the loader finds TBB beside Python (or it is absent)
    try:
        from importlib import metadata

        for f in metadata.files("tbb") or ():
            if f.name == "libtbb.so.12":
                return str(f.locate())
    except Exception:  # noqa: BLE001 - no tbb distribution, or unreadable metadata
        pass
    path = os.path.join(sys.prefix, "lib", "libtbb.so.12")
    return path if os.path.exists(path) else None


def _choose_layer() -> None:
    if _parallel._is_initialized:  # someone already ran parallel Numba code: too late to choose
        return
    path = _tbb_library()
    if path is not None:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass
    user_chose = ("NUMBA_THREADING_LAYER" in os.environ or "NUMBA_THREADING_LAYER_PRIORITY" in os.environ
                  or numba.config.THREADING_LAYER != "default")
    if not user_chose:
        numba.config.THREADING_LAYER_PRIORITY = list(_LAYERS)


_layer: str | None = None


def layer() -> str | None:
    """The threading layer in use, or None before Numba has launched its threads (once it has,
    the layer is fixed for the life of the process, so it is looked up once)."""
    global _layer, epoch
    if _layer is None and _parallel._is_initialized:
        try:
            _layer = numba.threading_layer()
        except ValueError:
            return None
        epoch += 1
    return _layer


def _after_fork_in_child() -> None:
    global _forked_under_omp, epoch
    if layer() == "omp":
        _forked_under_omp = True
        epoch += 1


def parallel_allowed() -> bool:
    """False in a child forked after GNU OpenMP ran in its parent (its parallel kernels would kill it)."""
    return not _forked_under_omp


_warned_workqueue = False


def guard(kernel):
    """kernel itself, or under the workqueue layer a version that holds a process-wide lock
    (two threads inside workqueue at once abort the process)."""
    global _warned_workqueue
    if layer() != "workqueue":
        return kernel
    if not _warned_workqueue:
        _warned_workqueue = True
        warnings.warn("fastrms: Numba is using its 'workqueue' threading layer (TBB could not be "
                      "loaded: pip install tbb); parallel kernels from several threads will take turns",
                      RuntimeWarning, stacklevel=3)

    def locked(*args):
        with workqueue_lock:
            return kernel(*args)

    locked.py_func = getattr(kernel, "py_func", None)
    return locked


_choose_layer()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
