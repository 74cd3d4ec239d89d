"""``njit`` with a disk cache that can never break a run.

Numba's ``cache=True`` fails hard in two field situations: with no writable
cache location (a read-only install, HOME read-only, NUMBA_CACHE_DIR unset or
unwritable) it raises "cannot cache function ...: no locator available" when
the function is decorated; a truncated or corrupt cache file raises a pickle
error when it is loaded.  Here both fall back to compiling in memory, with one
warning per process, and a corrupt index is emptied so the next save repairs it.
NUMBA_DISABLE_JIT=1, set to debug one's own njit functions in Python, leaves fastrms's
kernels compiled (they have no Python form).
"""

from __future__ import annotations

import hashlib
import os
import threading
import types
import warnings
from functools import cache
from pathlib import Path

import numba
from numba import njit
from numba.core.registry import CPUDispatcher

_warned = set()
_lock = threading.Lock()


class CacheWarning(RuntimeWarning):
    """fastrms compiled without Numba's disk cache (every new process compiles again)."""


def _warn_once(kind: str, message: str) -> None:
    with _lock:
        if kind in _warned:
            return
        _warned.add(kind)
    warnings.warn(message, CacheWarning, stacklevel=3)


def _guard(dispatcher):
    """Make the dispatcher's cache loads and saves fail soft (a failure means: compile in memory)."""
    cache = getattr(dispatcher, "_cache", None)
    load, save = getattr(cache, "load_overload", None), getattr(cache, "save_overload", None)
    if load is None or save is None:  # a Numba without these hooks: leave it as it is
        return dispatcher

    def load_overload(sig, target_context):
        try:
            return load(sig, target_context)
        except Exception as e:  # noqa: BLE001 - any unreadable cache entry means "recompile"
            _warn_once("corrupt", f"fastrms: ignored an unreadable Numba cache file for "
                                  f"{dispatcher.py_func.__name__} ({type(e).__name__}: {e}); recompiling")
            try:
                cache.flush()  # an empty index, so the save below writes a good entry
            except Exception:  # noqa: BLE001
                pass
            return None

    def save_overload(sig, data):
        try:
            save(sig, data)
        except Exception as e:  # noqa: BLE001 - the compiled code works without its cache file
            _warn_once("save", f"fastrms: could not write Numba's cache ({type(e).__name__}: {e}); "
                               "compiled code will not be reused by the next process")

    cache.load_overload = load_overload
    cache.save_overload = save_overload
    return dispatcher


def jit(fn=None, *, signature=None, cache: bool = True, **options):
    """``numba.njit(cache=True, **options)``, falling back to no disk cache where none can be kept.

    ``cache=False`` compiles in memory only (for inspecting the machine code).  With
    ``signature`` the function is compiled at once for it and for nothing else (as
    ``njit(signature)`` does), after its cache has been guarded.
    """
    if fn is None:
        return lambda f: jit(f, signature=signature, cache=cache, **options)
    if not cache:
        dispatcher = _njit(fn, False, options)
    else:
        dispatcher = _cached(fn, options)
    if signature is not None:
        dispatcher.compile(signature)
        dispatcher.disable_compile()
    return dispatcher


def _cached(fn, options):
    try:
        dispatcher = _guard(_njit(fn, True, options))
    except RuntimeError as e:
        if "cannot cache" not in str(e):
            raise
        _warn_once("locator", "fastrms: no writable location for Numba's cache (read-only package, "
                              "HOME and NUMBA_CACHE_DIR); compiling in memory, so each new process "
                              "compiles again. Set NUMBA_CACHE_DIR to a writable directory to cache.")
        dispatcher = _njit(fn, False, options)
    return dispatcher


def _njit(fn, cache: bool, options: dict):
    """``numba.njit(cache=cache, **options)(fn)``, compiled even where NUMBA_DISABLE_JIT is set.

    That setting turns every ``njit`` function into plain Python, to debug one's own code; it
    must leave fastrms working, and its kernels are built from intrinsics and overloads that
    have no Python form (the user's own njit F and dF do run as Python there, in the Python loop)."""
    if not numba.config.DISABLE_JIT:
        return njit(cache=cache, **options)(fn)
    targetoptions = {"nopython": True, "boundscheck": None, **options}  # (what njit passes)
    dispatcher = _Compiled(py_func=fn, locals={}, targetoptions=targetoptions)
    if cache:
        dispatcher.enable_caching()
    return dispatcher


_compiling = threading.RLock()  # (reentrant: compiling a kernel compiles the functions it calls)


class _Compiled(CPUDispatcher):
    """A dispatcher that compiles with the JIT on: Numba's overloads read NUMBA_DISABLE_JIT while
    they compile, so it is lifted for that time (under a lock, and put back after)."""

    def compile(self, sig):
        with _compiling:
            before, numba.config.DISABLE_JIT = numba.config.DISABLE_JIT, 0
            try:
                return super().compile(sig)
            finally:
                numba.config.DISABLE_JIT = before


# -- binding a loop template to a rule ------------------------------------------------

@cache
def source_tag() -> str:
    """Hash of the package's source: Numba's cache checks only the file that defines a
    function, not the rules, coefficients and schedules compiled into it."""
    return sources_hash(Path(__file__).resolve().parent.parent)


def sources_hash(package: Path) -> str:
    """A short hash of every .py file under ``package``, in a fixed order."""
    digest = hashlib.sha1()
    for root, dirs, files in os.walk(package):
        # (not into __pycache__: Numba's cache files pile up there, thousands of them, and a walk
        # through them cost a process's first compiled call 70 ms)
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            digest.update(Path(root, name).read_bytes())
    return digest.hexdigest()[:10]


def flag_tag(flags) -> str:
    return "".join("1" if f else "0" for f in flags) or "x"


def bind(template, name: str, **bound):
    """A copy of the function ``template`` whose globals also hold ``bound`` (the rule, its flags,
    ...), named ``name`` plus the source tag.

    The one way every backend and driver specializes a loop: not a closure, because a closure
    over a dispatcher carries its random UUID into Numba's cache key and misses the disk cache
    in every new process; the name keys the cache file, and the source tag in it means an
    edited rule never loads a stale kernel.
    """
    name = f"{name}_{source_tag()}"
    fn = types.FunctionType(template.__code__, dict(template.__globals__, **bound), name)
    fn.__qualname__ = name
    fn.__doc__ = template.__doc__
    return fn
