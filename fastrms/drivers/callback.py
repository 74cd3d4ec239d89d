"""scipy-style callbacks, as a driver calls them."""

from __future__ import annotations

import inspect

import numpy as np


def _wants_intermediate_result(callback) -> bool:
    try:
        params = inspect.signature(callback).parameters
    except (TypeError, ValueError):
        return False
    return set(params) == {"intermediate_result"}


def wrap_callback(callback):
    """A scipy-style callback as ``f(intermediate_result) -> stop?``.

    Like scipy >= 1.11: a callback whose only parameter is named
    ``intermediate_result`` gets the OptimizeResult, any other gets a copy of x;
    raising StopIteration asks to stop (status 99).
    """
    if callback is None:
        return None
    if not callable(callback):
        raise TypeError(f"callback must be callable, got {callback!r}")
    keyword = _wants_intermediate_result(callback)

    def call(res) -> bool:
        try:
            if keyword:
                callback(intermediate_result=res)
            else:
                callback(np.copy(res.x))
        except StopIteration:
            return True
        return False

    return call
