"""The methods: one module each, listed once in ``REGISTRY``.

A method module holds its per-element rule (its whole math, in the seeds'
notation), a jittable coefficient function that turns the hyperparameters and
the step number t into the coefficients h the rule reads, and ``METHOD``, the
``base.Method`` entry with its hyperparameters, state rows and named slots.

To add a method: write ``fastrms/methods/NAME.py`` like ``rmsprop.py`` and add
NAME to ``REGISTRY``.  Where its coefficients cost powers of t (bias corrections),
write them as ``powers`` and ``finish`` like ``adamax.py`` and give ``parts``:
a batch computes the powers once a step for each group of problems with the same
parameters (a sweep of η is one group, a grid of η × β1 a group a β1; on a GPU,
the host computes them and the device finishes each problem's row).  Its stepper class
(``METHOD.class_name``), its scipy method function (``fastrms.NAME``), its export,
every backend, both drivers and the registry-driven tests pick it up from here.
"""

from __future__ import annotations

import importlib

from .. import _checks as ck
from .base import ALIASES, COMMON, MOMENTUM, Config, Hyper, Method  # noqa: F401 - the public names

REGISTRY = ("gd", "momentum", "rmsprop", "adagrad", "adam", "adamw", "nadam", "radam", "adabelief", "adamax",
            "adadelta", "yogi", "lion")

METHODS: dict[str, Method] = {}
for _name in REGISTRY:
    _method = importlib.import_module(f".{_name}", __name__).METHOD
    if _method.name != _name:
        raise ImportError(f"fastrms.methods.{_name} defines METHOD {_method.name!r}")
    METHODS[_name] = _method


def get(name: str) -> Method:
    if not isinstance(name, str):
        raise TypeError(f"method must be a string or a fastrms method function, got {name!r}")
    key = name.lower()
    if key not in METHODS:
        raise ck.unknown("method", name, METHODS)
    return METHODS[key]
