"""AdamW (Loshchilov & Hutter 2019): Adam (adam.py) with decoupled weight decay x ← (1 − ηλ) x."""

from __future__ import annotations

from .. import _checks as ck
from . import adam
from .base import Hyper, Method

METHOD = Method(
    "adamw", "AdamW", adam.adam, adam.adam_coefficients,
    {**{k: h for k, h in adam.HYPERS.items() if k != "decoupled_weight_decay"},
     "weight_decay": Hyper(0.01, ck.nonneg, "decoupled weight decay λ")},
    adam.pack, adam.SLOTS, adam.PARAMS, flags_fn=adam.flags, rows_fn=adam.rows,
    fixed={"decoupled_weight_decay": True}, varies_fn=lambda v: True,
    doc="Adam with x ← (1 − ηλ) x before the step")
