"""NAdam (Dozat 2016) as torch and Keras define it: Adam (adam.py) with Nesterov momentum whose
coefficient follows a schedule, ``momentum_decay`` ψ.

    μ_t = β1 (1 − ½·0.96^(tψ)),   Π_t = μ_1 ⋯ μ_t
    m ← β1 m + (1 − β1) g,   v ← β2 v + (1 − β2) g²
    x ← x − η (μ_{t+1} m/(1 − Π_t μ_{t+1}) + (1 − μ_t) g/(1 − Π_t)) / (√(v/(1 − β2ᵗ)) + ε)

ψ = 0.004 is torch's default; Keras's Nadam is ψ = 1 (preset='keras').  Optax's ``nadam`` has no
schedule, μ_t = β1: ``momentum_decay=None`` (preset='optax'), which is ``adam(nesterov=True)``.
"""

from __future__ import annotations

from dataclasses import replace

from . import adam
from .base import Hyper, Method, lr_check

METHOD = Method(
    "nadam", "NAdam", adam.adam, adam.adam_coefficients,
    {**{k: h for k, h in adam.HYPERS.items() if k not in ("nesterov", "amsgrad", "rectify", "threshold")},
     "lr": Hyper(0.002, lr_check, adam.HYPERS["lr"].doc),
     "momentum_decay": replace(adam.HYPERS["momentum_decay"], default=0.004)},
    adam.pack, adam.SLOTS, adam.PARAMS, flags_fn=adam.flags, rows_fn=adam.rows,
    fixed={"nesterov": True, "amsgrad": False, "rectify": False, "threshold": 5.0}, varies_fn=lambda v: True,
    doc="Adam with Nesterov momentum μ_t = β1(1 − ½·0.96^(tψ))")
